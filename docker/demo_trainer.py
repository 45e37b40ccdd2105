"""Demo trainer of the docker compose stack: recursive retraining, one generation at a time.

For every scenario x loop (default: digits with the ``replace`` and ``accumulate`` loops) it
runs a simulated recursive-training chain (``collapse_monitor.simulate``) and checks one
generation every ``DEMO_INTERVAL_SECONDS`` with a real ``CollapseMonitor`` whose sinks are the
stack's MLflow server and Pushgateway - what a periodic retrain job with the monitoring hook
does, sped up. After ``DEMO_GENERATIONS`` generations a new run starts: the monitor's local
history is wiped, its Pushgateway group deleted and MLflow gets a fresh experiment
(``collapse-monitor-demo/<monitor>/run-<n>``), so generation 0 is again the human-data baseline.

Monitor names stay ``demo-<scenario>-<loop>`` across runs (bounded label cardinality).

Environment:
    COLLAPSE_MONITOR_PUSHGATEWAY  Pushgateway URL (required), e.g. http://pushgateway:9091
    MLFLOW_TRACKING_URI           MLflow server; empty or unset: no MLflow sink
    DEMO_SCENARIO                 comma-separated scenarios (default digits)
    DEMO_LOOPS                    comma-separated loops (default replace,accumulate)
    DEMO_GENERATIONS              generations per run (default 12)
    DEMO_INTERVAL_SECONDS         seconds between generations (default 120)
    DEMO_RUNS                     stop after this many runs (default 0 = forever)
    DEMO_HOME                     monitor homes (default /data/monitors)
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger("collapse_monitor.demo_trainer")


def _env_list(name: str, default: str) -> list[str]:
    return [v.strip() for v in os.environ.get(name, default).split(",") if v.strip()]


def _env_int(name: str, default: int, minimum: int) -> int:
    raw = os.environ.get(name, "").strip()
    try:
        value = int(raw) if raw else default
    except ValueError:
        raise SystemExit(f"demo_trainer: {name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise SystemExit(f"demo_trainer: {name} must be >= {minimum}, got {value}")
    return value


class Chain:
    """One scenario x loop: a monitor and the generator of its generations."""

    def __init__(
        self,
        scenario: str,
        loop: str,
        run: int,
        *,
        home: Path,
        pushgateway: str,
        tracking_uri: str | None,
        generations: int,
        seed: int,
    ) -> None:
        import collapse_monitor as cm
        from collapse_monitor.simulate import make_scenario

        self.name = f"demo-{scenario}-{loop}"
        self.prometheus = cm.PrometheusSink(pushgateway=pushgateway)
        sinks: list[Any] = [self.prometheus]
        if tracking_uri:
            sinks.append(
                cm.MLflowSink(tracking_uri=tracking_uri, experiment=f"collapse-monitor-demo/{{monitor}}/run-{run:04d}")
            )
        monitor_home = home / self.name
        shutil.rmtree(monitor_home, ignore_errors=True)  # a new run: generation 0 is the baseline again
        # every run, the first of a restarted container too: the group still holds what the last
        # container pushed (a firing alert among it) while the new chain starts healthy
        try:
            self.prometheus.delete(self.name)
        except Exception as exc:  # the gateway may be starting; the next push overwrites its series
            log.warning("could not delete the Pushgateway group of %s: %s", self.name, exc)
        sc = make_scenario(scenario, loop=loop, seed=seed)
        self.monitor = cm.CollapseMonitor(self.name, reference=sc.reference, sinks=sinks, home=monitor_home)
        self.steps: Iterator[Any] = iter(sc.generations(generations))

    def step(self) -> Any:
        """Check the next generation; returns its Report."""
        result = next(self.steps)
        return self.monitor.check(result.observation)


def run(
    *,
    scenarios: Sequence[str],
    loops: Sequence[str],
    generations: int,
    interval: float,
    runs: int,
    pushgateway: str,
    tracking_uri: str | None,
    home: Path,
    sleep: Callable[[float], None] = time.sleep,
) -> list[Any]:
    """Run the demo; returns every report (bounded by ``runs``; ``runs=0`` runs forever)."""
    reports: list[Any] = []
    n = 0
    while runs == 0 or n < runs:
        chains = [
            Chain(
                s,
                loop,
                n,
                home=home,
                pushgateway=pushgateway,
                tracking_uri=tracking_uri,
                generations=generations,
                seed=n,
            )
            for s in scenarios
            for loop in loops
        ]
        for g in range(generations):
            for chain in chains:
                report = chain.step()
                log.info(
                    "run %d %s generation %d: %s%s",
                    n,
                    chain.name,
                    report.generation,
                    report.stage.value,
                    f" (errors: {'; '.join(report.errors)})" if report.errors else "",
                )
                if runs:  # bounded runs (tests) keep the reports; an endless demo must not grow
                    reports.append(report)
            if g + 1 < generations or runs == 0 or n + 1 < runs:
                sleep(interval)
        n += 1
    return reports


def main() -> int:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log.setLevel(logging.INFO)
    pushgateway = os.environ.get("COLLAPSE_MONITOR_PUSHGATEWAY", "").strip()
    if not pushgateway:
        raise SystemExit("demo_trainer: set COLLAPSE_MONITOR_PUSHGATEWAY (e.g. http://pushgateway:9091)")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # `docker compose stop`: exit at once, cleanly
    run(
        scenarios=_env_list("DEMO_SCENARIO", "digits"),
        loops=_env_list("DEMO_LOOPS", "replace,accumulate"),
        generations=_env_int("DEMO_GENERATIONS", 12, 2),
        interval=float(_env_int("DEMO_INTERVAL_SECONDS", 120, 0)),
        runs=_env_int("DEMO_RUNS", 0, 0),
        pushgateway=pushgateway,
        tracking_uri=os.environ.get("MLFLOW_TRACKING_URI", "").strip() or None,
        home=Path(os.environ.get("DEMO_HOME", "/data/monitors")),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
