"""Hostile files in the capture folder, through a real Mosquitto and the real agents.

Every file that enters the capture folder ends in the ledger exactly once, or in quarantine
with a reason a person can read, and never holds back the files written after it: names
the broker would refuse or that are not UTF-8, paths too long to send, FIFOs, links and
devices, files written slowly, files replaced under the same size and mtime, and a state
database whose disk is full.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from pydantic import ValidationError

from framewire.edge_agents.capture.agent import serve
from framewire.edge_agents.capture.settings import CaptureSettings
from framewire.edge_agents.capture.state import CaptureState
from framewire.edge_agents.capture.watcher import version_of
from framewire.schemas import (
    AgentStatus,
    FrameMeta,
    TopicTree,
    decode_json,
    frame_properties,
    utc_now,
)
from framewire.schemas.codec import PropertyRefusedError
from framewire.schemas.names import escape_name, mqtt_string_problem, unescape_name
from tests.conftest import STATION, USERS, Pipeline, cli_env, jpeg_bytes, wait_until
from tests.recorder import Recorder
from tests.test_pipeline import capture_rows, ledger_rows, observer, wait_online

pytestmark = pytest.mark.integration


# --- helpers ---------------------------------------------------------------------------------
def ledgered(p: Pipeline) -> dict[bytes, list[sqlite3.Row]]:
    """Ledger rows by the original name's bytes."""
    out: dict[bytes, list[sqlite3.Row]] = {}
    for row in ledger_rows(p.ledger_db):
        out.setdefault(bytes(row["source_path"]), []).append(row)
    return out


def quarantined(p: Pipeline) -> dict[str, list[sqlite3.Row]]:
    """Quarantine rows of the capture state, by escaped relative path."""
    out: dict[str, list[sqlite3.Row]] = {}
    if not p.state_db.exists():
        return out
    for row in capture_rows(p.state_db):
        if row["state"] == "quarantined":
            out.setdefault(row["relpath"], []).append(row)
    return out


def write(path: Path, data: bytes) -> None:
    path.write_bytes(data)


def named(folder: Path, raw: bytes) -> Path:
    """`folder` / a name given as bytes (os.fsdecode: bytes that are not UTF-8 are kept)."""
    return folder / os.fsdecode(raw)


def request(p: Pipeline, agent: str, command: str) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-m", "framewire", "request", agent, command],
        env=cli_env(p.broker, "operator"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    answer: dict[str, object] = json.loads(out.stdout)
    return answer


def capture_status(rec: Recorder, p: Pipeline) -> AgentStatus:
    t = TopicTree(p.broker.prefix)
    return decode_json(AgentStatus, rec.on(t.status(USERS["capture"]))[-1].payload)


def assert_capture_never_failed(p: Pipeline) -> None:
    capture = p.agents["capture"]
    assert capture.proc is not None and capture.proc.poll() is None, capture.output()
    assert "Traceback" not in capture.output(), capture.output()


def jpeg_variant(tag: bytes) -> bytes:
    """A JPEG with `tag` in a comment segment: variants of one length decode alike."""
    base = jpeg_bytes(3)
    comment = b"\xff\xfe" + (len(tag) + 2).to_bytes(2, "big") + tag
    return base[:2] + comment + base[2:]


# --- 1. names the broker refuses -------------------------------------------------------------
HOSTILE_NAMES = [
    "line\nbreak.jpg",
    "esc\x1b[31mred.jpg",
    "non\uffffchar.jpg",
    "tab\there.jpg",
    "del\x7f.jpg",
    "c1\x85.jpg",
    "100%.jpg",
    "a%41.jpg",
    "café.jpg",
]


def test_names_the_broker_would_refuse_travel_escaped_and_are_ledgered_exactly(
    pipeline: Pipeline,
) -> None:
    """A newline, ESC or U+FFFF in a user property made Mosquitto drop the station, which
    reconnected and resent the same frame first, forever. Names now travel percent-encoded;
    the ledger keeps the original bytes."""
    p = pipeline
    t = TopicTree(p.broker.prefix)
    with observer(p) as rec:
        p.start()
        wait_online(rec, p, *USERS.values())
        for i, name in enumerate(HOSTILE_NAMES):
            write(p.captures / name, jpeg_bytes(i))
        write(p.captures / "after.jpg", jpeg_bytes(99))
        every = [*HOSTILE_NAMES, "after.jpg"]
        wait_until(lambda: len(ledger_rows(p.ledger_db)) >= len(every), what="every name")
        time.sleep(1.0)  # a doubled row would land now

        rows = ledgered(p)
        assert sorted(rows) == sorted(n.encode() for n in every)
        for raw, (row,) in rows.items():
            assert row["source_name"] == escape_name(raw)
            assert unescape_name(row["source_name"]) == raw
        assert rows[b"line\nbreak.jpg"][0]["source_name"] == "line%0Abreak.jpg"
        assert rows[b"100%.jpg"][0]["source_name"] == "100%25.jpg"
        assert rows["café.jpg".encode()][0]["source_name"] == "café.jpg"  # readable as it is
        assert rows[b"after.jpg"][0]["source_name"] == "after.jpg"

        # every property on the wire is one a broker accepts, and the station never lost
        # its connection over one
        for message in rec.on(t.frames(STATION)):
            for key, value in message.user_properties:
                assert mqtt_string_problem(key) is None and mqtt_string_problem(value) is None
        wait_until(lambda: capture_status(rec, p).counters.get("frames.ledgered") == len(every))
        assert capture_status(rec, p).counters.get("reconnects", 0) == 0
        assert_capture_never_failed(p)

    exported = subprocess.run(
        [sys.executable, "-m", "framewire", "ledger", "export", "--db", str(p.ledger_db)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert sorted(r["source_path"] for r in json.loads(exported.stdout)) == sorted(every)


def test_the_codec_never_emits_a_property_a_broker_refuses() -> None:
    """Pure logic: one check guards every user property; names round-trip byte for byte."""
    meta = dict(
        frame_id="01J0000000000000000000000A",
        station=STATION,
        seq=1,
        captured_at=utc_now(),
        sha256="0" * 64,
        content_type="image/jpeg",
        size=1,
    )
    with pytest.raises(ValidationError, match="not an escaped name"):
        FrameMeta(**meta, source_name="line\nbreak.jpg")  # type: ignore[arg-type]
    unchecked = FrameMeta.model_construct(**meta, source_name="non\uffffchar.jpg")
    with pytest.raises(PropertyRefusedError, match="U\\+FFFF"):
        frame_properties(unchecked)
    assert frame_properties(FrameMeta(**meta, source_name=escape_name("x\x1b.jpg")))  # type: ignore[arg-type]

    rng = random.Random(5)
    for _ in range(2000):
        raw = bytes(rng.choice([*range(1, 47), *range(48, 256)]) for _ in range(rng.randint(1, 40)))
        escaped = escape_name(raw)
        assert unescape_name(escaped) == raw
        assert mqtt_string_problem(escaped) is None


# --- 2. names that are not UTF-8 -------------------------------------------------------------
def test_names_that_are_not_utf8_are_ledgered_byte_exact_and_never_crash_capture(
    pipeline: Pipeline,
) -> None:
    """watchfiles raised on such a name and took the watcher down; the restart scan then
    failed to store it. Both the live watch and a restart's scan now take it."""
    p = pipeline
    root = p.captures
    with observer(p) as rec:
        p.start()
        wait_online(rec, p, *USERS.values())
        write(named(root, b"caf\xe9.jpg"), jpeg_bytes(1))
        write(named(root, b".hidden-\xff.jpg"), jpeg_bytes(2))  # work in progress: skipped
        write(named(root, b"photo-\xff\xfe.jpg.part"), jpeg_bytes(3))  # temporary: skipped
        named(root, b"folder-\xfe").mkdir()
        write(named(root, b"folder-\xfe/inside-\xe9.jpg"), jpeg_bytes(4))
        write(named(root, b"after.jpg"), jpeg_bytes(5))
        wait_until(lambda: len(ledger_rows(p.ledger_db)) >= 3, what="three frames")

        assert p.agents["capture"].terminate() == 0
        write(named(root, b"while-down-\xe9.jpg"), jpeg_bytes(6))  # found by the start-up scan
        p.agents["capture"].start()
        write(named(root, b"after-restart.jpg"), jpeg_bytes(7))
        wait_until(lambda: len(ledger_rows(p.ledger_db)) >= 5, what="five frames")
        time.sleep(1.0)

    rows = ledgered(p)
    assert sorted(rows) == sorted(
        [
            b"caf\xe9.jpg",
            b"folder-\xfe/inside-\xe9.jpg",
            b"after.jpg",
            b"while-down-\xe9.jpg",
            b"after-restart.jpg",
        ]
    )
    assert rows[b"caf\xe9.jpg"][0]["source_name"] == "caf%E9.jpg"
    assert rows[b"caf\xe9.jpg"][0]["sha256"] == hashlib.sha256(jpeg_bytes(1)).hexdigest()
    assert all(len(r) == 1 for r in rows.values())
    assert quarantined(p) == {}
    assert_capture_never_failed(p)


# --- 3. paths too long to send, and an error boundary per frame -------------------------------
def test_a_path_too_long_to_send_is_quarantined_and_the_rest_goes_on(pipeline: Pipeline) -> None:
    """FrameMeta refused the path inside `send`, which killed the publish loop; after a
    restart capture was connected but sent nothing."""
    p = pipeline
    deep = p.captures
    for i in range(6):
        deep = deep / f"{'d' * 90}{i}"
    with observer(p) as rec:
        p.start()
        wait_online(rec, p, *USERS.values())
        deep.mkdir(parents=True)
        write(deep / "card.jpg", jpeg_bytes(1))
        time.sleep(0.5)
        write(p.captures / "after.jpg", jpeg_bytes(2))
        wait_until(lambda: quarantined(p), what="the long path quarantined")
        wait_until(lambda: b"after.jpg" in ledgered(p), what="the frame after it")

    ((row,),) = quarantined(p).values()
    assert row["relpath"].endswith("/card.jpg") and len(row["relpath"]) > 512
    assert row["error_kind"] == "name_too_long"
    assert "over the 512" in row["reason"] and "shorter path" in row["reason"]
    assert sorted(ledgered(p)) == [b"after.jpg"]
    assert_capture_never_failed(p)


def test_a_frame_that_fails_while_it_is_sent_is_quarantined_with_the_reason(
    pipeline: Pipeline,
) -> None:
    """Whatever goes wrong with one frame in the send path (here: a state row that FrameMeta
    refuses, as another version might have written) quarantines that frame, and the frames
    behind it are sent."""
    p = pipeline
    data = jpeg_bytes(1)
    write(p.captures / "odd.jpg", data)

    async def seed() -> None:
        version = version_of(p.captures.resolve(), p.captures.resolve() / "odd.jpg")
        assert version is not None
        async with CaptureState(p.state_db) as state:
            await state.record(
                "01J0000000000000000000000A",
                version,
                sha256=hashlib.sha256(data).hexdigest(),
                content_type="image/tiff",
                now=time.time(),
            )

    asyncio.run(seed())
    with observer(p) as rec:
        p.start()
        wait_online(rec, p, *USERS.values())
        write(p.captures / "after.jpg", jpeg_bytes(2))
        wait_until(lambda: b"after.jpg" in ledgered(p), what="the frame after it")
        wait_until(lambda: "odd.jpg" in quarantined(p), what="the odd frame quarantined")

    ((row,),) = quarantined(p).values()
    assert row["frame_id"] == "01J0000000000000000000000A"
    assert row["error_kind"] == "processing_error"
    assert row["reason"].startswith("it could not be sent: ValidationError")
    assert "content_type" in row["reason"] and "\n" not in row["reason"]
    assert sorted(ledgered(p)) == [b"after.jpg"]
    assert p.agents["capture"].proc is not None and p.agents["capture"].proc.poll() is None


# --- 4. FIFOs, links, devices: only regular files inside the folder are read ------------------
def test_fifos_links_and_devices_are_quarantined_never_read(pipeline: Pipeline) -> None:
    """A file swapped for a FIFO after it was recorded hung the send loop for good; a link
    was followed out of the folder and read whole, however large."""
    p = pipeline
    outside = p.root / "outside.jpg"
    write(outside, jpeg_bytes(1))
    other = p.root / "other.jpg"
    write(other, jpeg_bytes(2))
    with observer(p) as rec:
        p.start()
        wait_online(rec, p, *USERS.values())
        assert request(p, USERS["capture"], "pause")["ok"]
        write(p.captures / "swapped.jpg", jpeg_bytes(3))
        wait_until(
            lambda: [r["state"] for r in capture_rows(p.state_db)] == ["seen"], what="recorded"
        )
        (p.captures / "swapped.jpg").unlink()
        os.mkfifo(p.captures / "swapped.jpg")
        (p.captures / "link.jpg").symlink_to(outside)
        (p.captures / "endless.jpg").symlink_to("/dev/zero")
        os.mkfifo(p.captures / "pipe.jpg")
        os.link(other, p.captures / "hard-link.jpg")
        assert request(p, USERS["capture"], "resume")["ok"]
        write(p.captures / "after.jpg", jpeg_bytes(4))
        wait_until(lambda: len(quarantined(p)) >= 4, what="quarantine rows")
        wait_until(lambda: len(ledger_rows(p.ledger_db)) >= 2, what="the regular files")
        time.sleep(1.0)

    q = quarantined(p)
    assert sorted(q) == ["endless.jpg", "link.jpg", "pipe.jpg", "swapped.jpg"]
    for name in ("link.jpg", "endless.jpg"):
        ((row,),) = [q[name]]
        assert row["error_kind"] == "not_a_file"
        assert "symbolic link" in row["reason"] and "never followed" in row["reason"]
    assert q["pipe.jpg"][0]["error_kind"] == "not_a_file" and "FIFO" in q["pipe.jpg"][0]["reason"]
    # the frame recorded before the swap, and the FIFO now under its name
    kinds = sorted((r["error_kind"], r["reason"]) for r in q["swapped.jpg"])
    assert [k for k, _ in kinds] == ["not_a_file", "source_changed"]
    assert "FIFO" in kinds[0][1] and "FIFO" in kinds[1][1]
    # a hard link is a regular file: read (see edge_agents/capture/files.py)
    assert sorted(ledgered(p)) == [b"after.jpg", b"hard-link.jpg"]
    assert_capture_never_failed(p)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_an_unreadable_file_is_quarantined_once_and_taken_when_readable(
    pipeline: Pipeline,
) -> None:
    p = pipeline
    p.agents["capture"].env["FRAMEWIRE_RESCAN_INTERVAL"] = "1"
    with observer(p) as rec:
        p.start()
        wait_online(rec, p, *USERS.values())
        locked = p.captures / "locked.jpg"
        write(locked, jpeg_bytes(1))
        locked.chmod(0)
        wait_until(lambda: "locked.jpg" in quarantined(p), what="quarantined")
        time.sleep(3)  # rescans look at it again: no second row, no second log line
        ((row,),) = [quarantined(p)["locked.jpg"]]
        assert row["error_kind"] == "unreadable" and "permission denied" in row["reason"]
        assert p.agents["capture"].output().count("locked.jpg") <= 2
        locked.chmod(0o644)  # a new ctime: a new version
        wait_until(lambda: b"locked.jpg" in ledgered(p), what="ledgered once readable")


# --- 5. a file in a folder made just before it --------------------------------------------------
def test_files_written_into_new_folders_are_all_ledgered(pipeline: Pipeline) -> None:
    """The first file written into a new folder could be missed for good: the folder's
    creation was reported, the file inside arrived before the watch on it. (The periodic
    rescan is 60 s away, beyond every wait here.)"""
    p = pipeline
    with observer(p) as rec:
        p.start()
        wait_online(rec, p, *USERS.values())
        names = []
        for i in range(12):
            folder = p.captures / f"box-{i}" / "sleeve"
            folder.mkdir(parents=True)
            for name in (f"box-{i}/card.jpg", f"box-{i}/sleeve/card.jpg"):
                write(p.captures / name, jpeg_bytes(len(names)))
                names.append(name)
        wait_until(lambda: len(ledger_rows(p.ledger_db)) >= len(names), what="every file")
        time.sleep(1.0)
    assert sorted(ledgered(p)) == sorted(n.encode() for n in names)
    assert quarantined(p) == {}


# --- 6. files written slowly ---------------------------------------------------------------------
def test_files_written_with_long_pauses_are_waited_for_not_quarantined(
    pipeline: Pipeline,
) -> None:
    """A file written in pieces with pauses longer than settle_seconds was quarantined as
    truncated at every pause. Now it is looked at again until it has been unchanged for
    truncated_grace_seconds; only a file that stays truncated is quarantined, once."""
    p = pipeline
    p.agents["capture"].env["FRAMEWIRE_TRUNCATED_GRACE_SECONDS"] = "4"
    slow = {f"slow-{i}.jpg": jpeg_bytes(i, size=(640, 480)) for i in range(6)}

    def write_slowly(name: str, data: bytes) -> None:
        step = len(data) // 4 + 1
        with (p.captures / name).open("wb") as f:
            for start in range(0, len(data), step):
                f.write(data[start : start + step])
                f.flush()
                time.sleep(0.7)  # settle_seconds is 0.2

    def created_empty_then_written(name: str, data: bytes) -> None:
        (p.captures / name).touch()
        time.sleep(0.7)
        (p.captures / name).write_bytes(data)

    with observer(p) as rec:
        p.start()
        wait_online(rec, p, *USERS.values())
        writers = [threading.Thread(target=write_slowly, args=item) for item in slow.items()] + [
            threading.Thread(target=created_empty_then_written, args=("late.jpg", jpeg_bytes(9)))
        ]
        for w in writers:
            w.start()
        write(p.captures / "cut.jpg", jpeg_bytes(20)[:-300])  # stays truncated
        for w in writers:
            w.join()
        wait_until(lambda: len(ledger_rows(p.ledger_db)) >= len(slow) + 1, what="slow files")
        wait_until(lambda: "cut.jpg" in quarantined(p), what="the truncated file")
        time.sleep(1.0)

    rows = ledgered(p)
    assert sorted(rows) == sorted([*(n.encode() for n in slow), b"late.jpg"])
    for name, data in slow.items():
        ((row,),) = [rows[name.encode()]]
        assert row["sha256"] == hashlib.sha256(data).hexdigest()  # the complete file
    q = quarantined(p)
    assert list(q) == ["cut.jpg"]
    ((row,),) = [q["cut.jpg"]]
    assert row["error_kind"] == "truncated" and "truncated" in row["reason"]
    assert_capture_never_failed(p)


# --- 7. a different image under the same name, size and mtime -------------------------------------
def test_new_content_under_the_same_size_and_mtime_is_a_new_frame(pipeline: Pipeline) -> None:
    """`cp -p` of another image of the same size over a ledgered one was never taken: no
    log, no dead letter, no quarantine row. The ctime (which nothing can set back) tells."""
    p = pipeline
    first, second = jpeg_variant(b"first print"), jpeg_variant(b"other print")
    assert len(first) == len(second) and first != second
    with observer(p) as rec:
        p.start()
        wait_online(rec, p, *USERS.values())
        path = p.captures / "card.jpg"
        write(path, first)
        write(p.captures / "unchanged.jpg", jpeg_bytes(8))
        wait_until(lambda: len(ledger_rows(p.ledger_db)) >= 2, what="the first versions")
        before = path.stat()
        with path.open("r+b") as f:  # in place, as cp does
            f.write(second)
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
        after = path.stat()
        assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
        (p.captures / "unchanged.jpg").chmod(0o600)  # a new ctime, the same content
        write(p.captures / "after.jpg", jpeg_bytes(9))
        wait_until(lambda: len(ledger_rows(p.ledger_db)) >= 4, what="the new content")
        time.sleep(1.0)

    rows = ledgered(p)
    assert sorted(rows) == [b"after.jpg", b"card.jpg", b"unchanged.jpg"]
    assert sorted(r["sha256"] for r in rows[b"card.jpg"]) == sorted(
        hashlib.sha256(d).hexdigest() for d in (first, second)
    )
    assert len(rows[b"unchanged.jpg"]) == 1
    assert quarantined(p) == {}


# --- 8. the state database's disk is full ---------------------------------------------------------
async def until(predicate: Callable[[], object], timeout: float = 60.0, what: str = "") -> None:
    """`wait_until` for a test whose agent runs on this event loop."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")


async def test_a_full_state_disk_degrades_capture_which_recovers_without_loss(
    pipeline: Pipeline,
) -> None:
    """A failed state write went out of the task group and capture crash-looped. Now capture
    reports itself degraded, takes no new file, and goes on without a restart once the
    database writes again. The capture agent runs in this process, so that the test can
    fill its database: SQLite's max_page_count on its connection stands in for the disk."""
    p = pipeline
    t = TopicTree(p.broker.prefix)
    settings = CaptureSettings(
        broker_url=p.broker.url,
        mqtt_username=USERS["capture"],
        mqtt_password_file=p.broker.password_file(USERS["capture"]),
        agent_id=USERS["capture"],
        topic_prefix=p.broker.prefix,
        data_dir=p.root / "capture",
        status_interval=1,
        station=STATION,
        watch_dir=p.captures,
        settle_seconds=0.2,
        ack_timeout=3,
        metrics_port=0,
        ha_discovery=False,
    )

    def statuses() -> list[AgentStatus]:
        return [decode_json(AgentStatus, m.payload) for m in rec.on(t.status(USERS["capture"]))]

    with observer(p) as rec:
        p.start("ledger", "inference")
        async with CaptureState(settings.state_path) as state:
            stop = asyncio.Event()
            agent = asyncio.create_task(serve(settings, state, stop=stop))
            await until(lambda: statuses(), what="capture status")
            write(p.captures / "before.jpg", jpeg_bytes(0))
            await until(lambda: len(ledger_rows(p.ledger_db)) == 1, what="the first frame")

            pages = await state._db.run(lambda c: c.execute("PRAGMA page_count").fetchone()[0])
            await state._db.run(lambda c: c.execute(f"PRAGMA max_page_count = {pages}"))
            names = [f"during-{i}.jpg" for i in range(60)]
            for i, name in enumerate(names):
                write(p.captures / name, jpeg_bytes(i + 1, size=(64, 48)))
            await until(lambda: any(s.state == "degraded" for s in statuses()), what="degraded")
            reason = next(s for s in statuses() if s.state == "degraded").details
            assert "database or disk is full" in str(reason["degraded_reason"])
            # new files wait: the state takes no row while it cannot write
            rows_while_full = len(capture_rows(p.state_db))
            await asyncio.sleep(1.5)
            assert len(capture_rows(p.state_db)) == rows_while_full < 1 + len(names)
            assert not agent.done()

            await state._db.run(
                lambda c: c.execute("PRAGMA max_page_count = 1073741823").fetchone()
            )
            await until(
                lambda: len(ledger_rows(p.ledger_db)) >= 1 + len(names),
                timeout=120,
                what="every frame once the disk has room",
            )
            await until(lambda: statuses()[-1].state == "running", what="recovered")
            assert statuses()[-1].details.get("degraded_reason") is None
            await asyncio.sleep(1.0)
            stop.set()
            await agent

    rows = ledgered(p)
    assert sorted(rows) == sorted(n.encode() for n in ["before.jpg", *names])
    assert all(len(r) == 1 for r in rows.values())
    assert quarantined(p) == {}


async def test_a_ledger_written_before_names_were_escaped_keeps_its_names(tmp_path: Path) -> None:
    """Real SQLite, no broker: a version 1 ledger gains `source_path`, filled from the raw
    names its rows hold, and a new row stores the bytes its escaped name decodes to."""
    from framewire.edge_agents.ledger.store import LedgerReader, LedgerStore
    from framewire.schemas import InferenceResult

    db = tmp_path / "ledger.sqlite3"
    async with LedgerStore(db):
        pass
    conn = sqlite3.connect(db)
    conn.execute("ALTER TABLE results DROP COLUMN source_path")
    conn.execute("PRAGMA user_version = 1")
    conn.execute(
        "INSERT INTO results (frame_id, station, source_name, sha256, status, agent_id,"
        " captured_at, completed_at, ledgered_at, result) VALUES ('01J0000000000000000000000A',"
        " 's', 'old 100%.jpg', ?, 'ok', 'i', '', '', '', '{}')",
        ("0" * 64,),
    )
    conn.commit()
    conn.close()
    now = utc_now()
    result = InferenceResult(
        frame_id="01J0000000000000000000000B",
        station=STATION,
        agent_id="inference",
        sha256="1" * 64,
        source_name=escape_name(b"caf\xe9\n.jpg"),
        captured_at=now,
        received_at=now,
        completed_at=now,
        status="ok",
    )
    async with LedgerStore(db) as store:
        await store.record(result)
    conn = sqlite3.connect(db)
    paths = dict(conn.execute("SELECT source_name, source_path FROM results").fetchall())
    conn.close()
    assert paths == {"old 100%.jpg": b"old 100%.jpg", "caf%E9%0A.jpg": b"caf\xe9\n.jpg"}
    with LedgerReader(db) as reader:
        shown = reader.get(result.frame_id)
    assert shown is not None and shown["source_path"] is None  # not UTF-8: source_name says
    assert shown["source_name"] == "caf%E9%0A.jpg"
