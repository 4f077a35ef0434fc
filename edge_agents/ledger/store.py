"""The ledger: one row per frame, in SQLite (WAL, synchronous=FULL).

A result is acknowledged only after its transaction has committed to disk, and a frame id
already present is never written again, so resent results cannot double a row.

File names: `source_name` is the name as it travels, percent-encoded where needed
(schemas.names: `%`, bytes that are not UTF-8 and control characters as `%XX`), safe to
print and the same string the capture station and every message use. `source_path` holds
the original name decoded from it, byte for byte (a BLOB: a name need not be UTF-8).
Exports carry both: `source_name`, whose decoding is exact for every name, and
`source_path` as text, the exact original whenever it is valid UTF-8 (null otherwise).
"""

from __future__ import annotations

import csv
import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from edge_agents.runtime import SqliteThread, transaction
from schemas import InferenceResult, utc_now
from schemas.names import name_as_text, unescape_name

# 2: source_path, the original file name's bytes
SCHEMA_VERSION = 2
# Perceptual-hash distances (of 64 bits) under which a frame counts as a re-capture of an
# earlier one: loose when the OCR identified the same catalog card in both, strict otherwise.
SAME_CARD_DISTANCE = 28
LOOKALIKE_DISTANCE = 6
LOOKALIKE_WINDOW = 5000  # unidentified frames are compared with this many recent rows

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
    result        TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS results_station ON results (station, captured_at);
CREATE INDEX IF NOT EXISTS results_sha256 ON results (sha256);
CREATE INDEX IF NOT EXISTS results_card ON results (set_name, card_number, card_name);
"""

EXPORT_COLUMNS = (
    "frame_id",
    "station",
    "source_name",
    "sha256",
    "status",
    "error",
    "width",
    "height",
    "format",
    "phash",
    "card_status",
    "card_name",
    "set_name",
    "card_number",
    "rarity",
    "market_price",
    "confidence",
    "duplicate_of",
    "agent_id",
    "captured_at",
    "completed_at",
    "ledgered_at",
    "source_path",
)


@dataclass(frozen=True)
class Recorded:
    inserted: bool
    ledgered_at: datetime
    status: str
    duplicate_of: str | None


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
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def _distance(a: str, b: str) -> int:
    return (int(a, 16) ^ int(b, 16)).bit_count()


def _candidates(
    conn: sqlite3.Connection, r: InferenceResult, *, later: bool
) -> tuple[list[sqlite3.Row], int]:
    """Rows that `r` may re-capture (captured before it) or that may re-capture `r`
    (`later`), by perceptual hash, with the distance that counts as the same picture."""
    # captured_at is compared as (after, at) so one constant query serves both sides
    at = r.captured_at.isoformat()
    after = 1 if later else 0
    card = r.card
    if card is not None and card.status == "identified":
        rows = conn.execute(
            "SELECT frame_id, phash, duplicate_of FROM results WHERE set_name = ?"
            " AND card_number = ? AND card_name = ? AND card_status = 'identified'"
            " AND phash IS NOT NULL AND captured_at != ? AND (captured_at > ?) = ?"
            " ORDER BY captured_at",
            (card.set_name, card.card_number, card.card_name, at, at, after),
        ).fetchall()
        return rows, SAME_CARD_DISTANCE
    rows = conn.execute(
        "SELECT frame_id, phash, duplicate_of FROM (SELECT frame_id, phash, captured_at,"
        " duplicate_of FROM results WHERE phash IS NOT NULL ORDER BY rowid DESC LIMIT ?)"
        " WHERE captured_at != ? AND (captured_at > ?) = ? ORDER BY captured_at",
        (LOOKALIKE_WINDOW, at, at, after),
    ).fetchall()
    return rows, LOOKALIKE_DISTANCE


def _find_duplicate(conn: sqlite3.Connection, r: InferenceResult) -> str | None:
    """The earliest frame captured before this one that it re-captures: the same bytes, or
    the same identified card looking the same, or (unidentified) a near-identical picture."""
    row = conn.execute(
        "SELECT frame_id FROM results WHERE sha256 = ? AND frame_id != ? AND captured_at < ?"
        " ORDER BY captured_at LIMIT 1",
        (r.sha256, r.frame_id, r.captured_at.isoformat()),
    ).fetchone()
    if row is not None:
        return str(row[0])
    if r.phash is None:
        return None
    rows, limit = _candidates(conn, r, later=False)
    for candidate in rows:
        if _distance(candidate["phash"], r.phash) <= limit:
            return str(candidate["frame_id"])
    return None


def _adopt_later_captures(conn: sqlite3.Connection, r: InferenceResult, original: str) -> None:
    """Results reach the ledger in any order: frames captured after `r` that re-capture it
    and were ledgered first now name the earliest capture, `original`."""
    earlier = conn.execute(
        "SELECT captured_at FROM results WHERE frame_id = ?", (original,)
    ).fetchone()
    cutoff = earlier[0] if earlier else r.captured_at.isoformat()
    later = [
        str(row[0])
        for row in conn.execute(
            "SELECT frame_id FROM results WHERE sha256 = ? AND captured_at > ?",
            (r.sha256, r.captured_at.isoformat()),
        )
    ]
    if r.phash is not None:
        rows, limit = _candidates(conn, r, later=True)
        later += [str(row["frame_id"]) for row in rows if _distance(row["phash"], r.phash) <= limit]
    for frame_id in set(later):
        conn.execute(
            "UPDATE results SET duplicate_of = ? WHERE frame_id = ? AND frame_id != ?"
            " AND (duplicate_of IS NULL OR duplicate_of IN"
            " (SELECT frame_id FROM results WHERE captured_at > ?))",
            (original, frame_id, original, cutoff),
        )


def _record(conn: sqlite3.Connection, r: InferenceResult) -> Recorded:
    now = utc_now()
    image = r.image
    card = r.card
    with transaction(conn):
        known = conn.execute(
            "SELECT ledgered_at, status, duplicate_of FROM results WHERE frame_id = ?",
            (r.frame_id,),
        ).fetchone()
        if known is not None:
            return Recorded(
                inserted=False,
                ledgered_at=datetime.fromisoformat(known["ledgered_at"]),
                status=known["status"],
                duplicate_of=known["duplicate_of"],
            )
        duplicate_of = _find_duplicate(conn, r)
        conn.execute(
            "INSERT INTO results (frame_id, station, source_name, source_path, sha256, status,"
            " error, width, height, format, phash, card_status, card_name, set_name,"
            " card_number, rarity, market_price, confidence, duplicate_of, agent_id,"
            " captured_at, completed_at, ledgered_at, result)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                r.frame_id,
                r.station,
                r.source_name,
                unescape_name(r.source_name),
                r.sha256,
                r.status,
                r.error,
                image.width if image else None,
                image.height if image else None,
                image.format if image else None,
                r.phash,
                card.status if card else None,
                card.card_name if card else None,
                card.set_name if card else None,
                card.card_number if card else None,
                card.rarity if card else None,
                card.market_price if card else None,
                card.confidence if card else None,
                duplicate_of,
                r.agent_id,
                r.captured_at.isoformat(),
                r.completed_at.isoformat(),
                now.isoformat(),
                r.model_dump_json(),
            ),
        )
        _adopt_later_captures(conn, r, duplicate_of or r.frame_id)
    return Recorded(inserted=True, ledgered_at=now, status=r.status, duplicate_of=duplicate_of)


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


def _result(conn: sqlite3.Connection, frame_id: str) -> InferenceResult | None:
    row = conn.execute("SELECT result FROM results WHERE frame_id = ?", (frame_id,)).fetchone()
    return InferenceResult.model_validate_json(row["result"]) if row else None


def _totals(conn: sqlite3.Connection) -> tuple[int, int]:
    """Rows in the ledger, and how many of them re-capture an earlier frame. Counting the
    re-captures reads the whole table: for the start and after a backup, not every status."""
    row = conn.execute("SELECT count(*), count(duplicate_of) FROM results").fetchone()
    return int(row[0]), int(row[1])


def newest_backup(folder: Path) -> datetime | None:
    """When the newest backup in `folder` was written; None when there is none."""
    newest = max(folder.glob("ledger-*.sqlite3"), default=None)  # the names sort by time
    return None if newest is None else datetime.fromtimestamp(newest.stat().st_mtime, UTC)


class LedgerStore:
    """Async writer used by the ledger agent."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = SqliteThread(path, synchronous="FULL")

    async def __aenter__(self) -> LedgerStore:
        await self._db.__aenter__()
        await self._db.run(_init)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._db.__aexit__(None, None, None)

    async def record(self, result: InferenceResult) -> Recorded:
        return await self._db.run(_record, result)

    async def backup(self, folder: Path, *, keep: int) -> Path:
        return await self._db.run(_backup, folder, keep)

    async def result(self, frame_id: str) -> InferenceResult | None:
        return await self._db.run(_result, frame_id)

    async def totals(self) -> tuple[int, int]:
        """(rows, re-captures) in the ledger."""
        return await self._db.run(_totals)


def _source_path(row: sqlite3.Row) -> str | None:
    """The original file name as text: exact when it is UTF-8, else None (`source_name`,
    percent-encoded, is exact for every name)."""
    raw = row["source_path"]
    return None if raw is None else name_as_text(bytes(raw))


def _full(row: sqlite3.Row) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(row["result"])
    data.update(
        ledgered_at=row["ledgered_at"],
        duplicate_of=row["duplicate_of"],
        source_path=_source_path(row),
    )
    return data


class LedgerReader:
    """Read-only access for the CLI and tests; safe while the agent writes (WAL)."""

    def __init__(self, path: Path) -> None:
        if not path.exists():
            raise FileNotFoundError(f"no ledger at {path}")
        self.path = path
        self._conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        self._conn.row_factory = sqlite3.Row

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
            "SELECT result, ledgered_at, duplicate_of, source_path FROM results WHERE frame_id = ?",
            (frame_id,),
        ).fetchone()
        return None if row is None else _full(row)

    def rows(self) -> Iterator[sqlite3.Row]:
        yield from self._conn.execute(
            f"SELECT {', '.join(EXPORT_COLUMNS)}, result FROM results"  # noqa: S608 - constants
            " ORDER BY captured_at, frame_id"
        )

    def export(self, out: IO[str], fmt: str) -> int:
        """Write every row as CSV (flat columns) or JSON (an array of full results)."""
        n = 0
        if fmt == "csv":
            writer = csv.writer(out)
            writer.writerow(EXPORT_COLUMNS)
            for row in self.rows():
                writer.writerow(
                    [_source_path(row) if c == "source_path" else row[c] for c in EXPORT_COLUMNS]
                )
                n += 1
            return n
        out.write("[")
        for row in self.rows():
            data = _full(row)
            out.write(("," if n else "") + "\n  " + json.dumps(data, ensure_ascii=False))
            n += 1
        out.write("\n]\n" if n else "]\n")
        return n
