"""Processing modes, each a configuration change of one inference agent (`[inference] role`,
`escalate`), through a real broker and real agent processes: a fallback that stands in
while no primary is online and hands back when one returns, a shadow model compared with
the results and never counted, and escalation of uncertain readings to a second agent."""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import io
import json
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

from framewire.edge_agents.ledger.opinions import summarise
from framewire.edge_agents.ledger.stores import open_reader
from framewire.edge_agents.runtime.endpoints import Inbound
from framewire.edge_agents.runtime.presence import AgentPresence
from framewire.inference_agent.agent import better
from framewire.samples import CardSpec, card_jpeg, load_specs, sample_catalog_path
from framewire.schemas import (
    AgentStatus,
    Availability,
    CardRecognition,
    InferenceResult,
    TopicTree,
    decode_json,
    encode_json,
    utc_now,
)
from tests.conftest import USERS, AgentProcess, Pipeline, cli_env, jpeg_bytes, wait_until
from tests.postgres import (
    PostgresServer,
    postgres_server,  # noqa: F401 - the fixture `postgres`
)
from tests.recorder import Recorder
from tests.test_ledger_store import Backend
from tests.test_ledger_store import result as ledger_result
from tests.test_pipeline import ledger_rows, observer, wait_online


def second_inference(p: Pipeline, name: str, **env: str) -> AgentProcess:
    """Another inference agent (user `inference`, id `inference-<name>`), its own data."""
    base = p.agents["inference"]
    agent_id = f"{USERS['inference']}-{name}"
    box = dataclasses.replace(
        base,
        env=dict(
            base.env,
            FRAMEWIRE_AGENT_ID=agent_id,
            FRAMEWIRE_DATA_DIR=str(p.root / agent_id),
            **env,
        ),
        log=p.root / f"{agent_id}.log",
    )
    p.agents[agent_id] = box  # the fixture stops it with the others
    return box


def status(rec: Recorder, p: Pipeline, agent: str) -> AgentStatus:
    t = TopicTree(p.broker.prefix)
    return decode_json(AgentStatus, rec.on(t.status(agent))[-1].payload)


def has_status(rec: Recorder, p: Pipeline, agent: str) -> bool:
    return bool(rec.on(TopicTree(p.broker.prefix).status(agent)))


def rows_by_name(p: Pipeline) -> dict[str, dict[str, object]]:
    return {str(r["source_name"]): dict(r) for r in ledger_rows(p.ledger_db)}


def write_frames(p: Pipeline, names: range, prefix: str = "f") -> None:
    for i in names:
        (p.captures / f"{prefix}{i:03d}.jpg").write_bytes(jpeg_bytes(i, size=(400, 300)))


@pytest.mark.integration
def test_a_fallback_stands_in_while_no_primary_is_online_and_hands_back(
    pipeline: Pipeline,
) -> None:
    p = pipeline
    # only the fallback's stand-in and hand-back can meet the bounds below: the resend
    # timer alone would wait 10 minutes
    p.agents["capture"].env["FRAMEWIRE_ACK_TIMEOUT"] = "600"
    for box in (p.agents["inference"],):
        box.env["FRAMEWIRE_STAGES"] = "checksum"
    primary = p.agents["inference"]
    fallback = second_inference(p, "fallback", FRAMEWIRE_ROLE="fallback")
    fallback_id = fallback.env["FRAMEWIRE_AGENT_ID"]
    with observer(p) as rec:
        p.start("ledger")
        fallback.start()
        p.start("capture")
        wait_online(rec, p, USERS["ledger"], fallback_id, USERS["capture"])

        # 1. no primary: the fallback takes the frames
        write_frames(p, range(0, 10))
        wait_until(lambda: len(ledger_rows(p.ledger_db)) == 10, timeout=60, what="10 rows")
        assert {r["agent_id"] for r in ledger_rows(p.ledger_db)} == {fallback_id}
        assert status(rec, p, fallback_id).details["receiving"] is True

        # 2. a primary comes online: the fallback hands back, and the primary takes them
        primary.start()
        wait_online(rec, p, USERS["inference"])
        wait_until(
            lambda: status(rec, p, fallback_id).details["receiving"] is False,
            timeout=30,
            what="the fallback handing back",
        )
        write_frames(p, range(10, 30))
        wait_until(lambda: len(ledger_rows(p.ledger_db)) == 30, timeout=60, what="30 rows")
        later = [r for n, r in rows_by_name(p).items() if n >= "f010"]
        assert {r["agent_id"] for r in later} == {USERS["inference"]}

        # 3. the primary dies mid-stream: the fallback stands in again, and nothing it held
        # waits for its return (it never comes back in this test)
        write_frames(p, range(30, 60))
        wait_until(lambda: len(ledger_rows(p.ledger_db)) >= 33, timeout=60, what="a few more")
        primary.kill()
        killed_at = time.monotonic()
        wait_until(lambda: len(ledger_rows(p.ledger_db)) == 60, timeout=120, what="60 rows")
        elapsed = time.monotonic() - killed_at
        wait_until(
            lambda: status(rec, p, USERS["capture"]).counters["frames.ledgered"] == 60,
            what="capture's 60 acknowledgements",
        )
        fallback_status = status(rec, p, fallback_id)
    rows = ledger_rows(p.ledger_db)
    assert len({r["frame_id"] for r in rows}) == 60 == len(rows)  # each frame once
    assert elapsed < 600  # well inside one ack timeout
    assert fallback_status.counters["fallback.takeovers"] == 2
    assert fallback_status.details["receiving"] is True
    assert not rec.on(TopicTree(p.broker.prefix).dead_letters(USERS["capture"]))


def catalog_without(tmp_path: Path, missing: CardSpec) -> Path:
    """The sample catalog less one card."""
    with sample_catalog_path().open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        fields = reader.fieldnames
        rows = [r for r in reader if (r["name"], r["number"]) != (missing.name, missing.number)]
    assert fields is not None
    out = io.StringIO()
    writer = csv.DictWriter(out, fields)
    writer.writeheader()
    writer.writerows(rows)
    path = tmp_path / f"catalog-without-{missing.number.replace('/', '-')}.csv"
    path.write_text(out.getvalue(), encoding="utf-8")
    return path


def card_photos(p: Pipeline, specs: list[CardSpec], seed: int) -> dict[str, CardSpec]:
    rng = random.Random(seed)
    written = {}
    for i, spec in enumerate(specs):
        name = f"card-{seed}-{i}.jpg"
        tmp = p.captures / f".{name}.part"
        tmp.write_bytes(card_jpeg(spec, rng))
        tmp.rename(p.captures / name)
        written[name] = spec
    return written


@pytest.mark.integration
def test_a_shadow_model_is_compared_with_the_results_and_never_counts(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    p = pipeline
    specs = load_specs()[:4]
    # the new model under test does not know one card: it disagrees on that one
    p.agents["inference"].env["FRAMEWIRE_CATALOG"] = str(sample_catalog_path())
    shadow = second_inference(
        p,
        "shadow",
        FRAMEWIRE_ROLE="shadow",
        FRAMEWIRE_CATALOG=str(catalog_without(tmp_path, specs[0])),
    )
    shadow_id = shadow.env["FRAMEWIRE_AGENT_ID"]
    with observer(p) as rec:
        p.start("ledger", "inference")
        shadow.start()
        p.start("capture")
        wait_online(rec, p, *USERS.values(), shadow_id)
        written = card_photos(p, specs, seed=3)
        wait_until(lambda: len(ledger_rows(p.ledger_db)) == 4, timeout=180, what="4 rows")
        wait_until(
            lambda: (
                sum(
                    status(rec, p, USERS["ledger"]).counters.get(f"shadow.{k}", 0)
                    for k in ("agreed", "disagreed", "unmatched")
                )
                == 4
            ),
            timeout=180,
            what="4 shadow readings stored",
        )
        wait_until(
            lambda: status(rec, p, USERS["capture"]).counters["frames.ledgered"] == 4,
            what="capture's 4 acknowledgements, no more",
        )
        time.sleep(1)  # a shadow reading acknowledged to the station would show by now
        capture_status = status(rec, p, USERS["capture"])
    rows = rows_by_name(p)
    # only the primary's readings count
    assert {r["agent_id"] for r in rows.values()} == {USERS["inference"]}
    assert all(r["card_status"] == "identified" for r in rows.values())
    assert capture_status.counters["frames.ledgered"] == 4
    out = subprocess.run(
        [sys.executable, "-m", "framewire", "shadow", "report", "--json", "--db", str(p.ledger_db)],
        env=cli_env(p.broker, "operator"),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    (report,) = json.loads(out.stdout)["shadow_agents"]
    assert report["agent_id"] == shadow_id
    assert (report["compared"], report["agreed"], report["disagreed"]) == (4, 3, 1)
    assert report["agreement"] == 0.75
    (disagreement,) = report["disagreements"]
    missing = next(n for n, s in written.items() if s == specs[0])
    assert disagreement["frame_id"] == rows[missing]["frame_id"]
    assert specs[0].name in disagreement["counted"]
    assert report["shadow_ms_p50"] > 0 and report["counted_ms_p50"] > 0
    assert report["speed_ratio"] > 0
    assert report["models"]["ocr-rec"].startswith("PP-OCRv6")
    table = subprocess.run(
        [sys.executable, "-m", "framewire", "shadow", "report", "--db", str(p.ledger_db)],
        env=cli_env(p.broker, "operator"),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "75.0% (3/4)" in table.stdout and shadow_id in table.stdout


@pytest.mark.integration
def test_uncertain_readings_are_escalated_and_the_better_one_kept(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    p = pipeline
    specs = load_specs()[4:7]
    unknown_here = specs[0]
    primary = p.agents["inference"]
    primary.env.update(
        FRAMEWIRE_CATALOG=str(catalog_without(tmp_path, unknown_here)),
        FRAMEWIRE_ESCALATE="true",
    )
    # the escalation agent: here a fuller catalog stands for a heavier model
    escalation = second_inference(
        p,
        "heavy",
        FRAMEWIRE_ROLE="escalation",
        FRAMEWIRE_CATALOG=str(sample_catalog_path()),
        FRAMEWIRE_ESCALATE="false",
    )
    heavy_id = escalation.env["FRAMEWIRE_AGENT_ID"]
    with observer(p) as rec:
        p.start("ledger", "inference")
        escalation.start()
        p.start("capture")
        wait_online(rec, p, *USERS.values(), heavy_id)
        # the primary must have seen the escalation agent before the frames come
        wait_until(lambda: has_status(rec, p, heavy_id), what="the escalation agent's status")
        time.sleep(1.5)
        written = card_photos(p, specs, seed=5)
        wait_until(lambda: len(ledger_rows(p.ledger_db)) == 3, timeout=180, what="3 rows")
        rows = rows_by_name(p)
        escalated = next(n for n, s in written.items() if s == unknown_here)
        row = rows[escalated]
        assert row["card_status"] == "identified"
        assert (row["card_name"], row["card_number"]) == (unknown_here.name, unknown_here.number)
        assert row["agent_id"] == heavy_id
        opinions = json.loads(str(row["result"]))["opinions"]
        assert [(o["agent_id"], o["role"], o["kept"]) for o in opinions] == [
            (USERS["inference"], "primary", False),
            (heavy_id, "escalation", True),
        ]
        assert opinions[0]["card_status"] != "identified"
        for name, r in rows.items():
            if name != escalated:  # read with confidence: not escalated
                assert r["agent_id"] == USERS["inference"]
                assert "opinions" not in json.loads(str(r["result"]))
        wait_until(
            lambda: status(rec, p, USERS["inference"]).counters.get("escalations.kept") == 1,
            what="the primary counting the kept second reading",
        )
        assert status(rec, p, USERS["inference"]).counters["escalations.sent"] == 1

        # with no escalation agent online, the primary's own reading stands at once
        escalation.terminate()
        wait_until(
            lambda: (
                status(rec, p, heavy_id).state == "draining"
                or any(
                    m.payload == b"offline"
                    for m in rec.on(TopicTree(p.broker.prefix).availability(heavy_id))
                )
            ),
            what="the escalation agent gone",
        )
        time.sleep(1)
        again = card_photos(p, [unknown_here], seed=6)
        wait_until(lambda: len(ledger_rows(p.ledger_db)) == 4, timeout=120, what="4th row")
        (name,) = again
        row = rows_by_name(p)[name]
        assert row["agent_id"] == USERS["inference"] and row["card_status"] != "identified"
        wait_until(
            lambda: status(rec, p, USERS["inference"]).counters.get("escalations.skipped") == 1,
            what="the primary counting a skipped escalation",
        )


# --- the logic, without processes ---------------------------------------------------------
def reading(
    agent: str, status: str | None, confidence: float = 0.9, name: str = "Tideclaw"
) -> InferenceResult:
    base = ledger_result(0, "a", card=name)
    card = None
    if status is not None:
        card = CardRecognition(
            status=status,  # type: ignore[arg-type]
            card_name=name,
            set_name="Base",
            card_number="1",
            confidence=confidence,
        )
    return base.model_copy(update={"agent_id": agent, "card": card})


def test_the_better_reading_is_identified_then_more_confident_and_a_tie_keeps_the_first() -> None:
    review, sure = reading("a", "needs_review", 0.7), reading("b", "identified", 0.9)
    assert better(sure, review) and not better(review, sure)
    assert better(reading("b", "needs_review", 0.8), review)
    assert better(review, reading("b", "unknown", 0.0))
    assert not better(reading("b", "needs_review", 0.7), review)  # a tie: the first stays
    assert better(review, reading("b", None))  # any card reading beats none


def test_a_result_carries_opinions_only_when_escalated() -> None:
    plain = reading("a", "identified")
    assert "opinions" not in json.loads(encode_json(plain))  # older readers read it
    first, second = reading("a", "needs_review", 0.6), reading("b", "identified", 0.95)
    kept = second.model_copy(
        update={
            "opinions": [
                first.opinion("primary").model_copy(update={"kept": False}),
                second.opinion("escalation").model_copy(update={"kept": True}),
            ]
        }
    )
    back = decode_json(InferenceResult, encode_json(kept))
    assert [(o.agent_id, o.role, o.kept) for o in back.opinions] == [
        ("a", "primary", False),
        ("b", "escalation", True),
    ]
    assert back.opinions[0].verdict() == ("needs_review", None, None, None)
    assert back.opinions[1].verdict() == ("identified", "Tideclaw", "Base", "1")


def test_presence_counts_only_agents_that_take_frames() -> None:
    async def scenario() -> None:
        t = TopicTree("fw")
        presence = AgentPresence(t)
        gone: list[tuple[str, str, str]] = []
        presence.on_offline(lambda *who: gone.append(who))

        async def say(agent: str, online: bool, **details: str | bool) -> None:
            status = AgentStatus(
                agent_id=agent,
                kind="inference",
                version="x",
                state="running",
                started_at=utc_now(),
                reported_at=utc_now(),
                uptime_s=0,
                details=details,
            )
            await presence.on_status(Inbound(status, agent, "", b"", None, True))
            value = Availability.ONLINE if online else Availability.OFFLINE
            await presence.on_availability(Inbound(value, agent, "", b"", None, True))

        await say("old", True)  # an agent that predates roles is a primary
        await say("shadow", True, role="shadow")
        await say("fallback", True, role="fallback", receiving=False)
        await say("heavy", True, role="escalation")
        assert presence.taking_frames() == ["old"]
        assert presence.online("inference", role="escalation") == ["heavy"]
        await say("old", False)
        await say("fallback", True, role="fallback", receiving=True)
        assert presence.taking_frames() == ["fallback"]
        await say("fallback", True, role="fallback", receiving=False)  # handing back
        await say("shadow", False, role="shadow")
        assert gone == [
            ("old", "inference", "primary"),
            ("fallback", "inference", "fallback"),
            ("shadow", "inference", "shadow"),
        ]

    asyncio.run(scenario())


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_at(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "sqlite":
        return Backend("sqlite", tmp_path / "ledger.sqlite3")
    server: PostgresServer = request.getfixturevalue("postgres")
    return Backend("postgresql", server.new_database())


def test_shadow_readings_are_stored_and_compared_on_both_databases(ledger_at: Backend) -> None:
    backend = ledger_at

    async def scenario() -> None:
        counted = ledger_result(0, "a", card="Tideclaw")
        other = ledger_result(1, "b", card="Ashbloom")
        async with backend.open() as ledger:
            await ledger.record_many([counted])
            agree = counted.opinion("shadow").model_copy(update={"agent_id": "new"})
            differ = counted.opinion("shadow").model_copy(
                update={"agent_id": "new2", "card_status": "unknown", "card_name": None}
            )
            early = other.opinion("shadow").model_copy(update={"agent_id": "new"})
            compared = await ledger.record_opinions([agree, differ, early, agree])
            assert compared == ["agreed", "disagreed", "unmatched", "repeat"]
            await ledger.record_many([other])
            assert await ledger.totals() == (2, 0)  # shadow readings are never inventory
        with open_reader(backend.location) as reader:
            summaries = {s.agent_id: s for s in summarise(reader.shadow_rows())}
        assert (summaries["new"].compared, summaries["new"].agreed) == (2, 2)
        assert (summaries["new2"].compared, summaries["new2"].agreed) == (1, 0)
        (d,) = summaries["new2"].disagreements
        assert (d.counted, d.shadow) == ("Tideclaw (Base 1)", "unknown")

    asyncio.run(scenario())
