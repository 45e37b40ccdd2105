"""MLflowSink against a real ``mlflow server`` (sqlite store, proxied artifacts)."""

from __future__ import annotations

import json
import os
import socket
import sys

import numpy as np
import pytest
from scipy.stats import fisher_exact

import collapse_monitor as cm
from collapse_monitor.errors import ConfigError, SinkError
from collapse_monitor.sinks.base import EmitContext
from collapse_monitor.sinks.mlflow import MLflowSink, batches, metric_name, report_id, safe_uri
from collapse_monitor.types import Stage

_ENV = ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT", "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT")

# --- units --------------------------------------------------------------------------------------


def test_metric_names_never_merge_two_keys() -> None:
    """``a|b`` and ``a_b``, or two long labels with one prefix, shared one series: one overwrote
    the other in MLflow's charts."""
    keys = [
        "class_recall.a|b",
        "class_recall.a_b",
        "class_recall." + "L" * 300 + "A",
        "class_recall." + "L" * 300 + "B",
    ]
    names = [metric_name(k) for k in keys]
    assert len(set(names)) == 4 and names[1] == "collapse.class_recall.a_b"  # a plain key keeps its name


def test_a_label_that_looks_hashed_does_not_take_another_labels_name() -> None:
    """An MLflow audit (2026-12-08): class ``cat|dog`` is logged as ``cat_dog-e6c9584b``, and a
    class literally named ``cat_dog-e6c9584b`` kept that name: the two shared one series, and a
    metrics-only read-back gave the collapsed class the other's recall."""
    a, b = metric_name("class_recall.cat|dog"), metric_name("class_recall.cat_dog-e6c9584b")
    assert a == "collapse.class_recall.cat_dog-e6c9584b" and b != a and b.startswith(a + "-")
    assert metric_name("class_recall.cat-dog") == "collapse.class_recall.cat-dog"  # a plain label stays


@pytest.mark.parametrize(
    ("tags", "level", "stage"),
    [({"collapse.stage": "late_collapse"}, None, "late_collapse"), ({}, 1.0, "early_collapse"), ({}, None, None)],
)
def test_a_run_without_its_stage_tag_is_not_read_as_healthy(tmp_path, tags, level, stage) -> None:
    """An MLflow audit (2026-12-08): a run without report.json and without its
    ``collapse.stage`` tag (removed by hand) was rebuilt as healthy, and ``gate`` passed a
    collapsed generation. The ``collapse.stage_level`` metric every check logs stands in; a run
    with neither cannot be judged and says so."""
    from mlflow import MlflowClient

    from collapse_monitor.sinks.mlflow import report_from_run

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.create_experiment("collapse-monitor/staged", artifact_location=(tmp_path / "mlruns").as_uri())
    run = client.create_run(exp, tags={"collapse.monitor": "staged", "collapse.generation": "1", **tags})
    if level is not None:
        client.log_metric(run.info.run_id, "collapse.stage_level", level)
    got = client.get_run(run.info.run_id)
    if stage is None:
        with pytest.raises(cm.CollapseMonitorError, match="has no stage"):
            report_from_run(got)
    else:
        assert report_from_run(got).stage.value == stage


def test_metric_names_are_mlflow_safe() -> None:
    from mlflow.utils.validation import path_not_unique, validate_param_and_metric_name

    for key in ("tail_coverage", "class_recall.cat|dog", "class_recall.a/b", "class_recall.é", "x" * 400):
        name = metric_name(key)
        assert name.startswith("collapse.")
        assert validate_param_and_metric_name(name) and not path_not_unique(name)
        assert len(name) <= 250


def test_batches_respect_log_batch_limits() -> None:
    out = list(batches(list(range(2345)), list(range(230))))
    assert all(len(t) <= 100 and len(m) + len(t) <= 1000 for m, t in out)
    assert sum(len(m) for m, _ in out) == 2345 and sum(len(t) for _, t in out) == 230


def test_repr_and_links_hide_credentials() -> None:
    sink = MLflowSink("https://alice:hunter2secret@mlflow.example.com/base?token=abcdef123")
    assert "hunter2secret" not in repr(sink) and "abcdef123" not in repr(sink)
    assert sink.run_url("3", "r1") == "https://mlflow.example.com/base/#/experiments/3/runs/r1"
    assert safe_uri("sqlite:////tmp/x.db") == "sqlite:////tmp/x.db"
    assert "hunter2secret" not in sink.scrub("failed: https://alice:hunter2secret@mlflow.example.com/x")


def test_default_uri_is_resolved_at_construction(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    sink = MLflowSink()
    assert sink.tracking_uri.startswith("sqlite:///") and str(tmp_path) in sink.tracking_uri
    monkeypatch.chdir("/")
    assert str(tmp_path) in sink.tracking_uri  # absolute: a later chdir does not move the store


def test_the_default_uri_does_not_depend_on_import_order(tmp_path, monkeypatch) -> None:
    """MLflow audit (2026-12-06, second): with mlflow imported first, a folder holding an old
    ./mlruns made the default MLflow's file store (which MLflow 3 no longer writes to: every
    check failed and was spooled), while importing collapse_monitor first gave sqlite."""
    import mlflow

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mlruns" / "0").mkdir(parents=True)
    (tmp_path / "mlruns" / "0" / "meta.yaml").write_text("name: Default\n")
    assert "sqlite" not in mlflow.get_tracking_uri()  # MLflow's own default here: the file store
    assert MLflowSink().tracking_uri == f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'chosen.db'}")
    try:
        assert MLflowSink().tracking_uri == f"sqlite:///{tmp_path / 'chosen.db'}"  # an explicit choice wins
    finally:
        mlflow.set_tracking_uri(None)


@pytest.mark.parametrize(
    "kw", [{"timeout": 0}, {"max_retries": -1}, {"tracking_uri": "  "}, {"experiment": ""}, {"history_plot": "later"}]
)
def test_bad_options_raise_config_error(kw) -> None:
    with pytest.raises(ConfigError):
        MLflowSink(**kw)


@pytest.mark.timeout(90)  # a hang guard, not a timing assertion
def test_dead_server_fails_fast_with_redacted_error(kit) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once the socket closes
    before = {k: os.environ.get(k) for k in _ENV}
    sink = MLflowSink(f"http://bob:pa55word-xyz@127.0.0.1:{port}", timeout=2, max_retries=1)
    with pytest.raises(SinkError) as info:
        sink.emit(kit.make_report("dead", 0), EmitContext())
    assert "pa55word-xyz" not in str(info.value) and "bob:" not in str(info.value)
    assert f"127.0.0.1:{port}" in str(info.value)
    with pytest.raises(SinkError):
        sink.load_history("dead")
    assert {k: os.environ.get(k) for k in _ENV} == before  # bounds are restored after the call


@pytest.mark.timeout(90)  # a hang guard, not a timing assertion
def test_hanging_server_is_bounded_by_the_sink_timeout(kit) -> None:
    # a server that accepts connections and never answers: only the read timeout ends the call
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(16)
        port = srv.getsockname()[1]
        sink = MLflowSink(f"http://127.0.0.1:{port}", timeout=1, max_retries=0)
        with pytest.raises(SinkError) as info:
            sink.emit(kit.make_report("hang", 0), EmitContext())
    assert "timeout" in str(info.value).lower() or "timed out" in str(info.value).lower()


# --- against the real server --------------------------------------------------------------------


def _context(kit, report, *, baseline=None, changed=False, history=()):
    ref, labels = kit.chain_reference()
    obs = kit.chain_observation(labels, report.generation, with_embeddings=True)
    return EmitContext(
        reference=ref,
        observation=obs,
        history=list(history) or [report],
        extra={"baseline": baseline, "baseline_changed": changed},
    )


def test_emit_logs_metrics_tags_inputs_and_artifacts(mlflow_server, kit, tmp_path) -> None:
    name = kit.unique("emit")
    sink = MLflowSink(mlflow_server.url, evidently=False)
    base = kit.make_baseline()
    r0 = kit.make_report(name, 0)
    r1 = kit.make_report(name, 1, stage=Stage.EARLY_COLLAPSE, tail=0.5, declined=True)
    out0 = sink.emit(r0, _context(kit, r0, baseline=base, changed=True))
    out1 = sink.emit(r1, _context(kit, r1, baseline=base, history=[r0, r1]))
    client = mlflow_server.client()
    run = client.get_run(out1["run_id"])
    assert out1["mlflow_run"] == f"{mlflow_server.url}/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}"
    assert client.get_experiment(run.info.experiment_id).name == f"collapse-monitor/{name}"
    assert run.info.status == "FINISHED"
    tags = run.data.tags
    assert tags["collapse.monitor"] == name and tags["collapse.generation"] == "1"
    assert tags["collapse.stage"] == "early_collapse" and tags["collapse.parent_run_id"] == "parent-1"
    assert tags["collapse.report_id"] == report_id(r1) and tags["collapse.origin"] == "mixed"
    assert "collapse.baseline" not in tags  # the baseline was stored with generation 0 only
    assert "tail_coverage" in tags["mlflow.note.content"]
    m = run.data.metrics
    assert m["collapse.tail_coverage"] == pytest.approx(0.5)
    assert m["collapse.tail_coverage.ci_low"] == pytest.approx(0.45)
    assert m["collapse.tail_coverage.ci_high"] == pytest.approx(0.55)
    assert m[metric_name("class_recall.odd|label")] == pytest.approx(0.6)  # odd_label-<hash>
    assert m["collapse.stage_level"] == 1.0
    hist = client.get_metric_history(out1["run_id"], "collapse.tail_coverage")
    assert [(h.step, h.value) for h in hist] == [(1, 0.5)]  # step = generation
    inputs = {d.dataset.name: d for d in run.inputs.dataset_inputs}
    human = inputs["human-v1.parquet"]
    assert human.dataset.source_type == "s3" and "s3://corpus/human-v1.parquet" in human.dataset.source
    itags = {t.key: t.value for t in human.tags}
    assert itags["mlflow.data.context"] == "training" and itags["collapse.origin"] == "mixed"
    assert float(itags["collapse.synthetic_fraction"]) == 0.5
    assert itags["collapse.generation"] == "1"
    assert "synthetic_fraction" not in json.loads(human.dataset.profile)  # per run: in the input's tags
    ref_input = inputs[f"{name}-reference"]
    assert ref_input.dataset.digest == "f" * 16
    assert {t.key: t.value for t in ref_input.tags}["mlflow.data.context"] == "reference"
    assert sink.flush(timeout=60)  # the history chart is drawn and uploaded in the background
    arts = {a.path for a in client.list_artifacts(out1["run_id"], "collapse")}
    assert {"collapse/report.json", "collapse/history.png"} <= arts
    local = client.download_artifacts(out1["run_id"], "collapse", str(tmp_path))
    stored = json.loads((tmp_path / "collapse" / "report.json").read_text())
    assert stored["run_id"] == out1["run_id"] and stored["generation"] == 1
    assert (tmp_path / "collapse" / "history.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert local
    base_run = client.get_run(out0["run_id"])
    assert base_run.data.tags["collapse.baseline"] == "true"
    base_arts = {a.path for a in client.list_artifacts(out0["run_id"], "collapse/baseline")}
    assert base_arts == {"collapse/baseline/baseline.json", "collapse/baseline/items.npz"}


def test_load_history_round_trips_reports_and_baseline(mlflow_server, kit) -> None:
    name = kit.unique("hist")
    sink = MLflowSink(mlflow_server.url, evidently=False)
    base = kit.make_baseline()
    reports = [kit.make_report(name, g, tail=0.8 - 0.1 * g) for g in range(3)]
    for i, r in enumerate(reports):
        sink.emit(r, _context(kit, r, baseline=base, changed=(i == 0)))
    got = MLflowSink(mlflow_server.url).load_history(name)  # a fresh sink: nothing cached
    assert got is not None
    back, b = got
    assert [r.generation for r in back] == [0, 1, 2]
    for orig, r in zip(reports, back, strict=True):
        assert r.metrics == orig.metrics and r.provenance == orig.provenance
        assert r.created_at == orig.created_at and r.run_id
    assert b is not None and b.generation == 0 and b.fingerprint == base.fingerprint
    assert b.metrics == base.metrics and b.predictions == base.predictions
    assert set(b.items) == set(base.items)
    for k in base.items:
        np.testing.assert_array_equal(b.items[k], base.items[k])
        assert b.items[k].dtype == base.items[k].dtype
    assert MLflowSink(mlflow_server.url).load_history(kit.unique("never")) is None


def test_baseline_missing_on_server_is_uploaded_by_a_later_check(mlflow_server, kit) -> None:
    name = kit.unique("rebase")
    sink = MLflowSink(mlflow_server.url, evidently=False)
    base = kit.make_baseline()
    r0 = kit.make_report(name, 0)
    sink.emit(r0, None)  # a replay: no raw data, no baseline artifact
    r1 = kit.make_report(name, 1)
    out1 = MLflowSink(mlflow_server.url, evidently=False).emit(r1, _context(kit, r1, baseline=base))
    assert mlflow_server.client().get_run(out1["run_id"]).data.tags.get("collapse.baseline") == "true"
    got = sink.load_history(name)
    assert got is not None and got[1] is not None and got[1].predictions == base.predictions


def test_spool_replay_is_idempotent(mlflow_server, kit) -> None:
    name = kit.unique("idem")
    sink = MLflowSink(mlflow_server.url, evidently=False)
    r = kit.make_report(name, 0)
    client = mlflow_server.client()
    first = sink.emit(r, None)
    again = sink.emit(r, None)
    assert again["run_id"] == first["run_id"]
    # a partial run of a crashed attempt (RUNNING, same report id) is replaced, not kept
    r1 = kit.make_report(name, 1)
    exp_id = client.get_experiment_by_name(f"collapse-monitor/{name}").experiment_id
    partial = client.create_run(exp_id, tags={"collapse.report_id": report_id(r1), "collapse.monitor": name})
    out = sink.emit(r1, None)
    assert out["run_id"] != partial.info.run_id
    assert client.get_run(partial.info.run_id).info.lifecycle_stage == "deleted"
    runs = client.search_runs([exp_id])
    assert sorted(run.data.tags["collapse.generation"] for run in runs) == ["0", "1"]


def test_check_run_nests_under_the_callers_active_run(mlflow_server, kit, monkeypatch) -> None:
    import mlflow
    from mlflow.tracking._tracking_service import utils as tracking_utils

    # the caller's global tracking URI, restored by monkeypatch (no state leaks into other tests)
    monkeypatch.setattr(tracking_utils, "_tracking_uri", None)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
    name = kit.unique("nest")
    sink = MLflowSink(mlflow_server.url, evidently=False)
    r = kit.make_report(name, 0)
    exp_id = mlflow_server.client().create_experiment(f"training-{name}")
    with mlflow.start_run(experiment_id=exp_id) as parent:
        out = sink.emit(r, _context(kit, r))
    client = mlflow_server.client()
    child = client.get_run(out["run_id"])
    assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
    ptags = client.get_run(parent.info.run_id).data.tags
    assert ptags[f"collapse.{name}.run_id"] == out["run_id"]
    assert ptags[f"collapse.{name}.stage"] == "healthy"


@pytest.mark.slow
def test_evidently_report_attached_when_raw_data_is_there(mlflow_server, kit) -> None:
    name = kit.unique("evid")
    sink = MLflowSink(mlflow_server.url, evidently=True, evidently_components=4)
    r = kit.make_report(name, 0)
    out = sink.emit(r, _context(kit, r))
    client = mlflow_server.client()
    arts = {a.path for a in client.list_artifacts(out["run_id"], "collapse")}
    assert "collapse/evidently_drift.html" in arts
    share = client.get_run(out["run_id"]).data.metrics["collapse.embedding_drift_share"]
    assert 0.0 <= share <= 1.0 and share == sink.last_drift_share == out["embedding_drift_share"]


def test_monitor_default_sink_writes_into_the_working_directory(in_tmp_dir, kit) -> None:
    ref, labels = kit.chain_reference()
    mon = cm.CollapseMonitor("local-default", reference=ref, home=in_tmp_dir / "home")
    assert isinstance(mon.sinks[0], MLflowSink) and str(in_tmp_dir) in mon.sinks[0].tracking_uri
    mon.sinks[0].evidently = False
    report = mon.check(kit.chain_observation(labels, 0))
    assert report.errors == () and report.run_id
    assert (in_tmp_dir / "mlflow.db").exists()
    assert "mlflow" in sys.modules


def test_history_rebuilt_from_metrics_and_tags_without_artifacts(mlflow_server, kit) -> None:
    name = kit.unique("noart")
    sink = MLflowSink(mlflow_server.url, artifacts=False)
    reports = [kit.make_report(name, g, tail=0.7 + 0.01 * g) for g in range(2)]
    for r in reports:
        sink.emit(r, None)
    got = sink.load_history(name)
    assert got is not None
    back, baseline = got
    assert [r.generation for r in back] == [0, 1]
    for orig, r in zip(reports, back, strict=True):
        assert r.metrics["tail_coverage"].value == orig.metrics["tail_coverage"].value
        assert r.metrics["tail_coverage"].ci_low == orig.metrics["tail_coverage"].ci_low
        # its metric name is hashed; the collapse.metric_keys tag gives the key back
        assert "class_recall.odd|label" in r.metrics and set(r.metrics) == set(orig.metrics)
        assert r.created_at == orig.created_at and r.provenance is not None
        assert r.provenance.synthetic_fraction == 0.5
    assert baseline is not None and baseline.generation == 0 and baseline.items == {}  # metrics only


def _artifact_names(client, run_id):
    return {a.path for a in client.list_artifacts(run_id, "collapse")}


def test_history_plot_modes(mlflow_server, kit) -> None:
    name = kit.unique("plotmode")
    client = mlflow_server.client()
    r0 = kit.make_report(name, 0)
    sync = MLflowSink(mlflow_server.url, evidently=False, history_plot="sync")
    out = sync.emit(r0, _context(kit, r0))
    assert "collapse/history.png" in _artifact_names(client, out["run_id"])  # drawn inside emit
    assert sync._plots == []
    off = MLflowSink(mlflow_server.url, evidently=False, history_plot="off")
    r1 = kit.make_report(name, 1)
    out = off.emit(r1, _context(kit, r1, history=[r0, r1]))
    assert off.flush() and _artifact_names(client, out["run_id"]) == {"collapse/report.json"}
    bg = MLflowSink(mlflow_server.url, evidently=False)
    runs = []
    for g in range(2, 5):  # queued one after another on the one plotting thread
        r = kit.make_report(name, g)
        runs.append(bg.emit(r, _context(kit, r, history=[r0, r1, r]))["run_id"])
        assert client.get_run(runs[-1]).info.status == "FINISHED"  # the run itself is complete at once
    bg.close()
    assert not bg._plots and bg._plotter is None
    for run_id in runs:
        assert "collapse/history.png" in _artifact_names(client, run_id)


def test_background_plot_failure_is_recorded_not_raised(mlflow_server, kit, monkeypatch) -> None:
    import collapse_monitor.report_html as report_html

    def broken(*a, **k):
        raise RuntimeError("no fonts on this box")

    monkeypatch.setattr(report_html, "plot_trend", broken)
    name = kit.unique("plotfail")
    sink = MLflowSink(mlflow_server.url, evidently=False)
    r0 = kit.make_report(name, 0)
    out = sink.emit(r0, _context(kit, r0))
    assert sink.flush(timeout=60)
    run = mlflow_server.client().get_run(out["run_id"])
    assert run.data.tags["collapse.plot_error"] == "RuntimeError"
    assert run.info.status == "FINISHED"
    assert _artifact_names(mlflow_server.client(), out["run_id"]) == {"collapse/report.json"}


_EXIT_SCRIPT = """
import sys
import numpy as np
import collapse_monitor as cm
rng = np.random.default_rng(0)
ref = cm.Reference(embeddings=rng.normal(size=(300, 4)))
mon = cm.CollapseMonitor("exit-plot", reference=ref, sinks=[cm.MLflowSink(sys.argv[1], evidently=False)],
                         home=sys.argv[2])
report = mon.check(cm.Observation(embeddings=rng.normal(size=(300, 4))))
print(report.run_id)
"""  # exits straight after the check: no flush, no close


def test_background_plot_lands_when_the_process_exits_right_after_the_check(tmp_path) -> None:
    import subprocess

    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    env = {**os.environ, "MPLBACKEND": "Agg"}
    proc = subprocess.run(
        [sys.executable, "-c", _EXIT_SCRIPT, uri, str(tmp_path / "home")],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    run_id = proc.stdout.strip().splitlines()[-1]
    assert "collapse/history.png" in _artifact_names(MlflowClient(uri), run_id)


# --- long digests, permanent rejections, clean exception chains ---------------------------------


def test_digest_limit_matches_the_installed_mlflow() -> None:
    from mlflow.utils import validation

    from collapse_monitor.sinks.mlflow import MAX_DATASET_DIGEST, MAX_INPUT_TAG_VALUE

    assert MAX_DATASET_DIGEST == validation.MAX_DATASET_DIGEST_SIZE
    assert MAX_INPUT_TAG_VALUE == validation.MAX_INPUT_TAG_VALUE_SIZE


def test_sha256_provenance_digest_is_logged_in_full(mlflow_server, kit) -> None:
    import dataclasses
    import hashlib

    name = kit.unique("digest")
    digest = hashlib.sha256(b"training-set").hexdigest()  # 64 characters; MLflow keeps 36
    r = kit.make_report(name, 0)
    one_source = dataclasses.replace(r.provenance, sources=("s3://corpus/mix-gen0.parquet",), digest=digest)
    no_source = dataclasses.replace(one_source, sources=(), digest="sha256:" + digest)
    client = mlflow_server.client()
    sink = MLflowSink(mlflow_server.url, evidently=False, history_plot="off")
    for g, prov in enumerate((one_source, no_source)):
        report = dataclasses.replace(kit.make_report(name, g), provenance=prov)
        run = client.get_run(sink.emit(report, None)["run_id"])  # used to fail: 400 INVALID_PARAMETER_VALUE
        assert run.info.status == "FINISHED" and run.data.tags["collapse.data_digest"] == prov.digest
        training = [d for d in run.inputs.dataset_inputs if d.dataset.name != f"{name}-reference"]
        assert len(training) == 1
        assert training[0].dataset.digest == digest[:36]  # a prefix of the same hash
        itags = {t.key: t.value for t in training[0].tags}
        assert itags["collapse.data_digest"] == prov.digest


def test_content_rejections_are_permanent_and_outages_are_not(mlflow_server, kit) -> None:
    import dataclasses

    from collapse_monitor.sinks.base import PermanentSinkError, is_permanent

    name = kit.unique("reject")
    sink = MLflowSink(mlflow_server.url, evidently=False, history_plot="off")
    r = kit.make_report(name, 0)
    # a source MLflow refuses (over 65535 characters): the server answers 400 INVALID_PARAMETER_VALUE.
    # Provenance refuses such a source since 2026-12-06; a report spooled before gets through
    prov = dataclasses.replace(r.provenance)
    object.__setattr__(prov, "sources", ("g-" + "x" * 70_000,))
    poison = dataclasses.replace(r, provenance=prov)
    with pytest.raises(PermanentSinkError) as info:
        sink.emit(poison, None)
    assert is_permanent(info.value) and "INVALID_PARAMETER_VALUE" in str(info.value)
    assert sink.emit(r, None)["run_id"]  # the sink itself is fine
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(SinkError) as info:
        MLflowSink(f"http://127.0.0.1:{port}", timeout=1, max_retries=0).emit(r, None)
    assert not is_permanent(info.value)  # connection refused: retried later, in order


@pytest.mark.timeout(90)
def test_sink_errors_chain_no_mlflow_exception(kit) -> None:
    import traceback

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sink = MLflowSink(f"http://bob:pa55word-xyz@127.0.0.1:{port}", timeout=1, max_retries=0)
    calls = {
        "emit": lambda: sink.emit(kit.make_report("chain", 0), EmitContext()),
        "replay": lambda: sink.emit(kit.make_report("chain", 0), None),
        "runs": lambda: sink.runs("chain"),
        "load_history": lambda: sink.load_history("chain"),
        "latest": lambda: sink.latest("chain"),
    }
    for what, call in calls.items():
        with pytest.raises(SinkError) as info:
            call()
        err = info.value
        assert err.__cause__ is None and err.__context__ is None, what  # MLflow's exception holds the URL
        assert "pa55word-xyz" not in "".join(traceback.format_exception(err)), what


@pytest.mark.parametrize("tag", ["1.5", "nan", "half", "-0.1"])
def test_a_hand_edited_synthetic_fraction_tag_does_not_stop_the_history(tmp_path, tag, caplog) -> None:
    """A run whose report.json is gone is rebuilt from its tags; a ``collapse.synthetic_fraction``
    tag that is not a share in [0, 1] raised InputError / ValueError and stopped the history
    from loading. It is ignored with a warning now."""
    from mlflow import MlflowClient

    from collapse_monitor.sinks.mlflow import report_from_run

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.create_experiment("collapse-monitor/edited", artifact_location=(tmp_path / "mlruns").as_uri())
    tags = {
        "collapse.monitor": "edited",
        "collapse.generation": "2",
        "collapse.stage": "healthy",
        "collapse.origin": "generated",
        "collapse.synthetic_fraction": tag,
    }
    run = client.create_run(exp, tags=tags)
    client.log_metric(run.info.run_id, "collapse.tail_coverage", 0.9)
    with caplog.at_level("WARNING", logger="collapse_monitor.sinks.mlflow"):
        report = report_from_run(client.get_run(run.info.run_id))
    assert report.generation == 2 and report.provenance is not None
    assert report.provenance.synthetic_fraction is None
    assert "ignoring collapse.synthetic_fraction tag" in caplog.text
    tags["collapse.synthetic_fraction"] = "0.25"
    ok = client.create_run(exp, tags=tags)
    assert report_from_run(client.get_run(ok.info.run_id)).provenance.synthetic_fraction == 0.25


def test_sources_stored_before_they_were_checked_do_not_stop_the_history(tmp_path) -> None:
    """Provenance refuses a blank or a more than 8,192-character source since the audit; runs
    and reports stored before it that hold one made report_from_run and Report.from_dict raise
    InputError, so the whole history stopped loading. They are read: blank ones dropped, long
    ones cut."""
    from mlflow import MlflowClient
    from mlflow.entities import Dataset, DatasetInput, InputTag

    from collapse_monitor.sinks.mlflow import report_from_run
    from collapse_monitor.types import MAX_SOURCE_CHARS

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.create_experiment("collapse-monitor/old", artifact_location=(tmp_path / "mlruns").as_uri())
    tags = {
        "collapse.monitor": "old",
        "collapse.generation": "1",
        "collapse.stage": "healthy",
        "collapse.origin": "mixed",
    }
    run = client.create_run(exp, tags=tags)
    long_uri = "s3://corpus/" + "x" * 9000
    inputs = [
        DatasetInput(
            Dataset(name=f"src-{i}", digest=f"d{i}", source_type="s3", source=json.dumps({"uri": uri})),
            tags=[InputTag("mlflow.data.context", "training")],
        )
        for i, uri in enumerate(["   ", long_uri, "s3://corpus/ok.parquet"])
    ]
    client.log_inputs(run.info.run_id, datasets=inputs)
    sources = report_from_run(client.get_run(run.info.run_id)).provenance.sources
    assert len(sources) == 2 and sources[1] == "s3://corpus/ok.parquet"
    assert (
        len(sources[0]) == MAX_SOURCE_CHARS and sources[0].startswith("s3://corpus/xxx") and sources[0].endswith("...")
    )

    stored = {"synthetic_fraction": 0.5, "sources": ["", "  ", long_uri, "s3://corpus/ok.parquet"]}
    prov = cm.Provenance.from_dict(stored)
    assert prov.sources[1:] == ("s3://corpus/ok.parquet",) and len(prov.sources[0]) == MAX_SOURCE_CHARS
    with pytest.raises(cm.InputError):  # what a user passes is still checked
        cm.Provenance(0.5, sources=stored["sources"])


def test_nesting_under_the_callers_run_with_a_relative_sqlite_uri(tmp_path, monkeypatch) -> None:
    """MLFLOW_TRACKING_URI=sqlite:///mlflow.db (relative, the documented default) is the store
    the sink writes (absolute): the check used to stay unnested, the training run untagged."""
    import mlflow

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db")
    mlflow.set_tracking_uri(None)
    mon = cm.CollapseMonitor("nest", reference=cm.Reference(labels=[0, 1] * 20), home=tmp_path / "home")
    try:
        # an explicit experiment: an earlier test's mlflow.set_experiment leaves a global id
        training = mlflow.MlflowClient().create_experiment("training")
        with mlflow.start_run(experiment_id=training) as parent:
            report = mon.check(cm.Observation(predictions=[0, 1] * 20))
        assert report.errors == (), report.errors
        client = mlflow.MlflowClient()
        child = client.get_run(report.run_id)
        assert child.data.tags.get("mlflow.parentRunId") == parent.info.run_id
        assert client.get_run(parent.info.run_id).data.tags.get("collapse.nest.stage") == "healthy"
    finally:
        mlflow.set_tracking_uri(None)


def test_a_deleted_experiment_is_restored_not_dead_lettered(tmp_path) -> None:
    """Deleting the experiment while a process runs made every later report a permanent dead
    letter ("must be in the 'active' state"): the sink cached its id."""
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    sink = MLflowSink(uri, evidently=False, history_plot="off")
    mon = cm.CollapseMonitor("gone", reference=cm.Reference(labels=[0, 1] * 20), sinks=[sink], home=tmp_path)
    mon.check(cm.Observation(predictions=[0, 1] * 20))
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("collapse-monitor/gone")
    client.delete_experiment(exp.experiment_id)
    report = mon.check(cm.Observation(predictions=[0, 1] * 20))
    assert report.errors == (), report.errors
    assert client.get_experiment(exp.experiment_id).lifecycle_stage == "active"
    assert len(client.search_runs([exp.experiment_id])) == 2
    assert not list((tmp_path / "spool").rglob("*.dead"))


def test_a_run_without_artifacts_never_claims_the_baseline(tmp_path) -> None:
    """With artifacts=False the run was tagged collapse.baseline=true though nothing was
    uploaded; a later process with artifacts found the tag and never uploaded it either."""
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    ref = cm.Reference(labels=[0, 1] * 20)
    for artifacts in (False, True):
        sink = MLflowSink(uri, evidently=False, history_plot="off", artifacts=artifacts)
        mon = cm.CollapseMonitor("noart", reference=ref, sinks=[sink], home=tmp_path / "home")
        assert mon.check(cm.Observation(predictions=[0, 1] * 20)).errors == ()
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("collapse-monitor/noart")
    runs = sorted(client.search_runs([exp.experiment_id]), key=lambda r: int(r.data.tags["collapse.generation"]))
    assert "collapse.baseline" not in runs[0].data.tags  # generation 0: no artifacts, no claim
    assert runs[1].data.tags.get("collapse.baseline") == "true"  # uploaded by the first run that could
    assert any(a.path.endswith("baseline") for a in client.list_artifacts(runs[1].info.run_id, "collapse"))


def test_the_report_mlflow_stores_is_the_report_the_caller_gets(tmp_path, http_receiver) -> None:
    """report.json was written before the monitor merged what the sink returned: a history
    re-seeded from MLflow lacked embedding_drift_share and the alerts' links."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    rng = np.random.default_rng(0)
    ref_x = rng.normal(size=(300, 4))
    sink = MLflowSink(uri, history_plot="off")  # Evidently on: embedding_drift_share
    mon = cm.CollapseMonitor(
        "same",
        reference=cm.Reference(embeddings=ref_x),
        sinks=[sink],
        home=tmp_path / "home",
        alerts=[cm.Webhook(http_receiver.url_for("/hook"), name="oncall")],
        links={"dashboard": "https://grafana.example/d/collapse-monitor-detail"},
    )
    mon.check(cm.Observation(embeddings=rng.normal(size=(300, 4))))
    collapsed = mon.check(cm.Observation(embeddings=rng.normal(size=(300, 4)) * 0.2))
    assert collapsed.alerts and collapsed.errors == ()
    assert "embedding_drift_share" in collapsed.metrics
    stored = sink.latest("same")
    assert stored is not None
    assert stored.to_dict() == collapsed.to_dict()
    assert set(stored.alerts[0].links) == {"dashboard", "mlflow_run"}


def test_a_failed_evidently_report_is_in_the_report_errors(tmp_path, monkeypatch) -> None:
    """The run is logged without it, and that used to be only a tag and a log line."""
    from collapse_monitor.sinks import evidently

    def broken(*args, **kwargs):
        raise RuntimeError("evidently broke")

    monkeypatch.setattr(evidently, "build_drift_report", broken)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    x = np.random.default_rng(0).normal(size=(100, 3))
    mon = cm.CollapseMonitor(
        "ev", reference=cm.Reference(embeddings=x), sinks=[MLflowSink(uri, history_plot="off")], home=tmp_path
    )
    report = mon.check(cm.Observation(embeddings=x))
    assert report.run_id is not None
    assert report.errors == ("mlflow: evidently failed (RuntimeError); the run is logged without it",), report.errors


def test_a_generation_checked_again_marks_its_older_runs_superseded(mlflow_server, kit) -> None:
    """A re-checked generation left two runs of one name, and nothing in MLflow said which one
    counts (``load_history``, ``latest`` and ``gate`` read the newer check)."""
    name = kit.unique("again")
    sink = MLflowSink(mlflow_server.url, evidently=False, history_plot="off")
    client = mlflow_server.client()

    def tags(out: dict) -> dict:
        return client.get_run(out["run_id"]).data.tags

    t = 1_800_000_000.0
    base = sink.emit(kit.make_report(name, 0, created_at=t), None)
    first = sink.emit(kit.make_report(name, 1, created_at=t + 10), None)
    assert "collapse.superseded_by" not in tags(first)  # checked once: nothing to mark
    again = sink.emit(kit.make_report(name, 1, tail=0.5, created_at=t + 20), None)
    assert tags(first)["collapse.superseded_by"] == again["run_id"]
    assert "collapse.superseded_by" not in tags(again) and "collapse.superseded_by" not in tags(base)
    # a late spool replay of a still older check of generation 1 does not take over
    stale = sink.emit(kit.make_report(name, 1, tail=0.9, created_at=t + 5), None)
    assert tags(stale)["collapse.superseded_by"] == again["run_id"]
    assert tags(first)["collapse.superseded_by"] == again["run_id"]
    assert "collapse.superseded_by" not in tags(again)
    history = MLflowSink(mlflow_server.url).load_history(name)
    assert history is not None and [r.run_id for r in history[0]] == [base["run_id"], again["run_id"]]

    # more checks of one generation than a search reads (100; 2 here): the oldest runs were
    # read, so the newest check was never compared and was left untagged beside a "newest" one
    other = kit.unique("again-many")
    small = MLflowSink(mlflow_server.url, evidently=False, history_plot="off")
    small._supersede_window = 2
    outs = [small.emit(kit.make_report(other, 0, created_at=t + i), None) for i in range(4)]
    assert "collapse.superseded_by" not in tags(outs[-1])
    assert tags(outs[-2])["collapse.superseded_by"] == outs[-1]["run_id"]  # searched oldest first: unset


def test_provenance_inputs_are_per_run_bounded_and_read_back(mlflow_server, kit) -> None:
    """Provenance audit (2026-12-06): a source logged again showed generation 0's share in
    MLflow's Datasets view for good (MLflow reuses a dataset entity per name and digest, and
    the per-run facts were in its profile); 10,000 sources timed out in one log_inputs call on
    every replay; a history rebuilt without report.json lost the sources; a file name with a
    lone surrogate (a Latin-1 name from os.listdir) could never be logged."""
    import dataclasses

    name = kit.unique("prov")
    client = mlflow_server.client()
    sink = MLflowSink(mlflow_server.url, evidently=False, history_plot="off", artifacts=False)

    def emit(g: int, fraction: float, sources: tuple[str, ...]):
        prov = cm.Provenance(fraction, sources=sources)
        report = dataclasses.replace(kit.make_report(name, g), provenance=prov)
        return client.get_run(sink.emit(report, None)["run_id"])

    def training(run) -> list:
        return [d for d in run.inputs.dataset_inputs if d.dataset.name != f"{name}-reference"]

    same = ("s3://corpus/mix/data.parquet",)
    emit(0, 0.0, same)
    later = training(emit(1, 0.9, same))[0]
    assert {t.key: t.value for t in later.tags}["collapse.synthetic_fraction"] == "0.9"
    assert {t.key: t.value for t in later.tags}["collapse.generation"] == "1"
    assert json.loads(later.dataset.profile) == {"role": "training data source"}  # nothing per run

    many = tuple(f"s3://corpus/shards/part-{i:05d}.parquet" for i in range(250))
    run = emit(2, 0.5, many)
    assert run.info.status == "FINISHED"
    inputs = training(run)
    assert len(inputs) == 101
    more = [d for d in inputs if any(t.key == "collapse.sources_total" for t in d.tags)]
    assert len(more) == 1 and {t.key: t.value for t in more[0].tags}["collapse.sources_total"] == "250"

    odd = ("caf\udce9-latin1.parquet", "s3://corpus/ok.parquet")
    run = emit(3, 0.5, odd)
    assert run.info.status == "FINISHED"
    history = MLflowSink(mlflow_server.url).load_history(name)  # no report.json: from tags and inputs
    assert history is not None
    by_gen = {r.generation: r.provenance for r in history[0]}
    assert by_gen[1].sources == same and by_gen[1].synthetic_fraction == 0.9
    assert len(by_gen[2].sources) == 100 and by_gen[2].sources[0] == many[0]
    assert by_gen[3].sources == ("caf\\xe9-latin1.parquet", "s3://corpus/ok.parquet")


def test_a_baseline_read_back_without_items_is_not_paired_with_the_current_check(tmp_path) -> None:
    """MLflow audit (2026-12-06, second): a history re-read from MLflow without the baseline's
    per-item vectors (artifacts=False, or the artifact unreadable) took the current check's
    items as the baseline's, so every paired test compared a generation with itself: p = 1,
    a collapsed chain read healthy on the new machine, check after check."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    labels = np.array([0] * 300 + [1] * 150 + [2] * 30 + [3] * 20)
    ref = cm.Reference(labels=labels)
    collapsed = labels.copy()
    collapsed[np.flatnonzero(labels == 3)[:12]] = 0

    def monitor(home: str) -> cm.CollapseMonitor:
        sink = MLflowSink(uri, evidently=False, history_plot="off", artifacts=False)
        return cm.CollapseMonitor("reread", reference=ref, sinks=[sink], home=tmp_path / home)

    first = monitor("home")
    first.check(cm.Observation(predictions=labels))
    assert first.check(cm.Observation(predictions=collapsed)).stage is cm.Stage.EARLY_COLLAPSE
    again = monitor("new-home")  # the chain goes on elsewhere: history read back from MLflow
    for generation in (2, 3):
        report = again.check(cm.Observation(predictions=collapsed))
        assert report.generation == generation
        assert report.stage is cm.Stage.EARLY_COLLAPSE, [(f.key, f.test, f.p_value) for f in report.findings]
        rare = next(f for f in report.findings if f.key == "rare_class_recall" and f.kind == "baseline")
        # not McNemar against itself: Fisher's test on the counts MLflow keeps (collapse.<key>.n)
        expected = fisher_exact([[8, 12], [20, 0]], alternative="less").pvalue
        assert rare.test == "fisher-exact" and rare.p_value == pytest.approx(expected, rel=1e-9)
        assert any("no per-item vectors" in n for n in report.notes), report.notes


def _checked_without_artifacts(tmp_path, name: str, labels: np.ndarray, preds: np.ndarray):
    """One check of ``preds`` against ``labels`` logged to a sqlite store with metrics and tags
    only (no report.json): the report and its MLflow run."""
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mon = cm.CollapseMonitor(
        name,
        reference=cm.Reference(labels=labels),
        sinks=[MLflowSink(uri, evidently=False, history_plot="off", artifacts=False)],
        home=tmp_path / "home",
    )
    report = mon.check(cm.Observation(predictions=preds))
    return report, MlflowClient(uri).get_run(report.run_id)


def test_counts_and_odd_class_names_come_back_from_metrics_alone(tmp_path) -> None:
    """A report rebuilt from a run's metrics (no report.json) keeps each proportion's item count
    (``collapse.<key>.n``, so a read-back baseline gets Fisher's test, not the interval z-test
    that is up to 10x anti-conservative for small classes), and a class named ``n`` or
    ``ci_low`` reads as its recall, not as another metric's count or bound (it was dropped)."""
    from collapse_monitor.sinks.mlflow import report_from_run

    labels = np.array(["a"] * 300 + ["n"] * 150 + ["ci_low"] * 30 + ["r"] * 20)
    report, run = _checked_without_artifacts(tmp_path, "counts", labels, labels)
    assert run.data.metrics["collapse.class_recall.r.n"] == 20.0
    assert "collapse.balanced_accuracy.n" not in run.data.metrics  # counts only where a test reads them
    back = report_from_run(run).metrics
    assert set(back) == set(report.metrics)
    for key in ("class_recall.n", "class_recall.ci_low", "class_recall.r", "accuracy"):
        assert back[key].n == report.metrics[key].n and back[key].n is not None, key
        assert back[key].value == pytest.approx(report.metrics[key].value), key


def test_a_class_named_like_another_classes_count_keeps_its_own_series(tmp_path) -> None:
    """Classes ``a`` and ``a.n`` (or ``a.ci_low``): the plain name of a.n's recall was the name of
    a's item count, ``collapse.class_recall.a.n``, so one overwrote the other and a.n's recall
    came back as a's count (audit, stop 36). Such a label now gets a hashed name, as labels
    with characters MLflow refuses do."""
    from collapse_monitor.sinks.mlflow import report_from_run

    labels = np.array(["a"] * 300 + ["a.n"] * 150 + ["a.ci_low"] * 30 + ["b"] * 20)
    preds = labels.copy()
    preds[np.flatnonzero(labels == "a.n")[:75]] = "a"  # a.n's recall 0.5; a's count stays 300
    report, run = _checked_without_artifacts(tmp_path, "collide", labels, preds)
    m = run.data.metrics
    assert m["collapse.class_recall.a.n"] == 300.0  # a's count, not overwritten by a.n's recall
    assert m[metric_name("class_recall.a.n")] == pytest.approx(0.5)
    assert m["collapse.class_recall.a.ci_low"] == pytest.approx(report.metrics["class_recall.a"].ci_low)
    assert m[metric_name("class_recall.a.ci_low")] == pytest.approx(1.0)
    back = report_from_run(run).metrics
    assert set(back) == set(report.metrics)  # under their own keys (the collapse.metric_keys tag)
    assert back["class_recall.a"].n == 300 and back["class_recall.a"].value == pytest.approx(1.0)
    assert back["class_recall.a.n"].value == pytest.approx(0.5) and back["class_recall.a.n"].n == 150
    assert back["class_recall.a.ci_low"].value == pytest.approx(1.0)
    # a run logged without the tag (before it existed) reads them back under the hashed names
    del run.data.tags["collapse.metric_keys"]
    assert back.keys() - report_from_run(run).metrics.keys() == {"class_recall.a.n", "class_recall.a.ci_low"}


def test_the_metric_keys_tag_stays_within_a_tags_size() -> None:
    """Thousands of renamed class keys: the tag keeps what fits in 5000 characters, the rest
    come back hashed (MLflow refuses a longer tag value and with it the whole batch)."""
    from collapse_monitor.sinks.mlflow import _keys_from_tag, _renamed_keys

    keys = {f"class_recall.label|{i:04d}": 1 for i in range(2000)}
    tag = _renamed_keys(keys)
    assert tag is not None and 4900 < len(tag) <= 5000
    back = _keys_from_tag(tag)
    assert 50 < len(back) < 2000 and all(
        keys.get(v) == 1 and metric_name(v) == "collapse." + k for k, v in back.items()
    )
    assert _keys_from_tag("[1, 2]") == _keys_from_tag("not json") == _keys_from_tag(None) == {}


def test_link_tokens_are_masked_in_the_stored_report(tmp_path) -> None:
    """MLflow audit (2026-12-06, second): a dashboard link's ``auth_token`` was written verbatim
    into ``collapse/report.json``, readable by anyone who can read the run (the CLI masks it)."""
    import json
    import tempfile

    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    labels = np.array([0] * 300 + [1] * 150 + [2] * 30 + [3] * 20)
    collapsed = labels.copy()
    collapsed[np.flatnonzero(labels == 3)[:15]] = 0
    dashboard = "https://grafana.example.com/d/abc?var-monitor=leak&auth_token=SECRETTOKEN123#panel"
    mon = cm.CollapseMonitor(
        "leak",
        reference=cm.Reference(labels=labels),
        sinks=[MLflowSink(uri, history_plot="off", evidently=False)],
        home=tmp_path / "home",
        links={"dashboard": dashboard},
    )
    mon.check(cm.Observation(predictions=labels))
    report = mon.check(cm.Observation(predictions=collapsed))
    assert report.alerts and report.alerts[0].links["dashboard"] == dashboard  # the caller's own copy
    path = MlflowClient(uri).download_artifacts(report.run_id, "collapse/report.json", tempfile.mkdtemp(dir=tmp_path))
    with open(path) as fh:
        text = fh.read()
    assert "SECRETTOKEN123" not in text
    links = json.loads(text)["alerts"][0]["links"]
    assert links["dashboard"] == "https://grafana.example.com/d/abc?var-monitor=leak&auth_token=***#panel"
    assert links["mlflow_run"].endswith(report.run_id) or report.run_id in links["mlflow_run"]


def test_an_incident_open_behind_a_healthy_check_survives_a_history_read_back(tmp_path) -> None:
    """MLflow audit (2026-12-06, second): a chain continued from MLflow restored only the highest
    generation's *stage*: an incident waiting out resolve_after behind a healthy check was lost
    and the next collapse paged a new incident (the same home raised none)."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    labels = np.array([0] * 300 + [1] * 150 + [2] * 30 + [3] * 20)
    collapsed = labels.copy()
    collapsed[np.flatnonzero(labels == 3)[:12]] = 0

    def monitor(home: str) -> cm.CollapseMonitor:
        sink = MLflowSink(uri, evidently=False, history_plot="off")
        return cm.CollapseMonitor(
            "incident",
            reference=cm.Reference(labels=labels),
            sinks=[sink],
            home=tmp_path / home,
            rules={"resolve_after": 2},
        )

    first = monitor("home")
    first.check(cm.Observation(predictions=labels))
    assert [a.status for a in first.check(cm.Observation(predictions=collapsed)).alerts] == ["firing"]
    healthy = first.check(cm.Observation(predictions=labels))
    assert healthy.stage is cm.Stage.HEALTHY and healthy.open_alerts == {"early_collapse": "warning"}
    again = monitor("new-home").check(cm.Observation(predictions=collapsed))
    assert again.generation == 3 and again.stage is cm.Stage.EARLY_COLLAPSE
    assert again.alerts == (), [(a.rule, a.status) for a in again.alerts]  # the same incident: no new page
    assert again.open_alerts == {"early_collapse": "warning"}


def test_a_database_race_reported_as_bad_request_is_retried_not_dead_lettered() -> None:
    """MLflow audit (2026-12-06, second): against a PostgreSQL-backed server, 3 of 18 parallel
    first checks lost the unique-key race in log_inputs; MLflow's SQL store returns any database
    error as 400 BAD_REQUEST, and those reports were dead-lettered for good."""
    from mlflow.exceptions import RestException

    sink = MLflowSink("http://127.0.0.1:5000")
    race = RestException(
        {
            "error_code": "BAD_REQUEST",
            "message": '(psycopg2.errors.UniqueViolation) duplicate key value violates unique constraint "dataset_pk"',
        }
    )
    assert not sink.rejected_for_good(race)
    refused = RestException({"error_code": "BAD_REQUEST", "message": "Param value too long"})
    invalid = RestException({"error_code": "INVALID_PARAMETER_VALUE", "message": "Invalid value"})
    assert sink.rejected_for_good(refused) and sink.rejected_for_good(invalid)


@pytest.mark.timeout(120)  # a hang guard, not a timing assertion
def test_a_report_queues_behind_a_failed_replay_without_a_second_wait(tmp_path) -> None:
    """MLflow audit (2026-12-06, second): against a server that accepts connections and never
    answers, each check waited twice (the replay of the spooled report, then its own report):
    twice the documented bound. When the replay fails, the report is spooled behind it untried."""
    import threading

    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(64)
        accepted: list[socket.socket] = []

        def accept() -> None:
            while True:
                try:
                    accepted.append(srv.accept()[0])
                except OSError:
                    return

        threading.Thread(target=accept, daemon=True).start()
        sink = MLflowSink(f"http://127.0.0.1:{srv.getsockname()[1]}", timeout=1, max_retries=0, history_plot="off")
        mon = cm.CollapseMonitor("hang", reference=cm.Reference(labels=[0, 1] * 20), sinks=[sink], home=tmp_path)
        first = mon.check(cm.Observation(predictions=[0, 1] * 20))
        assert first.errors and mon.spool.count(sink.spool_key) == 1
        before = len(accepted)
        second = mon.check(cm.Observation(predictions=[0, 1] * 20))
        tried = len(accepted) - before
        for c in accepted:
            c.close()
    assert tried == 1, tried  # the replay's request only
    assert any("not tried" in e for e in second.errors), second.errors
    spooled = [json.loads(p.read_text())["generation"] for p in mon.spool.pending(sink.spool_key)]
    assert spooled == [0, 1]  # in order, behind the older one


def test_the_runbooks_history_query_orders_generations_numerically(tmp_path, kit, monkeypatch) -> None:
    """integrations/runbook.md step 2, run as written: it ordered by ``metrics.collapse.generation``,
    which was only a tag, so the order was the store's; generation 10 must come after 9 (it now
    orders by the tag as a number, which runs of every version carry)."""
    import re
    import textwrap
    from pathlib import Path

    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    sink = MLflowSink(uri, artifacts=False, evidently=False, history_plot="off")
    for g in (10, 0, 9, 2):
        sink.emit(kit.make_report("digits-generator", g, tail=0.8 - 0.01 * g), None)
    runbook = (Path(__file__).parents[2] / "integrations" / "runbook.md").read_text()
    snippet = next(b for b in re.findall(r"```python\n(.*?)```", runbook, re.S) if ".sort_values(" in b)
    snippet = textwrap.dedent(snippet.rstrip(" "))  # indented under a list item
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    scope: dict = {}
    try:
        exec(compile(snippet, "runbook.md", "exec"), scope)
    finally:
        mlflow.set_tracking_uri(None)  # MLflow keeps it process-wide: later tests read their own
    runs = scope["runs"]
    assert runs["tags.collapse.generation"].tolist() == ["0", "2", "9", "10"]
    assert runs["generation"].tolist() == [0, 2, 9, 10]
    assert runs["metrics.collapse.tail_coverage"].tolist() == pytest.approx([0.8, 0.78, 0.71, 0.7])


def test_latest_reads_one_run_by_the_generation_metric(tmp_path) -> None:
    """Scale audit (stop 41): `latest` (what `gate` reads) fetched every run with all of its
    metrics to pick the highest generation (0.5 s and 39 MB a run at 5,000 classes). It now asks
    the server for one run, ordered by the numeric generation metric (11 after 9, not before),
    the newest check of a generation checked again first; runs without that metric (logged
    before it existed) are still scanned."""
    sink = MLflowSink(f"sqlite:///{tmp_path / 'mlflow.db'}", evidently=False)
    labels = np.array([0] * 40 + [1] * 10)
    mon = cm.CollapseMonitor("latest", reference=cm.Reference(labels=labels), sinks=[sink], home=tmp_path / "h")
    for g in range(12):
        mon.check(cm.Observation(predictions=labels, generation=g))
    again = mon.check(cm.Observation(predictions=labels, generation=11))
    calls: list[dict] = []
    real = sink.runs

    def counting(monitor, **kw):
        calls.append(kw)
        return real(monitor, **kw)

    sink.runs = counting  # type: ignore[method-assign]
    got = sink.latest("latest")
    assert got is not None and got.generation == 11 and got.run_id == again.run_id
    assert calls == [{"highest_only": True, "finished_only": True}]  # one run, no scan
    # a chain logged before the generation metric: its runs lack it, and are scanned
    calls.clear()

    def without_metric(monitor, **kw):
        calls.append(kw)
        out = real(monitor, **kw)
        for r in out:
            r.data._metrics.pop("collapse.generation", None)
        return out

    sink.runs = without_metric  # type: ignore[method-assign]
    got2 = sink.latest("latest")
    assert got2 is not None and got2.generation == 11 and got2.run_id == again.run_id
    assert calls == [{"highest_only": True, "finished_only": True}, {"latest_only": False, "finished_only": True}]


def test_jobs_starting_together_on_a_new_sqlite_store_all_log(tmp_path) -> None:
    """Several processes opening one fresh local mlflow.db at once: MLflow creates its tables on
    first use without a lock, and the losers failed every check (one run in three left a
    migration table that broke the store for good; an audit). The first use is serialised."""
    import subprocess
    import sys

    child = (
        "import sys, logging, collapse_monitor as cm\n"
        "logging.disable(logging.WARNING)\n"
        "i, root = sys.argv[1], sys.argv[2]\n"
        "mon = cm.CollapseMonitor(f'proc{i}', reference=cm.Reference(labels=[0] * 90 + [1] * 10), home=f'{root}/h{i}',\n"
        "    sinks=[cm.MLflowSink(f'sqlite:///{root}/mlflow.db', history_plot='off')])\n"
        "for g in range(2):\n"
        "    r = mon.check(cm.Observation(predictions=[0] * 90 + [1] * 10))\n"
        "    print(r.run_id is not None, r.errors)\n"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", child, str(i), str(tmp_path)], stdout=subprocess.PIPE, text=True)
        for i in range(4)
    ]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert all(out.split("\n")[:2] == ["True ()", "True ()"] for out in outs), outs


def test_a_new_machine_compares_hashed_class_keys_read_back_without_artifacts(tmp_path) -> None:
    """With ``artifacts=False`` a new machine rebuilds the baseline from the run's metrics; the
    keys MLflow refuses (labels with ``/``) come back hashed beyond the ``collapse.metric_keys``
    tag's ~100 entries, and those classes were taken from the new check as "first seen":
    compared with themselves, their losses went unflagged (an audit: 21 of 30)."""
    import collapse_monitor as cm

    y = np.concatenate([np.repeat(np.arange(5), 200), np.repeat(np.arange(5, 125), 20)])
    names = np.array([f"grp/c{i}" for i in range(125)], dtype=object)
    lost = y.copy()
    lost[(y >= 5) & (y < 25)] = 0  # 20 rare classes lose every item
    ref = cm.Reference(labels=names[y])
    uri = f"sqlite:///{tmp_path / 'm.db'}"

    def monitor(home: str) -> cm.CollapseMonitor:
        sink = cm.MLflowSink(uri, artifacts=False, history_plot="off")
        return cm.CollapseMonitor("hashed", reference=ref, sinks=[sink], home=tmp_path / home)

    monitor("a").check(cm.Observation(predictions=names[y]))
    report = monitor("b").check(cm.Observation(predictions=names[lost]))  # empty home: from MLflow
    fell = {f.key for f in report.findings if f.significant and f.key.startswith("class_recall.")}
    assert fell == {f"class_recall.grp/c{i}" for i in range(5, 25)}, sorted(fell)


def test_the_sinks_bounds_apply_to_its_own_thread_not_the_training_jobs() -> None:
    """The bounds were set in os.environ for the whole process: the training job's own MLflow
    calls in other threads (checkpoint uploads) got 1 retry and a 5 s timeout while a check
    logged (an audit). They are this thread's (and its block's workers') only now."""
    import threading

    from mlflow.environment_variables import MLFLOW_HTTP_REQUEST_MAX_RETRIES as retries
    from mlflow.environment_variables import MLFLOW_HTTP_REQUEST_TIMEOUT as timeout

    default = (retries.get(), timeout.get())
    env = {k: os.environ.get(k) for k in _ENV}  # the suite may set them (conftest)
    sink = MLflowSink("http://127.0.0.1:9", timeout=5, max_retries=1)
    inside, other = threading.Event(), []
    with sink.bounded():
        assert (retries.get(), timeout.get()) == (1, 5)  # the sink's own calls are bounded
        worker = threading.Thread(target=lambda: other.append((retries.get(), timeout.get())))
        worker.start()
        worker.join()
        inside.set()
        with sink.bounded(retries=0):
            assert retries.get() == 0
        assert retries.get() == 1
    assert other == [default]  # another thread saw MLflow's own settings throughout
    assert (retries.get(), timeout.get()) == default and {k: os.environ.get(k) for k in _ENV} == env


def test_a_baseline_checked_during_an_outage_is_uploaded_by_the_replay(tmp_path) -> None:
    """Every check of the job fell in an outage; flush() sent the spooled reports but never the
    baseline artifact (a replay has no context), so a new machine rebuilt the baseline from
    metrics alone and replaced the paired tests (an audit). The replay of the baseline
    generation's report now brings the stored baseline."""
    import collapse_monitor as cm

    y = np.concatenate([np.repeat(np.arange(5), 200), np.repeat(np.arange(5, 25), 25)])
    lost = y.copy()
    lost[(y >= 5) & (y < 8)] = 0
    later = tmp_path / "later"  # a file where the store's folder goes: MLflow cannot open it
    later.write_text("")
    uri = f"sqlite:///{later / 'm.db'}"

    def monitor(home: str) -> cm.CollapseMonitor:
        sink = cm.MLflowSink(uri, history_plot="off")
        return cm.CollapseMonitor("outage", reference=cm.Reference(labels=y), sinks=[sink], home=tmp_path / home)

    a = monitor("a")
    assert a.check(cm.Observation(predictions=y)).errors  # MLflow unreachable: spooled
    assert a.check(cm.Observation(predictions=y)).errors
    later.unlink()  # the outage is over
    later.mkdir()
    a.flush()
    assert a.spool.count() == 0
    runs = cm.MLflowSink(uri).runs("outage", finished_only=True)
    first = min(runs, key=lambda r: int(r.data.tags["collapse.generation"]))
    assert first.data.tags.get("collapse.baseline") == "true"
    report = monitor("b").check(cm.Observation(predictions=lost))  # a new machine, from MLflow
    tests = {f.test for f in report.findings if f.key.startswith("class_recall.") and f.kind == "baseline"}
    assert tests == {"mcnemar-exact"} and report.stage is not cm.Stage.HEALTHY


def test_a_history_rebuilt_from_metrics_alone_keeps_what_the_baseline_measured(tmp_path) -> None:
    """Report.measure travels as the ``collapse.measure`` tag, so a new machine whose history
    comes from the run's metrics alone (artifacts=False) still sees that the baseline was
    measured under another k and leaves the k-NN metrics out of the comparison."""
    import collapse_monitor as cm

    rng = np.random.default_rng(0)
    ref = cm.Reference(embeddings=rng.normal(size=(400, 6)))
    obs = cm.Observation(embeddings=rng.normal(size=(400, 6)))
    uri = f"sqlite:///{tmp_path / 'm.db'}"

    def monitor(home: str, k: int) -> cm.CollapseMonitor:
        sink = cm.MLflowSink(uri, artifacts=False, history_plot="off")
        rules = {"k": k, "n_boot": 30}
        return cm.CollapseMonitor("measured", reference=ref, sinks=[sink], home=tmp_path / home, rules=rules)

    monitor("a", 5).check(obs)
    report = monitor("b", 2).check(obs)  # a new machine, another k
    assert any("rules.k 5 -> 2" in n for n in report.notes), report.notes
    assert report.metrics["tail_coverage"].baseline is None


@pytest.mark.timeout(120)  # a hang guard
def test_artifact_download_workers_get_the_sinks_bounds(tmp_path) -> None:
    """download_artifacts fetches in the artifact repository's own thread pool, which did not
    have the per-thread bounds: a hung artifact server held the baseline's sync for MLflow's
    120 s instead of the sink's 2 s and 1 retry (a review). A fake server that hangs the file."""
    import json
    import threading
    import time
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from urllib.parse import parse_qs, urlsplit

    release = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a: object) -> None:
            pass

        def _json(self, obj: object) -> None:
            body = json.dumps(obj).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            u = urlsplit(self.path)
            if u.path.endswith("/mlflow/runs/get"):
                info = {"run_id": "r1", "run_uuid": "r1", "experiment_id": "0", "status": "FINISHED", "start_time": 0,
                        "artifact_uri": "mlflow-artifacts:/0/r1/artifacts", "lifecycle_stage": "active"}  # fmt: skip
                return self._json({"run": {"info": info, "data": {}}})
            if u.path.endswith("/mlflow-artifacts/artifacts"):
                path = parse_qs(u.query).get("path", [""])[0]
                if path.endswith(("collapse", "report.json")):
                    return self._json({"files": [{"path": "report.json", "is_dir": False, "file_size": 2}]})
                return self._json({"files": [{"path": "collapse", "is_dir": True}]})
            release.wait(60)  # the file itself: a hung artifact server
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        sink = MLflowSink(f"http://127.0.0.1:{server.server_address[1]}", timeout=2.0, max_retries=1)
        started = time.monotonic()
        from mlflow.exceptions import MlflowException

        with pytest.raises((MlflowException, OSError)), sink.bounded():
            sink.client().download_artifacts("r1", "collapse", str(tmp_path))
        assert time.monotonic() - started < 30  # MLflow's own timeout is 120 s
    finally:
        release.set()
        server.shutdown()
