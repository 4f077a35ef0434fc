"""The capture box's record of every frame's life, in SQLite (WAL).

A frame moves  seen -> published -> inferred -> ledgered,  or ends `quarantined` with a
reason. A row is written before the frame is first published, so a crash at any point
leaves a frame that is resent, never one that is forgotten.

`relpath` is the file's path relative to the capture folder in its escaped form
(schemas.names: `%XX` for `%`, bytes that are not UTF-8 and control characters), which is
valid text whatever the name's bytes, and turns back into them exactly.
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from framewire.edge_agents.capture.files import FileKind, path_of
from framewire.edge_agents.runtime import SqliteThread, transaction
from framewire.schemas.names import escape_name, printable

FrameState = Literal["seen", "published", "inferred", "ledgered", "quarantined"]
STATES: tuple[FrameState, ...] = ("seen", "published", "inferred", "ledgered", "quarantined")
PENDING: tuple[FrameState, ...] = ("seen", "published", "inferred")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS frames (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    frame_id      TEXT NOT NULL UNIQUE,
    relpath       TEXT NOT NULL,
    size          INTEGER NOT NULL,
    mtime_ns      INTEGER NOT NULL,
    inode         INTEGER NOT NULL DEFAULT 0,
    ctime_ns      INTEGER NOT NULL DEFAULT 0,
    sha256        TEXT,
    content_type  TEXT,
    captured_at   TEXT NOT NULL,
    state         TEXT NOT NULL CHECK (state IN
                    ('seen', 'published', 'inferred', 'ledgered', 'quarantined')),
    reason        TEXT,
    error_kind    TEXT,
    attempts      INTEGER NOT NULL DEFAULT 0,
    next_attempt  REAL,
    seen_at       REAL NOT NULL,
    published_at  REAL,
    inferred_at   REAL,
    ledgered_at   REAL,
    updated_at    REAL NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS frames_content ON frames (relpath, sha256);
CREATE INDEX IF NOT EXISTS frames_version ON frames (relpath, size, mtime_ns);
CREATE INDEX IF NOT EXISTS frames_state ON frames (state, next_attempt);
"""
# 1: relpath escaped (schemas.names), inode and ctime_ns recorded.
STATE_VERSION = 1


@dataclass(frozen=True)
class FrameRow:
    seq: int
    frame_id: str
    relpath: str
    size: int
    mtime_ns: int
    sha256: str | None
    content_type: str | None
    captured_at: datetime
    state: FrameState
    reason: str | None
    error_kind: str | None
    attempts: int
    seen_at: float

    @classmethod
    def of(cls, row: sqlite3.Row) -> FrameRow:
        return cls(
            seq=row["seq"],
            frame_id=row["frame_id"],
            relpath=row["relpath"],
            size=row["size"],
            mtime_ns=row["mtime_ns"],
            sha256=row["sha256"],
            content_type=row["content_type"],
            captured_at=datetime.fromisoformat(row["captured_at"]),
            state=row["state"],
            reason=row["reason"],
            error_kind=row["error_kind"],
            attempts=row["attempts"],
            seen_at=row["seen_at"],
        )


@dataclass(frozen=True)
class FileVersion:
    """What a look at a file found (lstat: links are not followed).

    Size and mtime alone miss a different image written under the same name with the same
    size and mtime (`cp -p`, coarse timestamps): the inode and ctime tell (ctime cannot be
    set back), and then the content's sha256 decides whether it is a new frame."""

    relpath: str  # escaped, relative to the capture folder
    size: int
    mtime_ns: int
    inode: int = 0
    ctime_ns: int = 0
    kind: FileKind = "file"

    @property
    def captured_at(self) -> datetime:
        return datetime.fromtimestamp(self.mtime_ns / 1e9, UTC)


@dataclass(frozen=True)
class StateSummary:
    counts: dict[str, int]
    oldest_pending: FrameRow | None


def _init(conn: sqlite3.Connection) -> None:
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > STATE_VERSION:
        raise RuntimeError(
            f"capture state schema version {version} is newer than this framewire ({STATE_VERSION})"
        )
    conn.executescript(_SCHEMA)
    if version == STATE_VERSION:
        return
    with transaction(conn):
        columns = {row["name"] for row in conn.execute("PRAGMA table_info(frames)")}
        for column in ("inode", "ctime_ns"):
            if column not in columns:
                conn.execute(f"ALTER TABLE frames ADD COLUMN {column} INTEGER NOT NULL DEFAULT 0")
        # Rows of version 0 hold raw names. Longest first, so that no escaped name can meet
        # a raw one not yet escaped in the unique (relpath, sha256) index.
        rows = conn.execute(
            "SELECT seq, relpath FROM frames ORDER BY length(relpath) DESC"
        ).fetchall()
        for row in rows:
            escaped = escape_name(row["relpath"])
            if escaped != row["relpath"]:
                conn.execute("UPDATE frames SET relpath = ? WHERE seq = ?", (escaped, row["seq"]))
        conn.execute(f"PRAGMA user_version = {STATE_VERSION}")


def _knows_version(conn: sqlite3.Connection, v: FileVersion) -> bool:
    rows = conn.execute(
        "SELECT seq, inode, ctime_ns FROM frames WHERE relpath = ? AND size = ? AND mtime_ns = ?",
        (v.relpath, v.size, v.mtime_ns),
    ).fetchall()
    if any((r["inode"], r["ctime_ns"]) == (v.inode, v.ctime_ns) for r in rows):
        return True
    legacy = [r["seq"] for r in rows if (r["inode"], r["ctime_ns"]) == (0, 0)]
    if not legacy:
        return False
    # recorded before inodes were: this is the version it saw, so adopt its inode and ctime
    # (rather than read every file again, and quarantine rejected files a second time)
    conn.execute(
        "UPDATE frames SET inode = ?, ctime_ns = ? WHERE seq = ?", (v.inode, v.ctime_ns, legacy[0])
    )
    return True


def _knows_many(conn: sqlite3.Connection, versions: list[FileVersion]) -> list[bool]:
    with transaction(conn):
        return [_knows_version(conn, v) for v in versions]


def _insert_many(
    conn: sqlite3.Connection,
    new: list[tuple[str, FileVersion, str, str]],
    now: float,
) -> list[FrameRow | None]:
    """New frames (frame id, version, sha256, content type) in one transaction."""
    with transaction(conn):
        return [
            _insert_row(conn, frame_id, v, sha256, content_type, "seen", None, None, now)
            for frame_id, v, sha256, content_type in new
        ]


def _insert(
    conn: sqlite3.Connection,
    frame_id: str,
    v: FileVersion,
    sha256: str | None,
    content_type: str | None,
    state: FrameState,
    reason: str | None,
    error_kind: str | None,
    now: float,
) -> FrameRow | None:
    with transaction(conn):
        return _insert_row(conn, frame_id, v, sha256, content_type, state, reason, error_kind, now)


def _insert_row(
    conn: sqlite3.Connection,
    frame_id: str,
    v: FileVersion,
    sha256: str | None,
    content_type: str | None,
    state: FrameState,
    reason: str | None,
    error_kind: str | None,
    now: float,
) -> FrameRow | None:
    if sha256 is not None:
        known = conn.execute(
            "SELECT seq FROM frames WHERE relpath = ? AND sha256 = ?", (v.relpath, sha256)
        ).fetchone()
        if known:
            # The same content at the same path (touched, chmod'ed, copied over with
            # the same bytes): remember this version, so it is not read again.
            conn.execute(
                "UPDATE frames SET size = ?, mtime_ns = ?, inode = ?, ctime_ns = ? WHERE seq = ?",
                (v.size, v.mtime_ns, v.inode, v.ctime_ns, known["seq"]),
            )
            return None
    cur = conn.execute(
        "INSERT INTO frames (frame_id, relpath, size, mtime_ns, inode, ctime_ns, sha256,"
        " content_type, captured_at, state, reason, error_kind, seen_at, updated_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            frame_id,
            v.relpath,
            v.size,
            v.mtime_ns,
            v.inode,
            v.ctime_ns,
            sha256,
            content_type,
            v.captured_at.isoformat(),
            state,
            None if reason is None else printable(reason),
            error_kind,
            now,
            now,
        ),
    )
    row = conn.execute("SELECT * FROM frames WHERE seq = ?", (cur.lastrowid,)).fetchone()
    return FrameRow.of(row)


def _due(
    conn: sqlite3.Connection, now: float, window: int, window_bytes: int | None = None
) -> tuple[list[FrameRow], int]:
    """Frames to (re)send now: overdue resends first, then new frames while the window
    (frames, and bytes when given) has room."""
    resend = conn.execute(
        "SELECT * FROM frames WHERE state IN ('published', 'inferred') AND next_attempt <= ?"
        " ORDER BY next_attempt LIMIT ?",
        (now, window),
    ).fetchall()
    in_flight, in_flight_bytes = conn.execute(
        "SELECT count(*), coalesce(sum(size), 0) FROM frames"
        " WHERE state IN ('published', 'inferred')"
    ).fetchone()
    room = max(0, window - in_flight)
    fresh: list[sqlite3.Row] = []
    if room:
        fresh = conn.execute(
            "SELECT * FROM frames WHERE state = 'seen' ORDER BY seq LIMIT ?", (room,)
        ).fetchall()
    if window_bytes is not None:
        taken: list[sqlite3.Row] = []
        for row in fresh:
            # one frame at a time always goes, however large: the window never stalls
            if (taken or in_flight) and in_flight_bytes + row["size"] > window_bytes:
                break
            taken.append(row)
            in_flight_bytes += row["size"]
        fresh = taken
    return [FrameRow.of(r) for r in (*resend, *fresh)], in_flight + len(fresh)


def _next_due(conn: sqlite3.Connection) -> float | None:
    row = conn.execute(
        "SELECT min(next_attempt) FROM frames WHERE state IN ('published', 'inferred')"
    ).fetchone()
    return row[0] if row and row[0] is not None else None


def _outlook(conn: sqlite3.Connection) -> tuple[float | None, int]:
    """When the next resend is due, and how many frames are not yet ledgered."""
    pending = conn.execute(
        "SELECT count(*) FROM frames WHERE state IN ('seen', 'published', 'inferred')"
    ).fetchone()[0]
    return _next_due(conn), pending


def _mark_published(
    conn: sqlite3.Connection, frame_id: str, attempt: int, next_attempt: float, now: float
) -> None:
    conn.execute(
        "UPDATE frames SET state = CASE WHEN state = 'seen' THEN 'published' ELSE state END,"
        " attempts = ?, next_attempt = ?, published_at = ?, updated_at = ?"
        " WHERE frame_id = ? AND state IN ('seen', 'published', 'inferred')",
        (attempt, next_attempt, now, now, frame_id),
    )


def _mark_published_many(
    conn: sqlite3.Connection, sent: list[tuple[str, int, float]], now: float
) -> None:
    """Many frames published (frame id, attempt, next attempt), in one transaction."""
    with transaction(conn):
        for frame_id, attempt, next_attempt in sent:
            _mark_published(conn, frame_id, attempt, next_attempt, now)


def _resend_now(conn: sqlite3.Connection, now: float) -> int:
    """Make every frame that no inference agent has answered yet due at once."""
    return conn.execute(
        "UPDATE frames SET next_attempt = ? WHERE state = 'published' AND next_attempt > ?",
        (now, now),
    ).rowcount


def _advance(
    conn: sqlite3.Connection, frame_id: str, state: FrameState, now: float
) -> FrameState | None:
    """Move a frame forward (never back); returns its state before, None if unknown."""
    row = conn.execute("SELECT state FROM frames WHERE frame_id = ?", (frame_id,)).fetchone()
    if row is None:
        return None
    before: FrameState = row["state"]
    if STATES.index(state) > STATES.index(before) and before != "quarantined":
        column = f"{state}_at"
        conn.execute(
            f"UPDATE frames SET state = ?, {column} = ?, updated_at = ?"  # noqa: S608 - fixed names
            " WHERE frame_id = ?",
            (state, now, now, frame_id),
        )
    return before


def _advance_many(
    conn: sqlite3.Connection, moves: list[tuple[str, FrameState]], now: float
) -> list[FrameState | None]:
    """Many `_advance`s in one transaction, each seeing the ones before it."""
    with transaction(conn):
        return [_advance(conn, frame_id, state, now) for frame_id, state in moves]


def _quarantine(
    conn: sqlite3.Connection, frame_id: str, kind: str, reason: str, now: float
) -> None:
    conn.execute(
        "UPDATE frames SET state = 'quarantined', error_kind = ?, reason = ?, updated_at = ?"
        " WHERE frame_id = ?",
        (kind, printable(reason), now, frame_id),
    )


def _retry_quarantined(conn: sqlite3.Connection, now: float) -> int:
    """Give quarantined frames another chance: undelivered ones are resent under their own
    frame id (the ledger may hold them already); rejected files are looked at afresh."""
    with transaction(conn):
        resent = conn.execute(
            "UPDATE frames SET state = 'seen', attempts = 0, reason = NULL, error_kind = NULL,"
            " next_attempt = NULL, updated_at = ? WHERE state = 'quarantined'"
            " AND error_kind = 'undeliverable'",
            (now,),
        ).rowcount
        dropped = conn.execute("DELETE FROM frames WHERE state = 'quarantined'").rowcount
    return int(resent + dropped)


def _retry_named(
    conn: sqlite3.Connection, relpaths: list[str] | None, now: float
) -> tuple[int, list[str], list[str]]:
    """`_retry_quarantined` for the quarantined frames of `relpaths` (None: all of them).
    Returns how many undelivered frames go out again, the files to look at afresh, and the
    names that are not quarantined."""
    rows = conn.execute(
        "SELECT relpath, error_kind FROM frames WHERE state = 'quarantined'"
    ).fetchall()
    found = {str(r[0]): r[1] for r in rows}
    wanted = list(found) if relpaths is None else relpaths
    unknown = [name for name in wanted if name not in found]
    picked = [name for name in wanted if name in found]
    resend = [n for n in picked if found[n] == "undeliverable"]
    rescan = [n for n in picked if found[n] != "undeliverable"]
    with transaction(conn):
        for name in resend:
            conn.execute(
                "UPDATE frames SET state = 'seen', attempts = 0, reason = NULL,"
                " error_kind = NULL, next_attempt = NULL, updated_at = ?"
                " WHERE state = 'quarantined' AND relpath = ?",
                (now, name),
            )
        for name in rescan:
            conn.execute("DELETE FROM frames WHERE state = 'quarantined' AND relpath = ?", (name,))
    return len(resend), rescan, unknown


def _prune(conn: sqlite3.Connection, cutoff: float, root: Path) -> int:
    rows = conn.execute(
        "SELECT seq, relpath FROM frames WHERE state IN ('ledgered', 'quarantined')"
        " AND updated_at < ?",
        (cutoff,),
    ).fetchall()
    gone = [(row["seq"],) for row in rows if not os.path.lexists(path_of(root, row["relpath"]))]
    with transaction(conn):
        conn.executemany("DELETE FROM frames WHERE seq = ?", gone)
    return len(gone)


def _summary(conn: sqlite3.Connection) -> StateSummary:
    counts: dict[str, int] = dict.fromkeys(STATES, 0)
    for row in conn.execute("SELECT state, count(*) AS n FROM frames GROUP BY state"):
        counts[row["state"]] = row["n"]
    oldest = conn.execute(
        "SELECT * FROM frames WHERE state IN ('seen', 'published', 'inferred') ORDER BY seq LIMIT 1"
    ).fetchone()
    return StateSummary(counts=counts, oldest_pending=FrameRow.of(oldest) if oldest else None)


def _end_failed_transaction(conn: sqlite3.Connection) -> None:
    """After a failed write (disk full, read-only): make sure no transaction is left open,
    so that the retry starts clean."""
    if conn.in_transaction:
        conn.execute("ROLLBACK")


def _get(conn: sqlite3.Connection, frame_id: str) -> FrameRow | None:
    row = conn.execute("SELECT * FROM frames WHERE frame_id = ?", (frame_id,)).fetchone()
    return FrameRow.of(row) if row else None


class CaptureState:
    """Async facade over the capture state database."""

    def __init__(self, path: Path) -> None:
        self.path = path
        # NORMAL, not FULL: WAL stays consistent through any crash, and a power cut can lose
        # only the last commits, which at worst re-sees a file or resends a frame; the
        # ledger's idempotency absorbs both. (The ledger itself commits with FULL: it
        # acknowledges only what is on disk.)
        self._db = SqliteThread(path, synchronous="NORMAL")

    async def __aenter__(self) -> CaptureState:
        await self._db.__aenter__()
        await self._db.run(_init)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._db.__aexit__(None, None, None)

    async def knows(self, version: FileVersion) -> bool:
        return await self._db.run(_knows_version, version)

    async def knows_many(self, versions: list[FileVersion]) -> list[bool]:
        """`knows` for many versions, in one call."""
        return await self._db.run(_knows_many, versions)

    async def record_many(
        self, new: list[tuple[str, FileVersion, str, str]], now: float
    ) -> list[FrameRow | None]:
        """`record` of many new frames (frame id, version, sha256, content type), one
        commit; None for each whose content at its path is already known."""
        return await self._db.run(_insert_many, new, now)

    async def record(
        self,
        frame_id: str,
        version: FileVersion,
        *,
        sha256: str | None,
        content_type: str | None = None,
        state: FrameState = "seen",
        reason: str | None = None,
        error_kind: str | None = None,
        now: float,
    ) -> FrameRow | None:
        """Insert a new frame; None when this content at this path is already known."""
        return await self._db.run(
            _insert, frame_id, version, sha256, content_type, state, reason, error_kind, now
        )

    async def due(
        self, now: float, window: int, window_bytes: int | None = None
    ) -> tuple[list[FrameRow], int]:
        """Frames to send now, and how many will then be in flight."""
        return await self._db.run(_due, now, window, window_bytes)

    async def next_due(self) -> float | None:
        return await self._db.run(_next_due)

    async def outlook(self) -> tuple[float | None, int]:
        """When the next resend is due, and how many frames are not yet ledgered."""
        return await self._db.run(_outlook)

    async def mark_published(
        self, frame_id: str, attempt: int, next_attempt: float, now: float
    ) -> None:
        await self._db.run(_mark_published, frame_id, attempt, next_attempt, now)

    async def mark_published_many(self, sent: list[tuple[str, int, float]], now: float) -> None:
        """`mark_published` for many frames (frame id, attempt, next attempt), one commit."""
        await self._db.run(_mark_published_many, sent, now)

    async def resend_now(self, now: float) -> int:
        """Published frames not yet inferred become due now; returns how many."""
        return await self._db.run(_resend_now, now)

    async def advance(self, frame_id: str, state: FrameState, now: float) -> FrameState | None:
        return await self._db.run(_advance, frame_id, state, now)

    async def advance_many(
        self, moves: list[tuple[str, FrameState]], now: float
    ) -> list[FrameState | None]:
        """`advance` for many frames, in one commit."""
        return await self._db.run(_advance_many, moves, now)

    async def quarantine(self, frame_id: str, kind: str, reason: str, now: float) -> None:
        await self._db.run(_quarantine, frame_id, kind, reason, now)

    async def retry_quarantined(self, now: float) -> int:
        return await self._db.run(_retry_quarantined, now)

    async def retry_named(
        self, relpaths: list[str] | None, now: float
    ) -> tuple[int, list[str], list[str]]:
        return await self._db.run(_retry_named, relpaths, now)

    async def prune(self, cutoff: float, root: Path) -> int:
        return await self._db.run(_prune, cutoff, root)

    async def summary(self) -> StateSummary:
        return await self._db.run(_summary)

    async def end_failed_transaction(self) -> None:
        await self._db.run(_end_failed_transaction)

    async def get(self, frame_id: str) -> FrameRow | None:
        return await self._db.run(_get, frame_id)


def read_summary(path: Path) -> StateSummary:
    """Summary for the CLI, from a read-only connection (works while the agent runs)."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    try:
        return _summary(conn)
    finally:
        conn.close()
