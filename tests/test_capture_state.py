"""The capture state database on real SQLite files: the frame life cycle and the window."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from framewire.edge_agents.capture.guard import root_cause
from framewire.edge_agents.capture.state import CaptureState, FileVersion, read_summary
from framewire.schemas import new_frame_id


def version(name: str, size: int = 10, mtime: int = 1) -> FileVersion:
    return FileVersion(relpath=name, size=size, mtime_ns=mtime)


async def test_frame_moves_forward_only_and_is_summarised(tmp_path: Path) -> None:
    db = tmp_path / "state.sqlite3"
    async with CaptureState(db) as state:
        fid = new_frame_id()
        row = await state.record(fid, version("a.jpg"), sha256="a" * 64, now=1.0)
        assert row is not None and row.state == "seen" and row.seq == 1
        assert await state.knows(version("a.jpg"))
        assert not await state.knows(version("a.jpg", mtime=2))
        # same path, same content (a touch): not a new frame
        assert (
            await state.record(new_frame_id(), version("a.jpg", mtime=2), sha256="a" * 64, now=2.0)
            is None
        )
        await state.mark_published(fid, 1, next_attempt=100.0, now=3.0)
        assert await state.advance(fid, "ledgered", 4.0) == "published"
        assert await state.advance(fid, "inferred", 5.0) == "ledgered"  # late result: no step back
        assert (await state.get(fid)).state == "ledgered"  # type: ignore[union-attr]
        assert await state.advance(new_frame_id(), "ledgered", 6.0) is None
    summary = read_summary(db)
    assert summary.counts["ledgered"] == 1 and summary.oldest_pending is None


async def test_due_respects_the_in_flight_window_and_resend_times(tmp_path: Path) -> None:
    async with CaptureState(tmp_path / "s.sqlite3") as state:
        ids = []
        for i in range(5):
            fid = new_frame_id()
            ids.append(fid)
            await state.record(fid, version(f"{i}.jpg"), sha256=f"{i:064x}", now=float(i))
        due, in_flight = await state.due(now=10.0, window=2)
        assert [r.frame_id for r in due] == ids[:2] and in_flight == 2
        for fid in ids[:2]:
            await state.mark_published(fid, 1, next_attempt=20.0, now=10.0)
        due, in_flight = await state.due(now=11.0, window=2)
        assert due == [] and in_flight == 2  # window full, nothing overdue
        due, _ = await state.due(now=21.0, window=2)
        assert [r.frame_id for r in due] == ids[:2]  # overdue: resent
        await state.advance(ids[0], "ledgered", 22.0)
        due, _ = await state.due(now=22.0, window=2)
        assert [r.frame_id for r in due] == [ids[1], ids[2]]
        await state.quarantine(ids[4], "not_image", "because", 23.0)
        summary = await state.summary()
        assert summary.counts == {
            "seen": 2,
            "published": 1,
            "inferred": 0,
            "ledgered": 1,
            "quarantined": 1,
        }
        assert summary.oldest_pending is not None and summary.oldest_pending.frame_id == ids[1]


async def test_a_file_changed_under_the_same_size_and_mtime_is_not_known(tmp_path: Path) -> None:
    """`cp -p` of another image of the same size: the inode or ctime tells, and content that
    did not change (a chmod, a touch) is remembered, so it is not read again."""
    async with CaptureState(tmp_path / "s.sqlite3") as state:
        first = FileVersion(relpath="a.jpg", size=10, mtime_ns=1, inode=7, ctime_ns=100)
        await state.record(new_frame_id(), first, sha256="a" * 64, now=1.0)
        assert await state.knows(first)
        copied_over = FileVersion(relpath="a.jpg", size=10, mtime_ns=1, inode=7, ctime_ns=200)
        assert not await state.knows(copied_over)
        # same bytes after all (a chmod): not a frame, and this version is now known
        assert await state.record(new_frame_id(), copied_over, sha256="a" * 64, now=2.0) is None
        assert await state.knows(copied_over)
        replaced = FileVersion(relpath="a.jpg", size=10, mtime_ns=1, inode=8, ctime_ns=300)
        row = await state.record(new_frame_id(), replaced, sha256="b" * 64, now=3.0)
        assert row is not None and row.seq == 2  # new content: a new frame


async def test_rows_of_the_first_schema_are_migrated(tmp_path: Path) -> None:
    """A database written before names were escaped: its names are escaped in place (so a
    frame stuck behind a name the broker refused is sent), inode and ctime are added."""
    db = tmp_path / "old.sqlite3"
    conn = sqlite3.connect(db)
    conn.executescript(
        "CREATE TABLE frames (seq INTEGER PRIMARY KEY AUTOINCREMENT, frame_id TEXT NOT NULL"
        " UNIQUE, relpath TEXT NOT NULL, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,"
        " sha256 TEXT, content_type TEXT, captured_at TEXT NOT NULL, state TEXT NOT NULL,"
        " reason TEXT, error_kind TEXT, attempts INTEGER NOT NULL DEFAULT 0, next_attempt REAL,"
        " seen_at REAL NOT NULL, published_at REAL, inferred_at REAL, ledgered_at REAL,"
        " updated_at REAL NOT NULL);"
        "CREATE UNIQUE INDEX frames_content ON frames (relpath, sha256);"
    )
    for i, name in enumerate(["plain.jpg", "line\nbreak.jpg", "x%", "x%25"]):
        conn.execute(
            "INSERT INTO frames (frame_id, relpath, size, mtime_ns, sha256, captured_at, state,"
            " seen_at, updated_at) VALUES (?, ?, 1, 1, ?, '2024-01-01T00:00:00+00:00',"
            " 'seen', 0, 0)",
            (new_frame_id(), name, f"{min(i, 2):064x}"),  # x% and x%25: the same bytes
        )
    conn.commit()
    conn.close()
    async with CaptureState(db) as state:
        due, _ = await state.due(now=1.0, window=10)
        assert [r.relpath for r in due] == ["plain.jpg", "line%0Abreak.jpg", "x%25", "x%2525"]
        assert await state.knows(version("plain.jpg", size=1, mtime=1)) is True
    async with CaptureState(db) as state:  # a second open changes nothing
        due, _ = await state.due(now=1.0, window=10)
        assert [r.relpath for r in due][1] == "line%0Abreak.jpg"


async def test_quarantine_reasons_are_kept_readable(tmp_path: Path) -> None:
    """A reason may quote a decoder's message or a name: stored, it holds no control
    character that could rewrite a terminal line."""
    async with CaptureState(tmp_path / "s.sqlite3") as state:
        fid = new_frame_id()
        await state.record(
            fid,
            version("a.jpg"),
            sha256=None,
            state="quarantined",
            reason="Pillow said \x1b[31mred\n",
            error_kind="not_image",
            now=1.0,
        )
        row = await state.get(fid)
        assert row is not None and row.state == "quarantined" and row.error_kind == "not_image"
        assert row.reason == "Pillow said \\x1b[31mred\\n"
        other = new_frame_id()
        await state.record(other, version("b.jpg"), sha256="b" * 64, now=2.0)
        await state.quarantine(other, "undeliverable", "tab\there", 3.0)
        assert (await state.get(other)).reason == "tab\\there"  # type: ignore[union-attr]


async def test_a_full_database_fails_a_write_that_succeeds_once_there_is_room(
    tmp_path: Path,
) -> None:
    """What the capture agent waits out when its disk is full (max_page_count stands in for
    the disk): the failed write leaves nothing half done, and the same write succeeds later."""
    async with CaptureState(tmp_path / "s.sqlite3") as state:
        pages = await state._db.run(lambda c: c.execute("PRAGMA page_count").fetchone()[0])
        await state._db.run(lambda c: c.execute(f"PRAGMA max_page_count = {pages}").fetchone())
        failed = None
        for i in range(500):
            try:
                await state.record(new_frame_id(), version(f"{i}.jpg"), sha256=f"{i:064x}", now=1)
            except sqlite3.OperationalError as err:
                failed = i
                assert "full" in str(root_cause(err))
                break
        assert failed is not None
        await state.end_failed_transaction()
        await state._db.run(lambda c: c.execute("PRAGMA max_page_count = 1073741823").fetchone())
        fid = new_frame_id()
        row = await state.record(fid, version(f"{failed}.jpg"), sha256=f"{failed:064x}", now=2)
        assert row is not None and row.frame_id == fid
        assert (await state.summary()).counts["seen"] == failed + 1


async def test_a_row_recorded_before_inodes_adopts_the_version_it_saw(tmp_path: Path) -> None:
    async with CaptureState(tmp_path / "s.sqlite3") as state:
        await state.record(  # inode 0, ctime 0: as a migrated row
            new_frame_id(),
            version("old.jpg"),
            sha256=None,
            state="quarantined",
            reason="not an image",
            error_kind="not_image",
            now=1.0,
        )
        now_seen = FileVersion(relpath="old.jpg", size=10, mtime_ns=1, inode=5, ctime_ns=9)
        assert await state.knows(now_seen)  # not read again after an upgrade
        assert not await state.knows(
            FileVersion(relpath="old.jpg", size=10, mtime_ns=1, inode=5, ctime_ns=10)
        )  # but a later change is seen
