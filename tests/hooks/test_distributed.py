"""distributed_check under a real gloo process group (2 CPU processes) equals the single-process
check on the same data: same metric values exactly, same stage, same generation.

This file is also the worker: ``python test_distributed.py RANK WORLD PORT HOME OUT [SCENARIO]``
joins the process group and runs the scenarios; the tests launch two of them.
"""

from __future__ import annotations

import datetime
import json
import logging
import sys
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest

K = 4
PRIORS = np.array([0.5, 0.3, 0.17, 0.03])
D = 8
M = 301  # odd: DistributedSampler pads rank 1's shard with a repeat of item 0


def _data() -> tuple[dict, list[dict]]:
    rng = np.random.default_rng(7)
    centers = rng.normal(scale=4.0, size=(K, D))
    labels = rng.choice(K, size=M, p=PRIORS)
    labels[:12] = 3  # enough rare items for the paired tests
    comp = rng.choice(K, size=400, p=PRIORS)
    emb = centers[comp] + rng.normal(size=(400, D))
    words = [f"w{i}" for i in range(300)]
    zipf = 1 / np.arange(1, 301)
    zipf /= zipf.sum()
    texts = [" ".join(rng.choice(words, size=12, p=zipf)) for _ in range(200)]
    ref = {"embeddings": emb, "labels": labels, "texts": texts}
    gens = []
    for g, (rare_recall, spread, top) in enumerate([(1.0, 1.0, 300), (0.2, 0.5, 40)]):
        preds = labels.copy()
        rare = np.flatnonzero(labels == 3)
        preds[rare[int(rare_recall * rare.size) :]] = 0
        w = PRIORS.copy()
        w[3] *= rare_recall
        comp = rng.choice(K, size=301, p=w / w.sum())
        gemb = centers[comp] + spread * rng.normal(size=(301, D))
        p = zipf[:top] / zipf[:top].sum()
        gtexts = [" ".join(rng.choice(words[:top], size=12, p=p)) for _ in range(151)]
        gens.append({"predictions": preds, "embeddings": gemb.astype(np.float32), "texts": gtexts, "generation": g})
    return ref, gens


def _shard(gen: dict, rank: int, world: int) -> dict:
    """DistributedSampler(shuffle=False) for the probe set (interleaved, padded with repeats),
    contiguous blocks for samples and texts (rank 0 first)."""
    total = -(-M // world) * world
    order = (list(range(M)) * 2)[:total]
    idx = np.asarray(order[rank:total:world])
    emb = np.array_split(gen["embeddings"], world)[rank]
    bounds = np.linspace(0, len(gen["texts"]), world + 1).astype(int)
    return {
        "probe_indices": idx,
        "predictions": gen["predictions"][idx],
        "embeddings": emb,
        "texts": gen["texts"][bounds[rank] : bounds[rank + 1]],
        "generation": gen["generation"],
    }


def _clean(report) -> dict:
    d = report.to_dict()
    for k in ("created_at", "duration_seconds"):
        d.pop(k)
    for a in d["alerts"]:
        a.pop("timestamp")  # wall clock of the check
    return d


def _worker(rank: int, world: int, port: int, home: str, out: str) -> None:
    import torch
    import torch.distributed as dist

    import collapse_monitor as cm
    from collapse_monitor.hooks import distributed_check

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    ref_d, gens = _data()
    mon = cm.CollapseMonitor("dist", reference=cm.Reference(**ref_d), sinks=[], home=home)
    result: dict = {"rank": rank, "reports": [], "stages": []}
    for gen in gens:
        sh = _shard(gen, rank, world)
        if rank == 1:  # torch tensors on one rank, numpy on the other: both are accepted
            sh["embeddings"] = torch.from_numpy(sh["embeddings"])
            sh["predictions"] = torch.from_numpy(sh["predictions"])
        res = distributed_check(mon, **sh)
        result["stages"].append([None if res.stage is None else res.stage.value, res.generation])
        if res.report is not None:
            result["reports"].append(_clean(res.report))
    # bad input on rank 1 only: every rank raises the same InputError, none hangs
    bad = _shard(gens[1], rank, world)
    if rank == 1:
        bad["embeddings"] = np.ones((5, D + 1))
    try:
        distributed_check(mon, **bad)
    except cm.InputError as exc:
        result["bad_input"] = [exc.field, str(exc)]
    dist.barrier()
    dist.destroy_process_group()
    Path(out).write_text(json.dumps(result))


class _BrokenMapping(Mapping):
    """A provenance mapping whose values cannot be read (a lazy config object gone bad)."""

    def __getitem__(self, key: str) -> object:
        raise RuntimeError("config store unreachable")

    def __iter__(self):
        return iter(["synthetic_fraction"])

    def __len__(self) -> int:
        return 1


def _init_gloo(rank: int, world: int, port: int) -> None:
    """Join the gloo group with a collective timeout of 60 s (not gloo's 30 minutes), so a
    regression that hangs fails fast."""
    import torch.distributed as dist

    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=world,
        timeout=datetime.timedelta(seconds=60),
    )


def _edge_worker(rank: int, world: int, port: int, home: str, out: str) -> None:
    """Monitors on different references, empty shards, and no data on any rank. A collective
    timeout of 60 s (not gloo's 30 minutes) makes a regression that hangs fail fast."""
    import time

    import torch
    import torch.distributed as dist

    import collapse_monitor as cm
    from collapse_monitor.hooks import distributed_check

    _init_gloo(rank, world, port)
    ref_d, gens = _data()
    result: dict = {"rank": rank, "reports": [], "stages": []}

    # rank 1 built its monitor on a lighter reference (labels only): rank 0 would all_gather the
    # embeddings, rank 1 would not; every rank must refuse before any such collective
    light = cm.Reference(labels=ref_d["labels"])
    other = cm.CollapseMonitor("mismatch", reference=cm.Reference(**ref_d) if rank == 0 else light, sinks=[], home=home)
    sh = _shard(gens[0], rank, world)
    t0 = time.monotonic()
    try:
        distributed_check(
            other,
            probe_indices=sh["probe_indices"],
            predictions=sh["predictions"],
            embeddings=None if rank else sh["embeddings"],
        )
    except Exception as exc:  # a timeout (RuntimeError) would be a regression: record it as such
        result["mismatch"] = [type(exc).__name__, getattr(exc, "field", None), str(exc), time.monotonic() - t0]

    mon = cm.CollapseMonitor("dist", reference=cm.Reference(**ref_d), sinks=[], home=home)
    empty_ids = np.array([], dtype=np.int64)
    empty_pred = torch.empty(0, dtype=torch.int64)
    empty_emb = torch.zeros((0, D))
    g0, g1 = gens
    shards = [
        # generation 0: rank 0 has the probe set and the texts but no samples, rank 1 the samples
        [
            {
                "probe_indices": np.arange(M),
                "predictions": g0["predictions"],
                "embeddings": np.empty((0, D)),
                "texts": g0["texts"],
            },
            {
                "probe_indices": empty_ids,
                "predictions": empty_pred,
                "embeddings": torch.from_numpy(g0["embeddings"]),
                "texts": [],
            },
        ],
        # generation 1: rank 0 has everything, rank 1 an empty shard of every kind
        [
            {
                "probe_indices": np.arange(M),
                "predictions": g1["predictions"],
                "embeddings": g1["embeddings"],
                "texts": g1["texts"],
            },
            {"probe_indices": [], "predictions": [], "embeddings": empty_emb, "texts": ()},
        ],
    ]
    for g, per_rank in zip(gens, shards, strict=True):
        res = distributed_check(mon, generation=g["generation"], **per_rank[rank])
        result["stages"].append([None if res.stage is None else res.stage.value, res.generation])
        if res.report is not None:
            result["reports"].append(_clean(res.report))
    try:  # a bad provenance on rank 0 (where the check runs): the same InputError on every rank
        sh = _shard(gens[0], rank, world)
        distributed_check(
            mon,
            probe_indices=sh["probe_indices"],
            predictions=sh["predictions"],
            provenance={"synthetic_fraction": 1.5} if rank == 0 else None,
        )
    except Exception as exc:
        result["bad_provenance"] = [type(exc).__name__, getattr(exc, "field", None)]
    try:  # a provenance mapping that raises something else on rank 1 only: no hang, alike on both
        sh = _shard(gens[0], rank, world)
        distributed_check(
            mon,
            probe_indices=sh["probe_indices"],
            predictions=sh["predictions"],
            provenance=_BrokenMapping() if rank == 1 else None,
        )
    except Exception as exc:
        result["broken_provenance"] = [type(exc).__name__, getattr(exc, "field", None), str(exc)]
    # rank 0's check fails for another reason than bad input (its history store is locked): with
    # a monitor that is not strict the job goes on, on every rank alike; strict=True raises on both
    sh = _shard(gens[0], rank, world)
    if rank == 0:
        import sqlite3

        def locked(*a, **k):
            raise sqlite3.OperationalError("database is locked")

        mon.history.commit_check, real_commit = locked, mon.history.commit_check
    res = distributed_check(mon, probe_indices=sh["probe_indices"], predictions=sh["predictions"])
    result["locked"] = [res.stage, res.report, res.error, type(mon.last_error).__name__ if rank == 0 else None]
    try:
        distributed_check(mon, probe_indices=sh["probe_indices"], predictions=sh["predictions"], strict=True)
    except Exception as exc:
        result["locked_strict"] = [type(exc).__name__, "database is locked" in str(exc)]
    if rank == 0:
        mon.history.commit_check = real_commit
    # an InputError from inside rank 0's check on a field the other ranks do not know: rank 0
    # raised and rank 1 returned (it judged from the field name), and the job split
    if rank == 0:
        real_check = mon._check

        def bad_inside(*a, **k):
            raise cm.InputError("priors", "has no prior for label(s) ['x']")

        mon._check = bad_inside
    try:
        distributed_check(mon, probe_indices=sh["probe_indices"], predictions=sh["predictions"])
        result["inside"] = ["returned"]
    except Exception as exc:
        result["inside"] = [type(exc).__name__, getattr(exc, "field", None)]
    if rank == 0:
        mon._check = real_check
    try:  # broadcast="no" on rank 1 only: refused alike on both ranks, no hang
        sh = _shard(gens[0], rank, world)
        distributed_check(
            mon, probe_indices=sh["probe_indices"], predictions=sh["predictions"], broadcast="no" if rank else True
        )
    except Exception as exc:
        result["bad_broadcast"] = [type(exc).__name__, getattr(exc, "key", None), str(exc)]
    try:  # every shard empty on every rank: nothing to check, refused alike
        distributed_check(mon, probe_indices=[], predictions=[], embeddings=empty_emb, texts=[])
    except cm.InputError as exc:
        result["all_empty"] = [exc.field, str(exc)]
    # provenance known on rank 1 only reaches the check (rank 0's argument alone was read);
    # two ranks that disagree are refused alike, naming both
    other = cm.CollapseMonitor("dist-prov", reference=mon.reference, sinks=[], home=Path(home) / "prov")
    sh = _shard(gens[0], rank, world)
    res = distributed_check(
        other,
        probe_indices=sh["probe_indices"],
        predictions=sh["predictions"],
        provenance={"synthetic_fraction": 0.9, "sources": ["s3://corpus/mix.parquet"]} if rank == 1 else None,
    )
    if res.report is not None:
        result["rank1_provenance"] = res.report.provenance.to_dict()
    try:
        distributed_check(
            other,
            probe_indices=sh["probe_indices"],
            predictions=sh["predictions"],
            provenance=cm.Provenance(0.1 if rank == 0 else 0.9),
        )
    except cm.InputError as exc:
        result["provenance_disagrees"] = [exc.field, str(exc)]
    dist.barrier()
    dist.destroy_process_group()
    Path(out).write_text(json.dumps(result))


class _Records(logging.Handler):
    """The collapse_monitor logger's records, as [level, message]."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[list[str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append([record.levelname, record.getMessage()])


def _outcome(call) -> list:
    """What one distributed_check call gave this rank, as JSON: ["result", stage, error, report?]
    or ["raised", type, field or key, message]."""
    try:
        res = call()
    except Exception as exc:
        return ["raised", type(exc).__name__, getattr(exc, "field", getattr(exc, "key", None)), str(exc)]
    return ["result", None if res.stage is None else res.stage.value, res.error, res.report is not None]


def _idle_worker(rank: int, world: int, port: int, home: str, out: str) -> None:
    """Rank 1 gives nothing and declares no failure (a legitimately idle rank), rank 0 a probe
    set that misses 3 items (a user bug): the same InputError on every rank, not a skip."""
    import torch.distributed as dist

    import collapse_monitor as cm
    from collapse_monitor.hooks import distributed_check

    _init_gloo(rank, world, port)
    ref_d, gens = _data()
    g = gens[0]
    mon = cm.CollapseMonitor("idle", reference=cm.Reference(**ref_d), sinks=[], home=home)
    mine = {"probe_indices": np.arange(M - 3), "predictions": g["predictions"][: M - 3], "embeddings": g["embeddings"]}
    result = {"rank": rank, "idle": _outcome(lambda: distributed_check(mon, **(mine if rank == 0 else {})))}
    result["last_error"] = None if mon.last_error is None else type(mon.last_error).__name__
    dist.barrier()
    dist.destroy_process_group()
    Path(out).write_text(json.dumps(result))


class _NoStr(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no str")


class _NoStrArray:
    def __array__(self, *args, **kwargs):
        raise _NoStr()

    def __len__(self) -> int:
        return 3


class _NoRepr:
    def __repr__(self) -> str:
        raise RuntimeError("no repr")


def _failed_worker(rank: int, world: int, port: int, home: str, out: str) -> None:
    """Rank 1's own evaluation failed and it says so with ``failed=``."""
    import torch.distributed as dist

    import collapse_monitor as cm
    from collapse_monitor.hooks import distributed_check

    _init_gloo(rank, world, port)
    logs = _Records()
    logging.getLogger("collapse_monitor").addHandler(logs)
    ref_d, gens = _data()
    g = gens[0]
    sh = _shard(g, rank, world)
    sh.pop("generation")
    whole = {"probe_indices": np.arange(M), "predictions": g["predictions"], "embeddings": g["embeddings"]}
    boom = RuntimeError("boom: token=s3cr3t-value")
    result: dict = {"rank": rank}

    def run(key: str, mine: dict, failed_1: dict, **kw) -> cm.CollapseMonitor:
        """rank 0 passes ``mine``, rank 1 ``failed_1``; records the outcome, the monitor's
        last_error and reports, and the log lines of this call on this rank."""
        mon = cm.CollapseMonitor(f"failed-{key}", reference=cm.Reference(**ref_d), sinks=[], home=home)
        del logs.records[:]
        result[key] = _outcome(lambda: distributed_check(mon, **(mine if rank == 0 else failed_1), **kw))
        result[key + ".last_error"] = None if mon.last_error is None else type(mon.last_error).__name__
        result[key + ".reports"] = len(mon.reports()) if rank == 0 else None
        result[key + ".logs"] = list(logs.records)
        dist.barrier()
        return mon

    # (a) its probe items are predicted by no rank: skipped on every rank, training goes on
    run("missing", sh, {"failed": boom})
    run("missing_true", sh, {"failed": True})
    # (e) ... and with strict, raised on every rank
    run("missing_strict", sh, {"failed": boom}, strict=True)
    # (c) failed= together with inputs, or a failed= that is neither a bool nor an exception
    run("with_inputs", sh, {**sh, "failed": boom})
    run("bad_flag", sh, {"failed": "yes"})
    run("bad_strict", sh, {"failed": boom}, strict="yes")  # read as False on the skip path
    run("bad_str", {**sh, "probe_indices": _NoStrArray()}, {"failed": boom})  # its __str__ raised before the exchange
    run("bad_repr", sh, {"failed": _NoRepr()})  # its repr raised on rank 1 alone: rank 0 waited in the exchange
    # (d) nothing is missing (rank 0 has the whole probe set): the check runs, with a warning
    run("nothing_missing", whole, {"failed": boom})
    run("empty_and_failed", whole, {"probe_indices": [], "predictions": [], "texts": [], "failed": True})
    # nothing at all is left (rank 0 has nothing to add, rank 1 failed): skipped, strict raises
    run("all_gone", {}, {"failed": boom})
    run("all_gone_strict", {}, {"failed": boom}, strict=True)
    run("both_failed", {"failed": ValueError("no GPU")}, {"failed": True})
    dist.destroy_process_group()
    Path(out).write_text(json.dumps(result))


def _replicate_gen() -> dict:
    """Another retrain of generation 0: two of its rare probe items wrong, its own samples."""
    ref_d, gens = _data()
    g = dict(gens[0])
    preds = g["predictions"].copy()
    preds[np.flatnonzero(ref_d["labels"] == 3)[:2]] = 0
    g["predictions"] = preds
    g["embeddings"] = g["embeddings"][::-1].copy()
    g["embeddings"][:40] += np.float32(0.3)
    return g


def _replicate_worker(rank: int, world: int, port: int, home: str, out: str) -> None:
    """Generation 0 checked across both ranks, then a replicate of it added across both ranks,
    then a replicate flag that differs between the ranks."""
    import torch.distributed as dist

    import collapse_monitor as cm
    from collapse_monitor.hooks import distributed_check

    _init_gloo(rank, world, port)
    ref_d, gens = _data()
    mon = cm.CollapseMonitor("dist-rep", reference=cm.Reference(**ref_d), sinks=[], home=home)
    distributed_check(mon, **_shard(gens[0], rank, world))
    sh = _shard(_replicate_gen(), rank, world)
    sh.pop("generation")
    res = distributed_check(mon, **sh, replicate=True)
    result: dict = {
        "rank": rank,
        "stage": res.stage,
        "generation": res.generation,
        "report": res.report is not None,
        "replicate": None if res.replicate is None else {k: v.to_dict() for k, v in res.replicate.items()},
    }
    result["mixed"] = _outcome(lambda: distributed_check(mon, **sh, replicate=rank == 1))
    # refused by the baseline's state, not bad input from a rank: a failed check, contained on
    # every rank unless strict (rank 1's failed= leaves fewer samples than the baseline had)
    rg = _replicate_gen()
    half = {"probe_indices": np.arange(M), "predictions": rg["predictions"], "embeddings": sh["embeddings"]}
    mine = half if rank == 0 else {"failed": RuntimeError("out of memory")}
    result["smaller"] = _outcome(lambda: distributed_check(mon, **mine, replicate=True))
    result["smaller_strict"] = _outcome(lambda: distributed_check(mon, **mine, replicate=True, strict=True))
    fresh = cm.CollapseMonitor("dist-none", reference=cm.Reference(**ref_d), sinks=[], home=home)
    result["no_baseline"] = _outcome(lambda: distributed_check(fresh, **sh, replicate=True))
    result["last_replicate"] = None if mon.last_replicate is None else "stale"
    dist.barrier()
    dist.destroy_process_group()
    Path(out).write_text(json.dumps(result))


def _expected(home: Path) -> list[dict]:
    import collapse_monitor as cm

    ref_d, gens = _data()
    single = cm.CollapseMonitor("dist", reference=cm.Reference(**ref_d), sinks=[], home=home)
    expected = [_clean(single.check(cm.Observation(**g))) for g in gens]
    assert expected[0]["stage"] == "healthy" and expected[1]["stage"] != "healthy"  # a non-trivial comparison
    return expected


def _run_two_ranks(tmp_path: Path, scenario: str) -> tuple[dict, dict]:
    from servers import free_port, run_ranks

    port = free_port()
    home, out = tmp_path / "dist", [tmp_path / f"r{r}.json" for r in range(2)]
    run_ranks([[sys.executable, __file__, str(r), "2", str(port), str(home), str(out[r]), scenario] for r in range(2)])
    return json.loads(out[0].read_text()), json.loads(out[1].read_text())


def test_two_gloo_ranks_equal_single_process(tmp_path: Path) -> None:
    import collapse_monitor as cm

    ref_d, _ = _data()
    expected = _expected(tmp_path / "single")
    r0, r1 = _run_two_ranks(tmp_path, "main")

    assert r0["reports"] == expected  # every metric value, interval, finding, stage, generation
    assert r1["reports"] == []  # only rank 0 checks (and logs, and alerts)
    want = [[r["stage"], r["generation"]] for r in expected]
    assert r0["stages"] == r1["stages"] == want  # the stage was broadcast to rank 1
    for r in (r0, r1):
        field, msg = r["bad_input"]
        assert field == "embeddings" and "on rank 1" in msg and "d=9" in msg
    # the distributed chain wrote one history, on rank 0's side, like a single process
    hist = cm.CollapseMonitor("dist", reference=cm.Reference(**ref_d), sinks=[], home=tmp_path / "dist").reports()
    assert [h.generation for h in hist] == [0, 1]


def test_mismatched_references_refused_and_empty_shards_accepted(tmp_path: Path) -> None:
    expected = _expected(tmp_path / "single")
    r0, r1 = _run_two_ranks(tmp_path, "edge")

    # a different reference on rank 1: the same InputError on both ranks, at once (no collective
    # was entered by one rank alone, so neither waited for the 60 s timeout)
    assert r0["mismatch"][:3] == r1["mismatch"][:3]
    kind, field, msg, _ = r0["mismatch"]
    assert (kind, field) == ("InputError", "monitor.reference"), r0["mismatch"]
    assert "rank 1 has a different reference" in msg and "build the same monitor on every rank" in msg
    assert "fingerprint=" in msg and "embeddings=(400, 8)" in msg  # names both references
    assert max(r0["mismatch"][3], r1["mismatch"][3]) < 10

    # empty shards on either rank: the single-process check on the concatenated data
    assert r0["reports"] == expected
    assert r1["reports"] == []
    assert r0["stages"] == r1["stages"] == [[r["stage"], r["generation"]] for r in expected]
    for r in (r0, r1):
        field, msg = r["all_empty"]
        assert field == "distributed_check" and "no rank gave" in msg
    # rank 1 used to get a CollapseMonitorError for rank 0's InputError
    assert r0["bad_provenance"] == r1["bad_provenance"] == ["InputError", "provenance.synthetic_fraction"]
    # a failing check on rank 0 stopped the training job on every rank, strict or not
    for r in (r0, r1):
        stage, report, error, _ = r["locked"]
        assert stage is None and report is None and "database is locked" in error, r["locked"]
    assert r0["locked"][3] == "OperationalError"
    assert r0["locked_strict"] == ["OperationalError", True] and r1["locked_strict"] == ["CollapseMonitorError", True]
    assert r0["inside"] == r1["inside"] == ["InputError", "priors"], (r0["inside"], r1["inside"])
    # any other exception from one rank's provenance was raised there alone (rank 0 waited)
    assert r0["broken_provenance"] == r1["broken_provenance"]
    kind, field, msg = r0["broken_provenance"]
    assert (kind, field) == ("InputError", "provenance") and "config store unreachable" in msg, msg
    # provenance given on rank 1 only was dropped silently; two ranks that disagree were not noticed
    assert r0["rank1_provenance"]["synthetic_fraction"] == 0.9
    assert r0["rank1_provenance"]["sources"] == ["s3://corpus/mix.parquet"]
    assert r0["provenance_disagrees"] == r1["provenance_disagrees"]
    field, msg = r0["provenance_disagrees"]
    assert field == "provenance" and "rank 0 and rank 1" in msg
    assert r0["bad_broadcast"] == r1["bad_broadcast"]
    assert r0["bad_broadcast"][:2] == ["ConfigError", "broadcast"] and "'no' on rank 1" in r0["bad_broadcast"][2]


def test_without_process_group_is_a_local_check(tmp_path: Path) -> None:
    import collapse_monitor as cm
    from collapse_monitor.hooks import distributed_check

    ref_d, gens = _data()
    mon = cm.CollapseMonitor("local", reference=cm.Reference(**ref_d), sinks=[], home=tmp_path)
    g = gens[0]
    perm = np.random.default_rng(1).permutation(M)
    res = distributed_check(mon, probe_indices=perm, predictions=g["predictions"][perm], texts=g["texts"])
    single = cm.CollapseMonitor("local", reference=cm.Reference(**ref_d), sinks=[], home=tmp_path / "s")
    expected = single.check(cm.Observation(predictions=g["predictions"], texts=g["texts"]))
    assert res.rank == 0 and res.world_size == 1 and res.is_main
    assert res.report is not None and _clean(res.report) == _clean(expected)
    assert res.stage is expected.stage and res.generation == 0


@pytest.mark.parametrize(
    ("kwargs", "field", "words"),
    [
        ({"probe_indices": [0, 1], "predictions": [0]}, "probe_indices", "2 entries for 1"),
        ({"probe_indices": [0, M], "predictions": [0, 0]}, "probe_indices", "out of range"),
        ({"probe_indices": [0, 1], "predictions": [0, 0]}, "probe_indices", "predicted by no rank"),
        ({"embeddings": np.ones((3, 2))}, "embeddings", "d=8"),
        ({}, "distributed_check", "no rank gave"),
        # an empty shard is no shard: alone, nothing is left to check
        (
            {"probe_indices": [], "predictions": [], "embeddings": np.empty((0, D)), "texts": []},
            "distributed_check",
            "no rank gave",
        ),
        ({"probe_indices": [0, 1], "predictions": []}, "probe_indices", "2 entries for 0 predictions"),
        ({"embeddings": np.empty((0, 3))}, "embeddings", "d=8"),
    ],
)
def test_bad_input_names_the_field(tmp_path: Path, kwargs: dict, field: str, words: str) -> None:
    import collapse_monitor as cm
    from collapse_monitor.hooks import distributed_check

    ref_d, _ = _data()
    mon = cm.CollapseMonitor("bad", reference=cm.Reference(**ref_d), sinks=[], home=tmp_path)
    with pytest.raises(cm.InputError) as err:
        distributed_check(mon, **kwargs)
    assert err.value.field == field and words in str(err.value)
    assert mon.reports() == []  # nothing was logged


def test_conflicting_duplicates_are_refused() -> None:
    from collapse_monitor.hooks.distributed import _assemble_predictions

    a = {"idx": np.array([0, 1]), "pred": np.array([1, 2])}
    same = {"idx": np.array([1, 2]), "pred": np.array([2, 0])}
    assert _assemble_predictions([a, same], 3).tolist() == [1, 2, 0]
    clash = {"idx": np.array([1, 2]), "pred": np.array([3, 0])}
    import collapse_monitor as cm

    with pytest.raises(cm.InputError, match="probe item 1 got different predictions on ranks 0 and 1"):
        _assemble_predictions([a, clash], 3)
    # within one rank too: a repeat that agrees is a repeat, one that does not is refused
    assert _assemble_predictions([{"idx": np.array([0, 0, 1, 2]), "pred": np.array([1, 1, 2, 0])}], 3).tolist() == [
        1,
        2,
        0,
    ]
    with pytest.raises(cm.InputError, match="probe item 0 got two different predictions on rank 0"):
        _assemble_predictions([{"idx": np.array([0, 1, 0, 2]), "pred": np.array([1, 2, 2, 0])}], 3)


def test_idle_rank_without_failed_leaves_missing_probe_items_an_input_error(tmp_path: Path) -> None:
    """(b) A rank that gives nothing and declares no failure is an idle rank like any other: a
    probe set not sharded whole raises on every rank (it was skipped as if rank 1 had failed)."""
    r0, r1 = _run_two_ranks(tmp_path, "idle")
    assert r0["idle"] == r1["idle"], (r0["idle"], r1["idle"])
    kind, name, field, msg = r0["idle"]
    assert (kind, name, field) == ("raised", "InputError", "probe_indices"), r0["idle"]
    assert "3 of 301 probe items were predicted by no rank" in msg and "first: [298, 299, 300]" in msg
    assert "rank 1 gave no predictions" in msg and "passes failed=True (or the exception)" in msg, msg
    assert r0["last_error"] is None  # raised, not a skipped check


@pytest.fixture(scope="module")
def failed_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, dict]:
    return _run_two_ranks(tmp_path_factory.mktemp("failed"), "failed")


def test_failed_rank_with_missing_probe_items_skips_the_check_on_every_rank(failed_run: tuple[dict, dict]) -> None:
    """(a) rank 1 calls with failed=RuntimeError(...): no raise, the reason in error on every rank."""
    r0, r1 = failed_run
    for key in ("missing", "missing_true"):
        assert r0[key] == r1[key], (r0[key], r1[key])
        kind, stage, error, has_report = r0[key]
        assert kind == "result" and stage is None and not has_report, r0[key]
        assert "check skipped" in error and "rank 1 gave no predictions (its evaluation failed" in error, error
        assert "150 of 301 probe items were predicted by no rank" in error, error
        assert r0[key + ".last_error"] == "InputError" and r1[key + ".last_error"] is None
        assert r0[key + ".reports"] == 0
        assert [lvl for lvl, m in r0[key + ".logs"] if "check skipped" in m] == ["ERROR"], r0[key + ".logs"]
        assert r1[key + ".logs"] == []  # only rank 0 logs
    error = r0["missing"][2]
    assert "(its evaluation failed: RuntimeError: boom: token=***), so" in error, error  # its reason, redacted
    assert "its evaluation failed)" in r0["missing_true"][2]  # failed=True: no reason to give
    assert "shard the whole probe set" not in error  # that hint is for a probe set not sharded whole


def test_failed_rank_with_strict_raises_on_every_rank(failed_run: tuple[dict, dict]) -> None:
    """(e) strict=True: the same InputError("probe_indices") on every rank, as before."""
    r0, r1 = failed_run
    assert r0["missing_strict"] == r1["missing_strict"]
    kind, name, field, msg = r0["missing_strict"]
    assert (kind, name, field) == ("raised", "InputError", "probe_indices"), r0["missing_strict"]
    assert "predicted by no rank" in msg and "rank 1" in msg and "RuntimeError: boom" in msg and "s3cr3t" not in msg
    assert r0["missing_strict.reports"] == 0
    assert r0["all_gone_strict"] == r1["all_gone_strict"]
    assert r0["all_gone_strict"][1:3] == ["InputError", "distributed_check"], r0["all_gone_strict"]


def test_failed_with_inputs_or_a_bad_failed_value_is_refused_on_every_rank(failed_run: tuple[dict, dict]) -> None:
    """(c) failed= with predictions (a contradiction), or failed="yes": raised on every rank."""
    r0, r1 = failed_run
    assert r0["with_inputs"] == r1["with_inputs"]
    kind, name, field, msg = r0["with_inputs"]
    assert (kind, name, field) == ("raised", "InputError", "failed"), r0["with_inputs"]
    assert "on rank 1" in msg and "probe_indices, predictions, embeddings, texts" in msg, msg
    assert r0["bad_flag"] == r1["bad_flag"]
    kind, name, key, msg = r0["bad_flag"]
    assert (kind, name, key) == ("raised", "ConfigError", "failed") and "'yes' on rank 1" in msg, r0["bad_flag"]
    assert r0["with_inputs.reports"] == r0["bad_flag.reports"] == 0
    for key, (name, field) in {
        "bad_strict": ("ConfigError", "strict"),
        "bad_str": ("InputError", "distributed_check"),
    }.items():
        assert r0[key] == r1[key] and r0[key][:2] == ["raised", name], (r0[key], r1[key])
        assert field is None or r0[key][2] == field, r0[key]
    assert "_NoStr: (its message could not be read)" in r0["bad_str"][3], r0["bad_str"]
    assert r0["bad_repr"] == r1["bad_repr"], (r0["bad_repr"], r1["bad_repr"])
    assert (
        r0["bad_repr"][:3] == ["raised", "ConfigError", "failed"] and "<_NoRepr object> on rank 1" in r0["bad_repr"][3]
    )


def test_failed_rank_with_nothing_missing_checks_and_warns(failed_run: tuple[dict, dict], tmp_path: Path) -> None:
    """(d) rank 0 predicted the whole probe set: the check runs without rank 1's share, and rank 0
    warns that rank 1 failed."""
    import collapse_monitor as cm

    ref_d, gens = _data()
    single = cm.CollapseMonitor("failed-nothing_missing", reference=cm.Reference(**ref_d), sinks=[], home=tmp_path)
    g = gens[0]
    stage = single.check(cm.Observation(predictions=g["predictions"], embeddings=g["embeddings"])).stage.value
    r0, r1 = failed_run
    for key in ("nothing_missing", "empty_and_failed"):
        assert r0[key] == ["result", stage, None, True], r0[key]
        assert r1[key] == ["result", stage, None, False], r1[key]
        assert r0[key + ".reports"] == 1 and r0[key + ".last_error"] is None
        warned = [m for lvl, m in r0[key + ".logs"] if lvl == "WARNING"]
        assert len(warned) == 1 and "rank 1" in warned[0] and "evaluation failed" in warned[0], r0[key + ".logs"]
        assert r1[key + ".logs"] == []
    warned = next(m for lvl, m in r0["nothing_missing.logs"] if lvl == "WARNING")
    assert "RuntimeError: boom" in warned and "s3cr3t" not in warned
    # nothing at all left once rank 1 failed (rank 0 had nothing to add): skipped like (a)
    assert r0["all_gone"] == r1["all_gone"]
    kind, stage, error, _ = r0["all_gone"]
    assert kind == "result" and stage is None and "rank 1 gave no" in error and "no rank gave" in error, error
    assert r0["both_failed"] == r1["both_failed"]
    assert "ranks 0, 1 gave no share (their evaluation failed; rank 0: ValueError: no GPU)" in r0["both_failed"][2]


def test_failed_without_process_group(tmp_path: Path) -> None:
    """One process, no group: a failed evaluation is a skipped check (strict raises); failed with
    inputs and a bad failed value are refused."""
    import collapse_monitor as cm
    from collapse_monitor.hooks import distributed_check

    ref_d, gens = _data()
    mon = cm.CollapseMonitor("local-failed", reference=cm.Reference(**ref_d), sinks=[], home=tmp_path)
    res = distributed_check(mon, failed=ValueError("no GPU"))
    assert (
        res.stage is None and res.report is None and "rank 0 gave no" in res.error and "ValueError: no GPU" in res.error
    )
    assert isinstance(mon.last_error, cm.InputError)
    # an empty generator of texts is no input (it was refused as "given with texts"); a full one is
    res = distributed_check(mon, texts=(t for t in []), failed=True)
    assert res.report is None and "rank 0 gave no" in res.error
    with pytest.raises(cm.InputError, match="given with texts"):
        distributed_check(mon, texts=(t for t in ref_d["texts"][:3]), failed=True)
    with pytest.raises(cm.InputError, match="no rank gave"):
        distributed_check(mon, failed=True, strict=True)
    with pytest.raises(cm.InputError, match="given with predictions") as err:
        distributed_check(mon, predictions=gens[0]["predictions"], failed=True)
    assert err.value.field == "failed"
    for bad in ("yes", 1, ValueError):
        with pytest.raises(cm.ConfigError) as cerr:
            distributed_check(mon, predictions=gens[0]["predictions"], failed=bad)
        assert cerr.value.key == "failed"
    # a long message is cut to 200 characters, on one line
    error = distributed_check(mon, failed=RuntimeError("two\nlines " + "y" * 1000)).error
    assert error is not None and "(its evaluation failed: RuntimeError: two lines " + "y" * 173 + "...), so" in error
    # failed=False is no failure
    res = distributed_check(mon, predictions=gens[0]["predictions"], failed=False)
    assert res.report is not None and res.error is None
    assert len(mon.reports()) == 1


def test_a_replicate_gathered_from_two_ranks_equals_the_single_process_one(tmp_path: Path) -> None:
    """``distributed_check(replicate=True)`` adds the gathered outputs to the baseline as a
    replicate on rank 0 (the same metrics as ``check_replicate`` in one process), adds no
    generation, and tells rank 1 the baseline's generation; a flag that differs between the
    ranks is refused on both."""
    import collapse_monitor as cm

    ref_d, gens = _data()
    single = cm.CollapseMonitor("dist-rep", reference=cm.Reference(**ref_d), sinks=[], home=tmp_path / "single")
    single.check(cm.Observation(**gens[0]))
    g = _replicate_gen()
    g.pop("generation")
    want = {k: v.to_dict() for k, v in single.check_replicate(cm.Observation(**g)).items()}
    assert want["class_recall.3"]["value"] < want["class_recall.3"]["baseline"]  # not the baseline again

    r0, r1 = _run_two_ranks(tmp_path, "replicate")
    assert r0["replicate"] == want and r1["replicate"] is None
    for r in (r0, r1):
        assert r["stage"] is None and r["generation"] == 0 and r["report"] is False
        kind, typ, field, msg = r["mixed"]
        assert (kind, typ, field) == ("raised", "InputError", "replicate") and "on rank 1" in msg
        kind, stage, error, has_report = r["smaller"]
        assert (kind, stage, has_report) == ("result", None, False)
        assert "sample embeddings where the baseline had" in error and "pass at least" in error
        assert r["smaller_strict"][0] == "raised"
        kind, _, error, _ = r["no_baseline"]
        assert kind == "result" and "there is no baseline yet" in error
    assert r0["smaller_strict"][1] == "InputError" and r0["last_replicate"] is None
    mon = cm.CollapseMonitor("dist-rep", reference=cm.Reference(**ref_d), sinks=[], home=tmp_path / "dist")
    assert [h.generation for h in mon.reports()] == [0]
    assert len(mon.history.baseline("dist-rep").replicates) == 1


if __name__ == "__main__":
    _rank, _world, _port, _home, _out = sys.argv[1:6]
    _scenario = sys.argv[6] if len(sys.argv) > 6 else "main"
    {
        "main": _worker,
        "edge": _edge_worker,
        "idle": _idle_worker,
        "failed": _failed_worker,
        "replicate": _replicate_worker,
    }[_scenario](int(_rank), int(_world), int(_port), _home, _out)


def test_a_skipped_replicate_leaves_no_earlier_replicate_behind(tmp_path: Path) -> None:
    """One process: after a replicate was added, a replicate call skipped (the rank's own
    evaluation failed) or refused as bad input leaves ``last_replicate`` None, not the earlier
    call's metrics."""
    import collapse_monitor as cm
    from collapse_monitor.hooks import distributed_check

    ref_d, gens = _data()
    mon = cm.CollapseMonitor("local-rep", reference=cm.Reference(**ref_d), sinks=[], home=tmp_path)
    distributed_check(mon, predictions=gens[0]["predictions"], embeddings=gens[0]["embeddings"])
    g = _replicate_gen()
    res = distributed_check(mon, predictions=g["predictions"], embeddings=g["embeddings"], replicate=True)
    assert res.replicate is not None and mon.last_replicate is res.replicate
    res = distributed_check(mon, failed=RuntimeError("out of memory"), replicate=True)
    assert res.replicate is None and res.error is not None and mon.last_replicate is None
    distributed_check(mon, predictions=g["predictions"], embeddings=g["embeddings"], replicate=True)
    with pytest.raises(cm.InputError):
        distributed_check(mon, embeddings=np.ones((5, D + 1)), replicate=True)
    assert mon.last_replicate is None
