"""`framewire shadow report`: how a shadow model's readings compare with the results that
counted, and how fast each model reads, from the ledger."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from framewire.cli_admin import LedgerDbOption, _ledger_reader
from framewire.cli_common import ConfigOption, _use_config, console, err

shadow_app = typer.Typer(
    help="Shadow agents: prove a new model before it counts.", no_args_is_help=True
)


@shadow_app.command("report")
def shadow_report(
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    disagreements: Annotated[
        int, typer.Option(help="Disagreeing frames to list per shadow agent.", min=0)
    ] = 10,
    db: LedgerDbOption = None,
    config: ConfigOption = None,
) -> None:
    """Per shadow agent: frames compared with their results, agreement (the same verdict
    and the same card), the frames where they differ, and each model's median time per
    frame. A shadow agent is an inference agent with `role = "shadow"`; its readings never
    count."""
    from framewire.edge_agents.ledger.opinions import summarise

    _use_config(config)
    with _ledger_reader(db) as reader:
        summaries = summarise(reader.shadow_rows())
        location = reader.location
    report = [s.as_dict(disagreements=disagreements) for s in summaries]
    if as_json:
        console.print_json(json.dumps({"ledger": location, "shadow_agents": report}))
        return
    if not report:
        err.print(
            f"no shadow readings in {location}: run an inference agent with "
            'role = "shadow" beside the primary ones'
        )
        return
    console.print(f"shadow readings in {location}")
    table = Table()
    for column in ("shadow agent", "compared", "agreement", "ms shadow", "ms counted", "speed"):
        table.add_column(column, justify="left" if column == "shadow agent" else "right")
    for row in report:
        agreement = row["agreement"]
        speed = row["speed_ratio"]
        table.add_row(
            row["agent_id"],
            str(row["compared"]),
            "-" if agreement is None else f"{agreement:.1%} ({row['agreed']}/{row['compared']})",
            _ms(row["shadow_ms_p50"]),
            _ms(row["counted_ms_p50"]),
            "-" if speed is None else f"{speed:.2f}x",
        )
    console.print(table)
    for row in report:
        models = ", ".join(f"{k} {v}" for k, v in sorted(row["models"].items())) or "none"
        console.print(f"{row['agent_id']}: models {models}")
        if row["not_yet_ledgered"]:
            console.print(f"  {row['not_yet_ledgered']} frame(s) not ledgered yet, not compared")
        for d in row["disagreements"]:
            console.print(f"  {d['frame_id']}: counted {d['counted']}; shadow {d['shadow']}")
        more = row["disagreed"] - len(row["disagreements"])
        if more > 0:
            console.print(f"  ... and {more} more (--disagreements N, or --json)")
    console.print(
        "ms: median pipeline time per frame; speed: how many times faster the shadow model "
        "reads a frame than the counted one"
    )


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"
