"""What only the PostgreSQL ledger has to show, on a real server: a full disk on the server
fails a batch whole, a lost connection is opened again, text with NUL is stored, and
backups are left to PostgreSQL."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from framewire.edge_agents.ledger.postgres import WRITE_LOCK
from framewire.edge_agents.ledger.recording import COLUMNS, row_values
from framewire.edge_agents.ledger.stores import (
    LedgerError,
    LedgerUnavailable,
    open_ledger,
    open_reader,
)
from tests.postgres import PostgresServer, postgres_server  # noqa: F401 - the fixture `postgres`
from tests.test_ledger_store import Announcing, flip, result, unrelated

# The server's "no space left on device", raised by a trigger on one row of a batch
FULL_DISK = """
CREATE FUNCTION full_disk() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'could not extend file: No space left on device' USING ERRCODE = 'disk_full';
END $$;
CREATE TRIGGER full_disk BEFORE INSERT ON results FOR EACH ROW
  WHEN (NEW.source_name = '130.jpg') EXECUTE FUNCTION full_disk();
"""


async def test_a_batch_the_server_cannot_store_leaves_nothing_behind(
    postgres: PostgresServer,
) -> None:
    url = postgres.new_database()
    rng = random.Random(6)
    batch = unrelated(rng, 60, after=100)  # the 31st is 130.jpg
    async with Announcing(open_ledger(url)) as store:
        await store.record(result(0, "a"))
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute(FULL_DISK)
        with pytest.raises(LedgerUnavailable, match="No space left") as failed:
            await store.record_many(batch)
        assert failed.value.location == url
        assert await store.totals() == (1, 0)
        # the index forgot the batch: a look-alike of one of its frames is no re-capture
        look_alike = result(50, "b", flip(batch[0].phash or "", 2))
        assert (await store.record(look_alike)).duplicate_of is None
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute("DROP TRIGGER full_disk ON results")
        answers = await store.record_many(batch)
        assert all(a.inserted for a in answers)
        assert await store.totals() == (62, 1)


async def test_a_lost_connection_is_opened_again(postgres: PostgresServer) -> None:
    url = postgres.new_database()
    first, second = result(0, "a"), result(1, "b")
    async with Announcing(open_ledger(url)) as store:
        await store.record(first)
        with psycopg.connect(url, autocommit=True) as admin:
            ended = admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND application_name = 'framewire-ledger'"
            ).fetchall()
        assert ended == [(True,)]
        assert (await store.record(second)).inserted
        assert await store.totals() == (2, 0)


async def test_a_server_that_is_not_there_makes_the_ledger_unavailable(
    postgres: PostgresServer,
) -> None:
    url = f"postgresql://framewire@127.0.0.1:{postgres.port}/no_such_database"
    with pytest.raises(LedgerUnavailable, match="no_such_database"):
        async with open_ledger(url):
            pass
    with pytest.raises(LedgerUnavailable):
        open_reader(url)


async def test_text_with_nul_is_stored_and_the_result_kept_exactly(
    postgres: PostgresServer,
) -> None:
    url = postgres.new_database()
    broken = result(0, "a").model_copy(update={"status": "error", "error": "bad\x00byte"})
    async with open_ledger(url) as store:
        assert (await store.record(broken)).inserted
        assert await store.result(broken.frame_id) == broken
    with open_reader(url) as reader:
        (row,) = list(reader.rows())
        shown = reader.get(broken.frame_id)
    assert row["error"] == "bad\ufffdbyte"
    assert shown is not None and shown["error"] == "bad\x00byte"


async def test_backups_are_postgresql_s_own(postgres: PostgresServer, tmp_path: Path) -> None:
    url = postgres.new_database()
    async with open_ledger(url) as store:
        assert store.backs_up_itself
        with pytest.raises(LedgerError, match="pg_dump"):
            await store.backup(tmp_path, keep=1)


def test_a_database_without_a_ledger_is_said_so(postgres: PostgresServer) -> None:
    with pytest.raises(LedgerError, match="no ledger at"):
        open_reader(postgres.new_database())


async def test_a_write_that_waited_for_the_lock_sees_what_the_holder_committed(
    postgres: PostgresServer,
) -> None:
    """Even where the database's default isolation would hide it (a snapshot taken before
    the lock was granted)."""
    url = postgres.new_database()
    early, late = result(0, "a", "1111222233334444"), result(5, "b", "1111222233334445")
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(
            "DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET default_transaction_isolation"
            " = ''repeatable read''', current_database()); END $$"
        )
    async with Announcing(open_ledger(url)) as store:
        with psycopg.connect(url) as holder:  # a transaction, holding the write lock
            holder.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK,))
            waiting = asyncio.create_task(store.record(late))
            with psycopg.connect(url, autocommit=True) as admin:
                await until(
                    lambda: (
                        admin.execute(
                            "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'advisory'"
                        ).fetchone()
                        == (1,)
                    )
                )
            values = dict(zip(COLUMNS, row_values(early, None, early.captured_at), strict=True))
            holder.execute(
                f"INSERT INTO results ({', '.join(values)})"
                f" VALUES ({', '.join(['%s'] * len(values))})",
                list(values.values()),
            )
            holder.commit()
            recorded = await waiting
    assert recorded.duplicate_of == early.frame_id


async def until(predicate: Callable[[], bool]) -> None:
    for _ in range(600):
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the store never waited for the write lock")
