"""`framewire demo`: the whole pipeline on generated sample cards, with a summary."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import statistics
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from framewire.edge_agents.capture.state import read_summary
from framewire.edge_agents.ledger.store import LedgerReader
from framewire.edge_agents.runtime.lifecycle import SignalStop
from framewire.observe import BrokerLogin, follow
from framewire.samples import write_cards
from framewire.schemas import MessageError, TopicTree
from framewire.stack import Stack, open_stack, run_agents, until_ready

console = Console(highlight=False)


@dataclass
class DemoReport:
    frames: int
    ledgered: int
    quarantined: int
    latencies: list[float]
    identified: int = 0
    recaptures: int = 0

    @property
    def complete(self) -> bool:
        return self.ledgered == self.frames

    def table(self) -> Table:
        t = Table(title="framewire demo", show_header=False)
        t.add_row("frames written", str(self.frames))
        t.add_row("ledgered", str(self.ledgered))
        t.add_row("quarantined", str(self.quarantined))
        t.add_row("cards identified", str(self.identified))
        t.add_row("re-captures found", str(self.recaptures))
        if self.latencies:
            lat = sorted(self.latencies)
            p95 = lat[min(len(lat) - 1, round(0.95 * (len(lat) - 1)))]
            t.add_row("capture-to-ledger mean", f"{statistics.fmean(lat) * 1000:.0f} ms")
            t.add_row("capture-to-ledger p95", f"{p95 * 1000:.0f} ms")
        return t


def _ledger_facts(ledger: Path) -> tuple[list[float], int, int]:
    """Capture-to-ledger latencies, cards identified, re-captures found."""
    latencies, identified, recaptures = [], 0, 0
    with LedgerReader(ledger) as reader:
        for row in reader.rows():
            captured = datetime.fromisoformat(row["captured_at"])
            ledgered = datetime.fromisoformat(row["ledgered_at"])
            latencies.append((ledgered - captured).total_seconds())
            identified += row["card_status"] == "identified"
            recaptures += row["duplicate_of"] is not None
    return latencies, identified, recaptures


async def _print_results(login: BrokerLogin, topics: TopicTree, station: str) -> None:
    """One line per frame once the ledger has it, with what inference found."""
    results: dict[str, dict[str, object]] = {}
    async for topic, data in follow(login, [topics.results(station), topics.acks(station)]):
        if not isinstance(data, dict):
            continue
        frame_id = str(data.get("frame_id"))
        if topic == topics.results(station):
            results[frame_id] = data
            continue
        result = results.pop(frame_id, {})
        if data.get("duplicate"):
            continue
        stages = result.get("stages")
        total = sum(float(s["ms"]) for s in stages) if isinstance(stages, list) else 0.0
        card = result.get("card")
        if isinstance(card, dict):
            what = (
                f"{card.get('status')}: {card.get('card_name') or '?'} "
                f"{card.get('card_number') or ''} ({card.get('set_name') or '?'}) "
                f"conf {float(card.get('confidence') or 0):.2f}"
            )
        else:
            what = str(data.get("result_status"))
        again = (
            f"  [yellow]re-capture of {data['duplicate_of']}[/]" if data.get("duplicate_of") else ""
        )
        console.print(
            f"  [green]ledgered[/] {escape(str(result.get('source_name', frame_id)))}  "
            f"{escape(what)}  {total:.0f} ms{again}"
        )


async def run_demo(
    workdir: Path,
    cards: int,
    *,
    wait: float,
    broker_url: str | None = None,
    overrides: dict[str, object] | None = None,
    drain_timeout: float | None = None,
) -> DemoReport:
    """The whole pipeline in `workdir`; cards are written once every agent is online.
    Ctrl-C stops it (drained: the report says what got through); Ctrl-C again at once."""
    captures = workdir / "captures"
    data = workdir / "data"
    captures.mkdir(parents=True, exist_ok=True)
    stop = asyncio.Event()
    with SignalStop(stop, drain_timeout=drain_timeout, say=lambda t: console.print(escape(t))):
        async with open_stack(data, captures, broker_url=broker_url, overrides=overrides) as stack:
            console.print(f"broker {stack.broker_url}; capture folder {captures}")
            await _run(stack, captures, cards, wait, stop)
        summary = read_summary(stack.capture.state_path)
        with LedgerReader(stack.ledger.ledger_path) as reader:
            in_ledger = reader.count()
        latencies, identified, recaptures = _ledger_facts(stack.ledger.ledger_path)
        return DemoReport(
            frames=cards,
            ledgered=in_ledger,
            quarantined=summary.counts["quarantined"],
            latencies=latencies,
            identified=identified,
            recaptures=recaptures,
        )


async def _run(stack: Stack, captures: Path, cards: int, wait: float, stop: asyncio.Event) -> None:
    topics = TopicTree(stack.capture.topic_prefix)
    login = stack.observer()
    async with asyncio.TaskGroup() as tg:
        ready = asyncio.Event()
        agents = tg.create_task(run_agents(stack, stop, ready=ready), name="agents")
        printer = tg.create_task(_print_results(login, topics, stack.capture.station))
        console.print("waiting for the agents to come online...")
        if await until_ready(ready, agents):
            console.print(f"writing {cards} sample cards...")
            await asyncio.to_thread(write_cards, captures, cards, recapture_every=10)
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and not agents.done() and not stop.is_set():
                with contextlib.suppress(FileNotFoundError, MessageError, sqlite3.Error):
                    summary = read_summary(stack.capture.state_path)
                    if summary.counts["ledgered"] + summary.counts["quarantined"] >= cards:
                        break
                await asyncio.sleep(0.2)
        stop.set()
        await agents
        printer.cancel()
