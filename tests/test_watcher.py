"""The capture folder watcher on real files: what counts as completely written."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Awaitable
from pathlib import Path

from edge_agents.capture.watcher import FolderWatcher, is_candidate_name


async def ready_files(
    watcher: FolderWatcher, wait: float, meanwhile: Awaitable[None] | None = None
) -> list[tuple[str, int]]:
    """(name, size) of every file the watcher yields while `meanwhile` runs, then `wait` s."""
    found: list[tuple[str, int]] = []

    async def collect() -> None:
        async for path, version in watcher:
            found.append((path.name, version.size))

    task = asyncio.create_task(collect())
    if meanwhile is not None:
        await meanwhile
    await asyncio.sleep(wait)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return found


async def test_old_files_are_taken_and_fresh_ones_wait_to_settle(tmp_path: Path) -> None:
    old = tmp_path / "archived.jpg"
    old.write_bytes(b"x" * 10)
    an_hour_ago = time.time() - 3600
    os.utime(old, (an_hour_ago, an_hour_ago))
    (tmp_path / "just-written.jpg").write_bytes(b"y" * 10)
    (tmp_path / ".hidden.jpg").write_bytes(b"z")
    # settle of an hour: only a file untouched for longer than that may be taken
    watcher = FolderWatcher(tmp_path, settle=3600, rescan_interval=3600)
    assert await ready_files(watcher, 1.0) == [("archived.jpg", 10)]


async def test_a_file_is_taken_once_it_stops_changing(tmp_path: Path) -> None:
    watcher = FolderWatcher(tmp_path, settle=0.3, rescan_interval=3600)
    path = tmp_path / "growing.jpg"

    async def write_slowly() -> None:
        with path.open("wb") as f:
            for _ in range(5):
                f.write(b"a" * 1000)
                f.flush()
                await asyncio.sleep(0.1)

    found = await ready_files(watcher, 1.5, meanwhile=write_slowly())
    assert found == [("growing.jpg", 5000)]  # once, and complete


def test_temporary_and_hidden_names_are_never_frames() -> None:
    assert is_candidate_name("card.jpg") and is_candidate_name("card")
    for name in (".card.jpg", "card.jpg.part", "card.tmp", "card.jpg~", "x.crdownload"):
        assert not is_candidate_name(name)
