"""Commands that run the pipeline: run, up, demo, identify, import."""

from __future__ import annotations

import asyncio
import json
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from framewire.cli_common import (
    EXIT_CONFIG,
    EXIT_FAILED,
    AgentName,
    ConfigOption,
    UpInfo,
    _use_config,
    _with_broker_errors,
    app,
    console,
    err,
    load_settings,
    quiet_logging,
)
from framewire.edge_agents.runtime import AgentSettings, run_main, setup_logging

if TYPE_CHECKING:
    from framewire.demo import DemoReport


# --- agents ----------------------------------------------------------------------------------
@app.command()
def run(
    agent: Annotated[AgentName, typer.Argument(help="Which agent to run.")],
    config: ConfigOption = None,
) -> None:
    """Run one agent in the foreground (what the systemd units call)."""
    _use_config(config)
    if agent is AgentName.capture:
        from framewire.edge_agents.capture.agent import run as run_capture
        from framewire.edge_agents.capture.settings import CaptureSettings

        s = load_settings(CaptureSettings)
        setup_logging(s.log_level, s.log_format)
        _with_broker_errors(lambda: run_main(run_capture(s)))
    elif agent is AgentName.inference:
        from framewire.inference_agent.agent import run as run_inference
        from framewire.inference_agent.settings import InferenceSettings

        si = load_settings(InferenceSettings)
        setup_logging(si.log_level, si.log_format)
        _with_broker_errors(lambda: run_main(run_inference(si)))
    else:
        from framewire.edge_agents.ledger.agent import run as run_ledger
        from framewire.edge_agents.ledger.settings import LedgerSettings

        sl = load_settings(LedgerSettings)
        setup_logging(sl.log_level, sl.log_format)
        _with_broker_errors(lambda: run_main(run_ledger(sl)))


@app.command()
def up(
    captures: Annotated[
        Path | None, typer.Option(help="Folder to watch (default: watch_dir, ./captures).")
    ] = None,
    station: Annotated[
        str | None, typer.Option(help="Station id (default: station, station-1).")
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=65535,
            help="Port of the embedded broker (default: the one it used before, remembered "
            "in <data_dir>/broker/port; the first time 1883 when free).",
        ),
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Run the whole pipeline on this machine: broker (embedded Mosquitto unless
    FRAMEWIRE_BROKER_URL is set), capture, inference and ledger. Ctrl-C stops it (after
    draining; Ctrl-C again stops at once)."""
    _use_config(config)
    from framewire.edge_agents.capture.settings import CaptureSettings
    from framewire.edge_agents.runtime.lifecycle import SignalStop
    from framewire.stack import (
        broker_port,
        open_stack,
        remember_port,
        run_agents,
        until_ready,
    )

    base = load_settings(CaptureSettings, station=station, watch_dir=captures)
    setup_logging(base.log_level, base.log_format)
    url = base.broker_url if "broker_url" in base.model_fields_set else None
    if url is not None and port is not None:
        err.print(
            f"[red]--port is the embedded broker's; the broker is {url} (broker_url, "
            "FRAMEWIRE_BROKER_URL)[/]"
        )
        raise typer.Exit(EXIT_CONFIG)
    data_dir = base.data_dir
    folder = base.watch_dir

    def say(text: str) -> None:
        err.print(f"[yellow]{escape(text)}[/]", soft_wrap=True)

    async def go() -> None:
        stop = asyncio.Event()
        # around everything, the broker included: Ctrl-C again stops at once at any point
        with SignalStop(stop, drain_timeout=base.drain_timeout, say=say):
            chosen = None if url is not None else broker_port(data_dir, port)
            async with open_stack(
                data_dir,
                folder,
                broker_url=url,
                port=chosen,
                station=base.station,
                prefix=base.topic_prefix,
            ) as stack:
                kept = (
                    "" if chosen is None else f" (port kept in {remember_port(data_dir, chosen)})"
                )
                UpInfo(
                    broker_url=stack.broker_url,
                    secrets=stack.secrets,
                    topic_prefix=base.topic_prefix,
                    agents=stack.agents,
                ).write(data_dir)
                console.print(
                    f"framewire up: broker {stack.broker_url}{kept}, watching "
                    f"{escape(str(folder.resolve()))}, ledger {stack.ledger.ledger_path}",
                    soft_wrap=True,
                )
                ready = asyncio.Event()
                async with asyncio.TaskGroup() as tg:
                    agents = tg.create_task(run_agents(stack, stop, ready=ready), name="agents")
                    if await until_ready(ready, agents):
                        names = ", ".join(stack.agents.values())
                        console.print(f"all agents online: {names} (Ctrl-C stops)")

    _with_broker_errors(lambda: run_main(go()))


@app.command()
def demo(
    cards: Annotated[int, typer.Option(min=1, max=100_000, help="Sample cards to generate.")] = 20,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the ledger.")] = 300.0,
    keep: Annotated[
        Path | None, typer.Option(help="Work in this folder and keep it (default: a temp dir).")
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Run the whole pipeline on generated sample cards and print a summary.
    Exits 0 only when every frame is in the ledger."""
    _use_config(config)
    from framewire.demo import run_demo

    setup_logging("WARNING")
    base = load_settings(AgentSettings)
    url = base.broker_url if "broker_url" in base.model_fields_set else None
    # a one-off: it must not take the metrics ports of agents running on this box
    overrides: dict[str, object] = {}
    if "metrics_port" not in base.model_fields_set:
        overrides["metrics_port"] = 0

    def run_in(folder: Path) -> DemoReport:
        return run_main(
            run_demo(
                folder,
                cards,
                wait=timeout,
                broker_url=url,
                overrides=overrides,
                drain_timeout=base.drain_timeout,
            )
        )

    def go() -> None:
        if keep is not None:
            report = run_in(keep)
        else:
            with tempfile.TemporaryDirectory(prefix="framewire-demo-") as tmp:
                report = run_in(Path(tmp))
        console.print(report.table())
        if not report.complete:
            err.print(
                f"[red]{report.frames - report.ledgered} frame(s) did not reach the ledger[/]"
            )
            raise typer.Exit(EXIT_FAILED)
        console.print("[green]every frame is in the ledger exactly once[/]")

    _with_broker_errors(go)


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
    from framewire.edge_agents.capture.inspect import ImageLimits
    from framewire.identify import Identified
    from framewire.identify import identify as run_identify
    from framewire.inference_agent.build import build_pipeline
    from framewire.inference_agent.cards.catalog import CatalogError
    from framewire.inference_agent.models import ModelError
    from framewire.inference_agent.settings import InferenceSettings

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
    results: Iterable[Identified] = run_identify(images, pipeline, limits)
    if not as_json:  # the table comes at the end; show how far it has got meanwhile
        from rich.progress import track

        results = track(
            results, total=len(images), description="identifying", console=err, transient=True
        )
    for item in results:
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

    from framewire.cli_capture import quarantine_table, read_quarantine
    from framewire.cli_common import up_info
    from framewire.edge_agents.capture.backlog import import_settings, run_import
    from framewire.edge_agents.capture.settings import CaptureSettings
    from framewire.edge_agents.capture.state import StateSummary

    base = load_settings(CaptureSettings, station=station)
    # lines above the progress bar, not through it; quarantined files are listed at the end
    quiet_logging(
        base.log_level if "log_level" in base.model_fields_set else "ERROR", base.log_format
    )
    # a one-shot import must not take the metrics port of a capture agent on this box
    overrides: dict[str, object] = {}
    if "metrics_port" not in base.model_fields_set:
        overrides["metrics_port"] = 0
    info = up_info(base)
    if info is not None and "broker_url" not in base.model_fields_set:
        user = f"capture-{base.station}"
        overrides["broker_url"] = info.broker_url
        if user in info.secrets:
            overrides.update(mqtt_username=user, mqtt_password_file=info.secrets[user])
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
        f"{c['ledgered']} ledgered, {c['quarantined']} quarantined "
        f"(state: {escape(str(settings.state_path))})",
        soft_wrap=True,
    )
    if c["quarantined"]:
        items, total = read_quarantine(settings.state_path, limit=10)
        more = f", the {len(items)} most recent" if len(items) < total else ""
        err.print(quarantine_table(items, f"{total} quarantined{more}"))
        err.print(
            f"all of them: framewire capture quarantine --import-dir {escape(str(directory))}; "
            "try them again with --retry-failed",
            soft_wrap=True,
        )
        raise typer.Exit(EXIT_FAILED)


@app.command()
def samples(
    directory: Annotated[Path, typer.Argument(help="Folder to write the images into.")],
    cards: Annotated[int, typer.Option(min=1, max=100_000, help="How many cards.")] = 20,
    seed: Annotated[int, typer.Option(help="Random seed: the same seed, the same images.")] = 0,
    recapture_every: Annotated[
        int,
        typer.Option(
            min=0, help="Every Nth photo is an earlier card photographed again (0: none)."
        ),
    ] = 0,
) -> None:
    """Write sample card photos (cards of the shipped sample catalog, photographed badly)
    the way camera software does: a temporary name, then a rename. Point `framewire up` at
    the folder, or write into its capture folder."""
    from rich.progress import track

    from framewire.samples import iter_cards

    written = track(
        iter_cards(directory, cards, seed=seed, recapture_every=recapture_every),
        total=cards,
        description="writing cards",
        console=err,
        transient=True,
    )
    n = sum(1 for _ in written)
    console.print(f"wrote {n} sample card(s) into {escape(str(directory))}", soft_wrap=True)
