"""`framewire metrics`: what ships for Prometheus next to the agents' metrics."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

metrics_app = typer.Typer(
    help="Prometheus: the alerting rules for the agents' metrics.",
    no_args_is_help=True,
)


@metrics_app.command("rules")
def rules_command(
    output: Annotated[
        Path | None,
        typer.Option(
            "--output", "-o", help="The rule file to write (default stdout).", dir_okay=False
        ),
    ] = None,
) -> None:
    """Write the alerting rules for framewire's metrics (a Prometheus rule file).

    Slow frames, dead letters over 5 %, a queue over 100, an agent down, off the broker or
    degraded, no inference agent for a station, an agent at its memory ceiling. Name the
    file under `rule_files:` in prometheus.yml; `promtool check rules FILE` checks it.
    Exits 1 if FILE cannot be written.
    """
    from framewire.cli_common import EXIT_FAILED, err
    from framewire.edge_agents.runtime.alerts import alerts, render

    text = render()
    if output is None:
        sys.stdout.write(text)
        return
    partial = output.with_name(f".{output.name}.partial")
    try:  # whole or not at all: Prometheus may reload it at any moment
        partial.write_text(text, encoding="utf-8")
        partial.replace(output)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        err.print(f"[red]cannot write {output}: {exc.strerror or exc}[/]")
        raise typer.Exit(EXIT_FAILED) from None
    err.print(f"wrote {len(alerts())} alerting rules to {output}", soft_wrap=True)
