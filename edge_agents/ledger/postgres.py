"""The ledger in PostgreSQL, on psycopg 3: the same rows and answers as the SQLite ledger.

Differences from SQLite, each for a reason:
- times are `timestamptz` (compared as instants; read back in UTC, ISO 8601 in exports);
- `id`, an identity column, orders rows by insertion, as SQLite's rowid does;
- `frame_id` sorts byte-wise (COLLATE "C"), as in SQLite, whatever the database's locale;
- text cannot hold NUL in PostgreSQL: a NUL in a flat text column (an OCR line, an error
  message) is stored as U+FFFD; the `result` column, JSON text, keeps it exactly (`\\u0000`);
- backups are PostgreSQL's own (pg_dump, or the server's continuous archiving).

Every write transaction holds a transaction-level advisory lock (`WRITE_LOCK`), so writers
(ledger agents, `framewire ledger migrate`) take turns and each sees every committed row.
A commit returns once the server has flushed it (synchronous_commit is never left `off`).
A connection that is lost is opened again once, at once; a server that stays away makes
the call fail with LedgerUnavailable, and the next call tries again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import IO, Any, TypeVar

from framewire.edge_agents.ledger import opinions, recording
from framewire.edge_agents.ledger.export import EXPORT_COLUMNS, full_result, write_export
from framewire.edge_agents.ledger.recording import (
    HASHED,
    LookalikeIndex,
    Row,
    Written,
)
from framewire.edge_agents.ledger.stores import LedgerError, LedgerUnavailable, redact
from framewire.schemas import FrameAnnouncement, InferenceResult, Opinion

try:
    import psycopg
    from psycopg import conninfo
    from psycopg.rows import dict_row, tuple_row
except ImportError as err:  # pragma: no cover - the extra is not installed
    raise LedgerError(
        "a PostgreSQL ledger needs psycopg: pip install 'framewire[postgres]'"
    ) from err

logger = logging.getLogger(__name__)

T = TypeVar("T")

# 2: announced frames, and suspect results (rows of version 1 count as trusted)
SCHEMA_VERSION = 2
WRITE_LOCK = 0x6672616D_6577_6972  # "framewir": the ledger's advisory lock key
# connection failures, and a server that became a read-only standby
UNAVAILABLE: tuple[type[Exception], ...] = (
    psycopg.OperationalError,
    psycopg.errors.ReadOnlySqlTransaction,
)
_TIMES = ("captured_at", "completed_at", "ledgered_at")

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS results (
    id            BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
    frame_id      TEXT COLLATE "C" PRIMARY KEY,
    station       TEXT NOT NULL,
    source_name   TEXT NOT NULL,
    source_path   BYTEA,
    sha256        TEXT NOT NULL,
    status        TEXT NOT NULL,
    error         TEXT,
    width         INTEGER,
    height        INTEGER,
    format        TEXT,
    phash         TEXT,
    phash_int     BIGINT,
    card_status   TEXT,
    card_name     TEXT,
    set_name      TEXT,
    card_number   TEXT,
    rarity        TEXT,
    market_price  DOUBLE PRECISION,
    confidence    DOUBLE PRECISION,
    duplicate_of  TEXT COLLATE "C",
    agent_id      TEXT NOT NULL,
    captured_at   TIMESTAMPTZ NOT NULL,
    completed_at  TIMESTAMPTZ NOT NULL,
    ledgered_at   TIMESTAMPTZ NOT NULL,
    result        TEXT NOT NULL,
    suspect       INTEGER NOT NULL DEFAULT 0,
    suspect_reason TEXT
)""",
    """CREATE TABLE IF NOT EXISTS announced (
    frame_id      TEXT COLLATE "C" PRIMARY KEY,
    station       TEXT NOT NULL,
    sha256        TEXT NOT NULL,
    announced_at  TIMESTAMPTZ NOT NULL
)""",
    "CREATE INDEX IF NOT EXISTS results_station ON results (station, captured_at)",
    "CREATE INDEX IF NOT EXISTS results_sha256 ON results (sha256)",
    "CREATE INDEX IF NOT EXISTS results_card ON results (set_name, card_number, card_name)",
    opinions.TABLE,  # shadow readings: added to any version's ledger
    # how far `framewire ledger migrate` has copied each SQLite ledger (by its rowid)
    """CREATE TABLE IF NOT EXISTS ledger_migrations (
    source          TEXT PRIMARY KEY,
    copied_through  BIGINT NOT NULL,
    copied_at       TIMESTAMPTZ NOT NULL
)""",
)


# from version 1: announcements and suspect results (the rows it holds count as trusted)
_TO_VERSION_2 = (
    "ALTER TABLE results ADD COLUMN IF NOT EXISTS suspect INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE results ADD COLUMN IF NOT EXISTS suspect_reason TEXT",
)


def connect(url: str, password: str | None = None, **kwargs: Any) -> psycopg.Connection[Any]:
    """A connection in autocommit (transactions are explicit), times in UTC, commits durable.
    LedgerUnavailable when the server cannot be reached."""
    given = conninfo.conninfo_to_dict(url)
    defaults = {"connect_timeout": 10, "application_name": "framewire-ledger"}
    params: dict[str, Any] = {k: v for k, v in defaults.items() if k not in given}
    if password is not None:
        params["password"] = password
    try:
        conn = psycopg.connect(url, autocommit=True, **kwargs, **params)
    except UNAVAILABLE as err:
        raise LedgerUnavailable(str(err).strip(), redact(url)) from err
    try:
        with conn.cursor(row_factory=tuple_row) as cursor:
            cursor.execute("SET TIME ZONE 'UTC'")
            # each statement sees what was committed before it: a write that waited for the
            # write lock sees the rows of the writer it waited for (not so under a snapshot
            # taken when its transaction began, as REPEATABLE READ would)
            cursor.execute(
                "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL READ COMMITTED"
            )
            # `off` acknowledges commits a server crash can still lose: not for the ledger
            if cursor.execute("SHOW synchronous_commit").fetchone() == ("off",):
                cursor.execute("SET synchronous_commit TO on")
    except BaseException:
        conn.close()
        raise
    return conn


@contextlib.contextmanager
def write_transaction(conn: psycopg.Connection[Any]) -> Iterator[None]:
    """A transaction holding the ledger's write lock (released at COMMIT or ROLLBACK)."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK,))
        yield


def init_schema(conn: psycopg.Connection[Any], location: str) -> None:
    with write_transaction(conn):
        conn.execute("CREATE TABLE IF NOT EXISTS ledger_schema (version INTEGER NOT NULL)")
        row = conn.execute("SELECT max(version) FROM ledger_schema").fetchone()
        version = None if row is None else row[0]
        if version is not None and version > SCHEMA_VERSION:
            raise LedgerError(
                f"the ledger at {location} has schema version {version}, newer than this "
                f"framewire's ({SCHEMA_VERSION})"
            )
        for statement in _SCHEMA:
            conn.execute(statement)
        if version is not None and version < 2:
            for statement in _TO_VERSION_2:
                conn.execute(statement)
        if version is None:
            conn.execute("INSERT INTO ledger_schema (version) VALUES (%s)", (SCHEMA_VERSION,))
        elif version < SCHEMA_VERSION:
            conn.execute("UPDATE ledger_schema SET version = %s", (SCHEMA_VERSION,))


def _text(value: object) -> object:
    if isinstance(value, str) and "\x00" in value:
        return value.replace("\x00", "\ufffd")
    return value


class _Sql:
    """`recording.LedgerSql` on one psycopg connection (used on the store's thread only)."""

    hashes_all = (
        f"SELECT id, {HASHED} FROM results"  # noqa: S608 - constants
        " WHERE phash_int IS NOT NULL AND suspect = 0"
    )
    hashes_after = f"SELECT id, {HASHED} FROM results WHERE id > ? AND suspect = 0"  # noqa: S608 - constants
    newest = "SELECT max(id) FROM results"

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn

    @staticmethod
    def _sql(sql: str) -> str:
        # the ledger's statements hold no '%' and no '?' but their placeholders
        return sql.replace("?", "%s")

    def one(self, sql: str, params: Sequence[object] = ()) -> Row | None:
        row = self.conn.execute(self._sql(sql), [_text(p) for p in params]).fetchone()
        return None if row is None else tuple(row)

    def all(self, sql: str, params: Sequence[object] = ()) -> list[Row]:
        rows = self.conn.execute(self._sql(sql), [_text(p) for p in params]).fetchall()
        return [tuple(row) for row in rows]

    def many(self, sql: str, rows: Iterable[Sequence[object]]) -> None:
        with self.conn.cursor() as cursor:
            cursor.executemany(self._sql(sql), [[_text(p) for p in row] for row in rows])

    def write(self) -> contextlib.AbstractContextManager[None]:
        return write_transaction(self.conn)


class PostgresLedgerStore(recording.BatchWrites):
    """The PostgreSQL ledger, as the ledger agent writes it (`stores.Ledger`): one
    connection, used by one thread, so the event loop never waits on the database."""

    backs_up_itself = True

    def __init__(self, url: str, *, password: str | None = None) -> None:
        self.url = url
        self.location = redact(url)
        self._password = password
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ledger-postgres")
        self._conn: psycopg.Connection[Any] | None = None
        self._index = LookalikeIndex()

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = connect(self.url, self._password)
        return self._conn

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def _call(self, fn: Callable[[_Sql], T]) -> T:
        for attempt in (1, 2):
            had_connection = self._conn is not None and not self._conn.closed
            try:
                return fn(_Sql(self._connection()))
            except UNAVAILABLE as err:
                lost = self._conn is None or self._conn.closed or self._conn.broken
                if lost:
                    self._drop()
                if lost and had_connection and attempt == 1:
                    logger.warning(
                        "lost the connection to %s (%s); opening it again",
                        self.location,
                        str(err).strip(),
                    )
                    continue
                raise LedgerUnavailable(str(err).strip(), self.location) from err
        raise AssertionError("unreachable")  # pragma: no cover

    async def _run(self, fn: Callable[[_Sql], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._call, fn)

    def _open(self, sql: _Sql) -> None:
        init_schema(sql.conn, self.location)
        self._index.load(sql)

    async def __aenter__(self) -> PostgresLedgerStore:
        try:
            await self._run(self._open)
        except BaseException:
            await self.__aexit__()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.get_running_loop().run_in_executor(self._pool, self._drop)
        self._pool.shutdown(wait=True)

    async def write_many(
        self, items: Sequence[InferenceResult | FrameAnnouncement]
    ) -> list[Written]:
        """Results and announcements in one transaction, in order, committed when this
        returns: a Recorded per result, an Announced per announcement."""
        if not items:
            return []
        return await self._run(lambda sql: recording.write_many(sql, self._index, items))

    async def record_opinions(self, items: Sequence[Opinion]) -> list[opinions.Compared]:
        """Shadow readings, in one transaction (`opinions.write`)."""
        if not items:
            return []
        return await self._run(lambda sql: opinions.write(sql, items))

    async def backup(self, folder: Path, *, keep: int) -> Path:
        raise LedgerError(
            f"the ledger at {self.location} is in PostgreSQL: back it up with PostgreSQL "
            "(pg_dump --format=custom, or the server's continuous archiving); the ledger "
            "agent's own backups (backup_keep) are for SQLite ledgers"
        )

    async def result(self, frame_id: str) -> InferenceResult | None:
        return await self._run(lambda sql: recording.stored_result(sql, frame_id))

    async def totals(self) -> tuple[int, int]:
        """(rows, re-captures) of the inventory: suspect rows are not counted."""
        return await self._run(recording.totals)

    async def suspects(self) -> int:
        """Rows held as suspect."""
        return await self._run(recording.suspects)


def _as_text_times(row: dict[str, Any]) -> dict[str, Any]:
    for column in _TIMES:
        value = row.get(column)
        if isinstance(value, datetime):
            row[column] = value.isoformat()
    return row


class PostgresLedgerReader:
    """Read-only access for the CLI and tests (`stores.LedgerView`), times as ISO 8601 text
    as the SQLite ledger gives them."""

    def __init__(self, url: str, *, password: str | None = None) -> None:
        self.location = redact(url)
        self._conn: psycopg.Connection[dict[str, Any]] = connect(
            url, password, row_factory=dict_row
        )
        try:
            self._conn.execute("SET default_transaction_read_only = on")
            found = self._conn.execute("SELECT to_regclass('results') AS t").fetchone()
            if found is None or found["t"] is None:
                raise LedgerError(f"no ledger at {self.location}")
        except BaseException:
            self._conn.close()
            raise

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> PostgresLedgerReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def count(self) -> int:
        row = self._conn.execute("SELECT count(*) AS n FROM results").fetchone()
        return 0 if row is None else int(row["n"])

    def frame_ids(self) -> list[str]:
        rows = self._conn.execute("SELECT frame_id FROM results ORDER BY 1").fetchall()
        return [row["frame_id"] for row in rows]

    def get(self, frame_id: str) -> dict[str, Any] | None:
        row = self._conn.execute(
            "SELECT result, ledgered_at, duplicate_of, source_path, suspect, suspect_reason"
            " FROM results WHERE frame_id = %s",
            (frame_id,),
        ).fetchone()
        return None if row is None else full_result(_as_text_times(row))

    def rows(self) -> Iterator[dict[str, Any]]:
        # a server-side cursor: a ledger of any size, a few hundred rows in memory at a time
        with self._conn.transaction(), self._conn.cursor(name="ledger_rows") as cursor:
            cursor.itersize = 256
            cursor.execute(
                f"SELECT {', '.join(EXPORT_COLUMNS)}, result FROM results"  # noqa: S608 - constants
                " ORDER BY captured_at, frame_id"
            )
            for row in cursor:
                yield _as_text_times(row)

    def export(self, out: IO[str], fmt: str) -> int:
        """Write every row as CSV (flat columns) or JSON (an array of full results)."""
        return write_export(self.rows(), out, fmt)

    def shadow_rows(self) -> list[tuple[Any, ...]]:
        found = self._conn.execute("SELECT to_regclass('opinions') AS t").fetchone()
        if found is None or found["t"] is None:  # no agent of this version has opened it
            return []
        rows = self._conn.execute(opinions.SHADOW_ROWS).fetchall()
        return [tuple(row.values()) for row in rows]
