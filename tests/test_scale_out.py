"""Several inference boxes in one share group: a dead one's share goes to the live ones
within seconds, without restarting it and without waiting for a resend timer."""

from __future__ import annotations

import dataclasses
import time

import pytest

from framewire.schemas import AgentStatus, TopicTree, decode_json
from tests.conftest import USERS, AgentProcess, Pipeline, jpeg_bytes, wait_until
from tests.test_hostile_images import peak_rss_mib
from tests.test_pipeline import ledger_rows, observer, wait_online

pytestmark = pytest.mark.integration
CAPTURE_LEDGER_CEILING_MIB = 512


def more_inference(p: Pipeline, n: int) -> list[AgentProcess]:
    """`n` inference agents besides the pipeline's own, each with its own id and data."""
    base = p.agents["inference"]
    extra = []
    for i in range(2, n + 2):
        agent_id = f"{USERS['inference']}-{i}"
        env = dict(base.env, FRAMEWIRE_AGENT_ID=agent_id)
        env["FRAMEWIRE_DATA_DIR"] = str(p.root / agent_id)
        box = dataclasses.replace(base, env=env, log=p.root / f"{agent_id}.log")
        p.agents[agent_id] = box  # the fixture stops it with the others
        extra.append(box)
    return extra


def test_a_killed_inference_box_does_not_hold_back_its_share(pipeline: Pipeline) -> None:
    p = pipeline
    t = TopicTree(p.broker.prefix)
    # the resend timer alone would wait 10 minutes: only failover can meet the bound below
    p.agents["capture"].env["FRAMEWIRE_ACK_TIMEOUT"] = "600"
    p.agents["capture"].env["FRAMEWIRE_MAX_IN_FLIGHT"] = "60"
    boxes = [p.agents["inference"], *more_inference(p, 2)]
    with observer(p) as rec:
        p.start("ledger")
        for box in boxes:
            box.start()
        ids = [box.env["FRAMEWIRE_AGENT_ID"] for box in boxes]
        wait_online(rec, p, USERS["ledger"], *ids)
        p.start("capture")
        wait_online(rec, p, USERS["capture"])
        for i in range(30):
            (p.captures / f"a{i:02d}.jpg").write_bytes(jpeg_bytes(i, size=(640, 480)))
        wait_until(lambda: len(ledger_rows(p.ledger_db)) >= 5, what="first rows")
        victim = boxes[1]
        victim.kill()
        for i in range(30, 60):
            (p.captures / f"a{i:02d}.jpg").write_bytes(jpeg_bytes(i, size=(640, 480)))
        killed_at = time.monotonic()
        # the bound: well inside one ack timeout (600 s); failover takes seconds
        wait_until(lambda: len(ledger_rows(p.ledger_db)) >= 60, timeout=60, what="every frame")
        elapsed = time.monotonic() - killed_at
        time.sleep(1)
    rows = ledger_rows(p.ledger_db)
    assert len(rows) == 60 and len({r["frame_id"] for r in rows}) == 60
    assert elapsed < 600
    served = {r["agent_id"] for r in rows}
    assert served >= {ids[0], ids[2]}  # the live boxes took the stream
    capture = decode_json(AgentStatus, rec.on(t.status(USERS["capture"]))[-1].payload)
    assert capture.details.get("inference_online") == 2


def test_two_capture_stations_share_one_ledger(pipeline: Pipeline) -> None:
    """Each station sees only its own results and acknowledgements; the ledger holds both."""
    p = pipeline
    t = TopicTree(p.broker.prefix)
    base = p.agents["capture"]
    second = p.root / "captures-2"
    second.mkdir()
    user = "capture-import"  # the broker fixture's second station is `import`
    env = dict(
        base.env,
        FRAMEWIRE_STATION="import",
        FRAMEWIRE_MQTT_USERNAME=user,
        FRAMEWIRE_MQTT_PASSWORD_FILE=str(p.broker.password_file(user)),
        FRAMEWIRE_AGENT_ID=user,
        FRAMEWIRE_WATCH_DIR=str(second),
        FRAMEWIRE_DATA_DIR=str(p.root / user),
    )
    p.agents[user] = dataclasses.replace(base, env=env, log=p.root / f"{user}.log")
    with observer(p) as rec:
        p.start("ledger", "inference", "capture", user)
        wait_online(rec, p, *USERS.values(), user)
        for i in range(10):
            (p.captures / f"one-{i}.jpg").write_bytes(jpeg_bytes(i))
            (second / f"two-{i}.jpg").write_bytes(jpeg_bytes(100 + i))
        wait_until(lambda: len(ledger_rows(p.ledger_db)) == 20, what="both stations ledgered")

        def status(agent: str) -> AgentStatus:
            return decode_json(AgentStatus, rec.on(t.status(agent))[-1].payload)

        wait_until(
            lambda: (
                status(USERS["capture"]).counters.get("frames.ledgered") == 10
                and status(user).counters.get("frames.ledgered") == 10
            ),
            what="each station's own acknowledgements",
        )
        assert not rec.on(t.dead_letters(USERS["capture"]))
        assert not rec.on(t.dead_letters(user))
        # the memory ceilings the systemd units hold the agents to
        for name in (USERS["capture"], user, "ledger"):
            proc = p.agents["capture" if name == USERS["capture"] else name].proc
            assert proc is not None and peak_rss_mib(proc.pid) < CAPTURE_LEDGER_CEILING_MIB
    rows = ledger_rows(p.ledger_db)
    by_station = {r["station"] for r in rows if r["source_name"].startswith("one-")}
    assert by_station == {"station-1"}
    assert {r["station"] for r in rows if r["source_name"].startswith("two-")} == {"import"}
    assert len({r["frame_id"] for r in rows}) == 20
