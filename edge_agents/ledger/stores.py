"""The ledger store's interface and its two implementations, chosen by a database URL.

- SQLite (the embedded default): a path, or `sqlite:///path` (`sqlite:////abs/path`);
  `edge_agents.ledger.store`.
- PostgreSQL: `postgresql://user@host:port/dbname` (any libpq URL, `postgres://` too);
  `edge_agents.ledger.postgres`, on psycopg 3 (`pip install 'framewire[postgres]'`).

    async with open_ledger(settings.ledger_url, password=settings.database_password()) as ledger:
        await ledger.record_many(results)

    with open_reader(location) as reader:  # the CLI: export, show
        reader.export(sys.stdout, "json")

Both keep the same rows and answer the same way; one ledger agent per database is the usual
set-up, and several writers are safe (each write transaction holds the ledger's write lock).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any, Protocol, Self
from urllib.parse import urlsplit, urlunsplit

from framewire.edge_agents.ledger.export import StoredRow
from framewire.edge_agents.ledger.opinions import Compared
from framewire.edge_agents.ledger.recording import Announced, Recorded, Written
from framewire.schemas import FrameAnnouncement, InferenceResult, Opinion

POSTGRES_SCHEMES = ("postgresql", "postgres")


class LedgerUnavailable(sqlite3.OperationalError):
    """The ledger cannot be written now: a full or read-only disk, a database server that is
    down or unreachable. Nothing of the failed call was stored; the same call succeeds once
    the cause is gone. (A kind of sqlite3.OperationalError, which is what SQLite raises for
    these, so code written for the SQLite ledger alone catches it too.)"""

    def __init__(self, message: str, location: str) -> None:
        super().__init__(message)
        self.location = location


class LedgerError(Exception):
    """A ledger that cannot be used as asked (a bad URL, a driver not installed, a schema
    newer than this framewire, a backup the database makes itself)."""


class Ledger(Protocol):
    """What the ledger agent writes and reads, whichever database holds the ledger."""

    @property
    def location(self) -> str:
        """Where the ledger is, for people: a path, or a URL without its password."""
        ...

    @property
    def backs_up_itself(self) -> bool:
        """True when `backup` is not for this database (PostgreSQL: pg_dump, the server's
        own backups); the agent then schedules no backups."""
        ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(self, *exc: object) -> None: ...

    async def record(self, result: InferenceResult) -> Recorded:
        """`record_many([result])`."""
        ...

    async def record_many(self, results: Sequence[InferenceResult]) -> list[Recorded]:
        """Store results in one transaction, committed (durably) when this returns; one
        Recorded per result, in order. A frame id already in the ledger, or earlier in
        `results`, is not written again (`inserted=False`, the stored row's answers). Raises
        LedgerUnavailable when the database cannot be written; then nothing of `results` is
        stored. A result its station did not announce as it is (the same frame id, station
        and sha256) is stored as suspect (`Recorded.suspect` says why): not inventory."""
        ...

    async def announce_many(self, announcements: Sequence[FrameAnnouncement]) -> list[Announced]:
        """`write_many` of announcements alone."""
        ...

    async def write_many(
        self, items: Sequence[InferenceResult | FrameAnnouncement]
    ) -> list[Written]:
        """Results and announcements in one transaction, in order (each sees those before
        it), committed when this returns: a Recorded per result, an Announced per
        announcement. An announcement that matches a suspect row makes it trusted. Raises
        LedgerUnavailable as `record_many` does."""
        ...

    async def record_opinions(self, opinions: Sequence[Opinion]) -> list[Compared]:
        """Store shadow readings in one transaction (never as results); for each, how it
        compares with the frame's result (`opinions.write`)."""
        ...

    async def backup(self, folder: Path, *, keep: int) -> Path:
        """A consistent copy in `folder`, keeping the newest `keep`; LedgerError when the
        database backs up itself."""
        ...

    async def result(self, frame_id: str) -> InferenceResult | None: ...

    async def totals(self) -> tuple[int, int]:
        """(rows, re-captures) of the inventory: suspect rows are not counted."""
        ...

    async def suspects(self) -> int:
        """Rows held as suspect."""
        ...


class LedgerView(Protocol):
    """Read-only access for the CLI and tests, safe while an agent writes."""

    @property
    def location(self) -> str: ...

    def __enter__(self) -> Self: ...

    def __exit__(self, *exc: object) -> None: ...

    def close(self) -> None: ...

    def count(self) -> int: ...

    def frame_ids(self) -> list[str]: ...

    def get(self, frame_id: str) -> dict[str, Any] | None:
        """One frame's full result, with `ledgered_at`, `duplicate_of` and `source_path`."""
        ...

    def rows(self) -> Iterator[StoredRow]:
        """Every row's export columns and `result`, by capture time; times as ISO 8601."""
        ...

    def export(self, out: IO[str], fmt: str) -> int:
        """Write every row as CSV (flat columns) or JSON (an array of full results)."""
        ...

    def shadow_rows(self) -> list[tuple[Any, ...]]:
        """Every shadow reading beside its frame's result (`opinions.SHADOW_ROWS`)."""
        ...


def is_postgres(location: str | Path) -> bool:
    return isinstance(location, str) and urlsplit(location).scheme in POSTGRES_SCHEMES


def sqlite_path(location: str | Path) -> Path:
    """The file of a SQLite ledger: a path, or a `sqlite:///relative` or `sqlite:////abs` URL."""
    if isinstance(location, Path):
        return location
    parts = urlsplit(location)
    if parts.scheme == "sqlite":
        if parts.netloc or not parts.path.startswith("/") or len(parts.path) < 2:
            raise LedgerError(
                f"SQLite URL {location!r} must be sqlite:///relative/path or sqlite:////abs/path"
            )
        return Path(parts.path[1:])
    if "://" in location:
        raise LedgerError(
            f"ledger {redact(location)!r}: use a path, sqlite:///path or postgresql://..."
        )
    return Path(location)


def redact(url: str) -> str:
    """A database URL fit for logs: its password, if any, replaced by ***."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def open_ledger(location: str | Path, *, password: str | None = None) -> Ledger:
    """The store of the ledger at `location` (a path or URL), to enter with `async with`."""
    if is_postgres(location):
        from framewire.edge_agents.ledger.postgres import PostgresLedgerStore

        return PostgresLedgerStore(str(location), password=password)
    from framewire.edge_agents.ledger.store import LedgerStore

    return LedgerStore(sqlite_path(location))


def open_reader(location: str | Path, *, password: str | None = None) -> LedgerView:
    """Read-only access to the ledger at `location`; FileNotFoundError for a SQLite file that
    does not exist, LedgerUnavailable for a server that does not answer."""
    if is_postgres(location):
        from framewire.edge_agents.ledger.postgres import PostgresLedgerReader

        return PostgresLedgerReader(str(location), password=password)
    from framewire.edge_agents.ledger.store import LedgerReader

    return LedgerReader(sqlite_path(location))
