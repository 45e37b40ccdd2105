"""Scheduled checks of registered models: resolve the version, load it, run the probe.

The version is resolved with an ``MlflowClient`` bound to the configured URIs (no global MLflow
state); loading goes through ``mlflow.pyfunc.load_model`` / ``mlflow.pytorch.load_model`` on the
pinned version (``models:/<name>/<version>``), so a version registered between resolving and
loading cannot slip in. Those loaders read MLflow's process-wide URIs: they are set and
restored under a lock.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._service_config import ModelSpec, ProbeSpec
from ._validate import tensor_to_numpy
from .errors import InputError
from .types import Observation, Provenance

__all__ = ["ResolvedVersion", "build_observation", "load_model", "resolve_version"]


_STAGES = {"none": "None", "staging": "Staging", "production": "Production", "archived": "Archived"}
SYNTHETIC_TAG = "collapse.synthetic_fraction"


@dataclass(frozen=True)
class ResolvedVersion:
    name: str
    version: str
    run_id: str | None
    tags: Mapping[str, str]

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"

    def provenance(self) -> Provenance:
        """Parent run and source from the registry; the synthetic share from the version's
        ``collapse.synthetic_fraction`` tag when the training job set one."""
        from .sinks.mlflow import fraction_tag

        fraction = fraction_tag(self.tags.get(SYNTHETIC_TAG), self.uri)
        return Provenance(synthetic_fraction=fraction, parent_run_id=self.run_id or None, sources=(self.uri,))


def _client(spec: ModelSpec) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=spec.tracking_uri, registry_uri=spec.registry_uri or spec.tracking_uri)


def _not_found(exc: BaseException) -> bool:
    """A model that is not registered (MLflow's RESOURCE_DOES_NOT_EXIST) or an alias that is
    not assigned (INVALID_PARAMETER_VALUE "Registered model alias X not found.") yet."""
    code = getattr(exc, "error_code", None)
    text = str(exc).lower()
    return code == "RESOURCE_DOES_NOT_EXIST" or (
        code == "INVALID_PARAMETER_VALUE" and "alias" in text and "not found" in text
    )


def resolve_version(spec: ModelSpec) -> ResolvedVersion | None:
    """The version ``spec`` points at now; None when the model has no (ready) version yet."""
    from .sinks.mlflow import ready_versions

    client = _client(spec)
    name = spec.registered_name
    if spec.version is not None:
        try:
            mv = client.get_model_version(name, str(spec.version))
        except Exception as exc:
            # a pinned version not registered yet (or its model): skipped like a model with no
            # version yet, not an error counted and logged as a registry outage
            if _not_found(exc):
                return None
            raise
    elif spec.stage_or_alias.lower() == "latest":
        versions = ready_versions(client, name)
        if not versions:
            return None
        mv = max(versions, key=lambda v: int(v.version))
    elif spec.stage_or_alias.lower() in _STAGES:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # stages are deprecated in MLflow 3 but still served
            try:
                got = client.get_latest_versions(name, stages=[_STAGES[spec.stage_or_alias.lower()]])
            except Exception as exc:
                if _not_found(exc):  # the model is not registered yet: no version yet, not an error
                    return None
                raise
        if not got:
            return None
        mv = got[0]
    else:
        try:
            mv = client.get_model_version_by_alias(name, spec.stage_or_alias)
        except Exception as exc:
            if _not_found(exc):  # the alias is not assigned yet (or the model not registered)
                return None
            raise
    return ResolvedVersion(name, str(mv.version), getattr(mv, "run_id", None), dict(getattr(mv, "tags", {}) or {}))


def load_model(spec: ModelSpec, version: ResolvedVersion, dst_path: str | None = None) -> Any:
    """Load ``version`` with its flavor; its artifacts are downloaded into ``dst_path`` (the
    caller's temporary folder, removed after the check: MLflow's default is a new temporary
    folder per load that is never removed, one model copy per check).

    The download gets the spec's tracking and registry URIs as arguments and the flavor loads
    the local copy, so no process-wide MLflow setting is touched and nothing is held: the load
    used to set MLflow's global URIs under a process-wide lock held for the whole download and
    load, and a model that took 15 s to load stopped every other monitor's scheduled checks
    for those 15 s (a serve audit, 2026-12-08; ``max_workers`` promises them in parallel)."""
    import mlflow
    import mlflow.artifacts

    registry = spec.registry_uri or spec.tracking_uri
    local = mlflow.artifacts.download_artifacts(
        artifact_uri=version.uri,
        dst_path=dst_path,
        tracking_uri=spec.tracking_uri or None,
        registry_uri=registry or None,
    )
    if spec.flavor == "pytorch":
        import mlflow.pytorch

        return mlflow.pytorch.load_model(local, map_location="cpu")
    return mlflow.pyfunc.load_model(local, suppress_warnings=True)


def _to_numpy(out: Any) -> np.ndarray:
    if hasattr(out, "detach") and hasattr(out, "cpu"):
        out = tensor_to_numpy(out)
    elif hasattr(out, "to_numpy"):  # pandas DataFrame / Series
        out = out.to_numpy()
    return np.asarray(out)


def as_labels(out: Any, classes: tuple[Any, ...] | None = None) -> np.ndarray:
    """Model output -> labels: argmax over columns of a 2-D output (scores, logits,
    probabilities), a 1-D output as is; ``classes`` maps column indices to labels."""
    arr = _to_numpy(out)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    elif arr.ndim == 2:
        arr = arr.argmax(axis=1)
    elif arr.ndim != 1:
        raise InputError("probe.predictions", f"expected a 1-D or 2-D model output, got shape {arr.shape}")
    if classes is not None:
        if not np.issubdtype(arr.dtype, np.integer):
            raise InputError("probe.classes", "given, but the model did not return class indices or scores")
        if arr.size and (arr.min() < 0 or arr.max() >= len(classes)):
            raise InputError("probe.classes", f"the model returned index {int(arr.max())} for {len(classes)} classes")
        arr = np.asarray(classes, dtype=object)[arr]
    return arr


def _predict(model: Any, probe: ProbeSpec, flavor: str) -> np.ndarray:
    if probe.predict is not None:
        return as_labels(probe.predict(model, probe.inputs), probe.classes)
    if flavor == "pytorch":
        import torch

        model.eval()
        outs = []
        with torch.no_grad():
            for i in range(0, len(probe.inputs), probe.batch_size):
                batch = torch.from_numpy(np.ascontiguousarray(probe.inputs[i : i + probe.batch_size]))
                if batch.is_floating_point():
                    batch = batch.float()
                outs.append(model(batch).detach().cpu())
        return as_labels(torch.cat(outs), probe.classes)
    return as_labels(model.predict(probe.inputs), probe.classes)


def build_observation(model: Any, probe: ProbeSpec, flavor: str, provenance: Provenance | None) -> Observation:
    """Probe predictions from ``probe.inputs`` plus whatever ``probe.sample(model)`` returns (an
    Observation, a mapping with embeddings/texts/predictions, or an embeddings array)."""
    kw: dict[str, Any] = {}
    if probe.inputs is not None:
        kw["predictions"] = _predict(model, probe, flavor)
    if probe.sample is not None:
        got = probe.sample(model)
        if isinstance(got, Observation):
            got = {"embeddings": got.embeddings, "predictions": got.predictions, "texts": got.texts}
        if not isinstance(got, Mapping):
            got = {"embeddings": got}
        for k, v in got.items():
            if k not in ("embeddings", "predictions", "texts"):
                raise InputError("probe.sample", f"returned unknown key {k!r}; expected embeddings, predictions, texts")
            if v is None:
                continue
            if k in kw:
                raise InputError("probe.sample", f"returned {k} while probe.inputs gives them too")
            kw[k] = v
    return Observation(provenance=provenance, **kw)
