"""The ledger: one row per frame, in SQLite (WAL, synchronous=FULL).

A result is acknowledged only after its transaction has committed to disk, and a frame id
already present is never written again, so resent results cannot double a row.
"""

from __future__ import annotations

import csv
import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from edge_agents.runtime import SqliteThread, transaction
from schemas import InferenceResult, utc_now

_SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    frame_id      TEXT PRIMARY KEY,
    station       TEXT NOT NULL,
    source_name   TEXT NOT NULL,
    sha256        TEXT NOT NULL,
    status        TEXT NOT NULL,
    error         TEXT,
    width         INTEGER,
    height        INTEGER,
    format        TEXT,
    phash         TEXT,
    agent_id      TEXT NOT NULL,
    captured_at   TEXT NOT NULL,
    completed_at  TEXT NOT NULL,
    ledgered_at   TEXT NOT NULL,
    result        TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS results_station ON results (station, captured_at);
CREATE INDEX IF NOT EXISTS results_sha256 ON results (sha256);
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
    "agent_id",
    "captured_at",
    "completed_at",
    "ledgered_at",
)


@dataclass(frozen=True)
class Recorded:
    inserted: bool
    ledgered_at: datetime
    status: str


def _init(conn: sqlite3.Connection) -> None:
    conn.executescript(_SCHEMA)


def _record(conn: sqlite3.Connection, r: InferenceResult) -> Recorded:
    now = utc_now()
    image = r.image
    with transaction(conn):
        cur = conn.execute(
            "INSERT INTO results (frame_id, station, source_name, sha256, status, error, width,"
            " height, format, phash, agent_id, captured_at, completed_at, ledgered_at, result)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (frame_id) DO NOTHING",
            (
                r.frame_id,
                r.station,
                r.source_name,
                r.sha256,
                r.status,
                r.error,
                image.width if image else None,
                image.height if image else None,
                image.format if image else None,
                r.phash,
                r.agent_id,
                r.captured_at.isoformat(),
                r.completed_at.isoformat(),
                now.isoformat(),
                r.model_dump_json(),
            ),
        )
        if cur.rowcount == 1:
            return Recorded(inserted=True, ledgered_at=now, status=r.status)
        row = conn.execute(
            "SELECT ledgered_at, status FROM results WHERE frame_id = ?", (r.frame_id,)
        ).fetchone()
    return Recorded(
        inserted=False, ledgered_at=datetime.fromisoformat(row["ledgered_at"]), status=row["status"]
    )


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
            "SELECT result, ledgered_at FROM results WHERE frame_id = ?", (frame_id,)
        ).fetchone()
        if row is None:
            return None
        data: dict[str, Any] = json.loads(row["result"])
        data["ledgered_at"] = row["ledgered_at"]
        return data

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
                writer.writerow([row[c] for c in EXPORT_COLUMNS])
                n += 1
            return n
        out.write("[")
        for row in self.rows():
            data = json.loads(row["result"])
            data["ledgered_at"] = row["ledgered_at"]
            out.write(("," if n else "") + "\n  " + json.dumps(data, ensure_ascii=False))
            n += 1
        out.write("\n]\n" if n else "]\n")
        return n
