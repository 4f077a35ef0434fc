"""Administration: requests to agents, the ledger, capture state, configuration, the
broker and the message contract."""

from __future__ import annotations

import subprocess
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from broker_config import INSTALL_HINT, BrokerError, BrokerPlan, default_accounts
from broker_config.embedded import find_mosquitto
from broker_config.render import write_broker_files
from edge_agents.runtime import AgentSettings
from framewire.cli_common import (
    EXIT_BROKER,
    EXIT_CONFIG,
    EXIT_FAILED,
    AgentOption,
    ConfigOption,
    ExportFormat,
    WaitOption,
    _send,
    _use_config,
    app,
    broker_app,
    capture_app,
    config_app,
    console,
    err,
    ledger_app,
    load_settings,
    schemas_app,
)


@app.command()
def request(
    agent: Annotated[str, typer.Argument(help="Agent id (see `framewire status`).")],
    command: Annotated[str, typer.Argument(help="status, reload_model, reload_catalog, ...")],
    args: Annotated[
        list[str] | None, typer.Argument(help="Arguments as key=value (name=ocr-rec ...).")
    ] = None,
    wait: Annotated[float, typer.Option(help="Seconds to wait for the answer.")] = 60.0,
    config: ConfigOption = None,
) -> None:
    """Send a command to one agent over MQTT and print its answer (exit 1 if refused)."""
    _use_config(config)
    parsed: dict[str, str | int | float | bool | None] = {}
    for item in args or []:
        key, sep, value = item.partition("=")
        if not sep:
            err.print(f"[red]argument {item!r} is not key=value[/]")
            raise typer.Exit(EXIT_CONFIG)
        parsed[key] = value
    _send(agent, command, parsed, wait)


# --- schemas ---------------------------------------------------------------------------------
@schemas_app.command("export")
def schemas_export(
    directory: Annotated[Path, typer.Argument(help="Where to write the documents.")],
) -> None:
    """Write the JSON Schemas and the AsyncAPI 3 document generated from the models."""
    from schemas.export import export

    for path in export(directory):
        console.print(f"wrote {path}")


# --- ledger ----------------------------------------------------------------------------------
def _ledger_path(db: Path | None) -> Path:
    from edge_agents.ledger.settings import LedgerSettings

    return db or load_settings(LedgerSettings).ledger_path


LedgerDbOption = Annotated[
    Path | None, typer.Option("--db", help="Ledger database (default: from configuration).")
]


@ledger_app.command("export")
def ledger_export(
    fmt: Annotated[ExportFormat, typer.Option("--format", "-f")] = ExportFormat.json,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="File (default stdout).")
    ] = None,
    db: LedgerDbOption = None,
    config: ConfigOption = None,
) -> None:
    """Export every ledger row as JSON (full results) or CSV (flat columns)."""
    _use_config(config)
    from edge_agents.ledger.store import LedgerReader

    path = _ledger_path(db)
    try:
        reader = LedgerReader(path)
    except FileNotFoundError as exc:
        err.print(f"[red]{exc}[/]")
        raise typer.Exit(EXIT_FAILED) from None
    with reader:
        if output is None:
            n = reader.export(sys.stdout, fmt.value)
        else:
            with output.open("w", encoding="utf-8", newline="") as f:
                n = reader.export(f, fmt.value)
    err.print(f"exported {n} row(s) from {path}")


@ledger_app.command("show")
def ledger_show(
    frame_id: Annotated[str, typer.Argument(help="Frame id.")],
    db: LedgerDbOption = None,
    config: ConfigOption = None,
) -> None:
    """Print one frame's ledger entry as JSON."""
    _use_config(config)
    from edge_agents.ledger.store import LedgerReader

    try:
        with LedgerReader(_ledger_path(db)) as reader:
            row = reader.get(frame_id)
    except FileNotFoundError as exc:
        err.print(f"[red]{exc}[/]")
        raise typer.Exit(EXIT_FAILED) from None
    if row is None:
        err.print(f"[red]frame {frame_id!r} is not in the ledger[/]")
        raise typer.Exit(EXIT_FAILED)
    console.print_json(data=row)


# --- capture ---------------------------------------------------------------------------------
@capture_app.command("status")
def capture_status(
    db: Annotated[Path | None, typer.Option("--db", help="Capture state database.")] = None,
    config: ConfigOption = None,
) -> None:
    """Frames by state and the oldest pending frame, from the capture state database."""
    _use_config(config)
    from edge_agents.capture.settings import CaptureSettings
    from edge_agents.capture.state import read_summary

    path = db or load_settings(CaptureSettings).state_path
    if not path.exists():
        err.print(f"[red]no capture state at {path}[/]")
        raise typer.Exit(EXIT_FAILED)
    summary = read_summary(path)
    table = Table(title=f"capture state ({path})")
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
            f"oldest pending: {oldest.frame_id} ({oldest.relpath}), {oldest.state}, "
            f"{oldest.attempts} attempt(s)"
        )


# --- configuration ---------------------------------------------------------------------------
class AgentChoice(StrEnum):
    all = "all"
    capture = "capture"
    inference = "inference"
    ledger = "ledger"


def _settings_classes(which: AgentChoice) -> dict[str, type[AgentSettings]]:
    from edge_agents.capture.settings import CaptureSettings
    from edge_agents.ledger.settings import LedgerSettings
    from inference_agent.settings import InferenceSettings

    every: dict[str, type[AgentSettings]] = {
        "capture": CaptureSettings,
        "inference": InferenceSettings,
        "ledger": LedgerSettings,
    }
    return every if which is AgentChoice.all else {which.value: every[which.value]}


@config_app.command("check")
def config_check(
    agent: Annotated[AgentChoice, typer.Option(help="Which agent's settings.")] = AgentChoice.all,
    config: ConfigOption = None,
) -> None:
    """Validate the configuration (environment + TOML file); name each wrong field."""
    _use_config(config)
    for name, cls in _settings_classes(agent).items():
        s = load_settings(cls)
        extra = ""
        catalog = getattr(s, "catalog", None)
        if catalog is not None:
            from inference_agent.cards.catalog import CatalogError, load_catalog

            try:
                extra = f", catalog {len(load_catalog(catalog))} cards"
            except CatalogError as exc:
                err.print(f"[red]{name}: {exc}[/]")
                raise typer.Exit(EXIT_CONFIG) from None
        console.print(f"{name}: ok (agent {s.identity}, broker {s.broker_url}{extra})")


@config_app.command("show")
def config_show(
    agent: Annotated[AgentChoice, typer.Option(help="Which agent's settings.")] = AgentChoice.all,
    config: ConfigOption = None,
) -> None:
    """Print the effective configuration as JSON, secrets masked."""
    _use_config(config)
    out: dict[str, object] = {}
    for name, cls in _settings_classes(agent).items():
        s = load_settings(cls)
        data = s.model_dump(mode="json")
        data["mqtt_password"] = "********" if s.mqtt_password() is not None else None
        data["metrics_port"] = s.metrics_endpoint
        out[name] = data
    console.print_json(data=out)


@config_app.command("reference")
def config_reference() -> None:
    """Print the configuration reference (Markdown) generated from the settings models."""
    from framewire.reference import reference

    print(reference())


def _capture_agent(agent: str | None) -> str:
    from edge_agents.capture.settings import CaptureSettings

    return agent or load_settings(CaptureSettings).identity


@capture_app.command("pause")
def capture_pause(
    agent: AgentOption = None, wait: WaitOption = 30.0, config: ConfigOption = None
) -> None:
    """Stop sending frames (new files are still recorded and go out on resume)."""
    _use_config(config)
    _send(_capture_agent(agent), "pause", {}, wait)


@capture_app.command("resume")
def capture_resume(
    agent: AgentOption = None, wait: WaitOption = 30.0, config: ConfigOption = None
) -> None:
    """Send frames again after a pause."""
    _use_config(config)
    _send(_capture_agent(agent), "resume", {}, wait)


@ledger_app.command("replay")
def ledger_replay(
    frame_id: Annotated[str, typer.Argument(help="Frame id.")],
    agent: AgentOption = None,
    wait: WaitOption = 30.0,
    config: ConfigOption = None,
) -> None:
    """Ask the ledger agent to publish a ledgered result again (for watchers/dashboards)."""
    _use_config(config)
    from edge_agents.ledger.settings import LedgerSettings

    _send(agent or load_settings(LedgerSettings).identity, "replay", {"frame_id": frame_id}, wait)


# --- broker ----------------------------------------------------------------------------------
@broker_app.callback()
def broker(
    ctx: typer.Context,
    port: Annotated[int, typer.Option(help="Listener port.")] = 1883,
    bind: Annotated[str, typer.Option(help="Listener address.")] = "127.0.0.1",
    profile: Annotated[str, typer.Option(help="development or production.")] = "development",
    station: Annotated[list[str] | None, typer.Option(help="Capture stations (repeat).")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Broker data folder.")] = None,
    render_only: Annotated[
        bool, typer.Option("--render-only", help="Write the files and exit.")
    ] = False,
    tls_cert: Annotated[Path | None, typer.Option(help="Certificate for a TLS listener.")] = None,
    tls_key: Annotated[Path | None, typer.Option(help="Private key for the TLS listener.")] = None,
    tls_ca: Annotated[Path | None, typer.Option(help="CA file for client certificates.")] = None,
    tls_port: Annotated[int, typer.Option(help="TLS listener port.")] = 8883,
) -> None:
    """Render a Mosquitto configuration (listener, persistence, limits, one user per agent
    with a generated password, ACLs) and run Mosquitto with it in the foreground."""
    if ctx.invoked_subcommand is not None:
        return
    if profile not in ("development", "production"):
        err.print("[red]--profile must be development or production[/]")
        raise typer.Exit(EXIT_CONFIG)
    base = load_settings(AgentSettings)  # the ACL must use the agents' topic prefixes
    folder = data_dir or base.data_dir / "broker"
    try:
        plan = BrokerPlan(
            folder,
            port=port,
            bind=bind,
            prefix=base.topic_prefix,
            ha_prefix=base.ha_prefix,
            profile=profile,  # type: ignore[arg-type]
            accounts=default_accounts(station),
            tls_cert=tls_cert,
            tls_key=tls_key,
            tls_ca=tls_ca,
            tls_port=tls_port,
        )
    except ValueError as exc:
        err.print(f"[red]{exc}[/]")
        raise typer.Exit(EXIT_CONFIG) from None
    secrets = write_broker_files(plan)
    console.print(f"configuration: {plan.conf_path}")
    for user, path in secrets.items():
        console.print(f"  user {user}: password in {path}")
    if render_only:
        return
    try:
        binary = find_mosquitto()
    except BrokerError:
        err.print(INSTALL_HINT)
        raise typer.Exit(EXIT_BROKER) from None
    raise typer.Exit(subprocess.call([str(binary), "-c", str(plan.conf_path)]))
