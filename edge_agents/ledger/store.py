"""The ledger: one row per frame, in SQLite (WAL, synchronous=FULL).

A result is acknowledged only after its transaction has committed to disk, and a frame id
already present is never written again, so resent results cannot double a row. How a result
becomes a row is in `recording`, shared with the PostgreSQL ledger.

File names: `source_name` is the name as it travels, percent-encoded where needed
(schemas.names: `%`, bytes that are not UTF-8 and control characters as `%XX`), safe to
print and the same string the capture station and every message use. `source_path` holds
the original name decoded from it, byte for byte (a BLOB: a name need not be UTF-8).
Exports carry both: `source_name`, whose decoding is exact for every name, and
`source_path` as text, the exact original whenever it is valid UTF-8 (null otherwise).
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from framewire.edge_agents.ledger import opinions, recording
from framewire.edge_agents.ledger.export import EXPORT_COLUMNS, full_result, write_export
from framewire.edge_agents.ledger.lookalike import phash_bits
from framewire.edge_agents.ledger.recording import (
    HASHED,
    LookalikeIndex,
    Recorded,
    Row,
    Written,
)
from framewire.edge_agents.ledger.stores import LedgerUnavailable
from framewire.edge_agents.runtime import SqliteThread, transaction
from framewire.schemas import FrameAnnouncement, InferenceResult, Opinion, utc_now

__all__ = ["EXPORT_COLUMNS", "SCHEMA_VERSION", "LedgerReader", "LedgerStore", "Recorded"]

# 2: source_path, the original file name's bytes; 3: phash_int, the hash as an integer;
# 4: announced frames, and suspect results (rows of earlier versions count as trusted)
SCHEMA_VERSION = 4

_SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    frame_id      TEXT PRIMARY KEY,
    station       TEXT NOT NULL,
    source_name   TEXT NOT NULL,
    source_path   BLOB,
    sha256        TEXT NOT NULL,
    status        TEXT NOT NULL,
    error         TEXT,
    width         INTEGER,
    height        INTEGER,
    format        TEXT,
    phash         TEXT,
    phash_int     INTEGER,
    card_status   TEXT,
    card_name     TEXT,
    set_name      TEXT,
    card_number   TEXT,
    rarity        TEXT,
    market_price  REAL,
    confidence    REAL,
    duplicate_of  TEXT,
    agent_id      TEXT NOT NULL,
    captured_at   TEXT NOT NULL,
    completed_at  TEXT NOT NULL,
    ledgered_at   TEXT NOT NULL,
    result        TEXT NOT NULL,
    suspect       INTEGER NOT NULL DEFAULT 0,
    suspect_reason TEXT
);
CREATE TABLE IF NOT EXISTS announced (
    frame_id      TEXT PRIMARY KEY,
    station       TEXT NOT NULL,
    sha256        TEXT NOT NULL,
    announced_at  TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS results_station ON results (station, captured_at);
CREATE INDEX IF NOT EXISTS results_sha256 ON results (sha256);
CREATE INDEX IF NOT EXISTS results_card ON results (set_name, card_number, card_name);
"""
_SCHEMA += opinions.TABLE + ";\n"  # shadow readings: added to a ledger of any version


def _init(conn: sqlite3.Connection) -> None:
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise RuntimeError(
            f"ledger schema version {version} is newer than this framewire ({SCHEMA_VERSION})"
        )
    conn.executescript(_SCHEMA)
    if version == SCHEMA_VERSION:
        return
    with transaction(conn):
        columns = {row["name"] for row in conn.execute("PRAGMA table_info(results)")}
        if "source_path" not in columns:
            conn.execute("ALTER TABLE results ADD COLUMN source_path BLOB")
        # rows written before names were escaped hold the raw name: its UTF-8 bytes are it
        conn.execute(
            "UPDATE results SET source_path = CAST(source_name AS BLOB) WHERE source_path IS NULL"
        )
        if "phash_int" not in columns:
            conn.execute("ALTER TABLE results ADD COLUMN phash_int INTEGER")
        hashes = conn.execute(
            "SELECT rowid, phash FROM results WHERE phash IS NOT NULL AND phash_int IS NULL"
        ).fetchall()
        conn.executemany(
            "UPDATE results SET phash_int = ? WHERE rowid = ?",
            ((phash_bits(row["phash"]), row["rowid"]) for row in hashes),
        )
        if "suspect" not in columns:  # rows stored before announcements count as trusted
            conn.execute("ALTER TABLE results ADD COLUMN suspect INTEGER NOT NULL DEFAULT 0")
            conn.execute("ALTER TABLE results ADD COLUMN suspect_reason TEXT")
        # What opening the ledger reads into its look-alike index: a scan of this index,
        # not of the table and the thumbnails in its rows. Keyed by frame id (a ULID, in
        # time order), so a new row lands at its end rather than on a random page. Suspect
        # rows are in no index: nothing is a re-capture of them.
        conn.execute("DROP INDEX IF EXISTS results_phash")
        conn.execute(
            "CREATE INDEX IF NOT EXISTS results_trusted_phash ON results (frame_id, phash_int,"
            " captured_at, card_status, set_name, card_number, card_name)"
            " WHERE phash_int IS NOT NULL AND suspect = 0"
        )
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def _bind(params: Sequence[object]) -> list[object]:
    # times are stored as ISO 8601 text, as they travel
    return [p.isoformat() if isinstance(p, datetime) else p for p in params]


class _Sql:
    """`recording.LedgerSql` on one SQLite connection (used on its database thread only)."""

    hashes_all = (
        f"SELECT rowid, {HASHED} FROM results INDEXED BY results_trusted_phash"  # noqa: S608 - constants
        " WHERE phash_int IS NOT NULL AND suspect = 0"
    )
    # NOT INDEXED: the rows after a rowid, found by the rowid itself
    hashes_after = (
        f"SELECT rowid, {HASHED} FROM results NOT INDEXED"  # noqa: S608 - constants
        " WHERE rowid > ? AND suspect = 0"
    )
    newest = "SELECT max(rowid) FROM results"

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def one(self, sql: str, params: Sequence[object] = ()) -> Row | None:
        row = self.conn.execute(sql, _bind(params)).fetchone()
        return None if row is None else tuple(row)

    def all(self, sql: str, params: Sequence[object] = ()) -> list[Row]:
        cursor = self.conn.cursor()
        cursor.row_factory = None  # tuples: quicker than Rows over a whole ledger
        try:
            return cursor.execute(sql, _bind(params)).fetchall()
        finally:
            cursor.close()

    def many(self, sql: str, rows: Iterable[Sequence[object]]) -> None:
        self.conn.executemany(sql, (_bind(row) for row in rows))

    @contextlib.contextmanager
    def write(self) -> Iterator[None]:
        try:
            with transaction(self.conn):
                yield
        except BaseException:
            # a COMMIT that fails (a full disk) may leave the transaction open
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            raise


def _open(conn: sqlite3.Connection, index: LookalikeIndex) -> None:
    _init(conn)
    index.load(_Sql(conn))


def _write_many(
    conn: sqlite3.Connection,
    index: LookalikeIndex,
    items: Sequence[InferenceResult | FrameAnnouncement],
) -> list[Written]:
    return recording.write_many(_Sql(conn), index, items)


def _result(conn: sqlite3.Connection, frame_id: str) -> InferenceResult | None:
    return recording.stored_result(_Sql(conn), frame_id)


def _opinions(conn: sqlite3.Connection, items: Sequence[Opinion]) -> list[opinions.Compared]:
    return opinions.write(_Sql(conn), items)


def _totals(conn: sqlite3.Connection) -> tuple[int, int]:
    return recording.totals(_Sql(conn))


def _suspects(conn: sqlite3.Connection) -> int:
    return recording.suspects(_Sql(conn))


def _backup(conn: sqlite3.Connection, folder: Path, keep: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    stamp = utc_now().strftime("%Y%m%dT%H%M%S%fZ")
    target = folder / f"ledger-{stamp}.sqlite3"
    partial = target.with_suffix(".partial")
    dest = sqlite3.connect(partial)
    try:
        conn.backup(dest)
    finally:
        dest.close()
    partial.replace(target)
    for old in sorted(folder.glob("ledger-*.sqlite3"))[:-keep]:
        old.unlink()
    return target


def newest_backup(folder: Path) -> datetime | None:
    """When the newest backup in `folder` was written; None when there is none."""
    newest = max(folder.glob("ledger-*.sqlite3"), default=None)  # the names sort by time
    return None if newest is None else datetime.fromtimestamp(newest.stat().st_mtime, UTC)


class LedgerStore(recording.BatchWrites):
    """The SQLite ledger, as the ledger agent writes it (`stores.Ledger`)."""

    backs_up_itself = False

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = SqliteThread(path, synchronous="FULL")
        self._index = LookalikeIndex()

    @property
    def location(self) -> str:
        return str(self.path)

    async def __aenter__(self) -> LedgerStore:
        await self._db.__aenter__()
        try:
            await self._db.run(_open, self._index)
        except BaseException:
            await self._db.__aexit__(None, None, None)
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._db.__aexit__(None, None, None)

    async def write_many(
        self, items: Sequence[InferenceResult | FrameAnnouncement]
    ) -> list[Written]:
        """Results and announcements in one transaction, in order, committed to disk when
        this returns: a Recorded per result, an Announced per announcement."""
        if not items:
            return []
        try:
            return await self._db.run(_write_many, self._index, items)
        except LedgerUnavailable:
            raise
        except sqlite3.OperationalError as err:
            raise LedgerUnavailable(str(err), self.location) from err

    async def record_opinions(self, items: Sequence[Opinion]) -> list[opinions.Compared]:
        """Shadow readings, in one transaction (`opinions.write`)."""
        if not items:
            return []
        try:
            return await self._db.run(_opinions, items)
        except LedgerUnavailable:
            raise
        except sqlite3.OperationalError as err:
            raise LedgerUnavailable(str(err), self.location) from err

    async def backup(self, folder: Path, *, keep: int) -> Path:
        """Online backup (SQLite's backup API: consistent while the agent writes)."""
        return await self._db.run(_backup, folder, keep)

    async def result(self, frame_id: str) -> InferenceResult | None:
        return await self._db.run(_result, frame_id)

    async def totals(self) -> tuple[int, int]:
        """(rows, re-captures) of the inventory: suspect rows are not counted."""
        return await self._db.run(_totals)

    async def suspects(self) -> int:
        """Rows held as suspect."""
        return await self._db.run(_suspects)


class LedgerReader:
    """Read-only access for the CLI and tests; safe while the agent writes (WAL)."""

    def __init__(self, path: Path) -> None:
        if not path.exists():
            raise FileNotFoundError(f"no ledger at {path}")
        self.path = path
        self._conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        self._conn.row_factory = sqlite3.Row

    @property
    def location(self) -> str:
        return str(self.path)

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> LedgerReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def count(self) -> int:
        return int(self._conn.execute("SELECT count(*) FROM results").fetchone()[0])

    def frame_ids(self) -> list[str]:
        return [r[0] for r in self._conn.execute("SELECT frame_id FROM results ORDER BY 1")]

    def get(self, frame_id: str) -> dict[str, Any] | None:
        row = self._conn.execute(
            "SELECT result, ledgered_at, duplicate_of, source_path, suspect, suspect_reason"
            " FROM results WHERE frame_id = ?",
            (frame_id,),
        ).fetchone()
        return None if row is None else full_result(row)

    def rows(self) -> Iterator[sqlite3.Row]:
        yield from self._conn.execute(
            f"SELECT {', '.join(EXPORT_COLUMNS)}, result FROM results"  # noqa: S608 - constants
            " ORDER BY captured_at, frame_id"
        )

    def export(self, out: IO[str], fmt: str) -> int:
        """Write every row as CSV (flat columns) or JSON (an array of full results)."""
        return write_export(self.rows(), out, fmt)

    def shadow_rows(self) -> list[tuple[Any, ...]]:
        try:
            return [tuple(row) for row in self._conn.execute(opinions.SHADOW_ROWS)]
        except sqlite3.OperationalError:  # a ledger no agent of this version has opened
            return []
