"""The deployable monitoring files, for users who installed the wheel rather than cloned the
repository: ``collapse-monitor integrations export DIR`` writes the Prometheus alerting rules
(and their ``promtool`` unit tests), the Prometheus scrape configuration, the Alertmanager
routing and the on-call runbook.

The files live once, in the repository's ``integrations/`` folder; the wheel carries a copy as
package data (``collapse_monitor/integrations/``, mapped by ``pyproject.toml``), so a checkout
and an installed package export the same bytes. The Grafana dashboards have their own command,
``collapse-monitor dashboards export``.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .errors import ConfigError

__all__ = ["INTEGRATION_FILES", "export_integrations", "integrations_dir", "integrations_export_command"]

#: what ``integrations export`` writes, relative to the output folder (the repository layout)
INTEGRATION_FILES = (
    "prometheus/collapse_rules.yml",
    "prometheus/collapse_rules_test.yml",
    "prometheus/prometheus.yml",
    "prometheus/serve_targets/serve.yml",
    "alertmanager/alertmanager.yml",
    "runbook.md",
)


def integrations_dir() -> Path:
    """Where this installation keeps the files: the wheel's package data, else the checkout's
    ``integrations/`` (a source tree or an editable install)."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "integrations", here.parent / "integrations"):
        if all((candidate / rel).is_file() for rel in INTEGRATION_FILES):
            return candidate
    raise ConfigError(
        "integrations",
        "the integration files are not installed next to collapse_monitor (a wheel built without them?); "
        "reinstall collapse-monitor, or take them from the repository's integrations/ folder",
    )


def export_integrations(out_dir: str | os.PathLike[str], *, force: bool = False) -> list[tuple[Path, str]]:
    """Copy :data:`INTEGRATION_FILES` into ``out_dir`` and return ``(path, what happened)``
    pairs: ``"wrote"``, ``"unchanged"`` or, with ``force``, ``"replaced"``.

    A file that already exists with other content is a deployment someone edited (receivers,
    scrape targets): without ``force`` nothing is written and :class:`ConfigError` names every
    such file.
    """
    src = integrations_dir()
    return write_guarded(Path(out_dir), {rel: (src / rel).read_bytes() for rel in INTEGRATION_FILES}, force=force)


def write_guarded(out: Path, files: Mapping[str, bytes], *, force: bool = False) -> list[tuple[Path, str]]:
    """Write ``files`` ({relative path: bytes}) under ``out``, each atomically, and return
    ``(path, "wrote" | "unchanged" | "replaced")``. A file that exists with other content is one
    someone edited: without ``force`` nothing at all is written and :class:`ConfigError` names
    every such file."""
    if out.exists() and not out.is_dir():
        raise ConfigError("dir", f"{out} is a file, not a folder; give a folder (a missing one is created)")
    plan = []
    clashes = []
    for rel, data in files.items():
        dest = out / rel
        if dest.is_dir():
            raise ConfigError("dir", f"{dest} is a folder; expected the file {rel}")
        old = dest.read_bytes() if dest.is_file() else None
        state = "wrote" if old is None else "unchanged" if old == data else "replaced"
        if state == "replaced" and not force:
            clashes.append(str(dest))
        plan.append((dest, data, state))
    if clashes:
        raise ConfigError(
            "dir",
            f"{len(clashes)} file(s) in {out} differ from this version's and were left alone: "
            f"{', '.join(clashes)}; pass --force to overwrite them, or export into an empty folder and merge",
        )
    for dest, data, state in plan:
        if state != "unchanged":
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_name(f".{dest.name}.tmp")
            tmp.write_bytes(data)
            os.replace(tmp, dest)
    return [(dest, state) for dest, _, state in plan]


def integrations_export_command(out_dir: str | os.PathLike[str], *, force: bool = False, console: Any = None) -> int:
    """``collapse-monitor integrations export DIR [--force]``: write the files and say what
    to do with them."""
    from .render import error_console

    err = error_console(console)
    if console is None:
        from rich.console import Console

        console = Console()
    try:
        done = export_integrations(out_dir, force=force)
    except OSError as exc:
        err.print(f"[red]collapse-monitor: cannot write the integration files to {out_dir}: {exc}[/]")
        return 2
    for path, state in done:
        console.print(f"{state} {path}")
    out = Path(out_dir)

    def q(rel: str) -> str:  # pasteable, also for a folder with spaces
        return shlex.quote(str(out / rel))

    console.print(
        f"Next: promtool check rules {q('prometheus/collapse_rules.yml')} and "
        f"promtool test rules {q('prometheus/collapse_rules_test.yml')}; "
        f"put the rules beside your prometheus.yml (rule_files) or merge {q('prometheus/prometheus.yml')}; "
        f"replace the placeholder receivers in {q('alertmanager/alertmanager.yml')} "
        f"(amtool check-config checks it); link {q('runbook.md')} from your on-call docs.",
        soft_wrap=True,
    )
    return 0
