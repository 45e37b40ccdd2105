"""benchmarks/external_chains.py: recursive-training chains written with scikit-learn only
(no ``collapse_monitor.simulate``), judged by the monitor's public API."""

from __future__ import annotations

import json

import numpy as np
import pytest
from benchmark_scripts import load_benchmark


@pytest.fixture(scope="module")
def ext():
    return load_benchmark("external_chains")


def test_the_data_has_a_rare_class_and_does_not_depend_on_the_run_length(ext) -> None:
    d = ext.make_data(0, 10)
    assert d["X_ref"].shape == (ext.N_REF, ext.N_FEATURES)
    assert d["X_probe"].shape[0] == d["y_probe"].shape[0] == ext.N_PROBE
    share = np.bincount(d["y_probe"], minlength=5) / ext.N_PROBE
    assert share[4] == pytest.approx(ext.PRIORS[4], abs=0.01)  # the rare class, < 5 %
    assert (share[:4] > 0.05).all()
    # a 20-generation chain sees the same data as a 10-generation one, and other seeds other data
    assert np.array_equal(ext.make_data(0, 20)["X_probe"], d["X_probe"])
    assert not np.array_equal(ext.make_data(1, 10)["X_probe"], d["X_probe"])
    with pytest.raises(ValueError, match="at most"):
        ext.make_data(0, ext.MAX_GENERATIONS + 1)


def test_the_class_generator_keeps_vanished_classes_vanished_and_tempers_variance(ext) -> None:
    d = ext.make_data(0, 10)
    X, y = d["X_train"], d["y_train"]
    keep = y != 4
    rng = np.random.default_rng(0)
    gen = ext.ClassGMM(X[keep], y[keep], rng)
    assert gen.priors[4] == 0.0
    S, yS = gen.sample(3000, rng)
    assert len(S) == len(yS) == 3000 and 4 not in set(yS.tolist())
    assert abs(np.mean(yS == 0) - gen.priors[0]) < 0.03
    full = ext.ClassGMM(X, y, np.random.default_rng(1))
    cold, _ = full.sample(20000, np.random.default_rng(2), temperature=0.5)
    warm, _ = full.sample(20000, np.random.default_rng(2), temperature=1.0)
    # within-class spread scales with the temperature; the class means do not move
    ratio = np.trace(np.cov(cold.T)) / np.trace(np.cov(warm.T))
    assert 0.55 < ratio < 0.95, ratio


def test_a_tempered_chain_is_flagged_and_the_true_label_control_is_not(ext) -> None:
    hot = ext.run_one(("sk_gmm", "replace", {"temperature": 0.5}, True, 0, 4))
    assert hot["ours"] is not None and hot["ours"] <= 3, hot["stages"]
    assert hot["sweep_matches_monitor"]
    assert hot["fired"] and hot["fired"][0]["findings"]
    assert {"accuracy", "frechet_distance"} <= set(hot["aggregates"][0])
    ctrl = ext.run_one(("sk_pseudolabel", "true_labels", {}, False, 0, 4))
    assert ctrl["stages"] == ["healthy"] * 4 and ctrl["false_alarms"] == 0
    assert "frechet_distance" not in ctrl["aggregates"][0]  # a classifier-only chain


def test_main_writes_the_table_and_json(ext, tmp_path, capsys) -> None:
    rc = ext.main(["--seeds", "1", "--generations", "3", "--jobs", "1", "--only", "sk_pseudolabel/replace",
                   "--out", str(tmp_path)])  # fmt: skip
    assert rc == 0
    md = (tmp_path / "external-chains-g3.md").read_text()
    assert "| sk_pseudolabel/replace | collapsing |" in md
    rows = json.loads((tmp_path / "external-chains-g3.json").read_text())["rows"]
    assert len(rows) == 1 and len(rows[0]["stages"]) == 3
    assert ext.main(["--only", "no-such-chain", "--out", str(tmp_path)]) == 2
    assert ext.main(["--generations", "31", "--out", str(tmp_path)]) == 2
    assert "error" in capsys.readouterr().err


def test_the_human_text_is_the_standard_librarys_docstrings(ext) -> None:
    sents = ext.stdlib_sentences()
    assert len(sents) > 5000 and len(set(sents)) == len(sents)
    assert all(5 <= len(s.split()) <= 30 for s in sents[:500])
    d = ext.text_data(0)
    assert (len(d["ref"]), len(d["train"])) == (ext.TEXT_REF, ext.TEXT_TRAIN)
    assert not set(d["ref"]) & set(d["train"]) and not set(d["train"]) & set(d["pool"])
    assert d["ref"] != ext.text_data(1)["ref"]  # another seed, another split


def test_the_bigram_model_samples_its_own_bigrams_and_top_p_narrows_it(ext) -> None:
    train = ext.text_data(0)["train"]
    vocab = {w for s in train for w in s.split()}
    bigrams = {b for s in train for b in zip(["<s>", *s.split()], s.split(), strict=False)}
    rng = np.random.default_rng(0)
    full = ext.Bigram(train, 1.0).sample(500, rng)
    words = [w for s in full for w in s.split()]
    assert set(words) <= vocab
    assert all(b in bigrams for s in full for b in zip(["<s>", *s.split()], s.split(), strict=False))
    narrow = ext.Bigram(train, 0.5).sample(500, np.random.default_rng(0))
    assert len({w for s in narrow for w in s.split()}) < 0.8 * len(set(words))


def test_the_text_chain_collapses_under_replace_and_not_under_fresh(ext) -> None:
    hot = ext.run_one(("stdlib_text", "replace", {"top_p": 0.9}, True, 0, 3))
    assert hot["ours"] == 1, hot["stages"]
    assert {f["key"] for f in hot["fired"][0]["findings"]} & {"rare_ngram_recall", "distinct_2", "vocab_ratio"}
    assert "frechet_distance" in hot["aggregates"][0] and hot["sweep_matches_monitor"]
    ctrl = ext.run_one(("stdlib_text", "fresh", {"top_p": 1.0}, False, 0, 3))
    assert ctrl["stages"] == ["healthy"] * 3, ctrl["fired"]


def test_baseline_b_runs_evidently_on_the_chain(ext) -> None:
    row = ext.run_one(("sk_pseudolabel", "replace", {}, True, 0, 2, True))
    shares = row["evidently_share"]
    assert len(shares) == 2 and all(isinstance(s, float) and 0.0 <= s <= 1.0 for s in shares)
    assert row["evidently"] == ext.det._first([s >= 0.5 for s in shares])
    off = ext.run_one(("sk_pseudolabel", "replace", {}, True, 0, 2))
    assert off["evidently_share"] == [None, None] and off["evidently"] is None


def test_replicates_are_unbiased_retrains_and_refused_when_the_pool_runs_out(ext, capsys) -> None:
    """``--replicates``: the self-training replicates train on other human points of the same
    size, disjoint from every pool slice a chain uses (a bootstrap resample, the first version,
    made replicates that were worse than generation 0 on every seed); the GMM replicates refit
    the same data with another seed; a run whose chain would reach the replicates' points is
    refused."""
    import numpy as np

    d = ext.make_data(0, 10)
    r1 = ext.replicate_fields("sk_pseudolabel", d, 0, 1, {})
    r2 = ext.replicate_fields("sk_pseudolabel", d, 0, 2, {})
    gen0 = ext._classifier(d["X_train"], d["y_train"]).predict(d["X_probe"])
    accs = [float((p == d["y_probe"]).mean()) for p in (gen0, r1["predictions"], r2["predictions"])]
    assert not np.array_equal(r1["predictions"], gen0) and not np.array_equal(r1["predictions"], r2["predictions"])
    assert max(accs) - min(accs) < 0.02
    used = ext.MAX_GENERATIONS * ext.POOL - 2 * ext.N_TRAIN  # a 28-generation chain ends here
    assert len(d["y_pool"]) - 2 * ext.N_TRAIN >= used
    g1 = ext.replicate_fields("sk_gmm", d, 0, 1, {})
    assert g1["embeddings"].shape == (ext.M, d["X_train"].shape[1])
    assert not np.array_equal(g1["embeddings"], ext.replicate_fields("sk_gmm", d, 0, 2, {})["embeddings"])
    assert ext.main(["--generations", "30", "--replicates", "2", "--only", "nothing"]) == 2
    assert "too many" in capsys.readouterr().err
