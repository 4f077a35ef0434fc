"""Integration: a real Mosquitto, the real agent processes, real files in a capture folder."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from framewire.schemas import (
    AgentStatus,
    DeadLetter,
    ErrorKind,
    FrameMeta,
    InferenceResult,
    TopicTree,
    decode_json,
    frame_meta_from_properties,
    frame_properties,
    new_frame_id,
    utc_now,
)
from tests.conftest import STATION, USERS, Pipeline, jpeg_bytes, wait_until
from tests.recorder import Recorder

pytestmark = pytest.mark.integration


def ledger_rows(db: Path) -> list[sqlite3.Row]:
    if not db.exists():
        return []
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    try:
        return conn.execute("SELECT * FROM results").fetchall()
    except sqlite3.OperationalError:  # table not created yet
        return []
    finally:
        conn.close()


def capture_rows(db: Path) -> list[sqlite3.Row]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    try:
        return conn.execute("SELECT * FROM frames ORDER BY seq").fetchall()
    finally:
        conn.close()


def observer(p: Pipeline) -> Recorder:
    t = TopicTree(p.broker.prefix)
    return Recorder(
        p.broker.port,
        t.everything(),
        username="observer",
        password=p.broker.password("observer"),
    )


def wait_online(rec: Recorder, p: Pipeline, *agents: str) -> None:
    t = TopicTree(p.broker.prefix)
    for agent in agents:
        wait_until(
            lambda a=agent: any(m.payload == b"online" for m in rec.on(t.availability(a))),
            timeout=120,  # models load and warm up first; slow on a busy machine
            what=f"{agent} online",
        )


def test_every_frame_reaches_the_ledger_exactly_once_and_bad_files_are_quarantined(
    pipeline: Pipeline,
) -> None:
    p = pipeline
    t = TopicTree(p.broker.prefix)
    with observer(p) as rec:
        p.start()
        wait_online(rec, p, *USERS.values())
        good: dict[str, bytes] = {}
        for i in range(10):
            data = jpeg_bytes(i)
            name = f"sub/card-{i}.jpg" if i % 3 == 0 else f"card-{i}.jpg"
            (p.captures / name).parent.mkdir(exist_ok=True)
            (p.captures / name).write_bytes(data)
            good[name] = data
        # a file written slowly, in pieces, as camera software may do
        slow = jpeg_bytes(99)
        with (p.captures / "slow.jpg").open("wb") as f:
            for start in range(0, len(slow), len(slow) // 4 + 1):
                f.write(slow[start : start + len(slow) // 4 + 1])
                f.flush()
                time.sleep(0.05)
        good["slow.jpg"] = slow
        # a byte-identical copy under another name is still its own frame
        (p.captures / "copy-of-card-1.jpg").write_bytes(good["card-1.jpg"])
        good["copy-of-card-1.jpg"] = good["card-1.jpg"]
        bad = {
            "notes.jpg": (b"shopping list: milk, eggs", ErrorKind.NOT_IMAGE),
            "cut.jpg": (jpeg_bytes(5)[:-200], ErrorKind.TRUNCATED),
            "empty.jpg": (b"", ErrorKind.EMPTY),
        }
        for name, (data, _) in bad.items():
            (p.captures / name).write_bytes(data)
        (p.captures / ".card-tmp.jpg").write_bytes(jpeg_bytes(50))  # hidden: work in progress
        (p.captures / "card-x.jpg.part").write_bytes(jpeg_bytes(51))  # temporary name

        wait_until(lambda: len(ledger_rows(p.ledger_db)) >= len(good), what="ledger rows")
        wait_until(
            lambda: len(rec.on(t.dead_letters(USERS["capture"]))) >= len(bad), what="dead letters"
        )
        time.sleep(1.0)  # anything extra (a doubled row, a late file) would land now

        rows = ledger_rows(p.ledger_db)
        assert sorted(r["source_name"] for r in rows) == sorted(good)
        assert len({r["frame_id"] for r in rows}) == len(good)
        for r in rows:
            assert r["sha256"] == hashlib.sha256(good[r["source_name"]]).hexdigest()
            assert r["status"] == "ok"
            result = InferenceResult.model_validate_json(r["result"])
            assert result.image is not None and (result.image.width, result.image.height) == (
                320,
                240,
            )
            assert [s.name for s in result.stages][:1] == ["verify_sha256"]

        states = {r["relpath"]: r for r in capture_rows(p.state_db)}
        assert {n for n, r in states.items() if r["state"] == "ledgered"} == set(good)
        for name, (_, kind) in bad.items():
            assert states[name]["state"] == "quarantined"
            assert states[name]["error_kind"] == kind.value
            assert states[name]["reason"]
        letters = [
            decode_json(DeadLetter, m.payload) for m in rec.on(t.dead_letters(USERS["capture"]))
        ]
        assert {(d.source_name, d.kind) for d in letters} == {(n, k) for n, (_, k) in bad.items()}

        # the frame on the wire is the file itself, with its metadata readable beside it
        frames = rec.on(t.frames(STATION))
        sample = next(m for m in frames if dict(m.user_properties)["source_name"] == "card-2.jpg")
        assert sample.payload == good["card-2.jpg"]
        assert sample.content_type == "image/jpeg"
        meta = frame_meta_from_properties(sample.user_properties)
        assert meta.sha256 == hashlib.sha256(good["card-2.jpg"]).hexdigest()

        # originals are never touched
        for name, data in good.items():
            assert (p.captures / name).read_bytes() == data
        for name, (data, _) in bad.items():
            assert (p.captures / name).read_bytes() == data
        assert (p.captures / ".card-tmp.jpg").exists()
        assert "card-x.jpg.part" not in states and ".card-tmp.jpg" not in states


def test_agents_report_status_and_go_offline_cleanly_on_sigterm(pipeline: Pipeline) -> None:
    p = pipeline
    t = TopicTree(p.broker.prefix)
    with observer(p) as rec:
        p.start()
        wait_online(rec, p, *USERS.values())
        for agent in USERS.values():
            wait_until(lambda a=agent: rec.on(t.status(a)), what=f"{agent} status")
            status = decode_json(AgentStatus, rec.on(t.status(agent))[-1].payload)
            assert status.agent_id == agent and status.state == "running"
        capture = decode_json(AgentStatus, rec.on(t.status(USERS["capture"]))[-1].payload)
        assert capture.details["station"] == STATION
        assert "in_flight" in capture.queues
        for kind, agent in p.agents.items():
            assert agent.terminate() == 0, agent.output()
            wait_until(
                lambda k=kind: rec.on(t.availability(USERS[k]))[-1].payload == b"offline",
                what=f"{kind} offline",
            )
    # a fresh subscriber sees the retained offline state
    with observer(p) as late:
        wait_until(lambda: len(late.on(t.all_availability())) == 3, what="retained availability")
        assert {m.payload for m in late.on(t.all_availability())} == {b"offline"}
        assert all(m.retain for m in late.on(t.all_availability()))


def test_bad_messages_are_dead_lettered_and_the_agents_keep_serving(pipeline: Pipeline) -> None:
    p = pipeline
    t = TopicTree(p.broker.prefix)
    with observer(p) as rec:
        p.start()
        wait_online(rec, p, *USERS.values())
        inference_user = Recorder(
            p.broker.port, username="inference", password=p.broker.password("inference")
        )
        capture_user = Recorder(
            p.broker.port, username=USERS["capture"], password=p.broker.password(USERS["capture"])
        )
        with inference_user, capture_user:
            # to the ledger: not JSON, an unknown version, a hostile identifier
            inference_user.publish(t.results(STATION), b"{not json")
            inference_user.publish(t.results(STATION), json.dumps({"schema_version": 99}))
            inference_user.publish(
                t.results(STATION), json.dumps({"schema_version": 1, "frame_id": "../../x"})
            )
            # to inference: no metadata, and bytes that do not match their sha256
            capture_user.publish(t.frames(STATION), jpeg_bytes(1))
            meta = FrameMeta(
                frame_id=new_frame_id(),
                station=STATION,
                seq=1,
                captured_at=utc_now(),
                sha256="0" * 64,
                content_type="image/jpeg",
                size=len(jpeg_bytes(2)),
                source_name="forged.jpg",
            )
            capture_user.publish(
                t.frames(STATION),
                jpeg_bytes(2),
                user_properties=frame_properties(meta).UserProperty,
            )

            def kinds(agent: str) -> list[ErrorKind]:
                return [
                    decode_json(DeadLetter, m.payload).kind for m in rec.on(t.dead_letters(agent))
                ]

            wait_until(lambda: len(kinds("ledger")) >= 3, what="ledger dead letters")
            assert kinds("ledger") == [
                ErrorKind.MALFORMED,
                ErrorKind.UNSUPPORTED_VERSION,
                ErrorKind.BAD_IDENTIFIER,
            ]
            wait_until(lambda: len(kinds("inference")) >= 2, what="inference dead letters")
            assert sorted(kinds("inference")) == sorted(
                [ErrorKind.MALFORMED, ErrorKind.CHECKSUM_MISMATCH]
            )
            # nothing was made of any of it: no result but the three forged, no ack
            assert len(rec.on(t.results(STATION))) == 3
            assert not rec.on(t.acks(STATION))

        # and real work still flows
        (p.captures / "after.jpg").write_bytes(jpeg_bytes(7))
        wait_until(lambda: len(ledger_rows(p.ledger_db)) == 1, what="ledgered after bad input")
        for agent in p.agents.values():
            assert agent.proc is not None and agent.proc.poll() is None, agent.output()


def test_the_broker_enforces_each_agents_acl(pipeline: Pipeline) -> None:
    p = pipeline
    t = TopicTree(p.broker.prefix)
    with observer(p) as rec:
        anonymous = Recorder(p.broker.port)
        ledger_user = Recorder(
            p.broker.port, username="ledger", password=p.broker.password("ledger")
        )
        with anonymous, ledger_user:
            anonymous.publish(t.frames(STATION), jpeg_bytes(1))  # anonymous: read-only
            ledger_user.publish(t.frames(STATION), jpeg_bytes(1))  # ledger may not send frames
            ledger_user.publish(t.acks(STATION), b"allowed")  # but may acknowledge
            wait_until(lambda: rec.on(t.acks(STATION)), what="the permitted publish")
            time.sleep(0.3)
        assert rec.on(t.frames(STATION)) == []
    with pytest.raises(ConnectionRefusedError, match=r"Not authorized|Bad user"):
        Recorder(p.broker.port, username="ledger", password="wrong")


def test_a_killed_inference_agent_loses_no_frame(pipeline: Pipeline) -> None:
    p = pipeline
    p.agents["capture"].env["FRAMEWIRE_ACK_TIMEOUT"] = "3"
    with observer(p) as rec:
        p.start()
        wait_online(rec, p, *USERS.values())
        for i in range(15):
            (p.captures / f"c{i}.jpg").write_bytes(jpeg_bytes(i, size=(640, 480)))
        wait_until(lambda: len(ledger_rows(p.ledger_db)) >= 3, what="first rows")
        p.agents["inference"].kill()
        for i in range(15, 25):
            (p.captures / f"c{i}.jpg").write_bytes(jpeg_bytes(i, size=(640, 480)))
        p.agents["inference"].start()
        wait_until(lambda: len(ledger_rows(p.ledger_db)) >= 25, timeout=90, what="all rows")
        time.sleep(1)
        rows = ledger_rows(p.ledger_db)
        assert len(rows) == 25
        assert len({r["frame_id"] for r in rows}) == 25


def test_ledger_cli_exports_and_shows_rows(pipeline: Pipeline, tmp_path: Path) -> None:
    p = pipeline
    with observer(p) as rec:
        p.start()
        wait_online(rec, p, *USERS.values())
        for i in range(3):
            (p.captures / f"e{i}.jpg").write_bytes(jpeg_bytes(i))
        wait_until(lambda: len(ledger_rows(p.ledger_db)) == 3, what="3 rows")
    cli = [sys.executable, "-m", "framewire", "ledger"]
    out = subprocess.run(
        [*cli, "export", "--db", str(p.ledger_db), "--format", "json"],
        capture_output=True,
        text=True,
        check=True,
    )
    exported = json.loads(out.stdout)
    assert sorted(r["source_name"] for r in exported) == ["e0.jpg", "e1.jpg", "e2.jpg"]
    csv_file = tmp_path / "ledger.csv"
    subprocess.run(
        [*cli, "export", "--db", str(p.ledger_db), "-f", "csv", "-o", str(csv_file)], check=True
    )
    lines = csv_file.read_text().splitlines()
    assert lines[0].startswith("frame_id,station,source_name") and len(lines) == 4
    shown = subprocess.run(
        [*cli, "show", exported[0]["frame_id"], "--db", str(p.ledger_db)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(shown.stdout)["frame_id"] == exported[0]["frame_id"]
    missing = subprocess.run(
        [*cli, "show", new_frame_id(), "--db", str(p.ledger_db)], capture_output=True, text=True
    )
    assert missing.returncode == 1 and "not in the ledger" in missing.stderr


def test_a_result_for_a_frame_nobody_sent_is_dead_lettered(pipeline: Pipeline) -> None:
    """...and is no inventory: the ledger keeps it as suspect, out of its counts, while the
    frames the station announced are inventory; a forged result for a real frame, with
    other bytes, is suspect too."""
    p = pipeline
    t = TopicTree(p.broker.prefix)
    with observer(p) as rec:
        p.start()
        wait_online(rec, p, *USERS.values())
        forged = InferenceResult(
            frame_id=new_frame_id(),
            station=STATION,
            agent_id="inference",
            sha256="1" * 64,
            source_name="ghost.jpg",
            captured_at=utc_now(),
            received_at=utc_now(),
            completed_at=utc_now(),
            status="ok",
        )
        with Recorder(
            p.broker.port, username="inference", password=p.broker.password("inference")
        ) as inference_user:
            inference_user.publish(t.results(STATION), forged.model_dump_json())

        def letters() -> list[DeadLetter]:
            return [
                decode_json(DeadLetter, m.payload) for m in rec.on(t.dead_letters(USERS["capture"]))
            ]

        wait_until(letters, what="capture's dead letter")
        (letter,) = letters()
        assert letter.kind == ErrorKind.UNKNOWN_FRAME
        assert forged.frame_id in letter.reason and "never sent" in letter.reason
        # the capture agent goes on serving
        (p.captures / "real.jpg").write_bytes(jpeg_bytes(3))
        wait_until(
            lambda: any(r["source_name"] == "real.jpg" for r in ledger_rows(p.ledger_db)),
            what="a real frame after the forged result",
        )
        (real,) = [r for r in ledger_rows(p.ledger_db) if r["source_name"] == "real.jpg"]
        # a result for the real frame, with other bytes: the announcement says otherwise
        # (ledgered after the genuine one here, so the ledger keeps its row as it is; a
        # second frame, whose forgery comes before its genuine result, shows the rest)
        ghosted = forged.model_copy(update={"frame_id": new_frame_id(), "sha256": "2" * 64})
        with Recorder(
            p.broker.port, username="inference", password=p.broker.password("inference")
        ) as inference_user:
            inference_user.publish(
                t.results(STATION),
                forged.model_copy(update={"frame_id": real["frame_id"]}).model_dump_json(),
            )
            inference_user.publish(t.results(STATION), ghosted.model_dump_json())
        wait_until(
            lambda: any(r["frame_id"] == ghosted.frame_id for r in ledger_rows(p.ledger_db)),
            what="the second forgery stored",
        )
        rows = {r["frame_id"]: r for r in ledger_rows(p.ledger_db)}
        assert (rows[forged.frame_id]["suspect"], rows[real["frame_id"]]["suspect"]) == (1, 0)
        assert rows[forged.frame_id]["suspect_reason"] == (
            f"no station announced frame {forged.frame_id}"
        )
        assert rows[real["frame_id"]]["sha256"] == real["sha256"]  # the genuine one stays

        def ledger_status() -> AgentStatus:
            return decode_json(AgentStatus, rec.on(t.status(USERS["ledger"]))[-1].payload)

        wait_until(
            lambda: ledger_status().counters.get("results.suspect") == 2,
            what="two suspect results counted",
        )
        counters = ledger_status().counters
        assert counters.get("results.ledgered") == 1  # the inventory: the real frame only
    cli = [sys.executable, "-m", "framewire", "ledger"]
    shown = subprocess.run(
        [*cli, "show", forged.frame_id, "--db", str(p.ledger_db)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(shown.stdout)["suspect"] is True
    exported = subprocess.run(
        [*cli, "export", "--db", str(p.ledger_db), "-f", "csv"],
        capture_output=True,
        text=True,
        check=True,
    )
    header, *lines = exported.stdout.splitlines()
    assert "suspect" in header.split(",") and len(lines) == 3


def test_a_result_forged_for_a_real_frame_with_other_bytes_is_suspect(
    pipeline: Pipeline,
) -> None:
    """The forgery reaches the ledger before the genuine result (no inference agent is
    running yet, and the frame found no taker): it is kept as suspect and not acknowledged,
    so the station resends the frame and the genuine result takes the forgery's place."""
    p = pipeline
    t = TopicTree(p.broker.prefix)
    p.agents["capture"].env.update(FRAMEWIRE_WAIT_FOR_INFERENCE="false", FRAMEWIRE_ACK_TIMEOUT="1")
    with observer(p) as rec:
        p.start("ledger", "capture")
        wait_online(rec, p, USERS["ledger"], USERS["capture"])
        (p.captures / "real.jpg").write_bytes(jpeg_bytes(4))
        wait_until(lambda: rec.on(t.announcements(STATION)), what="the announcement")
        announced = json.loads(rec.on(t.announcements(STATION))[0].payload)
        forged = InferenceResult(
            frame_id=announced["frame_id"],
            station=STATION,
            agent_id="inference",
            sha256="3" * 64,
            source_name="real.jpg",
            captured_at=utc_now(),
            received_at=utc_now(),
            completed_at=utc_now(),
            status="ok",
        )
        with Recorder(
            p.broker.port, username="inference", password=p.broker.password("inference")
        ) as inference_user:
            inference_user.publish(t.results(STATION), forged.model_dump_json())
        wait_until(lambda: ledger_rows(p.ledger_db), what="the forgery stored")
        (row,) = ledger_rows(p.ledger_db)
        assert row["suspect"] == 1
        assert row["suspect_reason"] == (
            f"sha256 differs from what station {STATION} announced for frame {forged.frame_id}"
        )
        assert rec.on(t.acks(STATION)) == []
        p.start("inference")
        wait_until(
            lambda: [r["suspect"] for r in ledger_rows(p.ledger_db)] == [0],
            timeout=120,
            what="the genuine result in the forgery's place",
        )
        (row,) = ledger_rows(p.ledger_db)
        assert row["sha256"] == announced["sha256"]
        wait_until(lambda: rec.on(t.acks(STATION)), what="the genuine result acknowledged")


def test_the_ledgers_persistent_session_keeps_results_while_it_is_down(
    pipeline: Pipeline,
) -> None:
    """No resend can explain these rows (the capture agent would wait 10 minutes): the
    broker kept the results in the ledger's MQTT 5 session while it was stopped."""
    p = pipeline
    t = TopicTree(p.broker.prefix)
    p.agents["capture"].env["FRAMEWIRE_ACK_TIMEOUT"] = "600"
    with observer(p) as rec:
        p.start()
        wait_online(rec, p, *USERS.values())
        assert p.agents["ledger"].terminate() == 0
        for i in range(5):
            (p.captures / f"while-down-{i}.jpg").write_bytes(jpeg_bytes(i))
        wait_until(lambda: len(rec.on(t.results(STATION))) == 5, what="5 results")
        time.sleep(0.5)
        assert ledger_rows(p.ledger_db) == []
        p.agents["ledger"].start()
        wait_until(lambda: len(ledger_rows(p.ledger_db)) == 5, what="queued results ledgered")
        capture = decode_json(AgentStatus, rec.on(t.status(USERS["capture"]))[-1].payload)
        assert capture.counters.get("frames.resent", 0) == 0


def test_capture_holds_frames_while_no_inference_agent_is_online(pipeline: Pipeline) -> None:
    """A shared subscription with no member drops what is published to it; capture reads
    the retained availability topics and holds its frames until an inference agent is
    back, then sends each once (no resend: the timer would wait 10 minutes)."""
    p = pipeline
    t = TopicTree(p.broker.prefix)
    p.agents["capture"].env["FRAMEWIRE_ACK_TIMEOUT"] = "600"
    with observer(p) as rec:
        p.start()
        wait_online(rec, p, *USERS.values())
        assert p.agents["inference"].terminate() == 0
        for i in range(5):
            (p.captures / f"while-down-{i}.jpg").write_bytes(jpeg_bytes(i))

        def capture_status() -> AgentStatus:
            return decode_json(AgentStatus, rec.on(t.status(USERS["capture"]))[-1].payload)

        wait_until(
            lambda: (
                len(capture_rows(p.state_db)) == 5
                and capture_status().details.get("inference_online") == 0
            ),
            what="5 frames recorded, and held",
        )
        time.sleep(1.0)
        assert rec.on(t.frames(STATION)) == []
        p.agents["inference"].start()
        wait_until(lambda: len(ledger_rows(p.ledger_db)) == 5, what="held frames ledgered")
        assert len(rec.on(t.frames(STATION))) == 5
        assert capture_status().counters.get("frames.resent", 0) == 0
