"""EvidentlySink / build_drift_report: a real Evidently run, HTML on disk, drift share in [0, 1]."""

from __future__ import annotations

import numpy as np
import pytest

import collapse_monitor as cm
from collapse_monitor.errors import ConfigError
from collapse_monitor.sinks.base import EmitContext
from collapse_monitor.sinks.evidently import EvidentlySink, build_drift_report, principal_components

pytestmark = pytest.mark.slow  # evidently's first import takes seconds

WORDS = np.array(
    [
        "the",
        "a",
        "cat",
        "dog",
        "sat",
        "on",
        "mat",
        "ran",
        "far",
        "away",
        "quick",
        "brown",
        "fox",
        "jumps",
        "over",
        "lazy",
    ]
)


def _texts(rng: np.random.Generator, n: int, vocab: int) -> list[str]:
    return [" ".join(rng.choice(WORDS[:vocab], size=rng.integers(4, 14))) for _ in range(n)]


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(7)
    labels = rng.choice(4, size=300, p=[0.5, 0.3, 0.15, 0.05])
    ref = cm.Reference(embeddings=rng.normal(size=(600, 12)), labels=labels, texts=_texts(rng, 200, 16))
    same = cm.Observation(embeddings=rng.normal(size=(400, 12)), predictions=labels, texts=_texts(rng, 150, 16))
    narrow = rng.normal(size=(400, 12)) * 0.4  # collapsed: low variance on every direction
    shifted = cm.Observation(embeddings=narrow, predictions=np.where(labels == 3, 0, labels), texts=_texts(rng, 150, 3))
    return ref, same, shifted


def test_principal_components_are_fitted_on_the_reference() -> None:
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(0)
    ref = rng.normal(size=(200, 5)) @ np.diag([5, 3, 1, 0.5, 0.1])
    cur = rng.normal(size=(50, 5))
    a, b = principal_components(ref, cur, 3)
    pca = PCA(n_components=3).fit(ref)
    for j in range(3):  # same subspace and scores up to the sign of each component
        s = np.sign(a[0, j] * pca.transform(ref)[0, j])
        np.testing.assert_allclose(a[:, j], s * pca.transform(ref)[:, j], atol=1e-8)
        np.testing.assert_allclose(b[:, j], s * pca.transform(cur)[:, j], atol=1e-8)


def test_sink_writes_html_with_drift_table_and_share(tmp_path, data, kit) -> None:
    ref, same, shifted = data
    sink = EvidentlySink(tmp_path / "ev", n_components=6)
    r_same = kit.make_report("ev", 1)
    out = sink.emit(r_same, EmitContext(reference=ref, observation=same))
    html = tmp_path / "ev" / "ev-gen0001-evidently-drift.html"
    assert out is not None and out["evidently_html"] == str(html) and html.exists()
    text = html.read_text()
    for col in ("pc_1", "pc_6", "label", "text_length", "text_distinct_ratio"):
        assert col in text
    # Evidently's drift table: one row per column with its test and score, and the summary line
    for marker in ("Drift is detected for", "Stat Test", "Drift Score", "Count of Drifted Columns"):
        assert marker in text
    same_share = out["embedding_drift_share"]
    assert 0.0 <= same_share <= 1.0 and sink.last_drift_share == same_share
    out2 = sink.emit(kit.make_report("ev", 2), EmitContext(reference=ref, observation=shifted))
    assert out2 is not None and 0.0 <= out2["embedding_drift_share"] <= 1.0
    assert out2["embedding_drift_share"] > same_share
    assert sink.last_result is not None and sink.last_result.columns["label"][1] < 0.05  # label shift detected


def test_memoised_per_check_and_silent_on_replay(tmp_path, data, kit, monkeypatch) -> None:
    import evidently

    runs = []
    run = evidently.Report.run
    monkeypatch.setattr(evidently.Report, "run", lambda self, *a, **k: runs.append(1) or run(self, *a, **k))
    ref, same, _ = data
    a = build_drift_report(ref, same, tmp_path / "a.html", n_components=4)
    assert build_drift_report(ref, same, tmp_path / "a.html", n_components=4) is a
    # another caller's path (the MLflow sink's copy is in a temporary folder it deletes): the
    # same run saved there, not run again
    (tmp_path / "a.html").unlink()
    b = build_drift_report(ref, same, tmp_path / "b.html", n_components=4)
    assert len(runs) == 1 and b.html == tmp_path / "b.html" and b.html.exists()
    assert (b.embedding_drift_share, b.columns) == (a.embedding_drift_share, a.columns)
    assert EvidentlySink(tmp_path).emit(kit.make_report("ev", 1), None) is None
    only_labels = cm.Observation(predictions=ref.labels)
    res = build_drift_report(ref, only_labels, tmp_path / "c.html")
    assert res is not None and res.embedding_drift_share is None and set(res.columns) == {"label"}


def test_default_output_dir_is_the_monitor_home(tmp_path, monkeypatch, data, kit) -> None:
    monkeypatch.setenv("COLLAPSE_MONITOR_HOME", str(tmp_path / "home"))
    ref, same, _ = data
    out = EvidentlySink(n_components=2).emit(kit.make_report("home", 0), EmitContext(reference=ref, observation=same))
    assert out is not None and out["evidently_html"].startswith(str(tmp_path / "home" / "evidently"))


def test_bad_n_components() -> None:
    with pytest.raises(ConfigError):
        EvidentlySink(n_components=0)


def test_one_evidently_run_per_check_with_both_sinks_and_none_kept_after(tmp_path, data, monkeypatch) -> None:
    """With MLflowSink (Evidently on) before EvidentlySink, as the README lists them, each check
    ran Evidently twice; and the memo kept the last four observations (their embeddings) alive
    in the training process after their checks (an MLflow audit)."""
    import evidently

    from collapse_monitor.sinks import evidently as drift

    runs = []
    run = evidently.Report.run
    monkeypatch.setattr(evidently.Report, "run", lambda self, *a, **k: runs.append(1) or run(self, *a, **k))
    ref, same, shifted = data
    ev = EvidentlySink(tmp_path / "ev")  # the MLflow sink's settings: one run serves both
    sinks = [cm.MLflowSink(f"sqlite:///{tmp_path / 'm.db'}", history_plot="off"), ev]
    mon = cm.CollapseMonitor("both", reference=ref, sinks=sinks, home=tmp_path / "home")
    for i, obs in enumerate((same, shifted)):
        report = mon.check(obs)
        assert report.errors == () and len(runs) == i + 1
        assert ev.last_html is not None and ev.last_html.exists()
        assert report.metrics["embedding_drift_share"].value == ev.last_drift_share
        assert not [k for k, (_, o) in drift._MEMO.items() if o is obs]
