"""collapse_monitor.hooks.lightning.CollapseMonitorCallback on real (tiny) Lightning fits."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import collapse_monitor as cm

L = pytest.importorskip("lightning.pytorch")
torch = pytest.importorskip("torch")

from collapse_monitor.hooks.lightning import CollapseMonitorCallback  # noqa: E402

K, D = 3, 6
rng = np.random.default_rng(0)
CENTERS = rng.normal(scale=3.0, size=(K, D))
PROBE_Y = np.array([0] * 40 + [1] * 30 + [2] * 10)
PROBE_X = (CENTERS[PROBE_Y] + rng.normal(size=(PROBE_Y.size, D))).astype(np.float32)


class Tiny(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(D, 16), torch.nn.ReLU(), torch.nn.Dropout(0.5), torch.nn.Linear(16, K)
        )

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, _):
        x, y = batch
        return torch.nn.functional.cross_entropy(self(x), y)

    def validation_step(self, batch, _):
        x, y = batch
        self.log("val_loss", torch.nn.functional.cross_entropy(self(x), y))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _loader(n: int = 120, seed: int = 1):
    g = np.random.default_rng(seed)
    y = g.choice(K, size=n, p=[0.5, 0.4, 0.1])
    x = (CENTERS[y] + g.normal(size=(n, D))).astype(np.float32)
    ds = torch.utils.data.TensorDataset(torch.from_numpy(x), torch.from_numpy(y))
    return torch.utils.data.DataLoader(ds, batch_size=40)


def _trainer(cb, *, extra=(), **kw):
    opts = dict(
        max_epochs=1,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    opts.update(kw)
    return L.Trainer(callbacks=[c for c in (cb, *extra) if c is not None], **opts)


seen_state: list[tuple[bool, bool]] = []


def evaluate(module) -> cm.Observation:
    seen_state.append((module.training, torch.is_grad_enabled()))
    return cm.Observation(predictions=module(torch.from_numpy(PROBE_X)).argmax(1))


def test_fit_produces_a_report_and_an_mlflow_run(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mon = cm.CollapseMonitor(
        "lightning-tiny",
        reference=cm.Reference(labels=PROBE_Y),
        sinks=[cm.MLflowSink(tracking_uri=uri, evidently=False)],
        home=tmp_path / "home",
    )
    cb = CollapseMonitorCallback(
        mon,
        evaluate,
        provenance=lambda trainer, module: cm.Provenance(
            synthetic_fraction=0.25, sources=[f"epochs:{trainer.current_epoch}"]
        ),
    )
    model = Tiny()
    seen_state.clear()
    _trainer(cb).fit(model, _loader())
    rep = cb.last_report
    assert cb.last_error is None and rep is not None and rep is mon.last_report
    assert rep.generation == 0 and rep.errors == () and rep.run_id
    assert rep.provenance.synthetic_fraction == 0.25 and rep.provenance.sources == ("epochs:1",)
    assert {"accuracy", "worst_class_recall", "class_recall.2"} <= set(rep.metrics)
    assert seen_state == [(False, False)]  # evaluated in eval mode without autograd ...
    assert model.training  # ... and the module's mode restored afterwards

    from mlflow import MlflowClient

    run = MlflowClient(tracking_uri=uri).get_run(rep.run_id)
    assert run.data.tags["collapse.monitor"] == "lightning-tiny" and run.data.tags["collapse.generation"] == "0"
    assert run.data.metrics["collapse.accuracy"] == pytest.approx(rep.value("accuracy"))

    # the next fit is the next generation; a fixed generation may be given too
    _trainer(CollapseMonitorCallback(mon, evaluate)).fit(Tiny(), _loader(seed=2))
    _trainer(CollapseMonitorCallback(mon, evaluate, generation=7)).fit(Tiny(), _loader(seed=3))
    assert [r.generation for r in mon.reports()] == [0, 1, 7]


def test_failures_never_stop_fit(tmp_path: Path) -> None:
    class Down:
        name = "down"

        def emit(self, report, context=None):
            raise ConnectionError("sink is down")

    mon = cm.CollapseMonitor("lightning-fail", reference=cm.Reference(labels=PROBE_Y), sinks=[Down()], home=tmp_path)
    cb = CollapseMonitorCallback(mon, evaluate)
    trainer = _trainer(cb)
    trainer.fit(Tiny(), _loader())
    assert trainer.state.finished and cb.last_error is None
    assert any("sink is down" in e for e in cb.last_report.errors) and mon.spool.count("down") == 1

    def broken(module):
        raise RuntimeError("probe set missing")

    cb2 = CollapseMonitorCallback(mon, broken, generation=lambda trainer, module: 1)
    trainer = _trainer(cb2)
    trainer.fit(Tiny(), _loader())
    assert trainer.state.finished
    assert isinstance(cb2.last_error, RuntimeError) and cb2.last_report is None

    cb3 = CollapseMonitorCallback(mon, evaluate, generation=lambda trainer, module: 1 / 0)
    trainer = _trainer(cb3)
    trainer.fit(Tiny(), _loader())
    assert trainer.state.finished and isinstance(cb3.last_error, ZeroDivisionError)
    assert [r.generation for r in mon.reports()] == [0]


def test_validation_end_skips_sanity_check_and_fast_dev_run(tmp_path: Path) -> None:
    mon = cm.CollapseMonitor("lightning-val", reference=cm.Reference(labels=PROBE_Y), sinks=[], home=tmp_path)
    cb = CollapseMonitorCallback(mon, evaluate, on="validation_end")
    seen_state.clear()
    _trainer(cb, max_epochs=2, num_sanity_val_steps=1).fit(Tiny(), _loader(), _loader(60, seed=9))
    assert [r.generation for r in mon.reports()] == [0, 1]  # two validations, the sanity check not counted
    assert all(s == (False, False) for s in seen_state)

    cb = CollapseMonitorCallback(mon, evaluate)
    _trainer(cb, fast_dev_run=True).fit(Tiny(), _loader())
    assert cb.last_report is None and len(mon.reports()) == 2


def test_checks_during_fit_do_not_change_what_training_draws(tmp_path: Path) -> None:
    """Hooks audit (2026-12-06): a check in the middle of fit drew from the training run's
    random streams (an evaluate that samples, a first import that draws), so the same seeded
    fit ended with other weights when it was monitored. The streams are restored after it."""
    import random

    def sampling(module) -> cm.Observation:
        probs = torch.softmax(module(torch.from_numpy(PROBE_X)), dim=1)
        torch.multinomial(probs, 1)  # a generator's sampling: torch, NumPy and Python streams
        np.random.random(100)
        random.random()
        return cm.Observation(predictions=probs.argmax(1))

    def fit(callbacks: list) -> bytes:
        L.seed_everything(0, verbose=False)
        model = Tiny()
        _trainer(None, extra=callbacks, max_epochs=3).fit(model, _loader(), _loader(seed=2))
        draws = (torch.rand(3), np.random.random(3), random.random())  # what the job draws next
        weights = b"".join(p.detach().numpy().tobytes() for p in model.parameters())
        return weights + b"".join(np.asarray(d, dtype=np.float64).tobytes() for d in draws)

    bare = fit([])
    mon = cm.CollapseMonitor("rng", reference=cm.Reference(labels=PROBE_Y), sinks=[], home=tmp_path)
    cb = CollapseMonitorCallback(mon, sampling, on="validation_end")
    assert fit([cb]) == bare
    assert cb.last_error is None and [r.generation for r in mon.reports()] == [0, 1, 2]


def test_last_report_describes_the_latest_attempt(tmp_path: Path) -> None:
    mon = cm.CollapseMonitor("lightning-latest", reference=cm.Reference(labels=PROBE_Y), sinks=[], home=tmp_path)
    calls = []

    def flaky(module) -> cm.Observation:
        calls.append(1)
        if len(calls) == 2:
            raise OSError("probe store unreachable")
        return evaluate(module)

    cb = CollapseMonitorCallback(mon, flaky, on="validation_end")
    trainer = _trainer(cb, max_epochs=2)
    trainer.fit(Tiny(), _loader(), _loader(60, seed=9))
    assert trainer.state.finished and len(calls) == 2
    assert cb.last_report is None and isinstance(cb.last_error, OSError)  # not the stale first report
    assert [r.generation for r in mon.reports()] == [0]


def test_bad_options_are_config_errors(tmp_path: Path) -> None:
    mon = cm.CollapseMonitor("lightning-cfg", reference=cm.Reference(labels=PROBE_Y), sinks=[], home=tmp_path)
    with pytest.raises(cm.ConfigError, match=r"CollapseMonitorCallback\.on"):
        CollapseMonitorCallback(mon, evaluate, on="epoch_end")
    with pytest.raises(cm.ConfigError, match=r"CollapseMonitorCallback\.evaluate"):
        CollapseMonitorCallback(mon, "evaluate")  # type: ignore[arg-type]
    with pytest.raises(cm.ConfigError, match=r"CollapseMonitorCallback\.monitor"):
        CollapseMonitorCallback(object(), evaluate)  # type: ignore[arg-type]
    with pytest.raises(cm.ConfigError, match=r"CollapseMonitorCallback\.generation"):
        CollapseMonitorCallback(mon, evaluate, generation=-1)
    # a mapping of Provenance's fields, as @mon.watch and mon.retrain take it (it was refused here)
    cb = CollapseMonitorCallback(mon, evaluate, provenance={"synthetic_fraction": 0.25, "sources": ["s3://x/y"]})
    assert cb._core.provenance == cm.Provenance(0.25, sources=["s3://x/y"])
    with pytest.raises(cm.ConfigError) as ei:
        CollapseMonitorCallback(mon, evaluate, provenance={"bogus": 1})
    assert ei.value.key == "CollapseMonitorCallback.provenance.bogus"


def test_hooks_package_imports_without_the_frameworks() -> None:
    code = (
        "import sys; import collapse_monitor.hooks as h; from collapse_monitor.hooks import distributed_check;"
        "print(','.join(m for m in ('lightning', 'pytorch_lightning', 'transformers', 'torch') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""


def _full_monitor(tmp_path: Path) -> cm.CollapseMonitor:
    from prometheus_client import CollectorRegistry

    return cm.CollapseMonitor(
        "spawned",
        reference=cm.Reference(labels=PROBE_Y),
        sinks=[
            cm.MLflowSink(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", evidently=False),
            cm.PrometheusSink(registry=CollectorRegistry(), textfile=tmp_path / "collapse.prom"),
        ],
        alerts=[cm.Webhook("http://127.0.0.1:9/hook", name="hook", secret="whsec_dGVzdHNlY3JldA==")],
        routing={"warning": ["hook"]},
        alert_budget_seconds=0.5,
        home=tmp_path / "home",
    )


def test_callbacks_pickle_and_deepcopy_with_every_sink_and_channel(tmp_path: Path) -> None:
    """Lightning pickles the Trainer with its callbacks for ddp_spawn and deep-copies callbacks
    in some paths: the monitor's locks, sqlite connections and plot thread are process-local
    and are opened anew in the copy, on the same home, so the chain continues."""
    import copy
    import pickle

    from collapse_monitor.hooks.transformers import CollapseMonitorCallback as HFCallback

    mon = _full_monitor(tmp_path)
    mon.check(cm.Observation(predictions=PROBE_Y))
    assert mon.dispatcher is not None  # an open outbox connection in the original
    for cb in (CollapseMonitorCallback(mon, evaluate), HFCallback(mon, evaluate)):
        for clone in (pickle.loads(pickle.dumps(cb)), copy.deepcopy(cb)):
            m2 = clone.core.monitor if hasattr(clone, "core") else clone.monitor
            assert m2 is not mon and m2.name == "spawned" and m2.last_report is None
    m2 = pickle.loads(pickle.dumps(mon))
    assert m2.check(cm.Observation(predictions=PROBE_Y)).generation == 1  # same home: the chain goes on
    assert "whsec_" not in repr(m2)


def test_ddp_spawn_fit_with_the_callback_finishes_and_checks_on_rank_zero(tmp_path: Path) -> None:
    """It used to fail before training started: `cannot pickle '_thread.RLock' object`."""
    script = tmp_path / "spawn.py"
    script.write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "from test_lightning import _full_monitor, _trainer, _loader, Tiny, evaluate\n"
        "from collapse_monitor.hooks.lightning import CollapseMonitorCallback\n"
        "from pathlib import Path\n"
        "if __name__ == '__main__':\n"
        f"    mon = _full_monitor(Path({str(tmp_path)!r}))\n"
        "    cb = CollapseMonitorCallback(mon, evaluate)\n"
        "    t = _trainer(cb, strategy='ddp_spawn', devices=2)\n"
        "    t.fit(Tiny(), _loader())\n"
        "    print('STATUS', t.state.status, [r.generation for r in mon.reports()])\n"
    )
    p = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, check=False)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    assert "STATUS TrainerStatus.FINISHED [0]" in p.stdout, p.stdout[-2000:]


def test_frozen_submodules_stay_in_eval_mode(tmp_path: Path) -> None:
    """The evaluation switches the whole module to eval mode and restores every submodule's own
    mode: a backbone frozen with .eval() stays frozen (its BatchNorm statistics do not move)."""
    mon = cm.CollapseMonitor("frozen", reference=cm.Reference(labels=PROBE_Y), sinks=[], home=tmp_path)
    model = Tiny()
    model.net[0].eval()  # a frozen layer inside a training module
    cb = CollapseMonitorCallback(mon, evaluate)
    _trainer(cb).fit(model, _loader())
    assert cb.last_error is None and cb.last_report is not None
    assert model.training and not model.net[0].training and model.net[3].training


# -- resuming from a checkpoint ----------------------------------------------------------------


class Crashing(Tiny):
    """Dies at a given global step, like a preempted node: fit raises, on_fit_end never runs."""

    def __init__(self, at_step: int) -> None:
        super().__init__()
        self.at_step = at_step

    def training_step(self, batch, i):
        if self.trainer.global_step == self.at_step:
            raise RuntimeError("node lost")
        return super().training_step(batch, i)


def _ckpt_trainer(cb, ckpt_dir: Path, **kw):
    """A trainer that saves last.ckpt (and one per epoch) at every epoch end, as jobs that resume do."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    saver = ModelCheckpoint(dirpath=ckpt_dir, filename="{epoch}", save_last=True, save_top_k=-1)
    opts = dict(max_epochs=2, enable_checkpointing=True, default_root_dir=ckpt_dir)
    opts.update(kw)
    return _trainer(cb, extra=[saver], **opts)


def _resume_monitor(tmp_path: Path) -> cm.CollapseMonitor:
    """A new monitor object on the same home each time: what a new process of the job builds."""
    return cm.CollapseMonitor("lightning-resume", reference=cm.Reference(labels=PROBE_Y), sinks=[], home=tmp_path)


def test_resuming_a_finished_fit_records_no_extra_generation(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """fit(ckpt_path=...) of a finished job trains 0 steps and ends fit again. last.ckpt was saved
    before the end-of-fit check (the history has a check newer than it); a checkpoint saved after
    fit records the checked step itself. Neither may add a generation."""
    import copy
    import pickle

    ckpts = tmp_path / "ckpt"
    cb = CollapseMonitorCallback(_resume_monitor(tmp_path), evaluate)
    trainer = _ckpt_trainer(cb, ckpts)
    trainer.fit(Tiny(), _loader())
    trainer.save_checkpoint(tmp_path / "after_fit.ckpt")
    assert trainer.global_step == 6 and cb.last_report is not None and cb.last_report.generation == 0

    history_newer = "newer than that checkpoint"  # last.ckpt: saved before the check
    said_so = "before its checkpoint was saved"  # after_fit.ckpt: the checkpoint says it
    for path, why in ((ckpts / "last.ckpt", history_newer), (tmp_path / "after_fit.ckpt", said_so)):
        mon = _resume_monitor(tmp_path)
        cb = CollapseMonitorCallback(mon, evaluate)
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="collapse_monitor.hooks"):
            trainer = _ckpt_trainer(cb, ckpts)
            trainer.fit(Tiny(), _loader(), ckpt_path=path)
        assert trainer.state.finished and trainer.global_step == 6
        assert [r.generation for r in mon.reports()] == [0], path.name
        assert cb.last_report is None and cb.last_error is None
        skipped = [r.getMessage() for r in caplog.records if "check skipped" in r.getMessage()]
        assert len(skipped) == 1 and "step 6" in skipped[0] and "generation 0" in skipped[0], caplog.text
        assert why in skipped[0]
        for clone in (pickle.loads(pickle.dumps(cb)), copy.deepcopy(cb)):  # the ledger travels (ddp_spawn)
            assert clone.state_dict() == cb.state_dict()

    saved = torch.load(ckpts / "last.ckpt", weights_only=False)["callbacks"][cb.state_key]
    assert saved["checked_step"] is None and saved["history_newest"] is None  # saved before the check
    saved = torch.load(tmp_path / "after_fit.ckpt", weights_only=False)["callbacks"][cb.state_key]
    assert saved["checked_step"] == 6 and saved["checked_generation"] == 0


def test_resuming_an_unfinished_fit_checks_once_at_the_end(tmp_path: Path) -> None:
    """A job that died in epoch 2 is resumed from its epoch-1 checkpoint: it trains on and is
    checked exactly once, as the next generation."""
    ckpts = tmp_path / "ckpt"
    mon = _resume_monitor(tmp_path)
    _trainer(CollapseMonitorCallback(mon, evaluate)).fit(Tiny(), _loader())  # generation 0: an earlier retrain
    with pytest.raises(RuntimeError, match="node lost"):
        _ckpt_trainer(CollapseMonitorCallback(mon, evaluate), ckpts).fit(Crashing(at_step=4), _loader())
    assert [r.generation for r in mon.reports()] == [0]

    mon = _resume_monitor(tmp_path)
    cb = CollapseMonitorCallback(mon, evaluate)
    trainer = _ckpt_trainer(cb, ckpts)
    trainer.fit(Tiny(), _loader(), ckpt_path=ckpts / "epoch=0.ckpt")
    assert trainer.state.finished and trainer.global_step == 6
    assert cb.last_error is None and cb.last_report is not None and cb.last_report.generation == 1
    assert [r.generation for r in mon.reports()] == [0, 1]


def test_resuming_a_finished_fit_that_never_checked_checks_it(tmp_path: Path) -> None:
    """The run that saved the last checkpoint never got its check in (here: the probe store was
    down): the resumed run checks those weights; a checkpoint from before this state existed
    loads and is checked as before."""
    ckpts = tmp_path / "ckpt"

    def broken(module):
        raise OSError("probe store unreachable")

    cb = CollapseMonitorCallback(_resume_monitor(tmp_path), broken)
    _ckpt_trainer(cb, ckpts).fit(Tiny(), _loader())
    assert isinstance(cb.last_error, OSError) and _resume_monitor(tmp_path).reports() == []

    mon = _resume_monitor(tmp_path)
    cb = CollapseMonitorCallback(mon, evaluate)
    _ckpt_trainer(cb, ckpts).fit(Tiny(), _loader(), ckpt_path=ckpts / "last.ckpt")
    assert cb.last_report is not None and [r.generation for r in mon.reports()] == [0]

    old = torch.load(ckpts / "last.ckpt", weights_only=False)
    del old["callbacks"][cb.state_key]  # what a checkpoint of an older collapse-monitor holds
    torch.save(old, tmp_path / "old.ckpt")
    mon = _resume_monitor(tmp_path)
    cb = CollapseMonitorCallback(mon, evaluate)
    trainer = _ckpt_trainer(cb, ckpts)
    trainer.fit(Tiny(), _loader(), ckpt_path=tmp_path / "old.ckpt")
    assert trainer.state.finished and cb.last_error is None
    assert [r.generation for r in mon.reports()] == [0, 1]  # no state: checked, as it always was


def test_two_monitors_in_one_trainer_keep_their_own_state(tmp_path: Path) -> None:
    """The state key names the monitor and the event: two callbacks are two entries (Lightning
    refuses two stateful callbacks under one key)."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    a = cm.CollapseMonitor("chain-a", reference=cm.Reference(labels=PROBE_Y), sinks=[], home=tmp_path)
    b = cm.CollapseMonitor("chain-b", reference=cm.Reference(labels=PROBE_Y), sinks=[], home=tmp_path)
    cbs = [CollapseMonitorCallback(a, evaluate), CollapseMonitorCallback(b, evaluate, on="train_end")]
    trainer = L.Trainer(
        callbacks=[*cbs, ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)],
        max_epochs=1,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(Tiny(), _loader())
    saved = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=False)["callbacks"]
    assert saved[cbs[0].state_key]["monitor"] == "chain-a" and saved[cbs[1].state_key]["monitor"] == "chain-b"
    assert [len(a.reports()), len(b.reports())] == [1, 1]


def test_rolling_back_to_an_earlier_checkpoint_checks_its_weights(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A check of *later* weights after a checkpoint was saved does not mean the checkpoint's
    weights were checked: a rollback to epoch 0 (step 3) after a fit checked step 6 is checked,
    while resuming last.ckpt (step 6, the weights the fit checked) still is not."""
    ckpts = tmp_path / "ckpt"
    cb = CollapseMonitorCallback(_resume_monitor(tmp_path), evaluate)
    _ckpt_trainer(cb, ckpts).fit(Tiny(), _loader())
    assert cb.last_report.notes[0] == "checked by a training hook at global step 6"

    mon = _resume_monitor(tmp_path)
    cb = CollapseMonitorCallback(mon, evaluate)
    trainer = _ckpt_trainer(cb, ckpts, max_epochs=1)
    trainer.fit(Tiny(), _loader(), ckpt_path=ckpts / "epoch=0.ckpt")
    assert trainer.global_step == 3 and cb.last_report is not None and cb.last_report.generation == 1
    assert cb.last_report.notes[0] == "checked by a training hook at global step 3"

    cb = CollapseMonitorCallback(_resume_monitor(tmp_path), evaluate)
    with caplog.at_level(logging.INFO, logger="collapse_monitor.hooks"):
        _ckpt_trainer(cb, ckpts).fit(Tiny(), _loader(), ckpt_path=ckpts / "last.ckpt")
    assert cb.last_report is None and [r.generation for r in mon.reports()] == [0, 1]
    assert "check of the weights at that step (generation 0)" in caplog.text


def test_validate_after_fit_does_not_check_the_same_weights_again(tmp_path: Path) -> None:
    """on="validation_end": every validation during fit is a generation; trainer.validate() of
    the weights the last one checked is not another one. A new fit at the same step count is."""
    mon = cm.CollapseMonitor("val", reference=cm.Reference(labels=PROBE_Y), sinks=[], home=tmp_path)
    cb = CollapseMonitorCallback(mon, evaluate, on="validation_end")
    model = Tiny()
    trainer = _trainer(cb, max_epochs=2)
    trainer.fit(model, _loader(), _loader(seed=2))
    assert [r.generation for r in mon.reports()] == [0, 1]
    trainer.validate(model, _loader(seed=2), verbose=False)
    assert [r.generation for r in mon.reports()] == [0, 1]
    _trainer(cb, max_epochs=2).fit(model, _loader(), _loader(seed=2))  # trained again: new weights
    assert [r.generation for r in mon.reports()] == [0, 1, 2, 3]


def test_two_callbacks_of_one_monitor_check_the_last_weights_once(tmp_path: Path) -> None:
    """A hooks audit (2026-12-08): with ``on="validation_end"`` and ``on="fit_end"`` on one
    monitor (one callback per ``on`` is allowed), the end of training's weights were checked by
    both, as two generations of the same weights: the memory of what was checked was the
    callback's, not the monitor's."""
    mon = cm.CollapseMonitor("two", reference=cm.Reference(labels=PROBE_Y), sinks=[], home=tmp_path)
    val = CollapseMonitorCallback(mon, evaluate, on="validation_end")
    end = CollapseMonitorCallback(mon, evaluate, on="fit_end")
    trainer = _trainer(val, extra=[end], max_epochs=2)
    trainer.fit(Tiny(), _loader(), _loader(seed=2))
    steps = [next(n for n in r.notes if "global step" in n) for r in mon.reports()]
    assert [r.generation for r in mon.reports()] == [0, 1], steps
    assert steps[-1].endswith(f"global step {trainer.global_step}")
    assert end.last_report is None and end.last_error is None  # skipped: the weights were checked


def test_a_resumed_run_is_checked_though_another_job_checked_the_same_step(tmp_path: Path) -> None:
    """A hooks audit (2026-12-08): generation 1's job saved last.ckpt and died before its check;
    generation 2's job (other weights) was checked at the same global step. Resuming generation
    1's checkpoint trained 0 steps and skipped its check as "checked by the run that saved it",
    on generation 2's check: generation 1's weights were never checked. A hook check now says
    which weights it checked, and only a check of these weights counts."""
    ckpts = tmp_path / "ckpt"
    mon = _resume_monitor(tmp_path)
    _ckpt_trainer(CollapseMonitorCallback(mon, evaluate), tmp_path / "g0").fit(Tiny(), _loader())

    def died(module):
        raise OSError("node lost before the check")

    _ckpt_trainer(CollapseMonitorCallback(_resume_monitor(tmp_path), died), ckpts).fit(Tiny(), _loader())
    other = _resume_monitor(tmp_path)
    _ckpt_trainer(CollapseMonitorCallback(other, evaluate), tmp_path / "g2").fit(Tiny(), _loader())
    assert [r.generation for r in other.reports()] == [0, 1]
    assert all("checked by a training hook at global step 6" in r.notes for r in other.reports())

    mon = _resume_monitor(tmp_path)
    cb = CollapseMonitorCallback(mon, evaluate)
    trainer = _ckpt_trainer(cb, ckpts)
    trainer.fit(Tiny(), _loader(), ckpt_path=ckpts / "last.ckpt")
    assert trainer.global_step == 6
    assert cb.last_error is None and cb.last_report is not None, "the resumed run's weights were never checked"
    assert [r.generation for r in mon.reports()] == [0, 1, 2]
    # resumed again, it is skipped: its own check of these weights is in the history now
    mon = _resume_monitor(tmp_path)
    cb = CollapseMonitorCallback(mon, evaluate)
    _ckpt_trainer(cb, ckpts).fit(Tiny(), _loader(), ckpt_path=ckpts / "last.ckpt")
    assert cb.last_report is None and [r.generation for r in mon.reports()] == [0, 1, 2]


class _ProbeStoreError(Exception):
    def __init__(self, url: str, status: int) -> None:
        super().__init__(f"{url}: HTTP {status}")


def _failing_probe_store(module):
    raise _ProbeStoreError("https://probe-store/x?token=s3cr3t", 503)


def test_a_callback_whose_check_failed_still_pickles_for_the_next_spawned_fit(tmp_path: Path) -> None:
    """last_error held the user's exception; one whose __init__ takes other arguments cannot be
    unpickled, so the next ddp_spawn fit of the same callback died before training."""
    import pickle

    cb = CollapseMonitorCallback(_resume_monitor(tmp_path), _failing_probe_store)
    _trainer(cb).fit(Tiny(), _loader())
    assert isinstance(cb.last_error, _ProbeStoreError)
    clone = pickle.loads(pickle.dumps(cb))
    assert isinstance(clone.last_error, cm.CollapseMonitorError)
    assert "_ProbeStoreError" in str(clone.last_error) and "HTTP 503" in str(clone.last_error)
    assert "s3cr3t" not in str(clone.last_error)


def test_a_second_fit_that_trains_nothing_does_not_check_the_same_weights_again(tmp_path: Path) -> None:
    """Hooks audit (2026-12-06, stop 36): ``setup("fit")`` forgot the checked weights, so a
    second ``fit()`` on the same trainer (``max_epochs`` already reached: 0 steps) checked the
    same weights again as a new generation. The fingerprint tells trained weights apart."""
    mon = cm.CollapseMonitor("refit", reference=cm.Reference(labels=PROBE_Y), sinks=[], home=tmp_path)
    cb = CollapseMonitorCallback(mon, evaluate)
    model = Tiny()
    trainer = _trainer(cb)
    trainer.fit(model, _loader())
    step = trainer.global_step
    trainer.fit(model, _loader())  # nothing left to train
    assert trainer.global_step == step
    assert [r.generation for r in mon.reports()] == [0]
    _trainer(cb, max_epochs=2).fit(model, _loader())  # a new trainer that trains: new weights
    assert [r.generation for r in mon.reports()] == [0, 1]


def test_validation_end_without_validation_says_nothing_was_checked(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """on="validation_end" in a fit without a validation loop never checked, without a word."""
    mon = cm.CollapseMonitor("noval", reference=cm.Reference(labels=PROBE_Y), sinks=[], home=tmp_path)
    cb = CollapseMonitorCallback(mon, evaluate, on="validation_end")
    with caplog.at_level(logging.WARNING, logger="collapse_monitor.hooks"):
        _trainer(cb).fit(Tiny(), _loader())
    assert mon.reports() == []
    assert any("no validation ran" in r.getMessage() and "on='fit_end'" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="collapse_monitor.hooks"):
        _trainer(cb).fit(Tiny(), _loader(), _loader(60, seed=9))
    assert [r.generation for r in mon.reports()] == [0]
    assert not any("no validation ran" in r.getMessage() for r in caplog.records)


def test_a_second_fit_on_weights_changed_in_one_element_checks_them(tmp_path: Path) -> None:
    """Fingerprint audit: the fingerprint read 8 evenly spaced values per tensor, so weights
    whose change missed those positions (a sparse update, an embedding row, an edit between two
    fits) read as "the same weights" and their check was skipped."""
    mon = cm.CollapseMonitor("sparse", reference=cm.Reference(labels=PROBE_Y), sinks=[], home=tmp_path)
    cb = CollapseMonitorCallback(mon, evaluate)
    model = Tiny()
    trainer = _trainer(cb)
    trainer.fit(model, _loader())
    trainer.fit(model, _loader())  # nothing left to train, nothing changed: the same weights
    assert [r.generation for r in mon.reports()] == [0]
    with torch.no_grad():  # flat index 5 of the 16x6 weight: between the old samples 0 and 13
        model.net[0].weight[0, 5] += 0.5
    step = trainer.global_step
    trainer.fit(model, _loader())  # 0 steps, the same step number, other weights
    assert trainer.global_step == step
    assert [r.generation for r in mon.reports()] == [0, 1]


def test_the_weights_fingerprint_sees_every_element_and_is_stable() -> None:
    from collapse_monitor.hooks._core import weights_fingerprint

    torch.manual_seed(0)
    emb = torch.nn.Embedding(1000, 8)
    before = weights_fingerprint(emb)
    assert before is not None and weights_fingerprint(emb) == before  # untouched: the same
    with torch.no_grad():
        emb.weight[3, 1] += 1e-3  # one row of a sparse update, far from any evenly spaced sample
    changed = weights_fingerprint(emb)
    assert changed != before
    with torch.no_grad():
        emb.weight[3, 1] -= 1e-3
        emb.weight[[10, 11]] = emb.weight[[11, 10]].clone()  # a swap keeps every sum but the weighted ones
    swapped = weights_fingerprint(emb)
    assert swapped not in (before, changed)

    with torch.no_grad():  # NaN != NaN must not make every fingerprint of the same weights differ
        emb.weight[7, 2] = float("nan")
    nan_fp = weights_fingerprint(emb)
    assert nan_fp is not None and weights_fingerprint(emb) == nan_fp != swapped
    assert weights_fingerprint(torch.nn.Module()) is not None  # no parameters at all

    class Odd(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.steps = torch.nn.Parameter(torch.arange(5), requires_grad=False)  # an int parameter
            self.mask = torch.nn.Parameter(torch.tensor([True, False, True]), requires_grad=False)
            self.bf16 = torch.nn.Parameter(torch.ones(70_000, dtype=torch.bfloat16))  # more than one row
            self.wide = torch.nn.Parameter(torch.ones(3, dtype=torch.float64))
            self.empty = torch.nn.Parameter(torch.empty(0, 4))
            self.lazy = torch.nn.Parameter(torch.empty(1000, 1000, device="meta"))

    odd = Odd()
    fp = weights_fingerprint(odd)
    assert fp is not None and weights_fingerprint(odd) == fp
    for name, edit in [
        ("steps", lambda p: p.__setitem__(4, 9)),
        ("mask", lambda p: p.__setitem__(1, True)),
        ("bf16", lambda p: p.__setitem__(65_537, 2.0)),
        ("wide", lambda p: p.__setitem__(2, 1.0 + 2**-40)),  # only the low 32 bits change
    ]:
        with torch.no_grad():
            edit(getattr(odd, name))
        assert weights_fingerprint(odd) != fp, name
        fp = weights_fingerprint(odd)
    assert weights_fingerprint(object()) is None


_QUANTIZED_SCRIPT = """
import warnings
warnings.simplefilter("ignore")
import torch
from collapse_monitor.hooks._core import weights_fingerprint

torch.manual_seed(0)
m = torch.nn.Module()
m.per_tensor = torch.nn.Parameter(torch.quantize_per_tensor(torch.randn(70_000), 0.1, 0, torch.qint8), False)
scales, zeros = torch.tensor([0.1, 0.2, 0.3, 0.4]), torch.tensor([0, 1, 2, 3])
m.per_channel = torch.nn.Parameter(torch.quantize_per_channel(torch.randn(4, 8), scales, zeros, 0, torch.quint8), False)
fp = weights_fingerprint(m)
assert fp is not None and weights_fingerprint(m) == fp, fp
seen = set()
for name, edit in [
    ("per_tensor", lambda q: torch.quantize_per_tensor(q.dequantize().index_fill(0, torch.tensor([65_540]), 5.0), 0.1, 0, torch.qint8)),
    ("per_tensor", lambda q: torch.quantize_per_tensor(q.dequantize(), 0.1, 1, torch.qint8)),  # its zero point
    ("per_channel", lambda q: torch.quantize_per_channel(q.dequantize().index_put((torch.tensor([2]), torch.tensor([5])), torch.tensor(9.0)), scales, zeros, 0, torch.quint8)),
    ("per_channel", lambda q: torch.quantize_per_channel(q.dequantize(), scales * 2, zeros, 0, torch.quint8)),  # its scales
]:
    setattr(m, name, torch.nn.Parameter(edit(getattr(m, name)), False))
    new = weights_fingerprint(m)
    assert new is not None and new != fp and new not in seen, name
    seen.add(fp)
    fp = new
print("OK")
"""


def test_a_quantized_parameter_is_fingerprinted_by_its_integers_without_killing_the_process() -> None:
    """Fingerprint review: an int8 view of a quantized tensor "succeeds" and the next kernel on
    it dies with SIGSEGV (the training job with it). Run in a child so a crash fails this test."""
    proc = subprocess.run([sys.executable, "-c", _QUANTIZED_SCRIPT], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("OK"), (proc.returncode, proc.stderr[-2000:])


_PACKED_SCRIPT = """
import warnings
warnings.simplefilter("ignore")
import torch
from collapse_monitor.hooks._core import weights_fingerprint

def model(seed):
    torch.manual_seed(seed)
    m = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.BatchNorm1d(16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    return torch.ao.quantization.quantize_dynamic(m, {torch.nn.Linear}, dtype=torch.qint8)

a, b = model(0), model(1)
assert [n for n, _ in a.named_parameters()] == ["1.weight", "1.bias"]  # the Linears hold none
with torch.no_grad():
    b[1].weight.copy_(a[1].weight); b[1].bias.copy_(a[1].bias)  # the same parameters, other packed weights
fa, fb = weights_fingerprint(a), weights_fingerprint(b)
assert fa is not None and fa == weights_fingerprint(a) and fb != fa, (fa, fb)
b = model(0)
assert weights_fingerprint(b) == fa  # the same weights: the same fingerprint
with torch.no_grad():
    b[1].running_mean += 0.5  # a buffer alone: other statistics
assert weights_fingerprint(b) != fa
conv = torch.ao.nn.quantized.Conv2d(3, 4, 3)
fc = weights_fingerprint(conv)
w = conv.weight()
conv.set_weight_bias(torch.quantize_per_tensor(w.dequantize().clamp(-100, 100) + 1.0, w.q_scale(), w.q_zero_point(), w.dtype), conv.bias())
assert fc is not None and weights_fingerprint(conv) != fc

# what quantize_dynamic converts by default (LSTM, GRU, their cells) and a weight-only Embedding:
# their packed weights sit in script objects, nested
from torch.ao.quantization import float_qparams_weight_only_qconfig

def recurrent(seed):
    torch.manual_seed(seed)
    m = torch.nn.Module()
    m.lstm, m.gru, m.cell = torch.nn.LSTM(4, 8), torch.nn.GRU(4, 8), torch.nn.GRUCell(4, 8)
    return torch.ao.quantization.quantize_dynamic(m)

def embedding(seed):
    torch.manual_seed(seed)
    m = torch.nn.Sequential(torch.nn.Embedding(10, 4))
    return torch.ao.quantization.quantize_dynamic(m, {torch.nn.Embedding: float_qparams_weight_only_qconfig})

for make in (recurrent, embedding):
    one = weights_fingerprint(make(0))
    assert one is not None and one == weights_fingerprint(make(0)) != weights_fingerprint(make(1)), make.__name__
two = recurrent(0)
two.lstm = recurrent(1).lstm  # one of the three differs
assert weights_fingerprint(two) != weights_fingerprint(recurrent(0))

# a scripted quantized model (its class is not torch.ao's: read by its exported _weight_bias)
# and a user's subclass of a quantized module
def scripted(seed):
    torch.manual_seed(seed)
    m = torch.nn.Sequential(torch.nn.Linear(4, 4))
    return torch.jit.script(torch.ao.quantization.quantize_dynamic(m, {torch.nn.Linear}, dtype=torch.qint8))

holder = torch.nn.Module()
holder.inner = scripted(0)
fs = weights_fingerprint(holder)
holder.inner = scripted(1)  # a scripted child of a plain module
assert fs is not None and weights_fingerprint(holder) not in (fs, None)
assert weights_fingerprint(scripted(0)) == weights_fingerprint(scripted(0)) != weights_fingerprint(scripted(1))

class MyConv(torch.ao.nn.quantized.Conv2d):
    pass

mine = MyConv(3, 4, 3)
fm = weights_fingerprint(mine)
w = mine.weight()
mine.set_weight_bias(torch.quantize_per_tensor(w.dequantize().clamp(-100, 100) + 1.0, w.q_scale(), w.q_zero_point(), w.dtype), mine.bias())
assert fm is not None and weights_fingerprint(mine) != fm

# a user's module with an unrelated _weight_bias method is not called (only scripted modules are)
class Own(torch.nn.Module):
    calls = 0

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(2, 2)

    def _weight_bias(self):
        Own.calls += 1
        return (torch.zeros(1),)

assert weights_fingerprint(Own()) is not None and Own.calls == 0

# a KV cache (a non-persistent buffer a forward pass fills) is state, not weights
class Cached(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(4, 4)
        self.register_buffer("cache", torch.zeros(8), persistent=False)

c = Cached()
fp = weights_fingerprint(c)
c.cache += 1
assert weights_fingerprint(c) == fp

# a module whose buffers cannot be listed counts as unread; the parameters still tell weights apart
class Broken(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(4, 4)

    def modules(self):
        yield self
        raise RuntimeError("a wrapper that breaks half way")

b = Broken()
fb = weights_fingerprint(b)
assert fb is not None and weights_fingerprint(b) == fb
with torch.no_grad():
    b.lin.weight[0, 0] += 1
assert weights_fingerprint(b) not in (fb, None)
print("OK")
"""


def test_buffers_and_quantize_dynamic_weights_are_in_the_fingerprint() -> None:
    """``quantize_dynamic`` keeps a Linear's weights in packed params, neither parameters nor
    buffers: every such model had one fingerprint (other weights at the same step read as the
    same and were not checked). BatchNorm's running statistics count too. A child process, as
    for every quantized read."""
    proc = subprocess.run([sys.executable, "-c", _PACKED_SCRIPT], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("OK"), (proc.returncode, proc.stderr[-2000:])


def _largest_new_allocation(fn, *keep) -> int:
    """The bytes of the largest tensor storage ``fn`` creates (views of ``keep``'s storages are no copy)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    own = {t.untyped_storage().data_ptr() for t in keep}
    largest = [0]

    class Spy(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in out if isinstance(out, (tuple, list)) else [out]:
                if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in own:
                    largest[0] = max(largest[0], t.untyped_storage().nbytes())
            return out

    with Spy():
        fn()
    return largest[0]


def test_a_non_contiguous_parameter_is_read_in_place_or_in_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fingerprint review: a transposed parameter (tied / transposed weights) was copied whole
    before it was read (571 MB of peak memory for a 500 MB tensor). A parameter whose memory is
    its dims in another order is now read where it lies; any other layout in blocks."""
    from collapse_monitor.hooks import _core

    monkeypatch.setattr(_core, "_FP_CHUNK", 1 << 16)  # small chunks: the temporaries of one are 512 KiB
    torch.manual_seed(0)
    base = torch.randn(1024, 1536)
    m = torch.nn.Module()
    m.t = torch.nn.Parameter(torch.randn(1024, 1024).t())  # transposed: a permutation of a contiguous layout
    m.gaps = torch.nn.Parameter(base[:, ::3])  # every third column: no permutation makes it contiguous
    assert not m.t.is_contiguous() and not m.gaps.is_contiguous()
    fp = _core.weights_fingerprint(m)
    assert fp is not None and _core.weights_fingerprint(m) == fp
    largest = _largest_new_allocation(lambda: _core.weights_fingerprint(m), m.t, m.gaps)
    assert largest <= 4 * 8 * (1 << 16), largest  # a few chunk-sized temporaries, never a copy of a 4 MiB tensor

    contiguous = torch.nn.Module()
    contiguous.t = torch.nn.Parameter(m.t.detach().contiguous())  # the same values in another layout
    contiguous.gaps = torch.nn.Parameter(m.gaps.detach().clone())
    assert _core.weights_fingerprint(contiguous) != fp  # the layout is part of the fingerprint
    with torch.no_grad():
        base[:, 1] += 1.0  # between the columns of ``gaps``: not its values
    assert _core.weights_fingerprint(m) == fp
    seen = {fp}
    for name, (i, j) in [("t", (700, 3)), ("gaps", (1000, 311)), ("t", (0, 1023))]:
        with torch.no_grad():
            getattr(m, name)[i, j] += 1e-3
        new = _core.weights_fingerprint(m)
        assert new not in seen, (name, i, j)
        seen.add(new)
    with torch.no_grad():  # a swap in the transposed one, 1000 elements apart in its memory
        m.t[[5, 5], [3, 4]] = m.t[[5, 5], [4, 3]].clone()
    assert _core.weights_fingerprint(m) not in seen


def test_a_swap_at_any_distance_in_one_row_changes_the_fingerprint() -> None:
    """Fingerprint review: position weights from a multiplicative hash repeated with strides
    10946, 39603, 50549, 61495 (28-91 % of the pairs at those distances had equal weights), so
    a swap at such a distance kept both row sums. The weights are now a fixed random
    permutation of 1..2**16: no two positions of a row share one."""
    from collapse_monitor.hooks import _core

    torch.manual_seed(0)
    row = torch.nn.Parameter(torch.randn(_core._FP_ROW), requires_grad=False)
    m = torch.nn.Module()
    m.row = row
    fp = _core.weights_fingerprint(m)
    gen = np.random.default_rng(1)
    strides = (10946, 39603, 50549, 61495, 1, 2, 1 << 15, _core._FP_ROW - 1)
    pairs = [(int(i), int(i) + d) for d in strides for i in np.linspace(0, _core._FP_ROW - d - 1, 10)]
    pairs += [tuple(sorted(int(k) for k in gen.choice(_core._FP_ROW, 2, replace=False))) for _ in range(100)]
    for i, j in pairs:
        with torch.no_grad():
            row[[i, j]] = row[[j, i]].clone()
        assert _core.weights_fingerprint(m) != fp, (i, j - i)
        with torch.no_grad():
            row[[i, j]] = row[[j, i]].clone()
    assert _core.weights_fingerprint(m) == fp

    w = _core._fp_table()
    assert w.shape == (_core._FP_ROW,) and w.min() >= 1
    assert 2**31 * int(w.sum()) < 2**63  # |bits| <= 2**31: a row's weighted sum never overflows int64
    strides = np.unique(np.r_[1:4097, 10946, 39603, 50549, 61495, gen.integers(1, _core._FP_ROW, 2000)])
    worst = max(np.mean(w[: w.size - d] == w[d:]) for d in strides)
    assert worst <= 2**-12, worst  # the old weights: 0.91 at stride 50549
    assert np.unique(w).size == w.size  # a permutation: no stride repeats a weight at all


@pytest.mark.filterwarnings("ignore::UserWarning")  # sparse CSR and nested tensors are beta / prototype
def test_the_weights_fingerprint_reads_sparse_lazy_and_nested_parameters_or_names_them() -> None:
    """Parameters that are not plain strided tensors: never a crash, never None for the model;
    a sparse one is read by its indices and values."""
    from collapse_monitor.hooks._core import weights_fingerprint

    m = torch.nn.Module()
    m.sparse = torch.nn.Parameter(torch.eye(50).to_sparse(), requires_grad=False)
    m.csr = torch.nn.Parameter(torch.eye(20).to_sparse_csr(), requires_grad=False)
    m.lazy = torch.nn.LazyLinear(4)
    m.nested = torch.nn.Parameter(torch.nested.nested_tensor([torch.ones(2, 3), torch.ones(4, 3)]), False)
    fp = weights_fingerprint(m)
    assert fp is not None and weights_fingerprint(m) == fp
    with torch.no_grad():
        m.sparse._values()[7] = 2.0
    assert weights_fingerprint(m) != fp
    fp = weights_fingerprint(m)
    m.csr = torch.nn.Parameter((torch.eye(20) * 3).to_sparse_csr(), requires_grad=False)
    assert weights_fingerprint(m) != fp


def test_a_replicate_fit_joins_the_baseline_and_is_not_stored_twice_on_resume(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """``replicate=True``: a fit that retrains the baseline generation once more (another seed)
    is added to the baseline as a replicate, not checked as generation 1. Resuming that finished
    job (0 steps trained, the same weights at the end of fit again) stores nothing new; the
    next ordinary fit is generation 1, judged against the baseline and its replicate."""
    _trainer(CollapseMonitorCallback(_resume_monitor(tmp_path), evaluate)).fit(Tiny(), _loader())
    torch.manual_seed(1)
    model = Tiny()
    cb = CollapseMonitorCallback(_resume_monitor(tmp_path), evaluate, replicate=True)
    assert "replicate=True" in repr(cb)
    _ckpt_trainer(cb, tmp_path / "rep").fit(model, _loader(seed=4))
    got = cb.last_replicate
    assert cb.last_report is None and cb.last_error is None and got is not None
    model.eval()
    with torch.no_grad():
        acc = float((model(torch.from_numpy(PROBE_X)).argmax(1).numpy() == PROBE_Y).mean())
    assert got["accuracy"].value == pytest.approx(acc) and got["accuracy"].baseline is not None
    mon = _resume_monitor(tmp_path)
    assert [r.generation for r in mon.reports()] == [0] and len(mon.history.baseline(mon.name).replicates) == 1

    cb = CollapseMonitorCallback(_resume_monitor(tmp_path), evaluate, replicate=True)
    with caplog.at_level(logging.INFO, logger="collapse_monitor"):
        trainer = _ckpt_trainer(cb, tmp_path / "rep")
        trainer.fit(Tiny(), _loader(seed=4), ckpt_path=tmp_path / "rep" / "last.ckpt")
    assert trainer.global_step == 6 and cb.last_error is None
    assert "equals replicate 1 of baseline generation 0, already stored" in caplog.text
    assert len(mon.history.baseline(mon.name).replicates) == 1

    cb = CollapseMonitorCallback(_resume_monitor(tmp_path), evaluate)
    _trainer(cb).fit(Tiny(), _loader(seed=5))
    assert cb.last_report.generation == 1
    assert any("1 replicate retrain(s) of generation 0" in n for n in cb.last_report.notes)
    with pytest.raises(cm.ConfigError, match=r"CollapseMonitorCallback\.replicate.*on='fit_end'"):
        CollapseMonitorCallback(mon, evaluate, on="validation_end", replicate=True)
    with pytest.raises(cm.ConfigError, match=r"CollapseMonitorCallback\.replicate"):
        CollapseMonitorCallback(mon, evaluate, replicate="yes")  # type: ignore[arg-type]


def test_a_resumed_replicate_job_is_added_though_another_job_checked_the_same_step(tmp_path: Path) -> None:
    """A replicate job died after its last checkpoint, before its end-of-fit check; meanwhile an
    ordinary job checked generation 1 at the same global step. Resuming the replicate job must
    add its replicate: the checkpoint ledger read the other job's check of "step 6" as this
    job's, skipped it, and no replicate was ever stored."""

    class Dies:
        def __init__(self) -> None:
            self.calls = 0

        def __call__(self, module):
            self.calls += 1
            raise RuntimeError("node lost before the check")

    _trainer(CollapseMonitorCallback(_resume_monitor(tmp_path), evaluate)).fit(Tiny(), _loader())
    torch.manual_seed(1)
    died = CollapseMonitorCallback(_resume_monitor(tmp_path), Dies(), replicate=True)
    _ckpt_trainer(died, tmp_path / "rep").fit(Tiny(), _loader(seed=4))
    assert isinstance(died.last_error, RuntimeError)
    other = CollapseMonitorCallback(_resume_monitor(tmp_path), evaluate)
    _trainer(other, max_epochs=2).fit(Tiny(), _loader(seed=5))
    assert other.last_report.generation == 1 and "global step 6" in other.last_report.notes[0]

    cb = CollapseMonitorCallback(_resume_monitor(tmp_path), evaluate, replicate=True)
    trainer = _ckpt_trainer(cb, tmp_path / "rep")
    trainer.fit(Tiny(), _loader(seed=4), ckpt_path=tmp_path / "rep" / "last.ckpt")
    assert trainer.global_step == 6 and cb.last_error is None and cb.last_replicate is not None
    mon = _resume_monitor(tmp_path)
    assert len(mon.history.baseline(mon.name).replicates) == 1
    assert [r.generation for r in mon.reports()] == [0, 1]
    with pytest.raises(cm.ConfigError, match=r"CollapseMonitorCallback\.replicate"):
        CollapseMonitorCallback(mon, evaluate, on="validation_end", replicate=np.True_)


@pytest.mark.parametrize("between", ["test", "validate", "predict"])
def test_a_checkpoint_saved_after_test_validate_or_predict_still_says_what_was_checked(
    tmp_path: Path, between: str
) -> None:
    """Audit (stop 41): setup() started a new ledger for every stage, so `fit(); test();
    save_checkpoint()` wrote a checkpoint that said nothing was checked, and resuming it for
    zero steps recorded the same weights as generation 1."""
    cb = CollapseMonitorCallback(_resume_monitor(tmp_path), evaluate)
    trainer = _ckpt_trainer(cb, tmp_path / "ckpt")
    module = Tiny()
    trainer.fit(module, _loader())
    assert cb.last_report is not None and cb.last_report.generation == 0
    loader = _loader(60, seed=9)
    if between == "test":
        module.test_step = module.validation_step  # type: ignore[method-assign]
        trainer.test(module, loader, verbose=False)
    elif between == "validate":
        trainer.validate(module, loader, verbose=False)
    else:
        trainer.predict(module, torch.utils.data.DataLoader(torch.randn(8, D), batch_size=4))
    trainer.save_checkpoint(tmp_path / "after.ckpt")
    saved = torch.load(tmp_path / "after.ckpt", weights_only=False)["callbacks"][cb.state_key]
    assert saved["checked_step"] == 6 and saved["checked_generation"] == 0
    mon = _resume_monitor(tmp_path)
    _ckpt_trainer(CollapseMonitorCallback(mon, evaluate), tmp_path / "ckpt").fit(
        Tiny(), _loader(), ckpt_path=tmp_path / "after.ckpt"
    )
    assert [r.generation for r in mon.reports()] == [0]


def test_a_resume_with_nothing_to_train_does_not_say_validation_is_missing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Audit (stop 41): on="validation_end" and a finished job resumed for zero steps warned that
    no validation loop existed and advised on='fit_end'; no validation was due."""
    cb = CollapseMonitorCallback(_resume_monitor(tmp_path), evaluate, on="validation_end")
    _ckpt_trainer(cb, tmp_path / "ckpt").fit(Tiny(), _loader(), _loader(60, seed=9))
    mon = _resume_monitor(tmp_path)
    assert [r.generation for r in mon.reports()] == [0, 1]  # one per epoch's validation
    with caplog.at_level(logging.WARNING, logger="collapse_monitor.hooks"):
        _ckpt_trainer(CollapseMonitorCallback(mon, evaluate, on="validation_end"), tmp_path / "ckpt").fit(
            Tiny(), _loader(), _loader(60, seed=9), ckpt_path=tmp_path / "ckpt" / "last.ckpt"
        )
    assert [r.generation for r in mon.reports()] == [0, 1]
    assert not any("no validation ran" in r.getMessage() for r in caplog.records), caplog.text
