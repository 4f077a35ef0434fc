"""Administration: requests to agents, the ledger, configuration, the broker and the
message contract. (The capture commands are in cli_capture.)"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from framewire import cli_capture  # noqa: F401 - registers the capture commands
from framewire.broker_config import INSTALL_HINT, BrokerError, BrokerPlan, default_accounts
from framewire.broker_config.embedded import find_mosquitto
from framewire.broker_config.render import write_broker_files
from framewire.cli_agents import AgentOption, AgentTarget, WaitOption, agent_target, send
from framewire.cli_common import (
    EXIT_BROKER,
    EXIT_CONFIG,
    EXIT_FAILED,
    ConfigOption,
    ExportFormat,
    _use_config,
    agent_settings_classes,
    app,
    broker_app,
    config_app,
    console,
    err,
    ledger_app,
    load_settings,
    schemas_app,
    without_bytes,
)
from framewire.edge_agents.runtime import AgentSettings

if TYPE_CHECKING:
    from framewire.edge_agents.ledger.stores import LedgerView


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
    """Send a command to one agent over MQTT and print its answer (exit 1 if the agent is
    not online, does not answer or refuses)."""
    _use_config(config)
    parsed: dict[str, str | int | float | bool | None] = {}
    for item in args or []:
        key, sep, value = item.partition("=")
        if not sep:
            err.print(f"[red]argument {item!r} is not key=value[/]")
            raise typer.Exit(EXIT_CONFIG)
        parsed[key] = value
    send(AgentTarget(agent), command, parsed, wait)


# --- schemas ---------------------------------------------------------------------------------
@schemas_app.command("export")
def schemas_export(
    directory: Annotated[Path, typer.Argument(help="Where to write the documents.")],
) -> None:
    """Write the JSON Schemas and the AsyncAPI 3 document generated from the models."""
    from framewire.contract import export

    for path in export(directory):
        console.print(f"wrote {path}")


# --- ledger ----------------------------------------------------------------------------------
def _ledger_reader(db: str | None) -> LedgerView:
    """The ledger named by --db (a file or a URL), else the configured one; exit 1 when it
    cannot be read."""
    from framewire.edge_agents.ledger.settings import LedgerSettings
    from framewire.edge_agents.ledger.stores import LedgerError, LedgerUnavailable, open_reader

    try:
        if db is not None:
            return open_reader(db)
        settings = load_settings(LedgerSettings)
        return open_reader(settings.ledger_url, password=settings.database_password())
    except (FileNotFoundError, LedgerError, LedgerUnavailable) as exc:
        err.print(f"[red]{exc}[/]")
        raise typer.Exit(EXIT_FAILED) from None


LedgerDbOption = Annotated[
    str | None,
    typer.Option(
        "--db",
        help="Ledger database: a SQLite file or a postgresql:// URL (default: from configuration).",
    ),
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
    """Export every ledger row as JSON (full results, thumbnails included) or CSV (flat
    columns)."""
    _use_config(config)
    with _ledger_reader(db) as reader:
        if output is None:
            n = reader.export(sys.stdout, fmt.value)
        else:
            with output.open("w", encoding="utf-8", newline="") as f:
                n = reader.export(f, fmt.value)
    err.print(f"exported {n} row(s) from {reader.location}")


@ledger_app.command("show")
def ledger_show(
    frame_id: Annotated[str, typer.Argument(help="Frame id.")],
    raw: Annotated[
        bool, typer.Option("--raw", help="Include the thumbnail's bytes (base64).")
    ] = False,
    thumbnail: Annotated[
        Path | None, typer.Option("--thumbnail", help="Write the thumbnail JPEG to this file.")
    ] = None,
    db: LedgerDbOption = None,
    config: ConfigOption = None,
) -> None:
    """Print one frame's ledger entry as JSON (the thumbnail's bytes only with --raw)."""
    _use_config(config)
    import base64

    with _ledger_reader(db) as reader:
        row = reader.get(frame_id)
    if row is None:
        err.print(f"[red]frame {frame_id!r} is not in the ledger[/]")
        raise typer.Exit(EXIT_FAILED)
    if thumbnail is not None:
        thumb = row.get("thumbnail")
        if not isinstance(thumb, dict) or not isinstance(thumb.get("data"), str):
            err.print(f"[red]frame {frame_id} has no thumbnail[/]")
            raise typer.Exit(EXIT_FAILED)
        thumbnail.write_bytes(base64.b64decode(thumb["data"]))
        err.print(f"wrote {thumbnail}")
    console.print_json(data=row if raw else without_bytes(row))


@ledger_app.command("replay")
def ledger_replay(
    frame_id: Annotated[str, typer.Argument(help="Frame id.")],
    agent: AgentOption = None,
    wait: WaitOption = 30.0,
    config: ConfigOption = None,
) -> None:
    """Ask the ledger agent to publish a ledgered result again (for watchers/dashboards)."""
    _use_config(config)
    from framewire.edge_agents.ledger.settings import LedgerSettings

    target = agent_target("ledger", agent, load_settings(LedgerSettings))
    send(target, "replay", {"frame_id": frame_id}, wait)


# --- configuration ---------------------------------------------------------------------------
class AgentChoice(StrEnum):
    all = "all"
    capture = "capture"
    inference = "inference"
    ledger = "ledger"


def _settings_classes(which: AgentChoice) -> dict[str, type[AgentSettings]]:
    every = agent_settings_classes()
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
            from framewire.inference_agent.cards.catalog import CatalogError, load_catalog

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


# --- broker ----------------------------------------------------------------------------------
@broker_app.callback()
def broker(
    ctx: typer.Context,
    port: Annotated[int, typer.Option(help="Listener port.")] = 1883,
    bind: Annotated[
        str,
        typer.Option(
            help="Listener address (plain and TLS). In production the plain listener stays "
            "on 127.0.0.1 and any other address is served over TLS only."
        ),
    ] = "127.0.0.1",
    profile: Annotated[str, typer.Option(help="development or production.")] = "development",
    station: Annotated[list[str] | None, typer.Option(help="Capture stations (repeat).")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Broker data folder.")] = None,
    render_only: Annotated[
        bool, typer.Option("--render-only", help="Write the files and exit.")
    ] = False,
    tls_cert: Annotated[Path | None, typer.Option(help="Certificate for a TLS listener.")] = None,
    tls_key: Annotated[Path | None, typer.Option(help="Private key for the TLS listener.")] = None,
    tls_ca: Annotated[
        Path | None,
        typer.Option(help="CA of client certificates: every TLS client must show one."),
    ] = None,
    tls_port: Annotated[int, typer.Option(help="TLS listener port.")] = 8883,
    bridge_to: Annotated[
        str | None,
        typer.Option(
            help="This is a station's own broker: bridge it to the central broker at this "
            "mqtt(s)://host:port (needs one --station and --bridge-password-file)."
        ),
    ] = None,
    bridge_user: Annotated[
        str | None,
        typer.Option(help="The bridge's user on the central broker (default bridge-<station>)."),
    ] = None,
    bridge_password_file: Annotated[
        Path | None,
        typer.Option(
            help="Its password: a copy of the central broker's secrets/bridge-<station>.password."
        ),
    ] = None,
    bridge_ca_file: Annotated[
        Path | None,
        typer.Option(
            help="CA of the central broker's TLS certificate (its ca.pem), for mqtts:// "
            "(default: the system's trust store)."
        ),
    ] = None,
    bridge_from: Annotated[
        list[str] | None,
        typer.Option(
            help="This is the central broker: a station whose own broker bridges in "
            "(repeat); each gets a user bridge-<station> with that station's rights."
        ),
    ] = None,
) -> None:
    """Render a Mosquitto configuration (listener, persistence, limits, one user per agent
    with a generated password, ACLs, client ids bound to users, a bridge to a central broker)
    and run Mosquitto with it in the foreground."""
    if ctx.invoked_subcommand is not None:
        return
    if profile not in ("development", "production"):
        err.print("[red]--profile must be development or production[/]")
        raise typer.Exit(EXIT_CONFIG)
    from framewire.broker_config.bridge import BridgePlan
    from framewire.inference_agent.settings import InferenceSettings

    bridge_options = bridge_user or bridge_password_file or bridge_ca_file
    if bridge_options and bridge_to is None:
        err.print(
            "[red]--bridge-user, --bridge-password-file and --bridge-ca-file need --bridge-to[/]"
        )
        raise typer.Exit(EXIT_CONFIG)
    if bridge_to is not None and (len(station or []) != 1 or bridge_password_file is None):
        err.print(
            "[red]--bridge-to needs the site's one --station and --bridge-password-file "
            "(the central broker's secrets/bridge-<station>.password)[/]"
        )
        raise typer.Exit(EXIT_CONFIG)

    base = load_settings(AgentSettings)  # the ACL must use the agents' topic prefixes
    inference = load_settings(InferenceSettings)
    share_group = inference.share_group or "inference"
    # this box's inference agent may be a shadow or escalation agent in a group of its own
    role_groups = tuple(dict.fromkeys(("shadow", "escalation", inference.group() or "shadow")))
    folder = data_dir or base.data_dir / "broker"
    try:
        bridge = None
        if bridge_to is not None and station and bridge_password_file is not None:
            bridge = BridgePlan(
                bridge_to,
                station[0],
                bridge_password_file,
                user=bridge_user or "",
                ca_file=bridge_ca_file,
            )
        plan = BrokerPlan(
            folder,
            port=port,
            bind=bind,
            prefix=base.topic_prefix,
            ha_prefix=base.ha_prefix,
            profile=profile,  # type: ignore[arg-type]
            accounts=default_accounts(station, bridge_from),
            tls_cert=tls_cert,
            tls_key=tls_key,
            tls_ca=tls_ca,
            tls_port=tls_port,
            share_group=share_group,
            role_groups=role_groups,
            bridge=bridge,
        )
    except ValueError as exc:
        err.print(f"[red]{exc}[/]")
        raise typer.Exit(EXIT_CONFIG) from None
    if tls_key is not None and tls_key.exists() and tls_key.stat().st_mode & 0o077:
        err.print(f"[yellow]warning: {tls_key} is readable by other users; chmod 600 it[/]")
    try:
        secrets = write_broker_files(plan)
    except BrokerError as exc:
        err.print(f"[red]{exc}[/]")
        raise typer.Exit(EXIT_BROKER) from None
    console.print(f"configuration: {plan.conf_path}")
    for user, path in secrets.items():
        console.print(f"  user {user}: password in {path}")
    if bridge is not None:
        console.print(f"  bridged to {bridge_to} as {bridge.user}")
    if render_only:
        return
    try:
        binary = find_mosquitto()
    except BrokerError:
        err.print(INSTALL_HINT)
        raise typer.Exit(EXIT_BROKER) from None
    raise typer.Exit(subprocess.call([str(binary), "-c", str(plan.conf_path)]))


@broker_app.command("certs")
def broker_certs(
    host: Annotated[
        list[str] | None,
        typer.Option(
            "--host",
            help="Name or address clients use to reach the broker (repeat). Default: "
            "localhost, 127.0.0.1, ::1 and this machine's host name.",
        ),
    ] = None,
    client: Annotated[
        list[str] | None,
        typer.Option("--client", help="Also make a client certificate with this name (repeat)."),
    ] = None,
    folder: Annotated[
        Path | None,
        typer.Option("--dir", help="Where to write them (default: <data_dir>/broker/tls)."),
    ] = None,
    new_ca: Annotated[
        bool,
        typer.Option("--new-ca", help="Replace an existing CA (every agent then needs it)."),
    ] = False,
    config: ConfigOption = None,
) -> None:
    """Make a private CA and the broker's TLS certificate (and client certificates), for
    `framewire broker --tls-cert --tls-key` and the agents' `mqtt_ca_file`. Run it again to
    add hosts or clients: the CA is kept unless --new-ca."""
    import socket

    from framewire.broker_config.certs import (
        CertFolder,
        CertificateError,
        host_name,
        write_certificates,
    )

    _use_config(config)
    target = folder or load_settings(AgentSettings).data_dir / "broker" / "tls"
    hosts = host or ["localhost", "127.0.0.1", "::1"]
    if not host:
        with contextlib.suppress(CertificateError):  # a host name DNS cannot carry is left out
            host_name(socket.gethostname())
            hosts.append(socket.gethostname())
    try:
        done = write_certificates(target, hosts, client or [], new_ca=new_ca)
    except (CertificateError, ValueError) as exc:
        err.print(f"[red]{exc}[/]")
        raise typer.Exit(EXIT_CONFIG) from None
    for item in done:
        console.print(f"{item.action} {item.what}: {item.path}", soft_wrap=True)
    f = CertFolder(target)
    console.print(
        f"\nbroker:  framewire broker --tls-cert {f.broker_cert} --tls-key {f.broker_key}"
        f'\nagents:  mqtt_ca_file = "{f.ca_cert}"  (broker_url = "mqtts://{hosts[0]}:8883")'
        f"\nkeep {f.ca_key} private: whoever holds it can make certificates the agents trust",
        soft_wrap=True,
    )
