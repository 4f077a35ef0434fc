"""A ledger's rows for people and other programs: CSV (flat columns) or JSON (full results).

File names: `source_name` is the name as it travels, percent-encoded where needed
(schemas.names), exact for every name; `source_path` is the original name as text, exact
whenever it is valid UTF-8 (null otherwise).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from typing import IO, Any, Protocol

from framewire.schemas.names import name_as_text

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
    "suspect",  # 1: no station announced the frame as it is; not inventory
    "suspect_reason",
)


class StoredRow(Protocol):
    """A row by column name: a sqlite3.Row, a dict."""

    def keys(self) -> Iterable[str]: ...

    def __getitem__(self, key: str, /) -> Any: ...


def source_path_text(raw: bytes | memoryview | None) -> str | None:
    """The original file name as text: exact when it is UTF-8, else None (`source_name`,
    percent-encoded, is exact for every name)."""
    return None if raw is None else name_as_text(bytes(raw))


def full_result(row: StoredRow) -> dict[str, Any]:
    """A row's stored result, with what the ledger added: when, re-capture of what, the
    original file name, and whether it is suspect (not inventory), and why."""
    data: dict[str, Any] = json.loads(row["result"])
    data.update(
        ledgered_at=row["ledgered_at"],
        duplicate_of=row["duplicate_of"],
        source_path=source_path_text(row["source_path"]),
        suspect=bool(row["suspect"]),
        suspect_reason=row["suspect_reason"],
    )
    return data


def write_export(rows: Iterable[StoredRow], out: IO[str], fmt: str) -> int:
    """Write `rows` as CSV or as a JSON array; the number written."""
    n = 0
    if fmt == "csv":
        writer = csv.writer(out)
        writer.writerow(EXPORT_COLUMNS)
        for row in rows:
            writer.writerow(
                [source_path_text(row[c]) if c == "source_path" else row[c] for c in EXPORT_COLUMNS]
            )
            n += 1
        return n
    out.write("[")
    for row in rows:
        data = full_result(row)
        out.write(("," if n else "") + "\n  " + json.dumps(data, ensure_ascii=False))
        n += 1
    out.write("\n]\n" if n else "]\n")
    return n
