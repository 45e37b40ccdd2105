"""Multi-process jobs: ``watch`` / ``retrain`` check on rank 0 only, and ``distributed_check``
with a rank whose own evaluation failed (hooks audit, 2026-12-06, stop 36). Two real gloo
ranks, each a subprocess running the worker below (as torchrun would run a training script)."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import collapse_monitor as cm

pytest.importorskip("torch")

Y = np.array([0] * 90 + [1] * 10)

WORKER = textwrap.dedent(
    """
    import datetime, json, sys
    import numpy as np
    import torch.distributed as dist
    import collapse_monitor as cm
    from collapse_monitor.hooks import distributed_check

    rank, port, home, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2,
                            timeout=datetime.timedelta(seconds=60))
    Y = np.array([0] * 90 + [1] * 10)
    res = {}

    # every rank runs the same decorated retrain, as under torchrun
    mon = cm.CollapseMonitor("ddp", reference=cm.Reference(labels=Y), sinks=[], home=home)
    evaluated = []
    @mon.watch(evaluate=lambda m: evaluated.append(rank) or cm.Observation(predictions=m))
    def retrain(x):
        return x
    model = Y.copy()
    res["passed_through"] = retrain(model) is model
    res["watch"] = [getattr(mon.last_report, "generation", None), evaluated]
    with mon.retrain() as r:
        res["retrain"] = getattr(r.observe(cm.Observation(predictions=Y)), "generation", None)
    dist.barrier()
    # ranks that train separate models, one monitor each
    own = cm.CollapseMonitor(f"own-{rank}", reference=cm.Reference(labels=Y), sinks=[], home=home)
    @own.watch(evaluate=lambda m: cm.Observation(predictions=m), every_rank=True)
    def retrain_own(x):
        return x
    retrain_own(Y.copy())
    res["every_rank"] = getattr(own.last_report, "generation", None)
    dist.barrier()

    # the module docstring's pattern: rank 1's evaluation fails, it completes the collectives
    # declaring the failure (failed=)
    def failing_rank(strict):
        mon2 = cm.CollapseMonitor(f"shard-{strict}", reference=cm.Reference(labels=Y), sinks=[], home=home)
        idx = np.arange(rank, 100, 2)  # DistributedSampler-style interleaved shards
        try:
            try:
                if rank == 1:
                    raise RuntimeError("out of memory in my evaluation")
                got = distributed_check(mon2, probe_indices=idx, predictions=Y[idx], strict=strict)
            except RuntimeError as exc:
                got = distributed_check(mon2, strict=strict, failed=exc)
            last = type(mon2.last_error).__name__ if mon2.last_error is not None else None
            return ["result", got.stage, got.error, last, len(mon2.reports())]
        except cm.InputError as exc:
            return ["raised", exc.field, str(exc)]
    res["failing"] = failing_rank(False)
    res["failing_strict"] = failing_rank(True)
    dist.barrier()
    dist.destroy_process_group()
    open(out, "w").write(json.dumps(res))
    """
)


def test_watch_checks_once_per_retrain_and_a_failed_rank_does_not_stop_the_others(tmp_path: Path) -> None:
    from servers import free_port, run_ranks

    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    port, home = free_port(), tmp_path / "home"
    out = [tmp_path / f"r{r}.json" for r in range(2)]
    run_ranks([[sys.executable, str(script), str(r), str(port), str(home), str(out[r])] for r in range(2)])
    r0, r1 = (json.loads(o.read_text()) for o in out)

    # one retrain, one generation: rank 1 neither evaluated nor checked (it was generation 1)
    assert r0["passed_through"] and r1["passed_through"]
    assert r0["watch"] == [0, [0]] and r1["watch"] == [None, []]
    assert r0["retrain"] == 1 and r1["retrain"] is None
    mon = cm.CollapseMonitor("ddp", reference=cm.Reference(labels=Y), sinks=[], home=home)
    assert [r.generation for r in mon.reports()] == [0, 1]
    assert r0["every_rank"] == r1["every_rank"] == 0  # each rank's own monitor

    # rank 1's own failure left 50 probe items unpredicted: every rank carries on with the
    # reason (it raised InputError on every rank, stopping the whole job); strict raises on both
    for r in (r0, r1):
        kind, stage, error, _, _ = r["failing"]
        assert kind == "result" and stage is None, r["failing"]
        assert "rank 1 gave no predictions" in error and "50 of 100 probe items" in error, error
        assert "RuntimeError: out of memory in my evaluation" in error, error
    assert r0["failing"][3:] == ["InputError", 0]
    for r in (r0, r1):
        assert r["failing_strict"][:2] == ["raised", "probe_indices"], r["failing_strict"]
        assert "predicted by no rank" in r["failing_strict"][2]


def test_ranks_from_the_launchers_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """torchrun / Accelerate set RANK and WORLD_SIZE before any process group exists."""
    mon = cm.CollapseMonitor("env", reference=cm.Reference(labels=Y), sinks=[], home=tmp_path)
    check = mon.watch(evaluate=lambda m: cm.Observation(predictions=m))(lambda: Y.copy())
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    check()
    assert mon.last_report is None and mon.reports() == []
    monkeypatch.setenv("RANK", "0")
    check()
    assert mon.last_report.generation == 0
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "1")  # one process: RANK alone decides nothing
    check()
    assert mon.last_report.generation == 1
    with pytest.raises(cm.ConfigError, match="every_rank"):
        mon.watch(evaluate=lambda m: m, every_rank="yes")


def test_watch_over_a_classmethod_says_where_it_goes(tmp_path: Path) -> None:
    mon = cm.CollapseMonitor("cls", reference=cm.Reference(labels=Y), sinks=[], home=tmp_path)
    with pytest.raises(cm.ConfigError, match="below @classmethod"):

        class Trainer:
            @mon.watch(evaluate=lambda m: cm.Observation(predictions=m))
            @classmethod
            def retrain(cls):
                return Y.copy()


@pytest.mark.parametrize("texts", [{"a b", "c d"}, {"a b": 1}, frozenset({"a b"})])
def test_distributed_check_refuses_unordered_texts_like_observation(tmp_path: Path, texts) -> None:
    from collapse_monitor.hooks import distributed_check

    mon = cm.CollapseMonitor(
        "texts", reference=cm.Reference(texts=["a b c", "d e f", "a c e"] * 5), sinks=[], home=tmp_path
    )
    with pytest.raises(cm.InputError) as err:
        mon.check(cm.Observation(texts=texts))
    with pytest.raises(cm.InputError) as dist_err:
        distributed_check(mon, texts=texts)
    assert err.value.field.endswith("texts") and dist_err.value.field.endswith("texts")
    assert mon.reports() == []
