"""Copy a SQLite ledger into a PostgreSQL one, resumably (`framewire ledger migrate`).

Rows are copied as they are, in the SQLite ledger's insertion order (rowid), a batch per
transaction; the same transaction records how far the copy has come (`ledger_migrations`,
keyed by the SQLite file's absolute path). Run it again after an interruption, or after
the SQLite ledger gained rows, and it goes on where it stopped. A frame id already in the
PostgreSQL ledger is never written twice, so even a copy that starts again from the first
row (another path to the same file) doubles nothing.

Re-capture links the SQLite ledger set after a row was copied (a later-arriving frame that
was captured earlier) are taken too: a copied row's `duplicate_of` moves to the SQLite
ledger's when that names an earlier capture, never to a later one.

Each batch holds the ledger's write lock, so a ledger agent may write the PostgreSQL ledger
meanwhile; it takes the copied rows into its look-alike index with its next write.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from framewire.edge_agents.ledger.lookalike import phash_bits
from framewire.edge_agents.ledger.postgres import (
    UNAVAILABLE,
    connect,
    init_schema,
    write_transaction,
)
from framewire.edge_agents.ledger.recording import COLUMNS
from framewire.edge_agents.ledger.store import SCHEMA_VERSION
from framewire.edge_agents.ledger.stores import LedgerError, LedgerUnavailable, redact

BATCH = 500
_TIMES = {"captured_at", "completed_at", "ledgered_at"}
_INSERT = (
    f"INSERT INTO results ({', '.join(COLUMNS)})"  # noqa: S608 - constants
    f" VALUES ({', '.join(['%s'] * len(COLUMNS))}) ON CONFLICT (frame_id) DO NOTHING"
)
# a copied row's link moves to the SQLite ledger's when that names an earlier capture
_LINKS = """
UPDATE results AS r SET duplicate_of = v.duplicate_of
FROM (SELECT unnest(%s::text[]) AS frame_id, unnest(%s::text[]) AS duplicate_of) AS v
JOIN results AS original ON original.frame_id = v.duplicate_of
WHERE r.frame_id = v.frame_id AND r.duplicate_of IS DISTINCT FROM v.duplicate_of
  AND (r.duplicate_of IS NULL OR original.captured_at <
       (SELECT captured_at FROM results WHERE frame_id = r.duplicate_of))
"""


@dataclass(frozen=True)
class Migrated:
    copied: int  # rows new to the PostgreSQL ledger
    present: int  # rows read that it held already
    relinked: int  # copied rows whose duplicate_of moved to an earlier capture
    through: int  # the SQLite rowid the copy has reached


def _source(path: Path) -> sqlite3.Connection:
    if not path.is_file():
        raise FileNotFoundError(f"no ledger at {path}")
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        conn.row_factory = sqlite3.Row
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise LedgerError(
                f"the ledger {path} has schema version {version}, newer than this "
                f"framewire's ({SCHEMA_VERSION})"
            )
        if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'results'").fetchone() is None:
            raise LedgerError(f"{path} is not a framewire ledger (it has no results table)")
    except BaseException:
        conn.close()
        raise
    return conn


def _values(row: sqlite3.Row, present: set[str], path: Path) -> list[object]:
    """One SQLite row as the PostgreSQL ledger stores it (times parsed; columns a ledger
    older than version 3 lacks, filled as the SQLite ledger would fill them)."""
    values: list[object] = []
    for column in COLUMNS:
        value: Any = row[column] if column in present else None
        if column == "source_path" and value is None:
            value = str(row["source_name"]).encode()
        elif column == "phash_int" and value is None and row["phash"] is not None:
            value = phash_bits(row["phash"])
        elif column == "suspect" and value is None:
            value = 0  # a ledger older than version 4: every row is trusted
        elif column in _TIMES:
            try:
                value = datetime.fromisoformat(value)
            except (TypeError, ValueError):
                raise LedgerError(
                    f"frame {row['frame_id']} in {path} has {column} {value!r}, not a time"
                ) from None
        elif isinstance(value, str) and "\x00" in value:
            value = value.replace("\x00", "\ufffd")  # PostgreSQL text holds no NUL
        values.append(value)
    return values


def _batches(conn: sqlite3.Connection, after: int, size: int) -> Iterator[list[sqlite3.Row]]:
    while True:
        rows = conn.execute(
            "SELECT rowid AS _rowid, * FROM results WHERE rowid > ? ORDER BY rowid LIMIT ?",
            (after, size),
        ).fetchall()
        if not rows:
            return
        yield rows
        after = rows[-1]["_rowid"]


def _copy_announcements(src: sqlite3.Connection, dest: Any) -> None:
    """The frames the stations announced (a version 4 ledger's), so that results still on
    their way are recognised by the PostgreSQL ledger too."""
    if src.execute("SELECT 1 FROM sqlite_master WHERE name = 'announced'").fetchone() is None:
        return
    rows = src.execute("SELECT frame_id, station, sha256, announced_at FROM announced")
    while batch := rows.fetchmany(BATCH):
        with write_transaction(dest), dest.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO announced (frame_id, station, sha256, announced_at)"
                " VALUES (%s, %s, %s, %s) ON CONFLICT (frame_id) DO NOTHING",
                [(r[0], r[1], r[2], datetime.fromisoformat(r[3])) for r in batch],
            )


def migrate(
    source: Path,
    url: str,
    *,
    password: str | None = None,
    batch: int = BATCH,
    progress: Callable[[int, int], None] | None = None,
) -> Migrated:
    """Copy the rows of the SQLite ledger `source` that the PostgreSQL ledger at `url` lacks;
    `progress(done, total)` as batches commit (rows read of those this run has to read).
    LedgerUnavailable when the server cannot be reached or written: the batches committed
    stay, and running it again goes on from there."""
    try:
        return _migrate(source, url, password, batch, progress)
    except UNAVAILABLE as err:
        raise LedgerUnavailable(str(err).strip(), redact(url)) from err


def _migrate(
    source: Path,
    url: str,
    password: str | None,
    batch: int,
    progress: Callable[[int, int], None] | None,
) -> Migrated:
    key = str(source.resolve())
    src = _source(source)
    copied = present = 0
    try:
        columns = {row["name"] for row in src.execute("PRAGMA table_info(results)")}
        with connect(url, password) as dest:
            init_schema(dest, redact(url))
            row = dest.execute(
                "SELECT copied_through FROM ledger_migrations WHERE source = %s", (key,)
            ).fetchone()
            through = 0 if row is None else int(row[0])
            total = src.execute(
                "SELECT count(*) FROM results WHERE rowid > ?", (through,)
            ).fetchone()[0]
            for rows in _batches(src, through, batch):
                with write_transaction(dest), dest.cursor() as cursor:
                    cursor.executemany(_INSERT, [_values(r, columns, source) for r in rows])
                    added = max(cursor.rowcount, 0)
                    through = int(rows[-1]["_rowid"])
                    cursor.execute(
                        "INSERT INTO ledger_migrations (source, copied_through, copied_at)"
                        " VALUES (%s, %s, now()) ON CONFLICT (source) DO UPDATE SET"
                        " copied_through = EXCLUDED.copied_through, copied_at = now()",
                        (key, through),
                    )
                copied += added
                present += len(rows) - added
                if progress is not None:
                    progress(copied + present, total)
            _copy_announcements(src, dest)
            links = src.execute(
                "SELECT frame_id, duplicate_of FROM results WHERE duplicate_of IS NOT NULL"
            ).fetchall()
            with write_transaction(dest), dest.cursor() as cursor:
                cursor.execute(
                    _LINKS, ([r["frame_id"] for r in links], [r["duplicate_of"] for r in links])
                )
                relinked = max(cursor.rowcount, 0)
    finally:
        src.close()
    return Migrated(copied=copied, present=present, relinked=relinked, through=through)
