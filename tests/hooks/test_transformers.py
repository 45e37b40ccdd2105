"""collapse_monitor.hooks.transformers.CollapseMonitorCallback on a real (tiny) HF Trainer run.

The model is a 2-layer BertForSequenceClassification with hidden size 32 built from a config:
no download, no tokenizer (integer input_ids)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import collapse_monitor as cm

transformers = pytest.importorskip("transformers")
torch = pytest.importorskip("torch")
pytest.importorskip("accelerate")

from collapse_monitor.hooks.transformers import CollapseMonitorCallback  # noqa: E402

K, VOCAB, SEQ = 3, 40, 8


def _examples(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The label is the token range of the first token: learnable in a few steps."""
    g = np.random.default_rng(seed)
    y = g.choice(K, size=n, p=[0.5, 0.4, 0.1])
    ids = g.integers(1, VOCAB, size=(n, SEQ))
    ids[:, 0] = 1 + y * 10 + g.integers(0, 10, size=n)
    return ids, y


PROBE_IDS, PROBE_Y = _examples(90, seed=5)


class DS(torch.utils.data.Dataset):
    def __init__(self, n: int, seed: int) -> None:
        self.ids, self.y = _examples(n, seed)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i):
        return {"input_ids": torch.tensor(self.ids[i]), "labels": torch.tensor(int(self.y[i]))}


def _model():
    cfg = transformers.BertConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=16,
        num_labels=K,
    )
    torch.manual_seed(0)
    return transformers.BertForSequenceClassification(cfg)


seen_state: list[tuple[bool, bool]] = []


def evaluate(model) -> cm.Observation:
    seen_state.append((model.training, torch.is_grad_enabled()))
    logits = model(input_ids=torch.from_numpy(PROBE_IDS)).logits
    return cm.Observation(predictions=logits.argmax(-1))


def _trainer(tmp_path: Path, cb, *, evaluate_each_epoch: bool = False, epochs: int = 1):
    return _ckpt_trainer(
        tmp_path / "out", cb, evaluate_each_epoch=evaluate_each_epoch, epochs=epochs, save_strategy="no"
    )


def test_train_produces_a_report_and_an_mlflow_run(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mon = cm.CollapseMonitor(
        "hf-tiny",
        reference=cm.Reference(labels=PROBE_Y),
        sinks=[cm.MLflowSink(tracking_uri=uri, evidently=False)],
        home=tmp_path / "home",
    )
    cb = CollapseMonitorCallback(
        mon,
        evaluate,
        provenance=lambda args, state, model: cm.Provenance(
            synthetic_fraction=0.5, parent_run_id=f"steps-{state.global_step}"
        ),
    )
    seen_state.clear()
    trainer = _trainer(tmp_path, cb)
    trainer.train()
    rep = cb.last_report
    assert cb.last_error is None and rep is not None and rep is mon.last_report
    assert rep.generation == 0 and rep.errors == () and rep.run_id
    assert rep.provenance == cm.Provenance(synthetic_fraction=0.5, parent_run_id="steps-4")
    assert {"accuracy", "class_recall.2", "worst_class_recall"} <= set(rep.metrics)
    assert seen_state == [(False, False)] and trainer.model.training  # mode restored

    from mlflow import MlflowClient

    run = MlflowClient(tracking_uri=uri).get_run(rep.run_id)
    assert run.data.tags["collapse.monitor"] == "hf-tiny"
    assert run.data.tags["collapse.parent_run_id"] == "steps-4"
    assert run.data.metrics["collapse.accuracy"] == pytest.approx(rep.value("accuracy"))


def test_on_evaluate_and_contained_failures(tmp_path: Path) -> None:
    class Down:
        name = "down"

        def emit(self, report, context=None):
            raise ConnectionError("sink is down")

    mon = cm.CollapseMonitor("hf-eval", reference=cm.Reference(labels=PROBE_Y), sinks=[Down()], home=tmp_path)
    cb = CollapseMonitorCallback(mon, evaluate, on_evaluate=True, on_train_end=False)
    out = _trainer(tmp_path, cb, evaluate_each_epoch=True, epochs=2).train()
    assert out.global_step == 8
    assert [r.generation for r in mon.reports()] == [0, 1]  # one check per evaluation phase
    assert any("sink is down" in e for e in cb.last_report.errors) and mon.spool.count("down") == 2

    def broken(model):
        raise RuntimeError("no probe")

    cb2 = CollapseMonitorCallback(mon, broken)
    assert _trainer(tmp_path, cb2).train().global_step == 4  # training completed
    assert isinstance(cb2.last_error, RuntimeError) and cb2.last_report is None
    assert len(mon.reports()) == 2


def test_the_same_weights_are_checked_once(tmp_path: Path) -> None:
    """on_evaluate with on_train_end: the last evaluation and the end of training see the same
    step, and a trainer.evaluate() afterwards too: one generation per distinct set of weights."""
    mon = cm.CollapseMonitor("hf-once", reference=cm.Reference(labels=PROBE_Y), sinks=[], home=tmp_path)
    cb = CollapseMonitorCallback(mon, evaluate, on_evaluate=True)
    trainer = _trainer(tmp_path, cb, evaluate_each_epoch=True, epochs=2)
    trainer.train()
    trainer.evaluate()
    assert [r.generation for r in mon.reports()] == [0, 1]  # epoch 1, epoch 2 (= train end)
    trainer.train()  # trained again from scratch: the same step count, other weights
    assert [r.generation for r in mon.reports()] == [0, 1, 2, 3]


def test_the_best_model_loaded_at_the_end_is_checked(tmp_path: Path) -> None:
    """Hooks audit (2026-12-06): with ``load_best_model_at_end`` the Trainer loads an earlier
    checkpoint into the same model at the last step; the end-of-training check was skipped as
    "the same weights", and the newest generation described weights the Trainer threw away."""
    mon = cm.CollapseMonitor("hf-best", reference=cm.Reference(labels=PROBE_Y), sinks=[], home=tmp_path)
    cb = CollapseMonitorCallback(mon, evaluate, on_evaluate=True)
    trainer = _ckpt_trainer(
        tmp_path / "out",
        cb,
        epochs=3,
        evaluate_each_epoch=True,
        load_best_model_at_end=True,
        metric_for_best_model="loss",
        greater_is_better=True,  # the worst loss "wins": the first epoch's checkpoint, not the last
    )
    trainer.train()
    assert trainer.state.best_model_checkpoint.endswith("checkpoint-4"), trainer.state.best_model_checkpoint
    reports = mon.reports()
    assert [r.generation for r in reports] == [0, 1, 2, 3]  # epochs 1-3, then the loaded best weights
    final = evaluate(trainer.model).predictions
    assert reports[-1].value("accuracy") == pytest.approx(float(np.mean(np.asarray(final) == PROBE_Y)))
    assert reports[-1].value("accuracy") == reports[0].value("accuracy")  # step 4's weights again


def test_a_failed_evaluation_check_is_tried_again_at_train_end(tmp_path: Path) -> None:
    """The last evaluation and the end of training share a step; when the evaluation's check
    fails (a probe store timing out once), the end-of-training check must still run."""
    calls = []

    def flaky(model) -> cm.Observation:
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionError("probe store timed out")
        return evaluate(model)

    mon = cm.CollapseMonitor("hf-retry", reference=cm.Reference(labels=PROBE_Y), sinks=[], home=tmp_path)
    cb = CollapseMonitorCallback(mon, flaky, on_evaluate=True)
    _trainer(tmp_path, cb, evaluate_each_epoch=True).train()
    assert len(calls) == 2 and [r.generation for r in mon.reports()] == [0] and cb.last_error is None


# -- resuming from a checkpoint ----------------------------------------------------------------


def _ckpt_trainer(
    out: Path, cb, *, epochs: int = 1, evaluate_each_epoch: bool = False, extra=(), save_strategy="epoch", **kw
):
    """A Trainer that saves a checkpoint (``out/checkpoint-<step>``) at every epoch end (with
    ``save_strategy="no"``: never)."""
    args = transformers.TrainingArguments(
        output_dir=str(out),
        per_device_train_batch_size=16,
        num_train_epochs=epochs,
        learning_rate=1e-2,
        report_to="none",
        save_strategy=save_strategy,
        logging_strategy="no",
        use_cpu=True,
        disable_tqdm=True,
        eval_strategy="epoch" if evaluate_each_epoch else "no",
        seed=0,
        **kw,
    )
    return transformers.Trainer(
        model=_model(),
        args=args,
        train_dataset=DS(64, 1),
        eval_dataset=DS(32, 2) if evaluate_each_epoch else None,
        callbacks=[cb, *extra],
    )


def _resume_monitor(tmp_path: Path) -> cm.CollapseMonitor:
    """A new monitor object on the same home each time: what a new process of the job builds."""
    return cm.CollapseMonitor("hf-resume", reference=cm.Reference(labels=PROBE_Y), sinks=[], home=tmp_path / "home")


def _generations(tmp_path: Path) -> list[int]:
    return [r.generation for r in _resume_monitor(tmp_path).reports()]


def test_resuming_a_finished_run_records_no_extra_generation(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """train(resume_from_checkpoint=...) of a finished run trains 0 steps and ends training again.
    checkpoint-4 of the first job was saved before its end-of-training check (the history has a
    check newer than it); the second job's on_evaluate check ran before its save (the checkpoint
    says so). Neither may add a generation, also with restore_callback_states_from_checkpoint."""
    import json
    import logging

    cb = CollapseMonitorCallback(_resume_monitor(tmp_path), evaluate)
    assert _ckpt_trainer(tmp_path / "a", cb).train().global_step == 4
    cb = CollapseMonitorCallback(_resume_monitor(tmp_path), evaluate, on_evaluate=True)
    _ckpt_trainer(tmp_path / "b", cb, evaluate_each_epoch=True).train()
    assert _generations(tmp_path) == [0, 1]  # job b: the evaluation and the end of training are one check

    cases = [
        ("a", {}, {}, "newer than that checkpoint"),
        ("b", {"on_evaluate": True}, {"evaluate_each_epoch": True}, "before its checkpoint was saved"),
        ("a", {}, {"restore_callback_states_from_checkpoint": True}, "newer than that checkpoint"),
    ]
    for job, cb_opts, trainer_opts, why in cases:
        mon = _resume_monitor(tmp_path)
        cb = CollapseMonitorCallback(mon, evaluate, **cb_opts)
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="collapse_monitor.hooks"):
            trainer = _ckpt_trainer(tmp_path / job, cb, **trainer_opts)
            assert trainer.train(resume_from_checkpoint=str(tmp_path / job / "checkpoint-4")).global_step == 4
        assert _generations(tmp_path) == [0, 1], (job, trainer_opts)
        assert cb.last_report is None and cb.last_error is None
        skipped = [r.getMessage() for r in caplog.records if "check skipped" in r.getMessage()]
        assert len(skipped) == 1 and "step 4" in skipped[0] and why in skipped[0], caplog.text

    state = json.loads((tmp_path / "b" / "checkpoint-4" / "trainer_state.json").read_text())
    assert state["stateful_callbacks"]["collapse_monitor"]["hf-resume"]["checked_step"] == 4
    assert state["stateful_callbacks"]["collapse_monitor"]["hf-resume"]["checked_generation"] == 1


class Crash(transformers.TrainerCallback):
    """Dies at a given step, like a preempted node: train() raises, on_train_end never runs."""

    def __init__(self, at_step: int) -> None:
        self.at_step = at_step

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step == self.at_step:
            raise RuntimeError("node lost")


def test_resuming_an_unfinished_run_checks_once_at_the_end(tmp_path: Path) -> None:
    """A 2-epoch run that died in epoch 2 is resumed from checkpoint-4: it trains on and is
    checked exactly once, as the next generation."""
    mon = _resume_monitor(tmp_path)
    _ckpt_trainer(tmp_path / "earlier", CollapseMonitorCallback(mon, evaluate)).train()  # generation 0
    with pytest.raises(RuntimeError, match="node lost"):
        _ckpt_trainer(tmp_path / "job", CollapseMonitorCallback(mon, evaluate), epochs=2, extra=[Crash(6)]).train()
    assert _generations(tmp_path) == [0]

    cb = CollapseMonitorCallback(_resume_monitor(tmp_path), evaluate)
    out = _ckpt_trainer(tmp_path / "job", cb, epochs=2).train(
        resume_from_checkpoint=str(tmp_path / "job" / "checkpoint-4")
    )
    assert out.global_step == 8
    assert cb.last_error is None and cb.last_report is not None and cb.last_report.generation == 1
    assert _generations(tmp_path) == [0, 1]


def test_resuming_a_finished_run_that_never_checked_checks_it(tmp_path: Path) -> None:
    """The run that saved the last checkpoint never got its check in (the probe store was down):
    the resumed run checks those weights; a checkpoint from before this state existed resumes and
    is checked as before."""
    import json
    import shutil

    def broken(model):
        raise OSError("probe store unreachable")

    cb = CollapseMonitorCallback(_resume_monitor(tmp_path), broken)
    _ckpt_trainer(tmp_path / "a", cb).train()
    assert isinstance(cb.last_error, OSError) and _generations(tmp_path) == []

    ckpt = tmp_path / "a" / "checkpoint-4"
    cb = CollapseMonitorCallback(_resume_monitor(tmp_path), evaluate)
    _ckpt_trainer(tmp_path / "a", cb).train(resume_from_checkpoint=str(ckpt))
    assert cb.last_report is not None and _generations(tmp_path) == [0]

    old = tmp_path / "old" / "checkpoint-4"  # what a checkpoint of an older collapse-monitor holds
    shutil.copytree(ckpt, old)
    state = json.loads((old / "trainer_state.json").read_text())
    del state["stateful_callbacks"]["collapse_monitor"]
    (old / "trainer_state.json").write_text(json.dumps(state))
    cb = CollapseMonitorCallback(_resume_monitor(tmp_path), evaluate)
    assert _ckpt_trainer(tmp_path / "old", cb).train(resume_from_checkpoint=str(old)).global_step == 4
    assert cb.last_error is None and _generations(tmp_path) == [0, 1]  # no state: checked, as it always was


def test_a_replicate_train_joins_the_baseline_not_the_generations(tmp_path: Path) -> None:
    """``replicate=True``: the trained model is added to the baseline as a replicate at the end
    of training (``last_replicate``), no generation is added, and the options that would add a
    replicate per evaluation are refused."""
    mon = _resume_monitor(tmp_path)
    _trainer(tmp_path / "base", CollapseMonitorCallback(mon, evaluate)).train()
    cb = CollapseMonitorCallback(_resume_monitor(tmp_path), evaluate, replicate=True)
    assert "replicate=True" in repr(cb)
    trainer = _trainer(tmp_path / "rep", cb, epochs=2)  # another retrain: other weights
    trainer.train()
    got = cb.last_replicate
    assert cb.last_report is None and cb.last_error is None and got is not None
    trainer.model.eval()
    with torch.no_grad():
        preds = trainer.model(input_ids=torch.from_numpy(PROBE_IDS)).logits.argmax(-1).numpy()
    assert got["accuracy"].value == pytest.approx(float((preds == PROBE_Y).mean()))
    assert got["accuracy"].baseline == pytest.approx(mon.reports()[0].value("accuracy"))
    assert _generations(tmp_path) == [0] and len(mon.history.baseline(mon.name).replicates) == 1
    for opts in ({"on_evaluate": True}, {"on_train_end": False}, {"replicate": "yes"}):
        with pytest.raises(cm.ConfigError, match=r"CollapseMonitorCallback\.replicate"):
            CollapseMonitorCallback(mon, evaluate, **{"replicate": True, **opts})


def test_the_eval_on_start_sanity_check_is_not_a_generation(tmp_path: Path) -> None:
    """Audit (stop 41): with on_evaluate=True, the Trainer's `eval_on_start` evaluation (a sanity
    check of the weights training starts from, before any step) was checked: on a new monitor
    the untrained weights became the baseline."""
    mon = cm.CollapseMonitor("hf-start", reference=cm.Reference(labels=PROBE_Y), sinks=[], home=tmp_path)
    cb = CollapseMonitorCallback(mon, evaluate, on_evaluate=True, on_train_end=False)
    out = _ckpt_trainer(tmp_path / "out", cb, evaluate_each_epoch=True, save_strategy="no", eval_on_start=True).train()
    assert out.global_step == 4
    reports = mon.reports()
    assert [r.generation for r in reports] == [0]  # the end-of-epoch evaluation only


def test_a_callback_that_would_check_nothing_is_refused(tmp_path: Path) -> None:
    mon = cm.CollapseMonitor("hf-none", reference=cm.Reference(labels=PROBE_Y), sinks=[], home=tmp_path)
    with pytest.raises(cm.ConfigError, match="both off"):
        CollapseMonitorCallback(mon, evaluate, on_evaluate=False, on_train_end=False)
