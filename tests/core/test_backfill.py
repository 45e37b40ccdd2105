"""An older generation checked after a newer one (a backfill, an old checkpoint re-run) is
reported but does not drive the alerts: a healthy backfill used to send "resolved" for the
open incident of a collapsed newest generation, and the next check opened a second one."""

from __future__ import annotations

from pathlib import Path

import collapse_monitor as cm

HEALTHY = [0] * 970 + [1] * 30
COLLAPSED = [0] * 1000


def _monitor(home: Path, receiver) -> cm.CollapseMonitor:
    hook = cm.Webhook(receiver.url_for("/hook"), name="oncall")
    return cm.CollapseMonitor("bf", reference=cm.Reference(labels=HEALTHY), sinks=[], home=home, alerts=[hook])


def _kinds(receiver) -> list[str]:
    return [r.json()["type"].rsplit(".", 1)[1] for r in receiver.requests]


def test_a_healthy_backfill_does_not_resolve_the_open_incident(tmp_path: Path, http_receiver) -> None:
    mon = _monitor(tmp_path, http_receiver)
    mon.check(cm.Observation(predictions=HEALTHY, generation=0))
    fired = mon.check(cm.Observation(predictions=COLLAPSED, generation=5))
    assert fired.open_alerts == {"early_collapse": "warning"} and _kinds(http_receiver) == ["firing"]
    backfill = mon.check(cm.Observation(predictions=HEALTHY, generation=3))
    assert backfill.stage is cm.Stage.HEALTHY and backfill.alerts == ()
    assert backfill.open_alerts == {"early_collapse": "warning"}  # still open: generation 5 collapsed
    assert any("older than the newest checked (5)" in n for n in backfill.notes), backfill.notes
    nxt = mon.check(cm.Observation(predictions=COLLAPSED))
    assert nxt.generation == 6 and nxt.alerts == ()  # the same incident, not a second one
    assert _kinds(http_receiver) == ["firing"]
    again = mon.check(cm.Observation(predictions=COLLAPSED, generation=6))
    assert any("generation 6 checked again: this report replaces the stored one" in n for n in again.notes)


def test_a_chain_rerun_from_its_baseline_drives_the_alerts_again(tmp_path: Path, http_receiver) -> None:
    """Backwards numbering after the baseline is checked again is a chain re-run from scratch:
    its generations are the newest, whatever the old chain's numbers were."""
    mon = _monitor(tmp_path, http_receiver)
    for g, preds in enumerate([HEALTHY, HEALTHY, HEALTHY]):
        mon.check(cm.Observation(predictions=preds, generation=g))
    mon.check(cm.Observation(predictions=HEALTHY, generation=0))  # re-baseline: a new chain
    rerun = mon.check(cm.Observation(predictions=COLLAPSED, generation=1))
    assert not any("older than the newest" in n for n in rerun.notes), rerun.notes
    assert [(a.rule, a.status) for a in rerun.alerts] == [("early_collapse", "firing")]


def test_watch_async_generators_and_a_bare_decorator() -> None:
    """An async trainer was checked on its coroutine object before training ran; a generator
    likewise; ``@mon.watch`` without parentheses was a bare TypeError at the first call."""
    import asyncio

    import pytest

    ref = cm.Reference(labels=HEALTHY)
    seen: list[object] = []

    def evaluate(model: object) -> cm.Observation:
        seen.append(model)
        return cm.Observation(predictions=HEALTHY)

    import tempfile

    mon = cm.CollapseMonitor("w", reference=ref, sinks=[], home=tempfile.mkdtemp())

    @mon.watch(evaluate=evaluate)
    async def train_async(x: int) -> str:
        await asyncio.sleep(0)
        return f"model-{x}"

    assert asyncio.run(train_async(3)) == "model-3"
    assert seen == ["model-3"] and mon.last_report is not None and mon.last_report.generation == 0

    with pytest.raises(cm.ConfigError, match="is a generator"):

        @mon.watch(evaluate=evaluate)
        def train_steps():
            yield 1

    @mon.watch
    def train_bare() -> str:
        return "model"

    with pytest.raises(cm.ConfigError, match=r"@mon.watch\(evaluate="):
        train_bare()


def test_user_inputs_from_the_audit(tmp_path: Path) -> None:
    import pytest
    import torch

    with pytest.raises(cm.InputError) as info:  # a raw NotImplementedError from torch before
        cm.Observation(embeddings=torch.empty(3, 8, device="meta"))
    assert info.value.field == "observation.embeddings" and "meta device" in str(info.value)
    with pytest.raises(cm.InputError, match="ordered list of strings"):  # order = hash seed
        cm.Reference(texts={"a b c", "d e f"})
    # a rare class of the priors with no probe item: said, not silently unmeasured
    ref = cm.Reference(labels=[0] * 90 + [1] * 10, class_priors={0: 0.9, 1: 0.07, 2: 0.03})
    mon = cm.CollapseMonitor("p", reference=ref, sinks=[], home=tmp_path)
    report = mon.check(cm.Observation(predictions=[0] * 90 + [1] * 10))
    assert any("rare class(es) 2 have no probe items" in n for n in report.notes), report.notes
    assert report.notes.count("baseline generation") == 0  # said once, as "generation 0 is the baseline"
    # one line, however many classes
    many = cm.Reference(labels=[i % 2000 for i in range(20_000)])
    big = cm.CollapseMonitor("big", reference=many, sinks=[], home=tmp_path).check(
        cm.Observation(predictions=[i % 2000 for i in range(20_000)])
    )
    assert len(big.metrics) > 2000 and len(repr(big)) < 400 and "\n" not in repr(big), repr(big)[:500]


def test_an_unseen_label_says_how_to_count_it() -> None:
    import pytest

    ref = cm.Reference(labels=[0, 1] * 10)
    with pytest.raises(cm.InputError, match=r"class_priors=\.\.\.\) with a prior of 0"):
        cm.Observation(predictions=[0, 1] * 9 + [7, 7]).validate_against(ref)
    with_prior = cm.Reference(labels=[0, 1] * 10, class_priors={0: 0.5, 1: 0.5, 7: 0})
    cm.Observation(predictions=[0, 1] * 9 + [7, 7]).validate_against(with_prior)  # as the message says


def test_pandas_frames_and_label_errors_say_where() -> None:
    """A DataFrame with pandas' nullable Float64 dtype was refused as dtype object; a label
    column as a DataFrame got a shape error with no hint; a bad label among thousands was not
    located."""
    import numpy as np
    import pandas as pd
    import pytest

    x = pd.DataFrame(np.random.default_rng(0).normal(size=(20, 3))).astype("Float64")
    ref = cm.Reference(embeddings=x)
    assert ref.embeddings.dtype == np.float32 and np.allclose(ref.embeddings, x.to_numpy(dtype=float))
    x.iloc[3, 1] = pd.NA
    with pytest.raises(cm.InputError, match="1 NaN or infinite value"):
        cm.Reference(embeddings=x)
    with pytest.raises(cm.InputError, match=r"pass x\.ravel\(\)"):
        cm.Reference(labels=pd.DataFrame({"y": [0, 1] * 5}))
    with pytest.raises(cm.InputError, match=r"got NoneType \(item 2\)") as info:
        cm.Reference(labels=[0, 1, None, 1])
    assert info.value.field == "reference.labels"
