"""Attach a monitor to a training job.

Four ways in, from least to most integrated::

    @mon.watch(evaluate=lambda model: cm.Observation(predictions=predict(model, X_probe)))
    def retrain(data): ...                                   # plain function (monitor.py)

    with mon.retrain(provenance=cm.Provenance(synthetic_fraction=0.5)) as r:
        model = train(...); r.observe(cm.Observation(...))  # no function boundary (monitor.py)

    from collapse_monitor.hooks.lightning import CollapseMonitorCallback        # Lightning 2.x
    from collapse_monitor.hooks.transformers import CollapseMonitorCallback     # HF Trainer 5.x

    from collapse_monitor.hooks import distributed_check    # torch.distributed: shard the probe

Every hook contains its own failures (STYLE item 8): an ``evaluate`` that raises, a sink or an
alert channel that fails never aborts the training job; the error is logged and kept in
``.last_error``. This package imports neither lightning, transformers nor torch: the framework
callbacks live in submodules the user imports explicitly, and ``distributed_check`` imports
torch when called.
"""

from __future__ import annotations

from .distributed import DistributedResult, distributed_check

__all__ = ["DistributedResult", "distributed_check"]
