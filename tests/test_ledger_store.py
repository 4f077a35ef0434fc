"""The ledger store, on a real SQLite file and on a real PostgreSQL server (the same tests
for both): re-captures name the earliest capture, whatever order their results arrive in
(several inference boxes answer out of order), look-alikes are found across the whole
ledger, and a batch is stored whole or not at all."""

from __future__ import annotations

import dataclasses
import itertools
import random
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from framewire.edge_agents.ledger import lookalike, recording
from framewire.edge_agents.ledger import store as store_module
from framewire.edge_agents.ledger.lookalike import PhashIndex, Probe, phash_bits
from framewire.edge_agents.ledger.recording import LookalikeIndex, Recorded, Written
from framewire.edge_agents.ledger.store import SCHEMA_VERSION, LedgerStore
from framewire.edge_agents.ledger.stores import Ledger, open_ledger, open_reader
from framewire.schemas import (
    CardRecognition,
    FrameAnnouncement,
    InferenceResult,
    new_frame_id,
    utc_now,
)
from tests.postgres import PostgresServer, postgres_server  # noqa: F401 - the fixture `postgres`

T0 = utc_now()


def result(
    seconds: float, sha: str, phash: str | None = None, card: str | None = None
) -> InferenceResult:
    """A result captured `seconds` after T0; `card`: identified as that catalog card."""
    at = T0 + timedelta(seconds=seconds)
    recognised = (
        None
        if card is None
        else CardRecognition(
            status="identified", card_name=card, set_name="Base", card_number="1", confidence=1
        )
    )
    return InferenceResult(
        frame_id=new_frame_id(),
        station="s",
        agent_id="inference",
        sha256=sha * 64 if len(sha) == 1 else sha,
        source_name=f"{seconds}.jpg",
        captured_at=at,
        received_at=at,
        completed_at=at,
        status="ok",
        phash=phash,
        card=recognised,
    )


def flip(phash: str, bits: int, above: int = 0) -> str:
    """`phash` with `bits` bits inverted (from bit `above` up): at that distance from it."""
    return f"{int(phash, 16) ^ (((1 << bits) - 1) << above):016x}"


def unrelated(rng: random.Random, n: int, after: float) -> list[InferenceResult]:
    """Frames of other cards: random hashes, far (about 32 bits) from any given one."""
    return [
        result(after + i, f"{rng.getrandbits(256):064x}", f"{rng.getrandbits(64):016x}")
        for i in range(n)
    ]


def announcement(r: InferenceResult, **changes: Any) -> FrameAnnouncement:
    """What the station of `r` announced before it sent the frame (with `changes`)."""
    fields: dict[str, Any] = {
        "frame_id": r.frame_id,
        "station": r.station,
        "seq": 0,
        "sha256": r.sha256,
        "size": 1,
        "captured_at": r.captured_at,
        "source_name": r.source_name,
    }
    return FrameAnnouncement.model_validate({**fields, **changes})


class Announcing:
    """A ledger whose every result its station announced first, as capture stations do: the
    inventory, for the tests of re-captures (the forwarded rest is the ledger's own)."""

    def __init__(self, store: Ledger) -> None:
        self.store = store

    async def __aenter__(self) -> Announcing:
        await self.store.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.store.__aexit__(*exc)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    async def record(self, r: InferenceResult) -> Recorded:
        (recorded,) = await self.record_many([r])
        return recorded

    async def record_many(self, results: Sequence[InferenceResult]) -> list[Recorded]:
        written = await self.store.write_many([*map(announcement, results), *results])
        return [w for w in written if isinstance(w, Recorded)]


@dataclass
class Backend:
    """Where a test's ledger is: a SQLite file or a PostgreSQL database of its own."""

    name: str
    location: str | Path

    def open(self) -> Announcing:
        return Announcing(open_ledger(self.location))

    def ledger(self) -> Ledger:
        """The ledger itself: results count only when announced."""
        return open_ledger(self.location)

    def duplicates(self) -> dict[str, str | None]:
        with open_reader(self.location) as reader:
            return {row["frame_id"]: row["duplicate_of"] for row in reader.rows()}


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "sqlite":
        return Backend("sqlite", tmp_path / "ledger.sqlite3")
    server: PostgresServer = request.getfixturevalue("postgres")
    return Backend("postgresql", server.new_database())


def duplicates(db: Path) -> dict[str, str | None]:
    return Backend("sqlite", db).duplicates()


@pytest.mark.parametrize("order", list(itertools.permutations(range(3))))
async def test_duplicate_of_names_the_earliest_capture_in_any_arrival_order(
    backend: Backend, order: tuple[int, ...]
) -> None:
    frames = [result(0, "a"), result(5, "a"), result(9, "a")]
    async with backend.open() as store:
        for i in order:
            await store.record(frames[i])
        assert all([await store.result(f.frame_id) for f in frames])
    rows = backend.duplicates()
    first, second, third = (f.frame_id for f in frames)
    assert rows == {first: None, second: first, third: first}


@pytest.mark.parametrize("order", list(itertools.permutations(range(3))))
async def test_in_one_batch_re_captures_name_the_earliest_capture_in_any_order(
    backend: Backend, order: tuple[int, ...]
) -> None:
    phash = "0123456789abcdef"
    frames = [result(0, "a", phash), result(5, "b", flip(phash, 2)), result(9, "c", phash)]
    async with backend.open() as store:
        recorded = await store.record_many([frames[i] for i in order])
    assert all(r.inserted for r in recorded)
    rows = backend.duplicates()
    first, second, third = (f.frame_id for f in frames)
    assert rows == {first: None, second: first, third: first}


async def test_a_look_alike_ledgered_first_is_pointed_at_the_earlier_capture(
    backend: Backend,
) -> None:
    early, late = result(0, "b", phash="ffff0000ffff0000"), result(3, "c", "ffff0000ffff0001")
    async with backend.open() as store:
        await store.record(late)
        await store.record(early)
    rows = backend.duplicates()
    assert rows == {early.frame_id: None, late.frame_id: early.frame_id}


async def test_a_look_alike_of_a_frame_thousands_of_rows_back_is_found(backend: Backend) -> None:
    phash = "8f0e4d3c2b1a0998"
    early = result(0, "a", phash)
    later = unrelated(random.Random(1), 6000, after=10)
    again = result(10_000, "b", flip(phash, 5))  # a re-capture, 6,000 frames later
    async with backend.open() as store:
        await store.record(early)
        for i in range(0, len(later), 1000):
            await store.record_many(later[i : i + 1000])
        recorded = await store.record(again)
        assert await store.totals() == (6002, 1)
    assert recorded.duplicate_of == early.frame_id
    assert backend.duplicates()[again.frame_id] == early.frame_id


async def test_look_alikes_are_found_again_after_the_ledger_is_reopened(backend: Backend) -> None:
    """Identified cards match loosely and only the same card; unidentified frames strictly."""
    phash = "00ff00ff00ff00ff"
    pikachu = result(0, "a", phash, card="Pikachu")
    async with backend.open() as store:
        await store.record(pikachu)
    same_card = result(1, "b", flip(phash, 20), card="Pikachu")
    other_card = result(2, "c", phash, card="Raichu")
    close = result(3, "d", flip(phash, 6))
    not_close = result(4, "e", flip(phash, 7, above=32))
    async with backend.open() as store:
        found = [await store.record(r) for r in (same_card, other_card, close, not_close)]
    assert [r.duplicate_of for r in found] == [pikachu.frame_id, None, pikachu.frame_id, None]


async def test_a_second_writer_s_rows_are_compared_too(backend: Backend) -> None:
    """Two stores on one ledger (two agents, or an agent and `ledger migrate`): each write
    sees what the other committed."""
    phash = "00000000ffffffff"
    early, late, earliest = result(10, "a", phash), result(20, "b", phash), result(0, "c", phash)
    async with backend.open() as one, backend.open() as two:
        await one.record(early)
        assert (await two.record(late)).duplicate_of == early.frame_id
        assert (await one.record(earliest)).duplicate_of is None
        assert await two.totals() == (3, 2)
    assert backend.duplicates() == {
        earliest.frame_id: None,
        early.frame_id: earliest.frame_id,
        late.frame_id: earliest.frame_id,
    }


async def test_a_version_2_ledger_gains_integer_hashes_and_keeps_its_look_alikes(
    tmp_path: Path,
) -> None:
    db = tmp_path / "ledger.sqlite3"
    old = result(0, "a", "ffff0000ffff0000")  # the top bit set: a negative 64-bit integer
    async with Announcing(LedgerStore(db)) as store:
        await store.record(old)
    conn = sqlite3.connect(db)
    conn.execute("DROP INDEX results_trusted_phash")
    conn.execute("ALTER TABLE results DROP COLUMN phash_int")
    conn.execute("PRAGMA user_version = 2")
    conn.commit()
    conn.close()
    again = result(5, "b", "ffff0000ffff0003")
    async with Announcing(LedgerStore(db)) as store:
        recorded = await store.record(again)
    assert recorded.duplicate_of == old.frame_id
    conn = sqlite3.connect(db)
    stored = dict(conn.execute("SELECT phash, phash_int FROM results").fetchall())
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    conn.close()
    assert stored == {h: int(h, 16) - (1 << 64) for h in ("ffff0000ffff0000", "ffff0000ffff0003")}
    assert version == SCHEMA_VERSION


async def test_record_many_answers_each_result_in_order(backend: Backend) -> None:
    phash = "1234123412341234"
    known = result(0, "a", phash)
    fresh = result(1, "b")
    recapture = result(2, "c", flip(phash, 1))
    async with backend.open() as store:
        first = await store.record(known)
        answers = await store.record_many([fresh, known, recapture, fresh])
        assert await store.record_many([]) == []
    assert first.inserted and first.duplicate_of is None
    assert [a.inserted for a in answers] == [True, False, True, False]
    assert [a.duplicate_of for a in answers] == [None, None, known.frame_id, None]
    assert answers[1].ledgered_at == first.ledgered_at  # the row as it was stored
    assert answers[3].ledgered_at == answers[0].ledgered_at
    assert len(backend.duplicates()) == 3


async def test_a_batch_that_does_not_fit_on_the_disk_leaves_nothing_behind(
    tmp_path: Path,
) -> None:
    db = tmp_path / "ledger.sqlite3"
    rng = random.Random(2)
    batch = unrelated(rng, 60, after=10) + [
        result(100 + i, f"{rng.getrandbits(256):064x}", f"{rng.getrandbits(64):016x}", f"Mew {i}")
        for i in range(10)
    ]
    async with Announcing(LedgerStore(db)) as store:
        await store.record(result(0, "a"))
        # SQLite's max_page_count on the store's own connection stands in for a full disk
        pages = await store._db.run(lambda c: c.execute("PRAGMA page_count").fetchone()[0])
        await store._db.run(lambda c: c.execute(f"PRAGMA max_page_count = {pages}"))
        with pytest.raises(sqlite3.OperationalError, match="full"):
            await store.record_many(batch)
        assert await store.totals() == (1, 0)
        # the failed batch is forgotten by the look-alike index too
        await store._db.run(lambda c: c.execute("PRAGMA max_page_count = 1073741823"))
        unidentified = result(50, "b", flip(batch[0].phash or "", 1))
        same_card = result(500, "c", batch[-1].phash, card="Mew 9")
        assert (await store.record(unidentified)).duplicate_of is None
        assert (await store.record(same_card)).duplicate_of is None
        answers = await store.record_many(batch)
    assert all(a.inserted for a in answers)
    rows = duplicates(db)
    assert len(rows) == 73
    assert rows[unidentified.frame_id] == batch[0].frame_id  # adopted: captured earlier
    assert rows[same_card.frame_id] == batch[-1].frame_id


def test_the_byte_table_popcount_agrees_with_numpy() -> None:
    rng = random.Random(3)
    values = [0, 1, (1 << 64) - 1, 1 << 63] + [rng.getrandbits(64) for _ in range(1000)]
    array = np.array(values, dtype=np.uint64)
    assert lookalike.popcount_by_bytes(array).tolist() == [v.bit_count() for v in values]
    assert lookalike.popcount(array).tolist() == [v.bit_count() for v in values]


@pytest.mark.parametrize("numpy_popcount", [True, False])
def test_the_index_finds_the_same_relatives_with_either_popcount(
    monkeypatch: pytest.MonkeyPatch, numpy_popcount: bool
) -> None:
    monkeypatch.setattr(lookalike, "NUMPY_POPCOUNT", numpy_popcount)
    rng = random.Random(4)
    index = PhashIndex(capacity=4)  # grows as rows arrive
    base = rng.getrandbits(64)
    for i in range(3000):
        bits = base ^ (1 << rng.randrange(64)) if i % 100 == 0 else rng.getrandbits(64)
        index.append(f"f{i:05d}", phash_bits(f"{bits:016x}"), i, None)
    found = index.relatives(Probe(bits=base, captured_us=1500, identified=False, card=None))
    assert found.earliest_before == "f00000"
    assert found.captured_after == [f"f{i:05d}" for i in range(1600, 3000, 100)]
    index.truncate(2000)
    found = index.relatives(Probe(bits=base, captured_us=1500, identified=False, card=None))
    assert found.captured_after == [f"f{i:05d}" for i in range(1600, 2000, 100)]


async def test_sqlite_and_postgresql_keep_the_same_rows(
    tmp_path: Path, postgres: PostgresServer
) -> None:
    rng = random.Random(5)
    phash = "0f0f0f0f0f0f0f0f"
    frames = [
        *unrelated(rng, 20, after=100),
        result(0, "a", phash, card="Mew"),
        result(50, "b", flip(phash, 9), card="Mew"),
        result(60, "c", flip(phash, 3)),
        result(70, "a"),
        result(3.25, "d", "ffffffffffffffff"),
    ]
    rng.shuffle(frames)
    backends = [Backend("sqlite", tmp_path / "l.sqlite3"), Backend("pg", postgres.new_database())]
    answers = []
    for b in backends:
        async with b.open() as store:
            answers.append(
                await store.record_many(frames[:10]) + await store.record_many(frames[10:])
            )
    # the same answers, and the same rows (but for when each was ledgered)
    assert [(a.inserted, a.duplicate_of) for a in answers[0]] == [
        (a.inserted, a.duplicate_of) for a in answers[1]
    ]
    stored = []
    for b in backends:
        with open_reader(b.location) as reader:
            rows = [{**row, "ledgered_at": None} for row in map(dict, reader.rows())]
            full = reader.get(frames[0].frame_id)
            assert reader.count() == len(frames)
            assert reader.frame_ids() == sorted(f.frame_id for f in frames)
        assert full is not None
        stored.append((rows, {**full, "ledgered_at": None}))
    assert stored[0] == stored[1]


def test_a_ledger_is_chosen_by_its_url(tmp_path: Path) -> None:
    from framewire.edge_agents.ledger.settings import LedgerSettings
    from framewire.edge_agents.ledger.stores import LedgerError, redact, sqlite_path

    assert sqlite_path("sqlite:///data/ledger.sqlite3") == Path("data/ledger.sqlite3")
    assert sqlite_path("sqlite:////var/lib/ledger.sqlite3") == Path("/var/lib/ledger.sqlite3")
    assert sqlite_path("ledger.sqlite3") == Path("ledger.sqlite3")
    for wrong in ("sqlite://host/ledger", "mysql://h/db"):
        with pytest.raises(LedgerError):
            sqlite_path(wrong)
    assert isinstance(open_ledger(tmp_path / "l.sqlite3"), LedgerStore)
    assert redact("postgresql://u:secret@h:5433/db") == "postgresql://u:***@h:5433/db"
    settings = LedgerSettings(data_dir=tmp_path, database_url="sqlite:////srv/l.sqlite3")
    assert settings.ledger_url == settings.ledger_path == Path("/srv/l.sqlite3")
    assert LedgerSettings(data_dir=tmp_path).ledger_url == tmp_path / "ledger.sqlite3"
    with pytest.raises(ValueError, match="database_password_file"):
        LedgerSettings(database_url="postgresql://u:secret@h/db")


# --- trust: only what a station announced is inventory -------------------------------------
async def test_a_result_no_station_announced_is_suspect_and_never_inventory(
    backend: Backend,
) -> None:
    phash = "0123456789abcdef"
    forged = result(0, "a", phash, card="Charizard")
    genuine = result(5, "a", phash, card="Charizard")  # the same bytes, captured later
    async with backend.ledger() as store:
        recorded = await store.record(forged)
        assert recorded.inserted
        assert recorded.suspect == f"no station announced frame {forged.frame_id}"
        assert await store.totals() == (0, 0)
        assert await store.suspects() == 1
        # the genuine frame is no re-capture of the forged one, which came "earlier"
        (announced,) = await store.announce_many([announcement(genuine)])
        assert announced.new and announced.trusted is None
        trusted = await store.record(genuine)
        assert trusted.suspect is None and trusted.duplicate_of is None
        assert await store.totals() == (1, 0)
        # a resend of the forgery is answered as stored, still suspect
        again = await store.record(forged)
        assert not again.inserted and again.suspect == recorded.suspect
    assert backend.duplicates() == {forged.frame_id: None, genuine.frame_id: None}
    with open_reader(backend.location) as reader:
        shown = reader.get(forged.frame_id)
        flags = {row["frame_id"]: (row["suspect"], row["suspect_reason"]) for row in reader.rows()}
    assert shown is not None and shown["suspect"] is True
    assert shown["suspect_reason"] == recorded.suspect
    assert flags == {forged.frame_id: (1, recorded.suspect), genuine.frame_id: (0, None)}


async def test_a_result_whose_sha256_differs_from_the_announcement_is_suspect(
    backend: Backend,
) -> None:
    frame = result(0, "a")
    forged = frame.model_copy(update={"sha256": "b" * 64})
    async with backend.ledger() as store:
        await store.announce_many([announcement(frame)])
        recorded = await store.record(forged)
        assert recorded.suspect == (
            f"sha256 differs from what station s announced for frame {frame.frame_id}"
        )
        other_station = frame.model_copy(update={"station": "t"})
        assert (await store.record(other_station)).inserted is False  # the row is taken
        assert await store.totals() == (0, 0)
        # the genuine result takes the forgery's place, as inventory
        genuine = await store.record(frame)
        assert genuine.inserted and genuine.suspect is None
        assert genuine.replaced_suspect == recorded.suspect
        assert await store.totals() == (1, 0)
        assert await store.suspects() == 0
        stored = await store.result(frame.frame_id)
    assert stored is not None and stored.sha256 == frame.sha256


async def test_a_result_that_arrives_before_its_announcement_ends_trusted(
    backend: Backend,
) -> None:
    """The announcement goes straight to the ledger, the frame through inference: either
    may arrive first."""
    phash = "00ff00ff00ff00ff"
    early = result(0, "a", phash)
    late = result(9, "b", flip(phash, 2))  # a look-alike re-capture of `early`
    async with backend.ledger() as store:
        await store.write_many([announcement(late), late])  # in order: trusted
        first = await store.record(early)  # its announcement is still on its way
        assert first.suspect is not None and await store.totals() == (1, 0)
        assert backend.duplicates()[late.frame_id] is None  # nothing links to a suspect row
        (announced,) = await store.announce_many([announcement(early)])
        assert announced.trusted == early.frame_id and announced.duplicate_of is None
        assert await store.totals() == (2, 1)
        assert await store.suspects() == 0
        # a resend's announcement, and a resend's result, change nothing
        (again,) = await store.announce_many([announcement(early)])
        assert not again.new and again.trusted is None
        assert not (await store.record(early)).inserted
    assert backend.duplicates() == {early.frame_id: None, late.frame_id: early.frame_id}


async def test_an_announcement_that_does_not_match_leaves_the_row_suspect(
    backend: Backend,
) -> None:
    frame = result(0, "a")
    async with backend.ledger() as store:
        await store.record(frame)
        (announced,) = await store.announce_many([announcement(frame, sha256="c" * 64)])
        assert announced.trusted is None
        reason = f"sha256 differs from what station s announced for frame {frame.frame_id}"
        assert announced.conflict == reason
        assert await store.totals() == (0, 0)
    with open_reader(backend.location) as reader:
        shown = reader.get(frame.frame_id)
    assert shown is not None and shown["suspect"] and shown["suspect_reason"] == reason


async def test_rows_of_a_version_3_ledger_stay_inventory(tmp_path: Path) -> None:
    db = tmp_path / "ledger.sqlite3"
    old = result(0, "a", "ffff0000ffff0000")
    async with Announcing(LedgerStore(db)) as store:
        await store.record(old)
    conn = sqlite3.connect(db)
    conn.execute("DROP INDEX results_trusted_phash")
    conn.execute("DROP TABLE announced")
    conn.execute("ALTER TABLE results DROP COLUMN suspect")
    conn.execute("ALTER TABLE results DROP COLUMN suspect_reason")
    conn.execute(
        "CREATE INDEX results_phash ON results (frame_id, phash_int, captured_at, card_status,"
        " set_name, card_number, card_name) WHERE phash_int IS NOT NULL"
    )
    conn.execute("PRAGMA user_version = 3")
    conn.commit()
    conn.close()
    again = result(5, "b", "ffff0000ffff0003")
    async with Announcing(LedgerStore(db)) as store:
        assert await store.totals() == (1, 0)
        assert (await store.record(again)).duplicate_of == old.frame_id
    with open_reader(db) as reader:
        assert {row["frame_id"]: row["suspect"] for row in reader.rows()} == {
            old.frame_id: 0,
            again.frame_id: 0,
        }


async def test_rows_of_a_version_1_postgresql_ledger_stay_inventory(
    postgres: PostgresServer,
) -> None:
    import psycopg

    url = postgres.new_database()
    old = result(0, "a", "ffff0000ffff0000")
    async with Announcing(open_ledger(url)) as store:
        await store.record(old)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP TABLE announced")
        conn.execute("ALTER TABLE results DROP COLUMN suspect, DROP COLUMN suspect_reason")
        conn.execute("UPDATE ledger_schema SET version = 1")
    again = result(5, "b", "ffff0000ffff0003")
    async with Announcing(open_ledger(url)) as store:
        assert await store.totals() == (1, 0)
        assert (await store.record(again)).duplicate_of == old.frame_id
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT max(version) FROM ledger_schema").fetchone() == (2,)


# --- a batch answers and stores what writing its items one by one does ----------------------
def _item_by_item(
    conn: sqlite3.Connection,
    index: LookalikeIndex,
    items: Sequence[InferenceResult | FrameAnnouncement],
) -> list[Written]:
    """The batch's items in one transaction, each with its own statements (`_record_one`,
    `_announce_one`), as the ledger wrote them before a batch was read and written whole."""
    db = store_module._Sql(conn)
    now = utc_now()
    with db.write():
        index.refresh(db)
        written: list[Written] = [
            recording._record_one(db, index.hashes, item, now)
            if isinstance(item, InferenceResult)
            else recording._announce_one(db, index.hashes, item, now)
            for item in items
        ]
        newest = db.one(db.newest)
    index.through = max(index.through, int(newest[0]) if newest and newest[0] else 0)
    return written


def mixed_traffic(rng: random.Random) -> list[InferenceResult | FrameAnnouncement]:
    """What a busy ledger receives, in an order of its own: re-captures by bytes and by
    look, identified cards, frames captured at the same instant, announcements missing,
    late, doubled or not matching, resent results, and forgeries that come first."""
    digests = [f"{rng.getrandbits(256):064x}" for _ in range(6)]
    looks = [f"{rng.getrandbits(64):016x}" for _ in range(4)]
    items: list[InferenceResult | FrameAnnouncement] = []
    for _ in range(80):
        phash = None if rng.random() < 0.1 else flip(rng.choice(looks), rng.randrange(9))
        sha = rng.choice(digests) if rng.random() < 0.3 else f"{rng.getrandbits(256):064x}"
        card = rng.choice(["Mew", "Eevee"]) if rng.random() < 0.3 else None
        r = result(rng.randrange(40) / 2, sha, phash, card)
        odds = rng.random()
        if odds < 0.65:
            items.append(announcement(r))
        elif odds < 0.75:
            items.append(announcement(r, sha256="e" * 64))
        elif odds < 0.8:
            items.append(announcement(r, station="t"))
        if rng.random() < 0.1:
            items.append(announcement(r))
        if rng.random() < 0.2:
            items.append(r.model_copy(update={"sha256": "f" * 64}))  # a forgery
        items.append(r)
        if rng.random() < 0.2:
            items.append(r)  # a resend
    # results and announcements travel separate paths: either may come first
    for i in range(len(items) - 1, 0, -1):
        if rng.random() < 0.5:
            j = rng.randrange(max(0, i - 6), i + 1)
            items[i], items[j] = items[j], items[i]
    return items


def _chunks(
    rng: random.Random, items: list[InferenceResult | FrameAnnouncement]
) -> list[list[InferenceResult | FrameAnnouncement]]:
    out = []
    while items:
        size = rng.choice([1, 2, 5, 17, 64])
        out.append(items[:size])
        items = items[size:]
    return out


def _answer(w: Written) -> Written:
    return dataclasses.replace(w, ledgered_at=T0) if isinstance(w, Recorded) else w


def _stored(location: str | Path) -> list[dict[str, Any]]:
    with open_reader(location) as reader:
        return [{**row, "ledgered_at": None} for row in map(dict, reader.rows())]


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
async def test_a_batch_answers_and_stores_what_writing_it_item_by_item_does(
    backend: Backend, tmp_path: Path, seed: int
) -> None:
    rng = random.Random(seed)
    chunks = _chunks(rng, mixed_traffic(rng))
    reference = tmp_path / "item-by-item.sqlite3"
    expected: list[Written] = []
    async with LedgerStore(reference) as store:
        for chunk in chunks:
            expected += await store._db.run(_item_by_item, store._index, chunk)
    got: list[Written] = []
    async with backend.ledger() as ledger:
        for chunk in chunks:
            got += await ledger.write_many(chunk)
    # the traffic takes every path there is
    seen = set()
    for w in expected:
        if isinstance(w, Recorded):
            seen |= {
                name
                for name, taken in [
                    ("inserted", w.inserted and w.suspect is None),
                    ("suspect", w.inserted and w.suspect is not None),
                    ("resent", not w.inserted),
                    ("re-capture", w.duplicate_of is not None),
                    ("contradicted", w.contradicted),
                    ("replaced", w.replaced_suspect is not None),
                ]
                if taken
            }
        else:
            seen |= {
                name
                for name, taken in [
                    ("new", w.new),
                    ("again", not w.new),
                    ("trusted", w.trusted is not None),
                    ("conflict", w.conflict is not None),
                ]
                if taken
            }
    assert len(seen) == 10, " ".join(sorted(seen))
    assert [_answer(w) for w in got] == [_answer(w) for w in expected]
    assert _stored(backend.location) == _stored(reference)
