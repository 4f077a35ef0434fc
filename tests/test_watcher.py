"""The capture folder watcher on real files: what counts as completely written."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Awaitable
from pathlib import Path

from framewire.edge_agents.capture.watcher import FolderWatcher, is_candidate_name


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


async def test_files_in_a_folder_made_just_before_them_are_found(tmp_path: Path) -> None:
    """A file written into a new folder before the watch on that folder exists raises no
    event of its own; the folder's creation does, and the folder is scanned then (the rescan
    is an hour away, so it cannot be what finds them)."""
    watcher = FolderWatcher(tmp_path, settle=0.2, rescan_interval=3600)

    async def make_folders() -> None:
        await asyncio.sleep(0.5)  # the watch is in place
        for i in range(20):
            (tmp_path / f"card-{i}" / "deeper").mkdir(parents=True)
            (tmp_path / f"card-{i}" / "first.jpg").write_bytes(b"x" * i)
            (tmp_path / f"card-{i}" / "deeper" / "second.jpg").write_bytes(b"y" * i)

    found = await ready_files(watcher, 2.0, meanwhile=make_folders())
    assert sorted(found) == sorted(
        [("first.jpg", i) for i in range(20)] + [("second.jpg", i) for i in range(20)]
    )


async def test_names_that_are_not_utf8_neither_stop_the_watch_nor_hide_other_files(
    tmp_path: Path,
) -> None:
    """watchfiles cannot report such a name (and loses the batch of events that held it):
    the watcher watches again and rescans, and the name comes out escaped."""
    watcher = FolderWatcher(tmp_path, settle=0.2, rescan_interval=3600)
    versions: list[str] = []

    async def collect() -> None:
        async for _, version in watcher:
            versions.append(version.relpath)

    async def write() -> None:
        await asyncio.sleep(0.5)
        for name in (b"caf\xe9.jpg", b".hidden-\xff.tmp", b"ok-1.jpg"):
            (tmp_path / os.fsdecode(name)).write_bytes(b"data")
        await asyncio.sleep(1.0)
        with (tmp_path / os.fsdecode(b"caf\xe9.jpg")).open("ab") as f:  # an event for it again
            f.write(b"more")
        (tmp_path / "ok-2.jpg").write_bytes(b"data")

    task = asyncio.create_task(collect())
    await write()
    await asyncio.sleep(2.5)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert {"caf%E9.jpg", "ok-1.jpg", "ok-2.jpg"} <= set(versions)
    assert not [v for v in versions if "hidden" in v]
    assert watcher.watch_failures >= 1


async def test_links_and_fifos_are_reported_as_what_they_are(tmp_path: Path) -> None:
    """They are never read, but they are reported, so the agent quarantines them with a
    reason rather than leave them unexplained."""
    outside = tmp_path.parent / f"{tmp_path.name}-outside.jpg"
    outside.write_bytes(b"secret")
    folder = tmp_path / "captures"
    folder.mkdir()
    (folder / "link.jpg").symlink_to(outside)
    (folder / "linked-folder").symlink_to(tmp_path)
    os.mkfifo(folder / "pipe.jpg")
    an_hour_ago = time.time() - 3600
    for name in ("link.jpg", "linked-folder", "pipe.jpg"):
        os.utime(folder / name, (an_hour_ago, an_hour_ago), follow_symlinks=False)
    kinds: dict[str, str] = {}

    async def collect() -> None:
        async for _, version in FolderWatcher(folder, settle=0.2, rescan_interval=3600):
            kinds[version.relpath] = version.kind

    task = asyncio.create_task(collect())
    await asyncio.sleep(1.0)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert kinds == {"link.jpg": "symlink", "linked-folder": "symlink", "pipe.jpg": "fifo"}


async def test_a_file_can_be_looked_at_again_later(tmp_path: Path) -> None:
    (tmp_path / "a.jpg").write_bytes(b"x")
    watcher = FolderWatcher(tmp_path, settle=0.2, rescan_interval=3600)
    seen: list[str] = []

    async def collect() -> None:
        async for path, version in watcher:
            seen.append(version.relpath)
            if len(seen) == 1:
                watcher.recheck(path, 0.3)

    task = asyncio.create_task(collect())
    await asyncio.sleep(1.5)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert seen == ["a.jpg", "a.jpg"]
