"""``collapse-monitor alerts test [--config F]``: send a test event to every configured channel
and show what each answered. Exit code 0 when every channel accepted it, 1 when any did not,
2 when the configuration could not be read."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .config import channels_from_config
from .dispatcher import send_test_event

__all__ = ["DEFAULT_CONFIGS", "alerts_test_command"]

#: Looked for in the working directory when no --config is given (after $COLLAPSE_MONITOR_CONFIG).
DEFAULT_CONFIGS = ("collapse.yaml", "collapse.yml", "collapse_monitor.yaml", "collapse_monitor.yml")


def _find_config(config_path: str | None) -> Path | None:
    if config_path:
        return Path(config_path)
    env = os.environ.get("COLLAPSE_MONITOR_CONFIG")
    if env:
        return Path(env)
    return next((Path(p) for p in DEFAULT_CONFIGS if Path(p).is_file()), None)


def _load_alerts(path: Path) -> list[Any]:
    from ..config import read_yaml

    data = read_yaml(path)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError("config", f"expected a mapping at the top of {path.name}, got {type(data).__name__}")
    channels = channels_from_config(data.get("alerts"))
    monitors = data.get("monitors")
    if isinstance(monitors, list):  # `serve` configs: each entry may have its own alerts list

        def ident(c: Any) -> tuple[str, str]:
            return c.name, getattr(c, "fingerprint", "")

        seen = {ident(c) for c in channels}
        for i, entry in enumerate(monitors):
            if not isinstance(entry, dict) or entry.get("alerts") is None:
                continue
            for c in channels_from_config(entry["alerts"], key=f"monitors[{i}].alerts"):
                if ident(c) not in seen:  # a channel shared by monitors: once
                    seen.add(ident(c))
                    channels.append(c)
    return channels


def alerts_test_command(config_path: str | None, *, console: Any = None, timeout: float | None = None) -> int:
    """Load the channels from the config's ``alerts:`` list, send each a test event and print
    a table of results. Returns the process exit code."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table
    from rich.text import Text

    from ..render import error_console

    err = error_console(console)  # exit-2 messages: one line on stderr
    console = console or Console()
    path = _find_config(config_path)
    if path is None:
        err.print(
            "[red]no config file[/red]: pass --config FILE, set COLLAPSE_MONITOR_CONFIG or create one of "
            + ", ".join(DEFAULT_CONFIGS)
        )
        return 2
    try:
        channels = _load_alerts(path)
    except ConfigError as exc:
        err.print(f"[red]config error[/red] in {escape(str(path))}: {escape(str(exc))}", highlight=False)
        return 2
    if not channels:
        err.print(
            f"[yellow]{escape(str(path))} has no alert channels[/yellow] (add an 'alerts:' list, at the top or in "
            "a monitors entry)"
        )
        return 2
    results = send_test_event(channels, timeout=timeout)
    table = Table(title=Text(f"Test alert from {path}"), show_lines=False)
    for col in ("channel", "type", "target", "result", "HTTP", "detail"):
        table.add_column(col, overflow="fold")
    failed = 0
    for ch, r in zip(channels, results, strict=True):
        ok = r.status == "delivered"
        failed += not ok
        table.add_row(
            Text(r.channel),
            Text(str(getattr(ch, "kind", type(ch).__name__.lower()))),
            Text(str(getattr(ch, "target", ""))),
            Text("delivered", style="green") if ok else Text(r.status, style="red"),
            Text("" if r.http_status is None else str(r.http_status)),
            Text(r.error or ""),
        )
    console.print(table)
    if failed:
        console.print(f"[red]{failed} of {len(results)} channel(s) did not accept the test event[/red]")
        return 1
    console.print(f"[green]all {len(results)} channel(s) accepted the test event[/green]")
    return 0
