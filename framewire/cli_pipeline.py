"""Commands that run the pipeline: run, up, demo, identify, import."""

from __future__ import annotations

import asyncio
import json
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from edge_agents.runtime import AgentSettings, run_main, setup_logging
from framewire.cli_common import (
    EXIT_CONFIG,
    EXIT_FAILED,
    AgentName,
    ConfigOption,
    _use_config,
    _with_broker_errors,
    _write_runtime_file,
    app,
    console,
    err,
    load_settings,
)


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
    from framewire.identify import Identified
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
