"""Finding files in the capture folder once they are completely written.

Three sources feed one set of candidates: a scan at start (files that arrived while the
agent was down), filesystem events (watchfiles: inotify, FSEvents, or polling), and a
periodic rescan (a safety net for network filesystems and missed events). A candidate is
ready when its size and mtime have not changed for `settle` seconds.

A folder that appears is scanned at once: files written into it before the watch on it
was in place raise no event of their own. When watchfiles fails (it cannot report a name
that is not UTF-8, and loses the batch of events that held it), the watch is started again
and the folder rescanned, so nothing is missed and nothing stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import stat
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import watchfiles

from framewire.edge_agents.capture.files import kind_of, relpath_of
from framewire.edge_agents.capture.state import FileVersion
from framewire.edge_agents.runtime import Backoff

logger = logging.getLogger(__name__)

_TEMP_SUFFIXES = (".tmp", ".part", ".partial", ".crdownload", ".swp", "~")


def is_candidate_name(name: str) -> bool:
    """Hidden and temporary files are work in progress, never frames."""
    return not name.startswith(".") and not name.lower().endswith(_TEMP_SUFFIXES)


def version_of(root: Path, path: Path) -> FileVersion | None:
    """The file's current version (of the link itself for a symbolic link, which is never
    followed), or None if it is gone, a folder, or not under `root`."""
    try:
        st = path.lstat()
        rel = relpath_of(root, path)
    except (OSError, ValueError):
        return None
    kind = kind_of(st.st_mode)
    if kind == "directory":
        return None
    return FileVersion(
        relpath=rel,
        size=st.st_size,
        mtime_ns=st.st_mtime_ns,
        inode=st.st_ino,
        ctime_ns=st.st_ctime_ns,
        kind=kind,
    )


def candidates(top: Path) -> Iterator[Path]:
    """Every candidate under `top` that is not a folder (symbolic links included, so that
    they are quarantined with a reason rather than ignored), lazily, hidden folders skipped."""
    stack = [top]
    while stack:
        folder = stack.pop()
        try:
            entries = os.scandir(folder)
        except OSError as err:
            logger.warning("cannot list %r: %s", str(folder), err.strerror or err)
            continue
        with entries:
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                try:
                    is_dir = entry.is_dir(follow_symlinks=False)
                except OSError:
                    continue
                if is_dir:
                    stack.append(Path(entry.path))
                elif is_candidate_name(entry.name):
                    yield Path(entry.path)


def scan_folder(root: Path) -> Iterator[tuple[Path, FileVersion]]:
    """Every candidate file under `root`, lazily (memory does not grow with the folder)."""
    for path in candidates(root):
        version = version_of(root, path)
        if version is not None:
            yield path, version


async def scan_folder_async(
    root: Path, batch: int = 64
) -> AsyncIterator[list[tuple[Path, FileVersion]]]:
    """`scan_folder` off the event loop, in batches of at most `batch` files."""
    files = scan_folder(root)

    def take() -> list[tuple[Path, FileVersion]]:
        return [item for _, item in zip(range(batch), files, strict=False)]

    while chunk := await asyncio.to_thread(take):
        yield chunk


# files a rescan offers at once, at most (see `FolderWatcher._scan_into_pending`)
RESCAN_CHUNK = 1024


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
        self._rescan_now = asyncio.Event()
        self._taken = asyncio.Event()  # set whenever files leave `pending`
        self._rechecks: dict[Path, asyncio.TimerHandle] = {}
        self.watch_failures = 0

    @property
    def pending(self) -> int:
        return len(self._pending) + self._ready.qsize()

    def _offer(self, path: Path) -> None:
        if path in self._pending or not is_candidate_name(path.name):
            return
        try:
            folders = path.relative_to(self.root).parts[:-1]
        except ValueError:
            return
        if not any(part.startswith(".") for part in folders):
            self._pending[path] = (None, 0.0)
            self._wake.set()

    def recheck(self, path: Path, after: float) -> None:
        """Look at `path` again in `after` seconds, even if nothing reports a change."""
        loop = asyncio.get_running_loop()
        previous = self._rechecks.pop(path, None)
        if previous is not None:
            previous.cancel()

        def offer() -> None:
            self._rechecks.pop(path, None)
            self._offer(path)

        self._rechecks[path] = loop.call_later(after, offer)

    async def _scan_into_pending(self, top: Path | None = None) -> None:
        """Offer every candidate under `top` (the whole folder), a chunk at a time: the next
        chunk waits until what is pending is down to one chunk, so a rescan of a folder
        that has gathered years of originals holds at most about two chunks of them in
        memory, not all of them."""
        paths = candidates(top or self.root)

        def take() -> list[Path]:
            return list(itertools.islice(paths, RESCAN_CHUNK))

        while chunk := await asyncio.to_thread(take):
            for path in chunk:
                self._offer(path)
            while self.pending > RESCAN_CHUNK:  # the settler and the agent take them
                self._taken.clear()
                await self._taken.wait()

    @staticmethod
    def _is_new_folder(change: watchfiles.Change, raw: str) -> bool:
        if change != watchfiles.Change.added or Path(raw).name.startswith("."):
            return False
        try:
            return stat.S_ISDIR(os.lstat(raw).st_mode)
        except OSError:
            return False

    async def _watch_once(self) -> None:
        async for changes in watchfiles.awatch(
            self.root,
            force_polling=self.force_polling,
            debounce=50,
            step=20,
            recursive=True,
            ignore_permission_denied=True,
        ):
            for change, raw in changes:
                if change == watchfiles.Change.deleted:
                    continue
                if self._is_new_folder(change, raw):
                    # files written into it before its watch existed raise no event
                    await self._scan_into_pending(Path(raw))
                else:
                    self._offer(Path(raw))

    async def _events(self) -> None:
        backoff = Backoff(initial=0.5, cap=max(1.0, min(self.rescan_interval, 30.0)))
        while True:
            started = time.monotonic()
            try:
                await self._watch_once()
                failure: BaseException = RuntimeError("the watch ended")
            except asyncio.CancelledError:
                raise
            except Exception as err:  # any failure of the watch: rescan and watch again
                failure = err.exceptions[0] if isinstance(err, ExceptionGroup) else err
            self.watch_failures += 1
            log = logger.warning if self.watch_failures == 1 else logger.debug
            log(
                "file events failed (%s: %s); rescanning the folder and watching again "
                "(further failures are logged at debug level)",
                type(failure).__name__,
                failure,
            )
            if time.monotonic() - started > 60:
                backoff.reset()
            # the failed batch of events is lost: rescan once the new watch is in place
            asyncio.get_running_loop().call_later(0.5, self._rescan_now.set)
            await asyncio.sleep(backoff.next())

    async def _rescans(self) -> None:
        while True:
            self._rescan_now.clear()
            await self._scan_into_pending()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.rescan_interval):
                    await self._rescan_now.wait()

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
            self._taken.set()

    async def __aiter__(self) -> AsyncIterator[tuple[Path, FileVersion]]:
        self.root.mkdir(parents=True, exist_ok=True)
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._events(), name="watch-events")
            tg.create_task(self._rescans(), name="watch-rescan")
            tg.create_task(self._settler(), name="watch-settle")
            while True:
                item = await self._ready.get()
                self._taken.set()
                yield item

    async def batches(self, size: int = 64) -> AsyncIterator[list[tuple[Path, FileVersion]]]:
        """What `__aiter__` yields, as lists of at most `size`: every file ready now goes
        together, and a file that is alone goes alone, at once."""
        files = aiter(self)
        while True:
            batch = [await anext(files)]
            while len(batch) < size and not self._ready.empty():
                batch.append(await anext(files))
            yield batch
