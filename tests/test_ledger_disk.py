"""The ledger's disk full: the agent stays up, says it is degraded and why, acknowledges
nothing it could not write, and catches up without a restart once the disk has room."""

from __future__ import annotations

import asyncio
import urllib.request

import pytest

from framewire.edge_agents.ledger.agent import serve
from framewire.edge_agents.ledger.settings import LedgerSettings
from framewire.edge_agents.ledger.store import LedgerStore
from framewire.schemas import AgentStatus, TopicTree, decode_json
from tests.conftest import USERS, Pipeline, jpeg_bytes
from tests.test_hostile_files import until
from tests.test_pipeline import ledger_rows, observer

pytestmark = pytest.mark.integration


def metric(port: int, name: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    for line in text.splitlines():
        if line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in the metrics")


async def test_a_full_ledger_disk_degrades_the_ledger_which_recovers_without_loss(
    pipeline: Pipeline, unused_tcp_port: int
) -> None:
    p = pipeline
    t = TopicTree(p.broker.prefix)
    agent_id = USERS["ledger"]
    p.agents["capture"].env["FRAMEWIRE_ACK_TIMEOUT"] = "2"
    settings = LedgerSettings(
        broker_url=p.broker.url,
        mqtt_username=agent_id,
        mqtt_password_file=p.broker.password_file(agent_id),
        agent_id=agent_id,
        topic_prefix=p.broker.prefix,
        data_dir=p.root / "ledger",
        status_interval=1,
        metrics_port=unused_tcp_port,
        ha_discovery=False,
    )

    def statuses() -> list[AgentStatus]:
        return [decode_json(AgentStatus, m.payload) for m in rec.on(t.status(agent_id))]

    with observer(p) as rec:
        async with LedgerStore(settings.ledger_path) as store:
            stop = asyncio.Event()
            agent = asyncio.create_task(serve(settings, store, stop=stop))
            p.start("inference", "capture")
            await until(lambda: statuses(), what="ledger status")
            (p.captures / "before.jpg").write_bytes(jpeg_bytes(0))
            await until(lambda: len(ledger_rows(p.ledger_db)) == 1, what="the first row")

            # SQLite's max_page_count on the ledger's own connection stands in for the disk
            pages = await store._db.run(lambda c: c.execute("PRAGMA page_count").fetchone()[0])
            await store._db.run(lambda c: c.execute(f"PRAGMA max_page_count = {pages}"))
            for i in range(40):
                (p.captures / f"during-{i}.jpg").write_bytes(jpeg_bytes(i + 1, size=(96, 64)))
            await until(lambda: any(s.state == "degraded" for s in statuses()), what="degraded")
            status = next(s for s in statuses() if s.state == "degraded")
            assert "database or disk is full" in str(status.details["degraded_reason"])
            assert metric(unused_tcp_port, "framewire_degraded") == 1.0
            assert not agent.done()

            await store._db.run(lambda c: c.execute("PRAGMA max_page_count = 1073741823"))
            await until(
                lambda: len(ledger_rows(p.ledger_db)) == 41,
                timeout=120,
                what="every frame once the disk has room",
            )
            await until(lambda: statuses()[-1].state == "running", what="running again")
            assert metric(unused_tcp_port, "framewire_degraded") == 0.0
            stop.set()
            await agent
    names = sorted(r["source_name"] for r in ledger_rows(p.ledger_db))
    assert names == sorted(["before.jpg", *(f"during-{i}.jpg" for i in range(40))])
