"""Two monitors' registry models load at the same time (a serve audit, 2026-12-08): the load
held a process-wide lock for the whole download and load, so a model that took 15 s to load
stopped every other monitor's scheduled checks for 15 s. Here model A's load waits for a file
that model B's load writes: under such a lock A waits for B, which waits for the lock, and A
gives up after 30 s; without it both load at once. Real MLflow tracking server and registry."""

from __future__ import annotations

import textwrap
import threading
import time

from collapse_monitor._service_config import ModelSpec
from collapse_monitor._service_model import load_model, resolve_version

_GATE = textwrap.dedent(
    """
    import os
    import time

    import mlflow.pyfunc


    class Gate(mlflow.pyfunc.PythonModel):
        def __init__(self, role, signal):
            self.role, self.signal = role, signal

        def load_context(self, context):
            if self.role == "opens":
                open(self.signal, "w").close()
                return
            deadline = time.monotonic() + 30
            while not os.path.exists(self.signal):
                if time.monotonic() > deadline:
                    raise TimeoutError("the other model's load never ran")
                time.sleep(0.05)

        def predict(self, context, model_input, params=None):
            return model_input
    """
)


def _register(uri: str, name: str, module_dir, role: str, signal: str) -> None:
    import sys

    import mlflow
    from mlflow.tracking._tracking_service import utils as tracking_utils

    sys.path.insert(0, str(module_dir))
    previous = tracking_utils._tracking_uri
    mlflow.set_tracking_uri(uri)
    try:
        import gate_model

        mlflow.set_experiment("gate-models")
        with mlflow.start_run():
            mlflow.pyfunc.log_model(
                name="model",
                python_model=gate_model.Gate(role, signal),
                code_paths=[str(module_dir / "gate_model.py")],
                registered_model_name=name,
                pip_requirements=["mlflow"],
            )
    finally:
        tracking_utils._tracking_uri = previous
        sys.path.remove(str(module_dir))
        sys.modules.pop("gate_model", None)


def test_two_registry_models_load_at_the_same_time(mlflow_server, tmp_path) -> None:
    (tmp_path / "gate_model.py").write_text(_GATE)
    signal = str(tmp_path / "opened")
    tag = str(time.time_ns())
    specs = {}
    for role in ("waits", "opens"):
        name = f"gate-{role}-{tag}"
        _register(mlflow_server.url, name, tmp_path, role, signal)
        specs[role] = ModelSpec(name, tracking_uri=mlflow_server.url)
    errors: list[BaseException] = []

    def load(role: str) -> None:
        spec = specs[role]
        version = resolve_version(spec)
        assert version is not None
        dst = tmp_path / f"dl-{role}"
        dst.mkdir()  # as serve makes it
        try:
            load_model(spec, version, dst_path=str(dst))
        except BaseException as exc:  # collected: a thread's exception is otherwise only printed
            errors.append(exc)

    waiting = threading.Thread(target=load, args=("waits",))
    waiting.start()
    time.sleep(0.5)  # the waiting model is loading (or downloading) first
    load("opens")
    waiting.join(timeout=60)
    assert not waiting.is_alive()
    assert errors == []
