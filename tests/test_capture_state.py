"""The capture state database on real SQLite files: the frame life cycle and the window."""

from __future__ import annotations

from pathlib import Path

from edge_agents.capture.state import CaptureState, FileVersion, read_summary
from schemas import new_frame_id


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
