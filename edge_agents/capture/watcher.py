"""Finding files in the capture folder once they are completely written.

Three sources feed one set of candidates: a scan at start (files that arrived while the
agent was down), filesystem events (watchfiles: inotify, FSEvents, or polling), and a
periodic rescan (a safety net for network filesystems and missed events). A candidate is
ready when its size and mtime have not changed for `settle` seconds.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import watchfiles

from edge_agents.capture.state import FileVersion

logger = logging.getLogger(__name__)

_TEMP_SUFFIXES = (".tmp", ".part", ".partial", ".crdownload", ".swp", "~")


def is_candidate_name(name: str) -> bool:
    """Hidden and temporary files are work in progress, never frames."""
    return not name.startswith(".") and not name.lower().endswith(_TEMP_SUFFIXES)


def version_of(root: Path, path: Path) -> FileVersion | None:
    """The file's current version, or None if it is gone or not a regular file."""
    try:
        st = path.lstat()
    except OSError:
        return None
    if not path.is_file() or path.is_symlink():
        return None
    rel = path.relative_to(root).as_posix()
    return FileVersion(relpath=rel, size=st.st_size, mtime_ns=st.st_mtime_ns)


def scan_folder(root: Path) -> Iterator[tuple[Path, FileVersion]]:
    """Every candidate file under `root`, lazily (memory does not grow with the folder)."""
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            entries = os.scandir(folder)
        except OSError as err:
            logger.warning("cannot list %s: %s", folder, err)
            continue
        with entries:
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                if entry.is_dir(follow_symlinks=False):
                    stack.append(Path(entry.path))
                elif is_candidate_name(entry.name):
                    version = version_of(root, Path(entry.path))
                    if version is not None:
                        yield Path(entry.path), version


async def scan_folder_async(
    root: Path, batch: int = 256
) -> AsyncIterator[tuple[Path, FileVersion]]:
    """`scan_folder` off the event loop, a batch at a time."""
    files = scan_folder(root)

    def take() -> list[tuple[Path, FileVersion]]:
        return [item for _, item in zip(range(batch), files, strict=False)]

    while chunk := await asyncio.to_thread(take):
        for item in chunk:
            yield item


class FolderWatcher:
    """Yields each file of `root` once it has settled; may yield a file again if it changes."""

    def __init__(
        self,
        root: Path,
        *,
        settle: float = 0.5,
        rescan_interval: float = 60.0,
        force_polling: bool = False,
    ) -> None:
        self.root = root
        self.settle = settle
        self.rescan_interval = rescan_interval
        self.force_polling = force_polling
        # path -> (last version seen, loop time it was first seen at that version)
        self._pending: dict[Path, tuple[FileVersion | None, float]] = {}
        self._ready: asyncio.Queue[tuple[Path, FileVersion]] = asyncio.Queue()
        self._wake = asyncio.Event()

    @property
    def pending(self) -> int:
        return len(self._pending) + self._ready.qsize()

    def _offer(self, path: Path) -> None:
        if is_candidate_name(path.name) and path not in self._pending:
            self._pending[path] = (None, 0.0)
            self._wake.set()

    def _scan(self) -> None:
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            for name in filenames:
                self._offer(Path(dirpath) / name)

    async def _events(self) -> None:
        async for changes in watchfiles.awatch(
            self.root,
            force_polling=self.force_polling,
            debounce=50,
            step=20,
            recursive=True,
            ignore_permission_denied=True,
        ):
            for change, raw in changes:
                if change != watchfiles.Change.deleted:
                    self._offer(Path(raw))

    async def _rescans(self) -> None:
        while True:
            await asyncio.to_thread(self._scan)
            await asyncio.sleep(self.rescan_interval)

    def _versions(self, paths: list[Path]) -> list[FileVersion | None]:
        return [version_of(self.root, p) for p in paths]

    async def _settler(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._pending:
                self._wake.clear()
                await self._wake.wait()
            await asyncio.sleep(min(self.settle / 4, 0.25))
            now = loop.time()
            wall = time.time()
            paths = list(self._pending)
            versions = await asyncio.to_thread(self._versions, paths)
            for path, version in zip(paths, versions, strict=True):
                before, since = self._pending[path]
                if version is None:
                    del self._pending[path]
                elif before is None and wall - version.mtime_ns / 1e9 >= self.settle:
                    # untouched for longer than `settle` already (a scan found it): ready now,
                    # so an archive folder is not re-stat'ed over and over by every rescan
                    del self._pending[path]
                    self._ready.put_nowait((path, version))
                elif version != before:
                    self._pending[path] = (version, now)
                elif now - since >= self.settle:
                    del self._pending[path]
                    self._ready.put_nowait((path, version))

    async def __aiter__(self) -> AsyncIterator[tuple[Path, FileVersion]]:
        self.root.mkdir(parents=True, exist_ok=True)
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._events(), name="watch-events")
            tg.create_task(self._rescans(), name="watch-rescan")
            tg.create_task(self._settler(), name="watch-settle")
            while True:
                yield await self._ready.get()
