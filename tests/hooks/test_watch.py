"""@mon.watch(evaluate=...) and `with mon.retrain() as r` (collapse_monitor/monitor.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import collapse_monitor as cm

LABELS = np.array([0] * 60 + [1] * 30 + [2] * 10)


class Model:
    """A stand-in 'trained model': predicts the probe labels, forgetting class 2 if told to."""

    def __init__(self, forget_rare: bool = False) -> None:
        self.forget_rare = forget_rare

    def predict(self) -> np.ndarray:
        out = LABELS.copy()
        if self.forget_rare:
            out[out == 2] = 0
        return out


def _mon(tmp_path: Path, **kw) -> cm.CollapseMonitor:
    return cm.CollapseMonitor("watched", reference=cm.Reference(labels=LABELS), sinks=[], home=tmp_path, **kw)


def test_return_value_passes_through_and_report_is_kept(tmp_path: Path) -> None:
    mon = _mon(tmp_path)
    seen = []

    def evaluate(model: Model) -> cm.Observation:
        seen.append(model)
        return cm.Observation(predictions=model.predict())

    @mon.watch(evaluate=evaluate)
    def retrain(forget: bool) -> Model:
        """Docstring survives."""
        return Model(forget)

    m0 = retrain(False)
    assert isinstance(m0, Model) and seen == [m0]  # the very object, unchanged
    assert retrain.__doc__ == "Docstring survives." and retrain.__name__ == "retrain"
    r0 = mon.last_report
    assert r0 is not None and r0.generation == 0 and r0.is_baseline and r0.stage is cm.Stage.HEALTHY
    m1 = retrain(True)
    assert seen[-1] is m1
    assert mon.last_report.generation == 1 and mon.last_report.value("class_recall.2") == 0.0
    assert mon.last_error is None


def test_generation_and_provenance_from_values_and_callables(tmp_path: Path) -> None:
    mon = _mon(tmp_path)

    @mon.watch(
        evaluate=lambda m: cm.Observation(predictions=m.predict()),
        generation=lambda gen, frac: gen,
        provenance=lambda gen, frac: cm.Provenance(synthetic_fraction=frac, parent_run_id=f"run-{gen}"),
    )
    def retrain(gen: int, frac: float) -> Model:
        return Model()

    retrain(0, 0.0)
    retrain(5, frac=0.75)
    rep = mon.last_report
    assert rep.generation == 5
    assert rep.provenance == cm.Provenance(synthetic_fraction=0.75, parent_run_id="run-5")
    assert rep.value("synthetic_fraction") == 0.75

    mon2 = _mon(tmp_path / "b")
    prov = cm.Provenance(synthetic_fraction=0.5)
    wrapped = mon2.watch(evaluate=lambda m: cm.Observation(predictions=m.predict()), generation=3, provenance=prov)(
        lambda: Model()
    )
    wrapped()
    assert mon2.last_report.generation == 3 and mon2.last_report.provenance is prov


def test_failing_evaluate_keeps_the_training_result(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    mon = _mon(tmp_path)

    def evaluate(model: Model) -> cm.Observation:
        raise RuntimeError("probe file vanished")

    trained = Model()
    out = mon.watch(evaluate=evaluate)(lambda: trained)()
    assert out is trained
    assert isinstance(mon.last_error, RuntimeError) and mon.reports() == []
    assert "probe file vanished" in caplog.text

    # bad input is contained too, and a non-Observation return value is refused by name
    assert mon.watch(evaluate=lambda m: cm.Observation(predictions=[0, 1]))(lambda: trained)() is trained
    assert isinstance(mon.last_error, cm.InputError) and mon.last_error.field == "observation.predictions"
    assert mon.watch(evaluate=lambda m: {"predictions": LABELS})(lambda: trained)() is trained
    assert isinstance(mon.last_error, cm.InputError) and mon.last_error.field == "evaluate"

    # strict mode re-raises, after training finished
    with pytest.raises(RuntimeError, match="vanished"):
        mon.watch(evaluate=evaluate, strict=True)(lambda: trained)()


def test_the_training_function_own_exception_propagates(tmp_path: Path) -> None:
    mon = _mon(tmp_path)
    calls = []

    @mon.watch(evaluate=lambda m: calls.append(m) or cm.Observation(predictions=LABELS))
    def retrain() -> Model:
        raise ValueError("OOM")

    with pytest.raises(ValueError, match="OOM"):
        retrain()
    assert calls == [] and mon.reports() == []


def test_failing_sink_is_recorded_not_raised(tmp_path: Path) -> None:
    class Down:
        name = "down"

        def emit(self, report, context=None):
            raise ConnectionError("tracking server unreachable")

    mon = cm.CollapseMonitor("watched", reference=cm.Reference(labels=LABELS), sinks=[Down()], home=tmp_path)
    trained = Model()
    assert mon.watch(evaluate=lambda m: cm.Observation(predictions=m.predict()))(lambda: trained)() is trained
    assert mon.last_error is None
    assert mon.last_report is not None and any("unreachable" in e for e in mon.last_report.errors)
    assert mon.spool.count("down") == 1  # kept for redelivery


def test_the_hooks_own_strict_decides_and_a_strict_failure_carries_its_recorded_report(tmp_path: Path) -> None:
    """Hooks audit (2026-12-06): ``watch(strict=True)`` on a monitor that is not strict did not
    raise for a failing sink (the sink step read the monitor's ``strict``); a strict monitor
    behind ``watch(strict=False)`` (or a training callback) raised after recording the check,
    so the hook saw no report and a retry checked the same weights as a new generation."""

    class Down:
        name = "down"

        def emit(self, report, context=None):
            raise ConnectionError("tracking server unreachable")

    def make(home: Path, strict: bool) -> cm.CollapseMonitor:
        ref = cm.Reference(labels=LABELS)
        return cm.CollapseMonitor("watched", reference=ref, sinks=[Down()], home=home, strict=strict)

    evaluate = lambda m: cm.Observation(predictions=m.predict())  # noqa: E731
    lenient = make(tmp_path / "a", strict=False)
    with pytest.raises(cm.SinkError) as info:
        lenient.watch(evaluate=evaluate, strict=True)(Model)()
    assert info.value.report is not None and info.value.report.generation == 0
    assert info.value.report is lenient.last_report and [r.generation for r in lenient.reports()] == [0]

    strict = make(tmp_path / "b", strict=True)
    trained = Model()
    assert strict.watch(evaluate=evaluate, strict=False)(lambda: trained)() is trained
    assert strict.last_error is None and strict.last_report is not None
    assert any("unreachable" in e for e in strict.last_report.errors)
    with pytest.raises(cm.SinkError) as info:  # the monitor's own strict still holds for check()
        strict.check(cm.Observation(predictions=LABELS))
    assert info.value.report.generation == 1 and [r.generation for r in strict.reports()] == [0, 1]


def test_watch_refuses_a_non_callable_evaluate(tmp_path: Path) -> None:
    with pytest.raises(cm.ConfigError) as err:
        _mon(tmp_path).watch(evaluate=None)  # type: ignore[arg-type]
    assert err.value.key == "watch.evaluate"


def test_raising_generation_callable_is_contained(tmp_path: Path) -> None:
    mon = _mon(tmp_path)
    trained = Model()

    def generation(*a):
        raise KeyError("no generation tag")

    out = mon.watch(evaluate=lambda m: cm.Observation(predictions=m.predict()), generation=generation)(
        lambda: trained
    )()
    assert out is trained and isinstance(mon.last_error, KeyError)


def test_retrain_context_manager(tmp_path: Path) -> None:
    mon = _mon(tmp_path)
    with mon.retrain(provenance=cm.Provenance(synthetic_fraction=0.0)) as r:
        model = Model()
        rep = r.observe(cm.Observation(predictions=model.predict()))
    assert rep is r.report is mon.last_report and rep.generation == 0
    assert rep.provenance.synthetic_fraction == 0.0

    with mon.retrain(generation=4) as r:  # a callable builds the observation lazily, contained
        r.observe(lambda: cm.Observation(predictions=Model(forget_rare=True).predict()))
    assert r.report.generation == 4 and r.report.value("class_recall.2") == 0.0

    with mon.retrain() as r:
        r.observe(lambda: 1 / 0)
    assert r.report is None and isinstance(mon.last_error, ZeroDivisionError)

    with pytest.raises(RuntimeError, match="diverged"), mon.retrain() as r:
        raise RuntimeError("diverged")  # the training's own failure is not ours to hide
    assert [x.generation for x in mon.reports()] == [0, 4]


@pytest.mark.parametrize("generation", [-1, "7", 2.9, True])
def test_a_bad_generation_value_is_a_config_error_at_decoration(tmp_path: Path, generation) -> None:
    mon = _mon(tmp_path)
    with pytest.raises(cm.ConfigError) as err:
        mon.watch(evaluate=lambda m: cm.Observation(predictions=m.predict()), generation=generation)
    assert err.value.key == "watch.generation"
    with pytest.raises(cm.ConfigError) as err, mon.retrain(generation=generation):
        pass
    assert err.value.key == "retrain.generation"


@pytest.mark.parametrize(
    ("provenance", "key"), [("human", "watch.provenance"), ({"bogus": 1}, "watch.provenance.bogus")]
)
def test_a_bad_provenance_value_is_a_config_error_at_decoration(tmp_path: Path, provenance, key) -> None:
    mon = _mon(tmp_path)
    with pytest.raises(cm.ConfigError) as err:
        mon.watch(evaluate=lambda m: cm.Observation(predictions=m.predict()), provenance=provenance)
    assert err.value.key == key


def test_provenance_as_a_mapping_is_accepted(tmp_path: Path) -> None:
    mon = _mon(tmp_path)

    @mon.watch(evaluate=lambda m: cm.Observation(predictions=m.predict()), provenance={"synthetic_fraction": 0.25})
    def retrain() -> Model:
        return Model()

    retrain()
    assert mon.last_error is None and mon.last_report.provenance.synthetic_fraction == 0.25
    assert not any("provenance given to the hook" in n for n in mon.last_report.notes)


def test_a_hook_provenance_the_observation_overrides_is_noted(tmp_path: Path) -> None:
    """Provenance audit (2026-12-06): the Observation's own provenance wins over the hook's, and
    nothing said the hook's was dropped."""
    mon = _mon(tmp_path)
    own = cm.Provenance(0.0)

    @mon.watch(
        evaluate=lambda m: cm.Observation(predictions=m.predict(), provenance=own), provenance=cm.Provenance(0.8)
    )
    def retrain() -> Model:
        return Model()

    retrain()
    report = mon.last_report
    assert report.provenance.synthetic_fraction == 0.0
    assert any("provenance given to the hook differs" in n for n in report.notes)

    # a hook provenance that is not valid is dropped the same way: it failed the check (the
    # comparison read it although the Observation's was used)
    @mon.watch(
        evaluate=lambda m: cm.Observation(predictions=m.predict(), provenance=own),
        provenance=lambda: {"synthetic_fraction": 1.5},
    )
    def retrain_bad() -> Model:
        return Model()

    retrain_bad()
    assert mon.last_error is None, mon.last_error
    assert mon.last_report.provenance.synthetic_fraction == 0.0
    assert any("provenance given to the hook is not valid" in n and "1.5" in n for n in mon.last_report.notes)


def test_a_callable_generation_that_returns_garbage_fails_the_check_not_the_job(tmp_path: Path) -> None:
    mon = _mon(tmp_path)
    sentinel = Model()

    @mon.watch(evaluate=lambda m: cm.Observation(predictions=m.predict()), generation=lambda: -3)
    def retrain() -> Model:
        return sentinel

    assert retrain() is sentinel
    assert isinstance(mon.last_error, cm.InputError) and mon.last_error.field == "generation"
    assert mon.reports() == []  # nothing recorded under a negative generation


def test_a_reused_observation_is_not_changed_by_retrain(tmp_path: Path) -> None:
    mon = _mon(tmp_path)
    obs = cm.Observation(predictions=LABELS)
    for g in (5, 6):
        with mon.retrain(generation=g) as r:
            r.observe(obs)
    assert obs.generation is None
    assert [rep.generation for rep in mon.reports()] == [5, 6]


def test_threads_retraining_through_one_monitor_each_read_their_own_report(tmp_path: Path) -> None:
    """Hooks audit (2026-12-06): ``mon.last_report`` is how ``watch`` hands a report back, and
    it was one attribute for every thread: 11 of 12 threaded calls read another call's report."""
    import threading
    import time

    mon = _mon(tmp_path)
    barrier = threading.Barrier(4)
    mismatches: list[tuple[float, float | None]] = []

    def worker(i: int) -> None:
        for j in range(3):
            share = round(0.01 * (10 * i + j + 1), 2)
            retrain = mon.watch(
                evaluate=lambda m: cm.Observation(predictions=m.predict()), provenance=cm.Provenance(share)
            )(Model)
            barrier.wait()
            retrain()
            time.sleep(0.05)  # the other threads' checks land in between
            got = mon.last_report
            seen = None if got is None else got.provenance.synthetic_fraction
            if seen != share:
                mismatches.append((share, seen))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert mismatches == []
    assert sorted(r.generation for r in mon.reports()) == list(range(12))
    assert mon.last_report is not None  # a thread that made no check reads the latest of any


def test_a_strict_failure_does_not_say_the_result_was_kept(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """README audit (stop 36): strict=True logged "check failed, training result kept" and
    then raised, so the training function's result was in fact lost to the caller."""
    mon = _mon(tmp_path)

    @mon.watch(evaluate=lambda model: cm.Observation(predictions=np.array([7] * 100)), strict=True)
    def train() -> Model:
        return Model()

    with caplog.at_level("ERROR"), pytest.raises(cm.InputError):
        train()
    assert "raising it (strict)" in caplog.text and "training result kept" not in caplog.text


def test_watch_reads_the_monitors_strict_when_called(tmp_path: Path) -> None:
    """Hooks audit (stop 36): watch read ``mon.strict`` when decorating, so setting it later
    (after building the monitor from a config) did nothing."""
    mon = _mon(tmp_path)

    @mon.watch(evaluate=lambda model: cm.Observation(predictions=np.array([7] * 100)))
    def train() -> Model:
        return Model()

    assert isinstance(train(), Model) and isinstance(mon.last_error, cm.InputError)
    mon.strict = True
    with pytest.raises(cm.InputError):
        train()


def test_an_async_trainers_check_runs_off_the_event_loop(tmp_path: Path) -> None:
    """Async audit: after ``await fn(...)`` the check (evaluation, metrics, sinks: seconds with
    MLflow) ran on the event loop itself, so every other coroutine of the service stalled."""
    import asyncio
    import threading
    import time

    mon = _mon(tmp_path)
    loop_threads: list[int] = []
    eval_threads: list[int] = []

    def slow_evaluate(model: Model) -> cm.Observation:
        eval_threads.append(threading.get_ident())
        time.sleep(0.3)  # a slow probe set / a slow tracking server
        return cm.Observation(predictions=model.predict())

    trained = Model()

    @mon.watch(evaluate=slow_evaluate)
    async def retrain() -> Model:
        await asyncio.sleep(0)
        return trained

    async def main() -> tuple[Model, float]:
        loop_threads.append(threading.get_ident())
        stop = asyncio.Event()
        gaps: list[float] = []

        async def ticker() -> None:
            last = time.perf_counter()
            while not stop.is_set():
                await asyncio.sleep(0.02)
                now = time.perf_counter()
                gaps.append(now - last)
                last = now

        tick = asyncio.create_task(ticker())
        await asyncio.sleep(0.05)
        out = await retrain()
        stop.set()
        await tick
        return out, max(gaps)

    out, worst_gap = asyncio.run(main())
    assert out is trained  # the return value passes through unchanged
    assert worst_gap < 0.25, f"the event loop stalled for {worst_gap:.2f} s during the check"
    assert eval_threads and eval_threads != loop_threads
    report = mon.last_report  # read in the loop's thread, as a caller after the await would
    assert mon.last_error is None and report is not None and report.generation == 0


def test_concurrent_async_trainers_on_one_monitor_make_distinct_ordered_generations(tmp_path: Path) -> None:
    import asyncio
    import threading
    import time

    mon = _mon(tmp_path)
    active = 0
    overlap: list[int] = []
    guard = threading.Lock()

    def evaluate(model: Model) -> cm.Observation:
        nonlocal active
        with guard:
            active += 1
            overlap.append(active)
        time.sleep(0.1)
        with guard:
            active -= 1
        return cm.Observation(predictions=model.predict())

    @mon.watch(evaluate=evaluate, provenance=lambda share: cm.Provenance(share))
    async def retrain(share: float) -> Model:
        await asyncio.sleep(0.01)
        return Model()

    async def main() -> list[Model]:
        return list(await asyncio.gather(retrain(0.1), retrain(0.2), retrain(0.3)))

    models = asyncio.run(main())
    assert all(isinstance(m, Model) for m in models)
    reports = mon.reports()
    assert [r.generation for r in reports] == [0, 1, 2]  # distinct, in commit order
    assert sorted(r.provenance.synthetic_fraction for r in reports) == [0.1, 0.2, 0.3]
    assert max(overlap) == 1  # checks of one monitor never overlap, as on the loop thread
    assert sorted(r.created_at for r in reports) == [r.created_at for r in reports]


def test_an_async_trainers_failed_check_is_contained_and_strict_reraises(tmp_path: Path) -> None:
    import asyncio

    mon = _mon(tmp_path)
    trained = Model()

    def evaluate(model: Model) -> cm.Observation:
        raise RuntimeError("probe file vanished")

    async def train() -> Model:
        return trained

    assert asyncio.run(mon.watch(evaluate=evaluate)(train)()) is trained
    assert isinstance(mon.last_error, RuntimeError) and mon.last_report is None and mon.reports() == []
    with pytest.raises(RuntimeError, match="vanished"):
        asyncio.run(mon.watch(evaluate=evaluate, strict=True)(train)())
    assert isinstance(mon.last_error, RuntimeError)

    # the loop's thread reads the async check's outcome even after its own earlier sync check
    mon.check(cm.Observation(predictions=LABELS))
    assert mon.last_report is not None and mon.last_report.generation == 0
    assert asyncio.run(mon.watch(evaluate=evaluate)(train)()) is trained
    assert mon.last_report is None and isinstance(mon.last_error, RuntimeError)
    ok = mon.watch(evaluate=lambda m: cm.Observation(predictions=m.predict()))(train)
    assert asyncio.run(ok()) is trained
    assert mon.last_error is None and mon.last_report.generation == 1


def test_an_async_trainers_check_nests_under_its_mlflow_run_and_may_use_the_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check runs in a worker thread, where MLflow (which keeps the active run per thread)
    sees no run: it still nests under the run the coroutine started. An ``evaluate`` that needs
    the loop submits its coroutine to it (the loop is free while the check runs)."""
    import asyncio

    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    mlflow.set_tracking_uri(None)
    mon = cm.CollapseMonitor("anest", reference=cm.Reference(labels=LABELS), home=tmp_path / "home")
    loops: list[asyncio.AbstractEventLoop] = []

    async def labels_from_the_loop() -> np.ndarray:
        await asyncio.sleep(0)
        return Model().predict()

    def evaluate(model: Model) -> cm.Observation:
        preds = asyncio.run_coroutine_threadsafe(labels_from_the_loop(), loops[0]).result(timeout=30)
        return cm.Observation(predictions=preds)

    @mon.watch(evaluate=evaluate)
    async def retrain() -> Model:
        return Model()

    async def main() -> str:
        loops.append(asyncio.get_running_loop())
        training = mlflow.MlflowClient().create_experiment("training")
        with mlflow.start_run(experiment_id=training) as parent:
            await retrain()
            assert mlflow.active_run().info.run_id == parent.info.run_id  # still the caller's
        return parent.info.run_id

    try:
        parent_id = asyncio.run(main())
        report = mon.last_report
        assert mon.last_error is None and report is not None and report.errors == (), (mon.last_error, report)
        child = mlflow.MlflowClient().get_run(report.run_id)
        assert child.data.tags.get("mlflow.parentRunId") == parent_id
        assert mlflow.active_run() is None
    finally:
        mlflow.set_tracking_uri(None)


def test_queued_async_checks_leave_the_loops_thread_pool_free(tmp_path: Path) -> None:
    """Review of the async hand-off: checks waiting their turn (one at a time per monitor) each
    held a thread of the loop's default pool, so with as many finished trainers as pool threads
    the running check's ``evaluate``, which uses the loop (an async client resolves names in that
    pool), waited for a thread that never came. They now queue on the loop, not in the pool."""
    import asyncio
    import concurrent.futures
    import threading

    mon = _mon(tmp_path)
    loops: list[asyncio.AbstractEventLoop] = []
    in_pool: list[int] = []

    async def labels_via_the_pool() -> np.ndarray:
        # what an async HTTP client does: loop.getaddrinfo runs in the default executor
        in_pool.append(await asyncio.to_thread(threading.get_ident))
        return Model().predict()

    def evaluate(model: Model) -> cm.Observation:
        fut = asyncio.run_coroutine_threadsafe(labels_via_the_pool(), loops[0])
        return cm.Observation(predictions=fut.result(timeout=5))  # generous: it takes milliseconds

    @mon.watch(evaluate=evaluate)
    async def retrain(i: int) -> int:
        await asyncio.sleep(0)
        return i

    async def main() -> list[int]:
        loop = asyncio.get_running_loop()
        loops.append(loop)
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            loop.set_default_executor(pool)
            return list(await asyncio.gather(*(retrain(i) for i in range(2))))

    assert asyncio.run(main()) == [0, 1]
    assert mon.last_error is None, mon.last_error
    assert [r.generation for r in mon.reports()] == [0, 1] and len(in_pool) == 2


def test_an_async_trainer_outside_asyncio_is_checked_inline_and_a_failed_hand_off_is_contained(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review of the async hand-off: under another runner (trio, a hand-rolled driver) there is
    no asyncio loop to hand the check to; ``asyncio.to_thread`` raised out of the wrapper even
    with strict=False, losing the trained model. Such a check runs inline, as it did; and a
    hand-off that fails (the loop's executor shut down) is contained like a failed check."""
    import asyncio
    import concurrent.futures
    import threading
    import types

    mon = _mon(tmp_path, strict=False)
    threads: list[int] = []

    def evaluate(model: Model) -> cm.Observation:
        threads.append(threading.get_ident())
        return cm.Observation(predictions=model.predict())

    @types.coroutine
    def checkpoint():  # what trio.lowlevel.checkpoint and its kind yield to their runner
        yield "checkpoint"

    trained = Model()

    @mon.watch(evaluate=evaluate)
    async def retrain() -> Model:
        await checkpoint()
        return trained

    def run(coro):  # a minimal trio-like driver: no asyncio loop anywhere
        try:
            while True:
                coro.send(None)
        except StopIteration as stop:
            return stop.value

    assert run(retrain()) is trained
    assert threads == [threading.get_ident()]  # inline, in the runner's thread
    assert mon.last_error is None and mon.last_report is not None and mon.last_report.generation == 0

    async def train() -> Model:
        return trained

    lenient = mon.watch(evaluate=evaluate)(train)
    strict = mon.watch(evaluate=evaluate, strict=True)(train)

    # trio-asyncio and the like: sniffio names another library, though an asyncio loop runs
    sniffio = pytest.importorskip("sniffio")

    async def under_trio() -> Model:
        sniffio.current_async_library_cvar.set("trio")
        return await lenient()

    assert asyncio.run(under_trio()) is trained and threads[-1] == threading.get_ident()
    assert mon.last_report is not None and mon.last_report.generation == 1

    async def with_a_dead_pool(watched) -> Model:
        pool = concurrent.futures.ThreadPoolExecutor(1)
        pool.shutdown()
        asyncio.get_running_loop().set_default_executor(pool)
        return await watched()

    assert asyncio.run(with_a_dead_pool(lenient)) is trained  # contained: the result passes through
    assert isinstance(mon.last_error, RuntimeError) and mon.last_report is None
    with pytest.raises(RuntimeError, match="shutdown"):
        asyncio.run(with_a_dead_pool(strict))
    assert len(mon.reports()) == 2


def test_an_async_trainers_check_keeps_the_callers_torch_grad_and_autocast_modes(tmp_path: Path) -> None:
    """Review of the async hand-off: torch keeps grad / inference mode and autocast per thread,
    so an ``evaluate`` run by the caller under ``torch.inference_mode()`` ran in the worker
    thread with grad on (building graphs, holding activations). The caller's modes follow it,
    and the pooled thread is left as it was for the next job."""
    import asyncio
    import concurrent.futures

    torch = pytest.importorskip("torch")
    mon = _mon(tmp_path)
    seen: list[tuple[bool, bool, bool, bool]] = []

    def evaluate(model: Model) -> cm.Observation:
        x = torch.ones(2, requires_grad=True) * 2
        seen.append(
            (
                torch.is_grad_enabled(),
                torch.is_inference_mode_enabled(),
                x.requires_grad,
                torch.is_autocast_enabled("cpu"),
            )
        )
        return cm.Observation(predictions=model.predict())

    @mon.watch(evaluate=evaluate)
    async def retrain() -> Model:
        return Model()

    async def main() -> None:
        with concurrent.futures.ThreadPoolExecutor(1) as pool:  # one thread: the next check reuses it
            asyncio.get_running_loop().set_default_executor(pool)
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
                await retrain()
            with torch.no_grad():
                await retrain()
            await retrain()

    asyncio.run(main())
    assert mon.last_error is None and [r.generation for r in mon.reports()] == [0, 1, 2]
    assert seen == [(False, True, False, True), (False, False, False, False), (True, False, True, False)]


def test_a_mode_the_caller_has_off_is_off_in_the_checks_thread(tmp_path: Path) -> None:
    """Second review: modes were carried one way only. A pooled thread where another job left
    inference mode and CPU autocast on ran the check under them, though the caller had both off."""
    import asyncio
    import concurrent.futures

    torch = pytest.importorskip("torch")
    mon = _mon(tmp_path)
    seen: list[tuple[bool, bool]] = []
    kept: list[object] = []

    def evaluate(model: Model) -> cm.Observation:
        seen.append((torch.is_inference_mode_enabled(), torch.is_autocast_enabled("cpu")))
        return cm.Observation(predictions=model.predict())

    @mon.watch(evaluate=evaluate)
    async def retrain() -> Model:
        return Model()

    def leave_modes_on() -> None:  # a job that leaves per-thread torch state in the pool's thread
        kept.append(torch._C._InferenceMode(True))
        torch.set_autocast_enabled("cpu", True)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            loop.set_default_executor(pool)
            await loop.run_in_executor(None, leave_modes_on)
            await retrain()
            assert await loop.run_in_executor(None, torch.is_autocast_enabled, "cpu")  # left as it was

    asyncio.run(main())
    assert mon.last_error is None and seen == [(False, False)]


def test_a_trainer_cancelled_while_its_check_is_queued_still_gets_checked(tmp_path: Path) -> None:
    """Second review: cancelling a trainer whose check waited its turn (a ``wait_for`` timeout, a
    TaskGroup) dropped the check without a word. The queue runs as a task of its own: the cancel
    ends the wait, the check still runs and is recorded."""
    import asyncio
    import threading

    mon = _mon(tmp_path)
    started, release = threading.Event(), threading.Event()

    def evaluate(model: Model) -> cm.Observation:
        started.set()
        release.wait(10)
        return cm.Observation(predictions=model.predict())

    @mon.watch(evaluate=evaluate)
    async def retrain() -> Model:
        return Model()

    async def main() -> None:
        first = asyncio.create_task(retrain())
        while not started.is_set():
            await asyncio.sleep(0.01)
        second = asyncio.create_task(retrain())  # its check queues behind the first one's
        await asyncio.sleep(0.05)
        for t in (first, second):
            t.cancel()
        release.set()
        await asyncio.gather(first, second, return_exceptions=True)
        while len(mon.reports()) < 2 and not mon._tls.__dict__.get("last_error"):
            await asyncio.sleep(0.05)  # the checks finish in their thread after the cancel

    asyncio.run(asyncio.wait_for(main(), 30))
    assert [r.generation for r in mon.reports()] == [0, 1]


def test_a_monitor_does_not_keep_never_closed_event_loops_alive(tmp_path: Path) -> None:
    """Second review: the per-loop queue kept every event loop a monitor's async checks ran on
    (with its selector and executor thread) until the loop was closed; a sync wrapper that runs
    each retrain on a new, never-closed loop leaked 3 fds and a thread per call."""
    import asyncio
    import gc

    from collapse_monitor.monitor import _ASYNC_LOOP_QUEUES

    mon = _mon(tmp_path)

    @mon.watch(evaluate=lambda m: cm.Observation(predictions=m.predict()))
    async def retrain() -> Model:
        return Model()

    for _ in range(3):
        asyncio.new_event_loop().run_until_complete(retrain())  # never closed
    gc.collect()
    assert mon not in _ASYNC_LOOP_QUEUES
    assert [r.generation for r in mon.reports()] == [0, 1, 2]


def test_an_async_trainer_that_is_not_a_coroutine_function_is_checked_once_awaited(tmp_path: Path) -> None:
    """Audit (stop 41): only `async def` functions took the async path. An object with `async
    def __call__`, or an `async def` under a decorator that hides it, was checked as soon as it
    was called: before any training ran (evaluate saw the untrained model), or on the coroutine."""
    import asyncio
    import functools

    mon = _mon(tmp_path)
    state = {"trained": False}
    seen: list[bool] = []

    def evaluate(model: Model) -> cm.Observation:
        seen.append(state["trained"])
        return cm.Observation(predictions=model.predict())

    class Trainer:
        async def __call__(self) -> Model:
            await asyncio.sleep(0)
            state["trained"] = True
            return Model()

    def plain_retry(fn):  # a user decorator that does not keep the coroutine marker
        @functools.wraps(fn)
        def inner(*a, **k):
            return fn(*a, **k)

        return inner

    @mon.watch(evaluate=evaluate)
    @plain_retry
    async def train_wrapped() -> Model:
        await asyncio.sleep(0)
        state["trained"] = True
        return Model(forget_rare=True)

    train_obj = mon.watch(evaluate=evaluate)(Trainer())
    coro = train_obj()
    assert seen == []  # nothing checked before the training ran
    m0 = asyncio.run(coro)
    assert isinstance(m0, Model) and seen == [True] and mon.last_error is None
    assert mon.last_report is not None and mon.last_report.generation == 0
    state["trained"] = False
    m1 = asyncio.run(train_wrapped())
    assert m1.forget_rare and seen == [True, True] and mon.last_error is None
    assert mon.last_report.generation == 1 and mon.last_report.value("class_recall.2") == 0.0


def test_watch_above_staticmethod_keeps_it_static(tmp_path: Path) -> None:
    """Audit (stop 41): a staticmethod is callable since Python 3.10, so it passed as a function
    and the plain wrapper returned in its place made it an instance method: `self` was passed
    to the static function, and a call that worked without the decorator raised."""
    mon = _mon(tmp_path)

    class Job:
        @mon.watch(evaluate=lambda m: cm.Observation(predictions=m.predict()))
        @staticmethod
        def train(forget: bool = False) -> Model:
            return Model(forget)

    assert Job().train().forget_rare is False and mon.last_report.generation == 0  # no `self` passed as `forget`
    assert Job.train(True).forget_rare and mon.last_report.generation == 1


def test_a_function_that_returns_a_generator_is_not_checked(tmp_path: Path) -> None:
    mon = _mon(tmp_path)

    def epochs():
        yield Model()

    @mon.watch(evaluate=lambda m: cm.Observation(predictions=m.predict()))
    def train():
        return epochs()  # not a generator function itself: refused when called, not decorated

    gen = train()
    assert next(gen).predict().shape == LABELS.shape  # the result passes through
    assert isinstance(mon.last_error, cm.ConfigError) and "generator" in str(mon.last_error)
    assert mon.last_report is None and mon.reports() == []


def test_a_sink_raising_a_base_exception_does_not_lose_the_training_result(tmp_path: Path) -> None:
    """Audit (stop 41): `except Exception` around the sinks let an asyncio.CancelledError (a
    BaseException since 3.8) or a GeneratorExit from a sink out of watch: the trained model was
    lost and a Lightning fit would abort. It is contained like any sink failure and the report
    waits in the spool; KeyboardInterrupt and SystemExit still propagate."""
    import asyncio

    class Cancelling:
        name = "cancelling"
        calls = 0

        def emit(self, report, ctx=None):
            Cancelling.calls += 1
            if Cancelling.calls == 1:
                raise asyncio.CancelledError("the sink's own loop was cancelled")
            return None

    mon = cm.CollapseMonitor("watched", reference=cm.Reference(labels=LABELS), sinks=[Cancelling()], home=tmp_path)

    @mon.watch(evaluate=lambda m: cm.Observation(predictions=m.predict()))
    def train() -> Model:
        return Model()

    m = train()
    assert isinstance(m, Model) and mon.last_error is None
    assert any("CancelledError" in e for e in mon.last_report.errors)
    assert mon.spool.count("cancelling") == 1  # kept for redelivery
    train()  # the next check replays it first, then emits its own
    assert (
        Cancelling.calls == 3
        and mon.spool.count("cancelling") == 0
        and not any("CancelledError" in e for e in mon.last_report.errors)
    )

    class Interrupting:
        name = "interrupting"

        def emit(self, report, ctx=None):
            raise KeyboardInterrupt

    mon2 = cm.CollapseMonitor(
        "watched2", reference=cm.Reference(labels=LABELS), sinks=[Interrupting()], home=tmp_path / "two"
    )
    with pytest.raises(KeyboardInterrupt):
        mon2.watch(evaluate=lambda m: cm.Observation(predictions=m.predict()))(lambda: Model())()
