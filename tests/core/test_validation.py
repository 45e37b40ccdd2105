"""Every bad input raises InputError naming its field, before anything is logged."""

from __future__ import annotations

import numpy as np
import pytest

import collapse_monitor as cm

rng = np.random.default_rng(0)
X = rng.normal(size=(50, 4))
Y = [0] * 40 + [1] * 10


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda: cm.Reference(embeddings=np.full((5, 3), np.nan)), "reference.embeddings"),
        (lambda: cm.Reference(embeddings=np.array([[1.0, np.inf], [0, 0]])), "reference.embeddings"),
        (lambda: cm.Reference(embeddings=np.zeros((0, 3))), "reference.embeddings"),
        (lambda: cm.Reference(embeddings=np.zeros(5)), "reference.embeddings"),
        (lambda: cm.Reference(embeddings=np.array([["a", "b"]], dtype=object)), "reference.embeddings"),
        (lambda: cm.Reference(embeddings=[[1.0, 2.0], [3.0]]), "reference.embeddings"),
        (lambda: cm.Reference(labels=[]), "reference.labels"),
        (lambda: cm.Reference(labels=[[1, 2]]), "reference.labels"),
        (lambda: cm.Reference(labels=[1.5, None]), "reference.labels"),
        (lambda: cm.Reference(texts=["", "   "]), "reference.texts"),
        (lambda: cm.Reference(texts="one string"), "reference.texts"),
        (lambda: cm.Reference(texts=["ok", 3]), "reference.texts"),
        (lambda: cm.Reference(labels=[0, 1], class_priors={0: 1.0}), "reference.class_priors"),
        (lambda: cm.Reference(labels=[0, 1], class_priors={0: -1.0, 1: 2}), "reference.class_priors"),
        (lambda: cm.Reference(), "reference"),
        (lambda: cm.Observation(), "observation"),
        (lambda: cm.Observation(embeddings=np.array([[np.nan, 1.0]])), "observation.embeddings"),
        (lambda: cm.Observation(texts=[""]), "observation.texts"),
        (lambda: cm.Observation(predictions=[0], generation=-1), "observation.generation"),
        (lambda: cm.Observation(predictions=[0], generation=1.5), "observation.generation"),
        (lambda: cm.Provenance(synthetic_fraction=1.5), "provenance.synthetic_fraction"),
        (lambda: cm.Provenance(synthetic_fraction=float("nan")), "provenance.synthetic_fraction"),
    ],
)
def test_bad_construction(make, field) -> None:
    with pytest.raises(cm.InputError) as exc:
        make()
    assert exc.value.field == field
    assert field in str(exc.value)
    assert isinstance(exc.value, ValueError)


@pytest.mark.parametrize(
    ("obs", "field"),
    [
        (lambda: cm.Observation(embeddings=rng.normal(size=(20, 5))), "observation.embeddings"),
        (lambda: cm.Observation(predictions=[0] * 49), "observation.predictions"),
        (lambda: cm.Observation(predictions=[0] * 49 + [7]), "observation.predictions"),
        (lambda: cm.Observation(predictions=["0"] * 49 + ["x"]), "observation.predictions"),
        (lambda: cm.Observation(texts=["hello world"]), "observation.texts"),
    ],
)
def test_mismatch_with_reference_raises_before_logging(tmp_path, obs, field) -> None:
    ref = cm.Reference(embeddings=X, labels=Y)
    mon = cm.CollapseMonitor("val", reference=ref, sinks=[], home=tmp_path)
    with pytest.raises(cm.InputError) as exc:
        mon.check(obs())
    assert exc.value.field == field
    assert mon.reports() == []  # nothing recorded


def test_check_rejects_non_observation(tmp_path) -> None:
    mon = cm.CollapseMonitor("val", reference=cm.Reference(labels=Y), sinks=[], home=tmp_path)
    with pytest.raises(cm.InputError) as exc:
        mon.check({"predictions": Y})  # type: ignore[arg-type]
    assert exc.value.field == "observation"


def test_bad_monitor_name_is_config_error(tmp_path) -> None:
    with pytest.raises(cm.ConfigError) as exc:
        cm.CollapseMonitor("has space", reference=cm.Reference(labels=Y), sinks=[], home=tmp_path)
    assert exc.value.key == "name"


def test_mixed_label_types_compare_by_string() -> None:
    ref = cm.Reference(labels=[0, "1", 1, "a"])
    assert set(ref.class_priors) == {"0", "1", "a"}


def test_torch_tensors_accepted() -> None:
    import torch

    ref = cm.Reference(embeddings=torch.randn(10, 3), labels=torch.tensor([0, 1] * 5))
    assert ref.embeddings.shape == (10, 3) and ref.labels.tolist() == [0, 1] * 5


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda: cm.Provenance(sources=5), "provenance.sources"),
        (lambda: cm.Provenance(digest=b"\x00" * 32), "provenance.digest"),
        (lambda: cm.Provenance(digest=5), "provenance.digest"),
        (lambda: cm.Provenance(digest="x" * 2000), "provenance.digest"),
        (lambda: cm.Provenance(synthetic_fraction=True), "provenance.synthetic_fraction"),
        # provenance audit (stop 36): a string and numpy's True passed (as 0.5 and 1.0)
        (lambda: cm.Provenance(synthetic_fraction="0.5"), "provenance.synthetic_fraction"),
        (lambda: cm.Provenance(synthetic_fraction=np.True_), "provenance.synthetic_fraction"),
        (
            lambda: cm.Observation(predictions=[0], provenance={"synthetic_fraction": 0.5, "bogus": 1}),
            "observation.provenance.bogus",
        ),
        (lambda: cm.Observation(predictions=[0], generation=2**63), "observation.generation"),
        (lambda: cm.Observation(predictions=[0], generation=-1), "observation.generation"),
    ],
)
def test_bad_provenance_and_generation_are_input_errors(make, field) -> None:
    with pytest.raises(cm.InputError) as err:
        make()
    assert err.value.field == field


def test_a_sha256_hexdigest_is_a_valid_digest() -> None:
    import hashlib

    digest = hashlib.sha256(b"training set").hexdigest()
    assert cm.Provenance(digest=digest).digest == digest


def test_labels_that_are_64_bit_hashes_stay_exact(tmp_path) -> None:
    """Metrics audit (2026-12-06): a list mixing ints past 2**63 (64-bit hashes) with small
    ones became float64: two classes merged and the values changed; uint64 hash labels failed
    every check with an InputError on an internal field ("priors")."""
    import numpy as np

    import collapse_monitor as cm

    assert list(cm.Reference(labels=[2**63 + 1, 2**63 + 2, 1] * 5).classes) == [1, 2**63 + 1, 2**63 + 2]
    y = np.repeat(np.random.default_rng(0).integers(0, 2**64 - 1, 20, dtype=np.uint64, endpoint=True), 5)
    mon = cm.CollapseMonitor("hashes", reference=cm.Reference(labels=y), sinks=[], home=tmp_path)
    mon.check(cm.Observation(predictions=y))
    again = mon.check(cm.Observation(predictions=y))
    assert again.stage is cm.Stage.HEALTHY and again.value("accuracy") == 1.0


@pytest.mark.parametrize("scale", [1e-7, 1e-30])
def test_a_reference_too_small_for_float32_is_refused_naming_the_fix(scale: float) -> None:
    """Metrics audit (2026-12-06): embeddings of magnitude 1e-7 gave variance_ratio 0.08 for an
    observation equal to the reference, 1e-30 gave coverage 0 (float32 distances underflow)."""
    import numpy as np

    import collapse_monitor as cm

    x = np.random.default_rng(0).normal(size=(300, 64))
    with pytest.raises(cm.InputError) as info:
        cm.Reference(embeddings=x * scale)
    assert info.value.field == "reference.embeddings" and "standardise" in str(info.value)
    cm.Reference(embeddings=x * 1e-4)  # small, but measurable
    # the rows that differ may come after the first block: all rows count (review 2026-12-06)
    late = np.zeros((70_000, 4))
    late[65_536:] = np.random.default_rng(1).normal(size=(70_000 - 65_536, 4))
    cm.Reference(embeddings=late)


def test_embeddings_are_checked_in_blocks_with_every_bad_value_counted() -> None:
    """The check reads the array in row blocks (about 4 M values each) instead of making whole
    float64 copies (4-5x the input's memory, stop 41's scale audit): a bad value in any block is
    found, every one is counted, and a clean array comes back as the same float32 values."""
    from collapse_monitor._validate import as_embeddings

    d = 4096  # 1,024 rows a block
    x = np.random.default_rng(0).normal(size=(3000, d)).astype(np.float32)
    out = as_embeddings(x, "observation.embeddings")
    assert out.dtype == np.float32 and out.flags.c_contiguous and not out.flags.writeable
    assert np.array_equal(out, x) and out is not x
    bad = x.copy()
    bad[10, 0] = np.nan
    bad[2500, 7] = np.inf
    bad[2999, d - 1] = -np.inf
    with pytest.raises(cm.InputError, match="contains 3 NaN or infinite") as info:
        as_embeddings(bad, "observation.embeddings")
    assert info.value.field == "observation.embeddings"
    huge = x.copy()
    huge[2999, 0] = 1e16  # the last block
    with pytest.raises(cm.InputError, match="above 1e15"):
        as_embeddings(huge, "observation.embeddings")
    fortran = np.asfortranarray(x[:, ::2].astype(np.float16))
    assert np.array_equal(as_embeddings(fortran, "e"), x[:, ::2].astype(np.float16).astype(np.float32))


def test_provenance_audit_of_2026_12_07() -> None:
    """A bytearray passed as a share (str and bytes were refused); -0.0 became the tag "-0.0";
    a report's own provenance dict (with its derived "origin") could not be passed back in; a
    parent run given as a URI with credentials travelled unmasked."""
    with pytest.raises(cm.InputError, match="synthetic_fraction"):
        cm.Provenance(synthetic_fraction=bytearray(b"0.5"))
    zero = cm.Provenance(synthetic_fraction=-0.0).synthetic_fraction
    assert zero == 0.0 and str(zero) == "0.0"
    p = cm.Provenance(synthetic_fraction=0.25, sources=["s3://b/x"], digest="abc")
    again = cm.Observation(predictions=[0, 1], provenance=p.to_dict()).provenance
    assert again == p
    masked = cm.Provenance(parent_run_id="https://u:pw@mlflow.example.com/x?token=abc").parent_run_id
    assert "pw" not in masked and "abc" not in masked and masked.startswith("https://***@mlflow.example.com/x")
    src = cm.Provenance(sources=["DefaultEndpointsProtocol=https;AccountName=a;AccountKey=SECRETKEY==;"]).sources[0]
    assert "SECRETKEY" not in src and "AccountName=a" in src


def test_a_reference_is_frozen_once_built() -> None:
    """New embeddings of the same shape assigned to a Reference kept the memoised fingerprint,
    and the monitor judged them with the old cached state (precision 0.01 against 0.94; an audit)."""
    ref = cm.Reference(embeddings=np.random.default_rng(0).normal(size=(20, 3)), labels=[0, 1] * 10)
    for name in ("embeddings", "labels", "texts", "class_priors"):
        with pytest.raises(AttributeError, match="frozen"):
            setattr(ref, name, None)
    ref.name = "renamed"  # not data: allowed


def test_texts_holding_the_record_separator_get_their_own_fingerprint() -> None:
    """The texts' fingerprint ended each text with U+001E, so ``["a\\x1eb"]`` and ``["a", "b"]``
    hashed alike and a cache could serve one reference the other's state. Texts without U+001E
    keep the original digest (pinned: stored baselines and caches stay valid)."""
    joined, split = cm.Reference(texts=["a\x1eb c"]), cm.Reference(texts=["a", "b c"])
    assert joined.fingerprint != split.fingerprint
    assert cm.Reference(texts=["a\x1e", "b c"]).fingerprint not in (joined.fingerprint, split.fingerprint)
    assert cm.Reference(texts=["x\x1e"]).fingerprint != cm.Reference(texts=["x", ""]).fingerprint
    # the digest of the original encoding, from the code before this change
    assert split.fingerprint == "d10b40076ae17f4a"
