"""The `framewire` command line."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from broker_config import INSTALL_HINT, BrokerError, BrokerPlan, default_accounts
from broker_config.embedded import find_mosquitto
from broker_config.render import write_broker_files
from edge_agents.runtime import AgentSettings, run_main, setup_logging
from edge_agents.runtime.settings import CONFIG_ENV
from framewire import __version__
from framewire.observe import BrokerLogin, Snapshot
from schemas import InferenceResult

app = typer.Typer(
    help="Move camera frames from a capture box to an inference box and into a ledger.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
schemas_app = typer.Typer(help="The message contract.", no_args_is_help=True)
ledger_app = typer.Typer(help="Read the ledger.", no_args_is_help=True)
capture_app = typer.Typer(help="The capture box's frame states.", no_args_is_help=True)
config_app = typer.Typer(help="Configuration.", no_args_is_help=True)
broker_app = typer.Typer(
    help="Mosquitto for framewire: render its configuration or run it.",
    invoke_without_command=True,
)
app.add_typer(schemas_app, name="schemas")
app.add_typer(ledger_app, name="ledger")
app.add_typer(capture_app, name="capture")
app.add_typer(broker_app, name="broker")
app.add_typer(config_app, name="config")

console = Console(highlight=False)
err = Console(stderr=True, highlight=False)

EXIT_FAILED = 1
EXIT_CONFIG = 2
EXIT_BROKER = 3

S = TypeVar("S", bound=AgentSettings)
T = TypeVar("T")


class AgentName(StrEnum):
    capture = "capture"
    inference = "inference"
    ledger = "ledger"


class ExportFormat(StrEnum):
    json = "json"
    csv = "csv"


ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="TOML configuration file (also FRAMEWIRE_CONFIG).",
        exists=True,
        dir_okay=False,
    ),
]


def _use_config(config: Path | None) -> None:
    if config is not None:
        os.environ[CONFIG_ENV] = str(config)


def load_settings(cls: Callable[..., S], **overrides: object) -> S:
    """Build settings, or exit 2 with one readable line per wrong field."""
    try:
        return cls(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        err.print("[red]configuration error:[/]")
        for e in exc.errors(include_url=False):
            where = ".".join(str(p) for p in e["loc"]) or "(settings)"
            env = f"FRAMEWIRE_{where.upper()}"
            err.print(f"  {where} ({env}): {e['msg']}")
        raise typer.Exit(EXIT_CONFIG) from None
    except (OSError, ValueError) as exc:
        err.print(f"[red]configuration error:[/] {exc}")
        raise typer.Exit(EXIT_CONFIG) from None


@app.callback()
def main(
    version: Annotated[bool, typer.Option("--version", help="Print the version.")] = False,
) -> None:
    if version:
        console.print(__version__)
        raise typer.Exit()


# --- agents ----------------------------------------------------------------------------------
@app.command()
def run(
    agent: Annotated[AgentName, typer.Argument(help="Which agent to run.")],
    config: ConfigOption = None,
) -> None:
    """Run one agent in the foreground (what the systemd units call)."""
    _use_config(config)
    if agent is AgentName.capture:
        from edge_agents.capture.agent import run as run_capture
        from edge_agents.capture.settings import CaptureSettings

        s = load_settings(CaptureSettings)
        setup_logging(s.log_level, s.log_format)
        _with_broker_errors(lambda: run_main(run_capture(s)))
    elif agent is AgentName.inference:
        from inference_agent.agent import run as run_inference
        from inference_agent.settings import InferenceSettings

        si = load_settings(InferenceSettings)
        setup_logging(si.log_level, si.log_format)
        _with_broker_errors(lambda: run_main(run_inference(si)))
    else:
        from edge_agents.ledger.agent import run as run_ledger
        from edge_agents.ledger.settings import LedgerSettings

        sl = load_settings(LedgerSettings)
        setup_logging(sl.log_level, sl.log_format)
        _with_broker_errors(lambda: run_main(run_ledger(sl)))


@app.command()
def up(
    captures: Annotated[Path, typer.Option(help="Folder to watch.")] = Path("captures"),
    station: Annotated[str, typer.Option(help="Station id.")] = "station-1",
    config: ConfigOption = None,
) -> None:
    """Run the whole pipeline on this machine: broker (embedded Mosquitto unless
    FRAMEWIRE_BROKER_URL is set), capture, inference and ledger. Ctrl-C stops it."""
    _use_config(config)
    from framewire.stack import open_stack, run_agents

    base = load_settings(AgentSettings)
    setup_logging(base.log_level, base.log_format)
    url = base.broker_url if "broker_url" in base.model_fields_set else None

    async def go() -> None:
        async with open_stack(
            base.data_dir, captures, broker_url=url, station=station, prefix=base.topic_prefix
        ) as stack:
            _write_runtime_file(base.data_dir, stack.broker_url, stack.secrets)
            console.print(
                f"framewire up: broker {stack.broker_url}, watching {captures.resolve()}, "
                f"ledger {stack.ledger.ledger_path}"
            )
            await run_agents(stack, asyncio.Event())

    _with_broker_errors(lambda: run_main(go()))


def _write_runtime_file(data_dir: Path, url: str, secrets: dict[str, Path]) -> None:
    """Where `framewire status` and `framewire request` find the broker `up` started."""
    info = {"broker_url": url, "secrets": {u: str(p) for u, p in secrets.items()}}
    (data_dir / "up.json").write_text(json.dumps(info), encoding="utf-8")


def _with_broker_errors(fn: Callable[[], T]) -> T:
    """Run an agent or the stack; errors a person can fix become one line and an exit code
    (3: the broker is missing or unreachable; 2: configuration, catalog or model)."""
    from edge_agents.capture.backlog import BrokerUnreachableError
    from edge_agents.runtime import ConfigurationError
    from inference_agent.cards.catalog import CatalogError
    from inference_agent.models import ModelError

    try:
        return fn()
    except* (BrokerError, BrokerUnreachableError) as group:
        for exc in _leaves(group):
            err.print(f"[red]{exc}[/]")
        raise typer.Exit(EXIT_BROKER) from None
    except* (CatalogError, ModelError, ConfigurationError) as group:
        for exc in _leaves(group):
            err.print(f"[red]{exc}[/]")
        raise typer.Exit(EXIT_CONFIG) from None


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    out: list[BaseException] = []
    for exc in group.exceptions:
        out.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return out


@app.command()
def demo(
    cards: Annotated[int, typer.Option(min=1, max=100_000, help="Sample cards to generate.")] = 20,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the ledger.")] = 300.0,
    keep: Annotated[
        Path | None, typer.Option(help="Work in this folder and keep it (default: a temp dir).")
    ] = None,
) -> None:
    """Run the whole pipeline on generated sample cards and print a summary.
    Exits 0 only when every frame is in the ledger."""
    from framewire.demo import run_demo

    setup_logging("WARNING")
    base = load_settings(AgentSettings)
    url = base.broker_url if "broker_url" in base.model_fields_set else None

    def go() -> None:
        if keep is not None:
            report = run_main(run_demo(keep, cards, wait=timeout, broker_url=url))
        else:
            with tempfile.TemporaryDirectory(prefix="framewire-demo-") as tmp:
                report = run_main(run_demo(Path(tmp), cards, wait=timeout, broker_url=url))
        console.print(report.table())
        if not report.complete:
            err.print(
                f"[red]{report.frames - report.ledgered} frame(s) did not reach the ledger[/]"
            )
            raise typer.Exit(EXIT_FAILED)
        console.print("[green]every frame is in the ledger exactly once[/]")

    _with_broker_errors(go)


@app.command()
def status(
    wait: Annotated[float, typer.Option(help="Seconds to collect retained messages.")] = 1.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    watch: Annotated[bool, typer.Option("--watch", "-w", help="Refresh until Ctrl-C.")] = False,
    interval: Annotated[float, typer.Option(help="Seconds between refreshes.")] = 2.0,
    config: ConfigOption = None,
) -> None:
    """Every agent's availability and last status, read live from the broker."""
    _use_config(config)
    import aiomqtt

    from framewire.observe import snapshot
    from schemas import TopicTree

    base = load_settings(AgentSettings)
    login = _observer_login(base)
    topics = TopicTree(base.topic_prefix)

    def take() -> Snapshot:
        try:
            return run_main(snapshot(login, topics, wait=wait))
        except aiomqtt.MqttError as exc:
            err.print(f"[red]cannot read status from {login.url}: {exc}[/]")
            raise typer.Exit(EXIT_BROKER) from None

    if watch:
        from rich.live import Live

        with Live(_status_table(take(), login.url), console=console, screen=False) as live:
            try:
                while True:
                    time.sleep(interval)
                    live.update(_status_table(take(), login.url))
            except KeyboardInterrupt:
                return
    snap = take()
    if as_json:
        out = {
            a.agent_id: {
                "availability": a.availability,
                "status": a.status.model_dump(mode="json") if a.status else None,
            }
            for a in snap.agents.values()
        }
        console.print_json(data=out)
        return
    if not snap.agents:
        err.print(f"no agents have reported on {login.url}")
        raise typer.Exit(EXIT_FAILED)
    console.print(_status_table(snap, login.url))


def _status_table(snap: Snapshot, url: str) -> Table:
    table = Table(title=f"framewire agents at {url}")
    for col in (
        "agent",
        "kind",
        "availability",
        "state",
        "uptime",
        "frames/min",
        "queues",
        "counters",
    ):
        table.add_column(col, overflow="fold")
    for a in sorted(snap.agents.values(), key=lambda v: v.agent_id):
        s = a.status
        colour = "green" if a.availability == "online" else "red"
        rate = s.details.get("frames_per_minute") if s else None
        table.add_row(
            a.agent_id,
            s.kind if s else "?",
            f"[{colour}]{a.availability}[/]",
            s.state if s else (a.problem or "-"),
            f"{s.uptime_s:.0f} s" if s else "-",
            "-" if rate is None else str(rate),
            "\n".join(f"{k}={v}" for k, v in s.queues.items()) if s else "",
            "\n".join(f"{k}={v}" for k, v in sorted(s.counters.items())) if s else "",
        )
    return table


@app.command()
def tail(
    station: Annotated[str, typer.Option(help="Only this station ('+': all).")] = "+",
    as_json: Annotated[bool, typer.Option("--json", help="Print each result as JSON.")] = False,
    count: Annotated[int, typer.Option(help="Stop after this many results (0: never).")] = 0,
    config: ConfigOption = None,
) -> None:
    """Results as they arrive, one line each (read from the broker; Ctrl-C stops)."""
    _use_config(config)
    import aiomqtt

    from framewire.observe import follow
    from schemas import MessageError, TopicTree, decode_json

    base = load_settings(AgentSettings)
    login = _observer_login(base)
    topics = TopicTree(base.topic_prefix)
    topic = topics.all_results() if station == "+" else topics.results(station)

    async def go() -> None:
        seen = 0
        async for _, data in follow(login, [topic]):
            if not isinstance(data, dict):
                continue
            if as_json:
                print(json.dumps(data), flush=True)
            else:
                try:
                    result = decode_json(InferenceResult, json.dumps(data).encode())
                except MessageError as exc:
                    console.print(f"[red]unreadable result: {exc.reason}[/]")
                    continue
                console.print(_result_line(result), soft_wrap=True)
            seen += 1
            if count and seen >= count:
                return

    try:
        run_main(go())
    except aiomqtt.MqttError as exc:
        err.print(f"[red]cannot follow results on {login.url}: {exc}[/]")
        raise typer.Exit(EXIT_BROKER) from None
    except KeyboardInterrupt:
        return


def _result_line(r: InferenceResult) -> str:
    from rich.markup import escape

    card = r.card
    what = (
        f"{card.status} {card.card_name or '?'} {card.card_number or ''} "
        f"{card.set_name or ''} {card.confidence:.2f}"
        if card
        else r.status
    )
    total = sum(s.ms for s in r.stages)
    return (
        f"{r.completed_at:%H:%M:%S} {r.station} {r.frame_id} {escape(r.source_name)}  "
        f"{escape(what)}  {total:.0f} ms{' (cached)' if r.cached else ''}"
    )


def _observer_login(base: AgentSettings, user: str = "observer") -> BrokerLogin:
    """The broker `framewire up` started (from <data_dir>/up.json), else the configured one."""
    runtime = base.data_dir / "up.json"
    if "broker_url" not in base.model_fields_set and runtime.is_file():
        info = json.loads(runtime.read_text(encoding="utf-8"))
        secret = info.get("secrets", {}).get(user)
        return BrokerLogin(
            info["broker_url"], user if secret else None, Path(secret) if secret else None
        )
    return BrokerLogin(base.broker_url, base.username(), base.mqtt_password_file)


@app.command()
def identify(
    images: Annotated[list[Path], typer.Argument(help="Image files to identify.")],
    catalog: Annotated[
        Path | None, typer.Option(help="Catalog CSV (default: FRAMEWIRE_CATALOG).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per image.")] = False,
    backend: Annotated[
        str | None, typer.Option(help="auto, onnx or mlx (default: FRAMEWIRE_MODEL_BACKEND).")
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Identify cards in image files on this machine, with no broker: the inference
    pipeline in-process. Exits 1 if any image could not be read."""
    _use_config(config)
    from edge_agents.capture.inspect import ImageLimits
    from framewire.identify import identify as run_identify
    from inference_agent.build import build_pipeline
    from inference_agent.cards.catalog import CatalogError
    from inference_agent.models import ModelError
    from inference_agent.settings import InferenceSettings

    setup_logging("WARNING")
    settings = load_settings(InferenceSettings, catalog=catalog, model_backend=backend)
    if settings.catalog is None:
        err.print("[red]no catalog: pass --catalog FILE or set FRAMEWIRE_CATALOG[/]")
        raise typer.Exit(EXIT_CONFIG)
    try:
        pipeline = build_pipeline(settings, agent_id="identify")
    except (CatalogError, ModelError) as exc:
        err.print(f"[red]{exc}[/]")
        raise typer.Exit(EXIT_CONFIG) from None
    limits = ImageLimits(max_pixels=settings.max_pixels)
    failed = 0
    table = Table("file", "status", "card", "number", "set", "price", "confidence")
    for item in run_identify(images, pipeline, limits):
        r = item.record
        failed += not item.ok
        if as_json:
            print(json.dumps(r, ensure_ascii=False))
        elif not item.ok:
            table.add_row(str(item.file), "[red]error[/]", r["error"], "", "", "", "")
        else:
            price = r.get("market_price")
            table.add_row(
                str(item.file),
                str(r.get("status")),
                str(r.get("card_name") or "-"),
                str(r.get("card_number") or "-"),
                str(r.get("set_name") or "-"),
                f"{price:.2f}" if isinstance(price, float) else "-",
                f"{r.get('confidence', 0):.2f}",
            )
    if not as_json:
        console.print(table)
    if failed:
        raise typer.Exit(EXIT_FAILED)


def _send(
    agent: str, command: str, args: dict[str, str | int | float | bool | None], wait: float
) -> None:
    """Send one command over MQTT, print the answer; exit 1 if refused, 3 if unreachable."""
    import aiomqtt

    from framewire.observe import request as send_request
    from schemas import TopicTree

    base = load_settings(AgentSettings)
    login = _observer_login(base, user="operator")
    try:
        response = run_main(
            send_request(login, TopicTree(base.topic_prefix), agent, command, args, wait=wait)
        )
    except TimeoutError:
        err.print(f"[red]{agent} did not answer within {wait:.0f} s[/]")
        raise typer.Exit(EXIT_FAILED) from None
    except aiomqtt.MqttError as exc:
        err.print(f"[red]cannot reach the broker at {login.url}: {exc}[/]")
        raise typer.Exit(EXIT_BROKER) from None
    console.print_json(data=response.model_dump(mode="json"))
    if not response.ok:
        raise typer.Exit(EXIT_FAILED)


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


@app.command("import")
def import_folder(
    directory: Annotated[
        Path, typer.Argument(help="Folder of images.", exists=True, file_okay=False)
    ],
    station: Annotated[
        str, typer.Option(help="Station id the frames are sent as (its own broker user).")
    ] = "import",
    retry_failed: Annotated[
        bool, typer.Option("--retry-failed", help="Try quarantined files again.")
    ] = False,
    config: ConfigOption = None,
) -> None:
    """Send an existing folder of images through the pipeline, in bounded chunks. Run it
    again after an interruption: what is already ledgered is not sent again. Exits 0 when
    every file is ledgered, 1 when some were quarantined."""
    _use_config(config)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from edge_agents.capture.backlog import import_settings, run_import
    from edge_agents.capture.settings import CaptureSettings
    from edge_agents.capture.state import StateSummary

    base = load_settings(CaptureSettings, station=station)
    setup_logging("WARNING", base.log_format)
    overrides: dict[str, object] = {}
    up_file = base.data_dir / "up.json"
    if "broker_url" not in base.model_fields_set and up_file.is_file():
        info = json.loads(up_file.read_text(encoding="utf-8"))
        secret = info.get("secrets", {}).get(f"capture-{station}")
        overrides["broker_url"] = info["broker_url"]
        if secret:
            overrides.update(mqtt_username=f"capture-{station}", mqtt_password_file=Path(secret))
    settings = import_settings(base.model_copy(update=overrides), directory)
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[detail]}"),
    )
    with Progress(*columns, console=err, transient=False) as bar:
        task = bar.add_task("importing", total=None, detail="scanning")

        def show(summary: StateSummary, scanned: bool) -> None:
            c = summary.counts
            total = sum(c.values())
            done = c["ledgered"] + c["quarantined"]
            bar.update(
                task,
                total=total if scanned else None,
                completed=done,
                detail=f"ledgered {c['ledgered']}, quarantined {c['quarantined']}, "
                f"in flight {c['published'] + c['inferred']}" + ("" if scanned else ", scanning"),
            )

        result = _with_broker_errors(
            lambda: run_main(run_import(settings, retry_failed=retry_failed, progress=show))
        )
    c = result.counts
    console.print(
        f"{c['ledgered']} ledgered, {c['quarantined']} quarantined (state: {settings.state_path})"
    )
    if c["quarantined"]:
        err.print("see `framewire capture status --db STATE`; retry with --retry-failed")
        raise typer.Exit(EXIT_FAILED)


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


AgentOption = Annotated[
    str | None, typer.Option("--agent", help="Agent id (default: from config).")
]
WaitOption = Annotated[float, typer.Option(help="Seconds to wait for the answer.")]


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
    folder = data_dir or load_settings(AgentSettings).data_dir / "broker"
    try:
        plan = BrokerPlan(
            folder,
            port=port,
            bind=bind,
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


if __name__ == "__main__":  # pragma: no cover
    app()
