"""Live views read from the broker: status and tail."""

from __future__ import annotations

import json
import time
from typing import Annotated

import typer
from rich.table import Table

from framewire.cli_common import (
    EXIT_BROKER,
    EXIT_FAILED,
    ConfigOption,
    _observer_login,
    _use_config,
    app,
    console,
    err,
    load_settings,
    without_bytes,
)
from framewire.edge_agents.runtime import AgentSettings, run_main
from framewire.observe import Snapshot
from framewire.schemas import InferenceResult


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
    from framewire.schemas import TopicTree

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
    raw: Annotated[
        bool, typer.Option("--raw", help="With --json: include the thumbnail's bytes (base64).")
    ] = False,
    count: Annotated[int, typer.Option(help="Stop after this many results (0: never).")] = 0,
    config: ConfigOption = None,
) -> None:
    """Results as they arrive, one line each (read from the broker; Ctrl-C stops)."""
    _use_config(config)
    import aiomqtt

    from framewire.observe import follow
    from framewire.schemas import MessageError, TopicTree, decode_json

    base = load_settings(AgentSettings)
    login = _observer_login(base)
    topics = TopicTree(base.topic_prefix)
    topic = topics.all_results() if station == "+" else topics.results(station)

    async def go() -> None:
        seen = 0

        def say_following() -> None:  # on stderr: the results alone go to stdout
            err.print(f"following results on {topic} (Ctrl-C stops)")

        async for _, data in follow(login, [topic], subscribed=say_following):
            if not isinstance(data, dict):
                continue
            if as_json:
                print(json.dumps(data if raw else without_bytes(data)), flush=True)
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
