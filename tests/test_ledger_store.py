"""The ledger store on a real SQLite file: re-captures name the earliest capture, whatever
order their results arrive in (several inference boxes answer out of order)."""

from __future__ import annotations

import itertools
from datetime import timedelta
from pathlib import Path

import pytest

from edge_agents.ledger.store import LedgerReader, LedgerStore
from schemas import InferenceResult, new_frame_id, utc_now

T0 = utc_now()


def result(seconds: int, sha: str, phash: str | None = None) -> InferenceResult:
    at = T0 + timedelta(seconds=seconds)
    return InferenceResult(
        frame_id=new_frame_id(),
        station="s",
        agent_id="inference",
        sha256=sha * 64,
        source_name=f"{seconds}.jpg",
        captured_at=at,
        received_at=at,
        completed_at=at,
        status="ok",
        phash=phash,
    )


def duplicates(db: Path) -> dict[str, str | None]:
    with LedgerReader(db) as reader:
        return {row["frame_id"]: row["duplicate_of"] for row in reader.rows()}


@pytest.mark.parametrize("order", list(itertools.permutations(range(3))))
async def test_duplicate_of_names_the_earliest_capture_in_any_arrival_order(
    tmp_path: Path, order: tuple[int, ...]
) -> None:
    frames = [result(0, "a"), result(5, "a"), result(9, "a")]
    async with LedgerStore(tmp_path / "ledger.sqlite3") as store:
        for i in order:
            await store.record(frames[i])
        assert all([await store.result(f.frame_id) for f in frames])
    rows = duplicates(tmp_path / "ledger.sqlite3")
    first, second, third = (f.frame_id for f in frames)
    assert rows == {first: None, second: first, third: first}


async def test_a_look_alike_ledgered_first_is_pointed_at_the_earlier_capture(
    tmp_path: Path,
) -> None:
    early, late = result(0, "b", phash="ffff0000ffff0000"), result(3, "c", "ffff0000ffff0001")
    async with LedgerStore(tmp_path / "ledger.sqlite3") as store:
        await store.record(late)
        await store.record(early)
    rows = duplicates(tmp_path / "ledger.sqlite3")
    assert rows == {early.frame_id: None, late.frame_id: early.frame_id}
