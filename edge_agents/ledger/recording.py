"""How a result becomes a ledger row, the same on every database the ledger runs on.

The statements are written once, with `?` placeholders, against `LedgerSql`: one open
connection of a backend (SQLite, PostgreSQL) that binds times and text the way its database
stores them and runs a write transaction under the ledger's write lock.

Re-captures: a new frame names the earliest frame it re-captures (`duplicate_of`): the same
bytes (sha256), or else a look-alike by perceptual hash, found in the in-memory index of the
whole ledger (`lookalike`). Results reach the ledger in any order, so frames captured later
that were ledgered first are pointed at the earliest capture too.

A batch of results and announcements is one transaction: what decides each item is read for
the whole batch in three lookups, and the common rows go in with one statement per table
(`_Batch`); the rest is written row by row, each seeing the rows before it.

The index follows the table by insertion order (SQLite's rowid, PostgreSQL's id): it holds
every row up to `LookalikeIndex.through`. Each write transaction first takes the rows other
writers committed since then (none, when this store is the only writer), so a frame is
compared with every committed row, whoever wrote it.

Trust: a result is inventory only when its station announced the frame (FrameAnnouncement:
the same frame id, station and sha256), which only that station's broker user may publish.
Any other result is kept as `suspect`, with the reason, and stays out of everything that
counts as inventory: the totals, and the re-capture links (a suspect row is in no index, is
never `duplicate_of` and names none). Announcements and results travel separate paths and
may arrive in either order: an announcement that matches a suspect row makes it trusted,
then linked like a new row; a trusted result for a frame held as suspect (a forgery that
came first) takes its place.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from framewire.edge_agents.ledger.lookalike import (
    CardKey,
    PhashIndex,
    Probe,
    Relatives,
    micros,
    phash_bits,
)
from framewire.schemas import FrameAnnouncement, InferenceResult, utc_now
from framewire.schemas.names import unescape_name

Row = tuple[Any, ...]

# the columns of a row, in the order `row_values` gives them
COLUMNS = (
    "frame_id",
    "station",
    "source_name",
    "source_path",
    "sha256",
    "status",
    "error",
    "width",
    "height",
    "format",
    "phash",
    "phash_int",
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
    "result",
    "suspect",
    "suspect_reason",
)
_ANNOUNCE = (
    "INSERT INTO announced (frame_id, station, sha256, announced_at) VALUES (?, ?, ?, ?)"
    " ON CONFLICT (frame_id) DO NOTHING"
)
_INSERT = f"INSERT INTO results ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"  # noqa: S608 - constants
# what the look-alike index reads of a row, after its insertion order
HASHED = "phash_int, captured_at, frame_id, card_status, set_name, card_number, card_name"


@dataclass(frozen=True)
class Recorded:
    inserted: bool
    ledgered_at: datetime
    status: str
    duplicate_of: str | None
    suspect: str | None = None  # why the row is not inventory; None: trusted
    # the station announced this frame, and not as the result has it: a forgery, or bytes
    # changed on the way; not acknowledged, so the station resends and the genuine result
    # takes the suspect row's place
    contradicted: bool = False
    replaced_suspect: str | None = None  # the suspect row this trusted result took over from


@dataclass(frozen=True)
class Announced:
    new: bool  # False: the frame was announced before (a resend's announcement)
    trusted: str | None = None  # a suspect row this made trusted: its frame id
    duplicate_of: str | None = None  # and the earlier frame it re-captures, if any
    conflict: str | None = None  # a stored result it does not match, and why


Written = Recorded | Announced


class BatchWrites:
    """What every ledger store derives from its `write_many`: one result, many results,
    many announcements, each in one transaction."""

    async def write_many(
        self, items: Sequence[InferenceResult | FrameAnnouncement]
    ) -> list[Written]:
        raise NotImplementedError

    async def record(self, result: InferenceResult) -> Recorded:
        """Store one result (committed when this returns); see `record_many`."""
        (recorded,) = await self.record_many([result])
        return recorded

    async def record_many(self, results: Sequence[InferenceResult]) -> list[Recorded]:
        """Store results in one transaction, committed to disk when this returns; one
        Recorded per result, in order. A frame id already in the ledger (or earlier in
        `results`) is not written again. On LedgerUnavailable nothing of `results` is
        stored."""
        written = await self.write_many(results)
        return [w for w in written if isinstance(w, Recorded)]

    async def announce_many(self, announcements: Sequence[FrameAnnouncement]) -> list[Announced]:
        """Store announcements in one transaction; see `write_many`."""
        written = await self.write_many(announcements)
        return [w for w in written if isinstance(w, Announced)]


class LedgerSql(Protocol):
    """One connection to a ledger database. Statements use `?` placeholders; values come back
    as tuples, times as the database gives them (`as_time` reads either form)."""

    def one(self, sql: str, params: Sequence[object] = ()) -> Row | None: ...

    def all(self, sql: str, params: Sequence[object] = ()) -> list[Row]: ...

    def many(self, sql: str, rows: Iterable[Sequence[object]]) -> None: ...

    def write(self) -> AbstractContextManager[None]:
        """A transaction holding the ledger's write lock: committed when the block ends,
        rolled back (and the error raised) when it raises."""
        ...

    # `SELECT <insertion order>, HASHED FROM results` for every row with a hash (`all`), or
    # for the rows after a given insertion order (`after`, one placeholder)
    hashes_all: str
    hashes_after: str
    newest: str  # `SELECT max(<insertion order>) FROM results`


def as_time(value: object) -> datetime:
    """A stored time: SQLite holds ISO 8601 text, PostgreSQL gives a datetime."""
    return value if isinstance(value, datetime) else datetime.fromisoformat(str(value))


class LookalikeIndex:
    """The perceptual hashes of every row up to insertion order `through`."""

    def __init__(self) -> None:
        self.hashes = PhashIndex()
        self.through = 0

    def load(self, db: LedgerSql) -> None:
        self.hashes = PhashIndex()
        self.through = 0
        self._take(db.all(db.hashes_all))
        self.through = max(self.through, _int(db.one(db.newest)))

    def refresh(self, db: LedgerSql) -> None:
        """Take the rows committed since the index was last in step (by another writer)."""
        self._take(db.all(db.hashes_after, (self.through,)))

    def _take(self, rows: list[Row]) -> None:
        if not rows:
            return
        hashed = [row for row in rows if row[1] is not None]
        additions = PhashIndex.of(
            [row[3] for row in hashed],
            [row[1] for row in hashed],
            [micros(as_time(row[2])) for row in hashed],
            [_stored_card(*row[4:]) for row in hashed],
        )
        if len(self.hashes) == 0:
            self.hashes = additions
        else:
            self.hashes.extend(additions)
        self.through = max(self.through, max(int(row[0]) for row in rows))


def _int(row: Row | None) -> int:
    return 0 if row is None or row[0] is None else int(row[0])


def _stored_card(
    status: str | None, set_name: str | None, number: str | None, name: str | None
) -> CardKey | None:
    if status != "identified" or set_name is None or number is None or name is None:
        return None
    return set_name, number, name


def card_key(r: InferenceResult) -> CardKey | None:
    card = r.card
    if card is None or card.set_name is None or card.card_number is None:
        return None
    return None if card.card_name is None else (card.set_name, card.card_number, card.card_name)


def probe(r: InferenceResult) -> Probe | None:
    """How `r` is compared with the ledger's look-alikes; None without a perceptual hash."""
    if r.phash is None:
        return None
    identified = r.card is not None and r.card.status == "identified"
    return Probe(
        bits=phash_bits(r.phash),
        captured_us=micros(r.captured_at),
        identified=identified,
        card=card_key(r) if identified else None,
    )


def _find_duplicate(db: LedgerSql, r: InferenceResult, looks: Relatives | None) -> str | None:
    """The earliest frame captured before this one that it re-captures: the same bytes, or
    the same identified card looking the same, or (unidentified) a near-identical picture."""
    row = db.one(
        "SELECT frame_id FROM results WHERE sha256 = ? AND frame_id != ? AND captured_at < ?"
        " AND suspect = 0 ORDER BY captured_at, frame_id LIMIT 1",
        (r.sha256, r.frame_id, r.captured_at),
    )
    if row is not None:
        return str(row[0])
    return None if looks is None else looks.earliest_before


def _adopt_later_captures(
    db: LedgerSql, r: InferenceResult, looks: Relatives | None, original: str
) -> None:
    """Results reach the ledger in any order: frames captured after `r` that re-capture it
    and were ledgered first now name the earliest capture, `original`."""
    earlier = db.one("SELECT captured_at FROM results WHERE frame_id = ?", (original,))
    cutoff = earlier[0] if earlier else r.captured_at
    later = [
        str(row[0])
        for row in db.all(
            "SELECT frame_id FROM results WHERE sha256 = ? AND captured_at > ? AND suspect = 0",
            (r.sha256, r.captured_at),
        )
    ]
    if looks is not None:
        later += looks.captured_after
    db.many(
        "UPDATE results SET duplicate_of = ? WHERE frame_id = ? AND frame_id != ?"
        " AND (duplicate_of IS NULL OR duplicate_of IN"
        " (SELECT frame_id FROM results WHERE captured_at > ?))",
        [(original, frame_id, original, cutoff) for frame_id in sorted(set(later))],
    )


def row_values(
    r: InferenceResult, duplicate_of: str | None, now: datetime, suspect: str | None = None
) -> tuple[object, ...]:
    """The row of `r`, column by column (`COLUMNS`), ledgered at `now`; `suspect`: why it is
    not inventory (None: trusted)."""
    image = r.image
    card = r.card
    return (
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
        None if r.phash is None else phash_bits(r.phash),
        card.status if card else None,
        card.card_name if card else None,
        card.set_name if card else None,
        card.card_number if card else None,
        card.rarity if card else None,
        card.market_price if card else None,
        card.confidence if card else None,
        duplicate_of,
        r.agent_id,
        r.captured_at,
        r.completed_at,
        now,
        r.model_dump_json(),
        0 if suspect is None else 1,
        suspect,
    )


def _doubt(db: LedgerSql, r: InferenceResult) -> tuple[str | None, bool]:
    """Why `r` is not inventory (None when its station announced it as it is), and whether
    a station announced the frame at all."""
    row = db.one("SELECT station, sha256 FROM announced WHERE frame_id = ?", (r.frame_id,))
    return _doubt_of(r, None if row is None else (str(row[0]), str(row[1])))


def _doubt_of(r: InferenceResult, announced: tuple[str, str] | None) -> tuple[str | None, bool]:
    """`_doubt`, given what was announced for the frame: (station, sha256), or None."""
    if announced is None:
        return f"no station announced frame {r.frame_id}", False
    station, sha256 = announced
    if station != r.station:
        return f"station {station} announced frame {r.frame_id}, not station {r.station}", True
    if sha256 != r.sha256:
        return (
            f"sha256 differs from what station {station} announced for frame {r.frame_id}",
            True,
        )
    return None, True


def _link(db: LedgerSql, hashes: PhashIndex, r: InferenceResult) -> str | None:
    """Place the trusted frame `r`, stored, among the re-captures: its `duplicate_of` set to
    the earlier frame it re-captures (returned; None when none), later captures of it
    pointed at the earliest one, and its hash in the index."""
    hashed = probe(r)
    looks = None if hashed is None else hashes.relatives(hashed)
    duplicate_of = _find_duplicate(db, r, looks)
    if duplicate_of is not None:
        db.many(
            "UPDATE results SET duplicate_of = ? WHERE frame_id = ?", [(duplicate_of, r.frame_id)]
        )
    _adopt_later_captures(db, r, looks, duplicate_of or r.frame_id)
    if hashed is not None:
        hashes.append(r.frame_id, hashed.bits, hashed.captured_us, hashed.card)
    return duplicate_of


def _record_one(db: LedgerSql, hashes: PhashIndex, r: InferenceResult, now: datetime) -> Recorded:
    known = db.one(
        "SELECT ledgered_at, status, duplicate_of, suspect_reason FROM results WHERE frame_id = ?",
        (r.frame_id,),
    )
    doubt, announced = _doubt(db, r)
    replaced = None
    contradicted = doubt is not None and announced
    if known is not None:
        if known[3] is None or doubt is not None:
            return Recorded(
                inserted=False,
                ledgered_at=as_time(known[0]),
                status=known[1],
                duplicate_of=known[2],
                suspect=known[3],
                contradicted=contradicted and known[3] is not None,
            )
        # a suspect row (a forgery that came first) gives way to the announced result
        replaced = str(known[3])
        db.many("DELETE FROM results WHERE frame_id = ?", [(r.frame_id,)])
    if doubt is not None:
        db.many(_INSERT, [row_values(r, None, now, doubt)])
        return Recorded(
            inserted=True,
            ledgered_at=now,
            status=r.status,
            duplicate_of=None,
            suspect=doubt,
            contradicted=contradicted,
        )
    db.many(_INSERT, [row_values(r, None, now)])
    duplicate_of = _link(db, hashes, r)
    return Recorded(
        inserted=True,
        ledgered_at=now,
        status=r.status,
        duplicate_of=duplicate_of,
        replaced_suspect=replaced,
    )


def _announce_one(
    db: LedgerSql, hashes: PhashIndex, a: FrameAnnouncement, now: datetime
) -> Announced:
    before = db.one("SELECT 1 FROM announced WHERE frame_id = ?", (a.frame_id,))
    if before is None:
        db.many(_ANNOUNCE, [(a.frame_id, a.station, a.sha256, now)])
    row = db.one("SELECT result FROM results WHERE frame_id = ? AND suspect = 1", (a.frame_id,))
    if row is None:
        return Announced(new=before is None)
    # its result came first (the two travel separate paths) and was held as suspect
    r = InferenceResult.model_validate_json(row[0])
    doubt, _ = _doubt(db, r)
    if doubt is not None:
        db.many("UPDATE results SET suspect_reason = ? WHERE frame_id = ?", [(doubt, r.frame_id)])
        return Announced(new=before is None, conflict=doubt)
    db.many(
        "UPDATE results SET suspect = 0, suspect_reason = NULL WHERE frame_id = ?",
        [(r.frame_id,)],
    )
    duplicate_of = _link(db, hashes, r)
    return Announced(new=before is None, trusted=r.frame_id, duplicate_of=duplicate_of)


# frame ids or hashes looked up in one statement, at most (both databases take far more)
_LOOKUP_CHUNK = 500


class _Batch:
    """The items of one write transaction, and what the ledger holds of their frames.

    What decides each item's fate (is its frame's row there, and suspect; what its station
    announced; does a trusted row hold the same bytes) is read for the whole batch in a few
    statements up front and kept in step as the batch is written. The common item, a new
    frame (a re-capture of an earlier one or not) that no trusted row holds the bytes of and
    no frame captured after it re-captures, is then decided without a statement of its own,
    and its row waits in `rows` to go with the others in one `many`; so does an
    announcement. Any other item (a resend, a suspect row to replace or trust, a frame that
    others are to be pointed at) is written as `_record_one` and
    `_announce_one` write it, row by row, once every waiting row is in the database, so it
    sees the ones before it exactly as if each had been written on its own.
    """

    def __init__(
        self,
        db: LedgerSql,
        hashes: PhashIndex,
        items: Sequence[InferenceResult | FrameAnnouncement],
        now: datetime,
    ) -> None:
        self.db, self.hashes, self.now = db, hashes, now
        frame_ids = sorted({item.frame_id for item in items})
        digests = sorted({item.sha256 for item in items if isinstance(item, InferenceResult)})
        # frame id -> whether its row is suspect, for the rows of this batch's frames
        self.suspect: dict[str, bool] = {
            str(row[0]): bool(row[1])
            for row in _lookup(
                db, "SELECT frame_id, suspect FROM results WHERE frame_id", frame_ids
            )
        }
        # frame id -> (station, sha256) its station announced, the first announcement's
        self.announced: dict[str, tuple[str, str]] = {
            str(row[0]): (str(row[1]), str(row[2]))
            for row in _lookup(
                db, "SELECT frame_id, station, sha256 FROM announced WHERE frame_id", frame_ids
            )
        }
        # the sha256 of trusted rows (a superset may only send an item the long way)
        self.trusted_bytes: set[str] = {
            str(row[0])
            for row in _lookup(
                db, "SELECT DISTINCT sha256 FROM results WHERE suspect = 0 AND sha256", digests
            )
        }
        self.rows: list[tuple[object, ...]] = []
        self.announcements: list[tuple[object, ...]] = []

    def flush(self) -> None:
        """Write the rows that wait."""
        if self.announcements:
            self.db.many(_ANNOUNCE, self.announcements)
            self.announcements.clear()
        if self.rows:
            self.db.many(_INSERT, self.rows)
            self.rows.clear()

    def doubt(self, r: InferenceResult) -> tuple[str | None, bool]:
        """`_doubt`, from what the batch knows."""
        return _doubt_of(r, self.announced.get(r.frame_id))

    def record(self, r: InferenceResult) -> Recorded:
        if r.frame_id not in self.suspect:
            doubt, announced = self.doubt(r)
            if doubt is not None:
                self.rows.append(row_values(r, None, self.now, doubt))
                self.suspect[r.frame_id] = True
                return Recorded(
                    inserted=True,
                    ledgered_at=self.now,
                    status=r.status,
                    duplicate_of=None,
                    suspect=doubt,
                    contradicted=announced,
                )
            hashed = probe(r)
            looks = None if hashed is None else self.hashes.relatives(hashed)
            if r.sha256 not in self.trusted_bytes and (looks is None or not looks.captured_after):
                # No trusted row holds its bytes and no look-alike was captured after it:
                # its row is all there is to write, `duplicate_of` and all (`_link` would
                # find the look-alike captured before it, and adopt nothing).
                duplicate_of = None if looks is None else looks.earliest_before
                self.rows.append(row_values(r, duplicate_of, self.now))
                if hashed is not None:
                    self.hashes.append(r.frame_id, hashed.bits, hashed.captured_us, hashed.card)
                self.suspect[r.frame_id] = False
                self.trusted_bytes.add(r.sha256)
                return Recorded(
                    inserted=True, ledgered_at=self.now, status=r.status, duplicate_of=duplicate_of
                )
        self.flush()
        recorded = _record_one(self.db, self.hashes, r, self.now)
        self.suspect[r.frame_id] = recorded.suspect is not None
        if recorded.suspect is None:
            self.trusted_bytes.add(r.sha256)
        return recorded

    def announce(self, a: FrameAnnouncement) -> Announced:
        new = a.frame_id not in self.announced
        if new:
            self.announced[a.frame_id] = (a.station, a.sha256)
            self.announcements.append((a.frame_id, a.station, a.sha256, self.now))
        if not self.suspect.get(a.frame_id, False):
            return Announced(new=new)
        # its result came first (the two travel separate paths) and was held as suspect
        self.flush()
        announced = _announce_one(self.db, self.hashes, a, self.now)
        if announced.trusted is not None:
            self.suspect[a.frame_id] = False
            self.trusted_bytes.add(a.sha256)
        return Announced(
            new=new,
            trusted=announced.trusted,
            duplicate_of=announced.duplicate_of,
            conflict=announced.conflict,
        )


def _lookup(db: LedgerSql, sql: str, keys: Sequence[str]) -> list[Row]:
    """`sql` (ending in the column to match) for every row whose column is one of `keys`."""
    rows: list[Row] = []
    for start in range(0, len(keys), _LOOKUP_CHUNK):
        chunk = keys[start : start + _LOOKUP_CHUNK]
        rows += db.all(f"{sql} IN ({', '.join('?' * len(chunk))})", chunk)
    return rows


def write_many(
    db: LedgerSql, index: LookalikeIndex, items: Sequence[InferenceResult | FrameAnnouncement]
) -> list[Written]:
    """Every result and announcement in one transaction (one commit), in order, each seeing
    the ones before it; on an error none of them is stored and the index forgets them too."""
    now = utc_now()
    size = len(index.hashes)
    try:
        with db.write():
            index.refresh(db)
            size = len(index.hashes)
            batch = _Batch(db, index.hashes, items, now)
            written: list[Written] = [
                batch.record(item) if isinstance(item, InferenceResult) else batch.announce(item)
                for item in items
            ]
            batch.flush()
            newest = _int(db.one(db.newest))
    except BaseException:
        # Rows the index took from other writers stay: they are committed. A COMMIT whose
        # outcome is unknown (a connection lost) is settled by the next refresh.
        index.hashes.truncate(size)
        raise
    index.through = max(index.through, newest)
    return written


def record_many(
    db: LedgerSql, index: LookalikeIndex, results: Sequence[InferenceResult]
) -> list[Recorded]:
    """`write_many` of results alone."""
    return [w for w in write_many(db, index, results) if isinstance(w, Recorded)]


def stored_result(db: LedgerSql, frame_id: str) -> InferenceResult | None:
    row = db.one("SELECT result FROM results WHERE frame_id = ?", (frame_id,))
    return InferenceResult.model_validate_json(row[0]) if row else None


def totals(db: LedgerSql) -> tuple[int, int]:
    """Rows in the ledger, and how many of them re-capture an earlier frame. Counting the
    re-captures reads the whole table: for the start and after a backup, not every status."""
    row = db.one("SELECT count(*), count(duplicate_of) FROM results WHERE suspect = 0")
    return (0, 0) if row is None else (int(row[0]), int(row[1]))


def suspects(db: LedgerSql) -> int:
    """Rows held as suspect: results no station announced as they are."""
    row = db.one("SELECT count(*) FROM results WHERE suspect = 1")
    return 0 if row is None else int(row[0])
