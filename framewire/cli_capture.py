"""`framewire capture ...`: the capture box's frame states, its quarantine, and requests to
the capture agent (pause, resume, retry).

The state database belongs to the capture agent; it is only ever read here, through a
read-only connection (safe while the agent writes, WAL)."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated
from urllib.parse import quote

import typer
from rich.markup import escape
from rich.table import Table

from framewire.cli_agents import AgentOption, WaitOption, agent_target, ask, send
from framewire.cli_common import (
    EXIT_CONFIG,
    EXIT_FAILED,
    ConfigOption,
    _use_config,
    capture_app,
    console,
    err,
    load_settings,
)

StateOption = Annotated[
    Path | None,
    typer.Option(
        "--state",
        "--db",
        help="Capture state database (default: the capture agent's, from configuration).",
        dir_okay=False,
    ),
]
ImportDirOption = Annotated[
    Path | None,
    typer.Option(
        "--import-dir",
        help="The state of `framewire import DIR` for this folder instead.",
        file_okay=False,
    ),
]


def _state_path(db: Path | None, import_dir: Path | None = None) -> Path:
    from framewire.edge_agents.capture.settings import CaptureSettings

    if db is not None:
        return db
    settings = load_settings(CaptureSettings)
    if import_dir is not None:
        from framewire.edge_agents.capture.backlog import import_settings

        return import_settings(settings, import_dir).state_path
    return settings.state_path


def _existing(path: Path) -> Path:
    if not path.is_file():
        err.print(f"[red]no capture state at {escape(str(path))}[/]")
        raise typer.Exit(EXIT_FAILED)
    return path


@capture_app.command("status")
def capture_status(
    db: StateOption = None, import_dir: ImportDirOption = None, config: ConfigOption = None
) -> None:
    """Frames by state and the oldest pending frame, from the capture state database."""
    _use_config(config)
    from framewire.edge_agents.capture.state import read_summary

    path = _existing(_state_path(db, import_dir))
    summary = read_summary(path)
    table = Table(title=f"capture state ({escape(str(path))})")
    table.add_column("state")
    table.add_column("frames", justify="right")
    for state, n in summary.counts.items():
        table.add_row(state, str(n))
    console.print(table)
    oldest = summary.oldest_pending
    if oldest is None:
        console.print("nothing pending")
    else:
        console.print(
            f"oldest pending: {oldest.frame_id} ({escape(oldest.relpath)}), {oldest.state}, "
            f"{oldest.attempts} attempt(s)",
            soft_wrap=True,
        )
    if summary.counts["quarantined"]:
        console.print("see why with `framewire capture quarantine`")


# --- quarantine --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Quarantined:
    frame_id: str
    file: str  # the path in the capture folder, escaped (schemas.names): printable text
    kind: str | None
    reason: str | None
    quarantined_at: datetime
    attempts: int

    def as_json(self) -> dict[str, object]:
        return {
            "frame_id": self.frame_id,
            "file": self.file,
            "kind": self.kind,
            "reason": self.reason,
            "quarantined_at": self.quarantined_at.isoformat(),
            "attempts": self.attempts,
        }


def read_quarantine(path: Path, limit: int = 0) -> tuple[list[Quarantined], int]:
    """Quarantined frames, the most recent first (at most `limit`, 0: all), and how many
    there are in all."""
    conn = sqlite3.connect(f"file:{quote(str(path))}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    try:
        total = conn.execute("SELECT count(*) FROM frames WHERE state = 'quarantined'").fetchone()
        rows = conn.execute(
            "SELECT frame_id, relpath, error_kind, reason, updated_at, attempts FROM frames"
            " WHERE state = 'quarantined' ORDER BY updated_at DESC, seq DESC LIMIT ?",
            (limit or -1,),
        ).fetchall()
    finally:
        conn.close()
    found = [
        Quarantined(
            frame_id=r["frame_id"],
            file=r["relpath"],
            kind=r["error_kind"],
            reason=r["reason"],
            quarantined_at=datetime.fromtimestamp(r["updated_at"], UTC),
            attempts=r["attempts"],
        )
        for r in rows
    ]
    return found, int(total[0])


def quarantine_table(items: list[Quarantined], title: str) -> Table:
    table = Table(title=title)
    table.add_column("file", overflow="fold")
    table.add_column("kind")
    table.add_column("reason", overflow="fold")
    table.add_column("when")
    for q in items:
        table.add_row(
            escape(q.file),
            q.kind or "-",
            escape(q.reason or "-"),
            q.quarantined_at.astimezone().strftime("%Y-%m-%d %H:%M:%S"),
        )
    return table


@capture_app.command("quarantine")
def capture_quarantine(
    db: StateOption = None,
    import_dir: ImportDirOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON array.")] = False,
    limit: Annotated[int, typer.Option(min=0, help="Show at most this many (0: all).")] = 0,
    config: ConfigOption = None,
) -> None:
    """The quarantined files, the most recent first, each with its reason. Retry them with
    `framewire capture retry` (or `framewire import DIR --retry-failed`)."""
    _use_config(config)
    path = _existing(_state_path(db, import_dir))
    try:
        items, total = read_quarantine(path, limit)
    except sqlite3.Error as exc:
        err.print(f"[red]cannot read the capture state {escape(str(path))}: {exc}[/]")
        raise typer.Exit(EXIT_FAILED) from None
    if as_json:
        print(json.dumps([q.as_json() for q in items], ensure_ascii=False))
        return
    if not items:
        console.print(f"nothing is quarantined ({escape(str(path))})")
        return
    shown = f", the {len(items)} most recent" if len(items) < total else ""
    console.print(quarantine_table(items, f"{total} quarantined{shown} ({escape(str(path))})"))


# --- requests to the capture agent ---------------------------------------------------------------
@capture_app.command("pause")
def capture_pause(
    agent: AgentOption = None, wait: WaitOption = 30.0, config: ConfigOption = None
) -> None:
    """Stop sending frames (new files are still recorded and go out on resume)."""
    _use_config(config)
    from framewire.edge_agents.capture.settings import CaptureSettings

    send(agent_target("capture", agent, load_settings(CaptureSettings)), "pause", {}, wait)


@capture_app.command("resume")
def capture_resume(
    agent: AgentOption = None, wait: WaitOption = 30.0, config: ConfigOption = None
) -> None:
    """Send frames again after a pause."""
    _use_config(config)
    from framewire.edge_agents.capture.settings import CaptureSettings

    send(agent_target("capture", agent, load_settings(CaptureSettings)), "resume", {}, wait)


@capture_app.command("retry")
def capture_retry(
    names: Annotated[
        list[str] | None,
        typer.Argument(help="Files to retry, as `framewire capture quarantine` lists them."),
    ] = None,
    every: Annotated[bool, typer.Option("--all", help="Retry every quarantined file.")] = False,
    agent: AgentOption = None,
    wait: WaitOption = 30.0,
    config: ConfigOption = None,
) -> None:
    """Ask the capture agent to try quarantined files again: undelivered frames are resent
    under their own frame id, rejected files are looked at afresh (say, after raising
    max_frame_bytes). For an import folder: `framewire import DIR --retry-failed`."""
    _use_config(config)
    from framewire.edge_agents.capture.settings import CaptureSettings

    if bool(names) == every:
        err.print("[red]name the files to retry, or pass --all (not both)[/]")
        raise typer.Exit(EXIT_CONFIG)
    args: dict[str, str | int | float | bool | None] = (
        {"all": True} if every else {"names": json.dumps(names, ensure_ascii=False)}
    )
    target = agent_target("capture", agent, load_settings(CaptureSettings))
    response = ask(target, "retry", args, wait)
    if not response.ok and response.message.startswith("unknown command"):
        err.print(
            f"[red]{response.agent_id} cannot retry quarantined files yet (its commands: "
            f"{escape(str(response.data.get('commands', '?')))}); for an import folder use "
            "`framewire import DIR --retry-failed`[/]",
            soft_wrap=True,
        )
        raise typer.Exit(EXIT_FAILED)
    console.print_json(data=response.model_dump(mode="json"))
    if not response.ok:
        raise typer.Exit(EXIT_FAILED)
