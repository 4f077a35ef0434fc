"""`framewire ledger migrate` as a real process into a real PostgreSQL server: killed with
-9 in the middle of a batch, then run again after the SQLite ledger gained rows, it ends
with every row once, exactly as the SQLite ledger holds it."""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg

from framewire.edge_agents.ledger.store import LedgerStore
from framewire.edge_agents.ledger.stores import open_ledger, open_reader
from framewire.schemas import InferenceResult
from tests.conftest import wait_until
from tests.postgres import PostgresServer, postgres_server  # noqa: F401 - the fixture `postgres`
from tests.test_ledger_store import Announcing, flip, result, unrelated

# a batch that stops at one row and waits: the process is killed while it waits
NAP = """
CREATE FUNCTION nap() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM pg_sleep(600); RETURN NEW; END $$;
CREATE TRIGGER nap BEFORE INSERT ON results FOR EACH ROW
  WHEN (NEW.frame_id = '{frame_id}') EXECUTE FUNCTION nap();
"""


def ledger(*args: str) -> subprocess.Popen[str]:
    """`framewire ledger ...` as a process of its own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRAMEWIRE_")}
    env.update(COLUMNS="200", PYTHONUNBUFFERED="1")
    return subprocess.Popen(
        [sys.executable, "-m", "framewire", "ledger", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def migrate(*args: str) -> subprocess.Popen[str]:
    return ledger("migrate", *args)


async def record(db: Path, *batches: list[InferenceResult]) -> None:
    async with Announcing(LedgerStore(db)) as store:
        for batch in batches:
            await store.record_many(batch)


async def record_nothing(url: str) -> None:
    async with open_ledger(url):
        pass


def rows(location: str | Path) -> list[dict[str, Any]]:
    with open_reader(location) as reader:
        return [dict(row) for row in reader.rows()]


def test_an_interrupted_migration_goes_on_and_doubles_nothing(
    tmp_path: Path, postgres: PostgresServer
) -> None:
    db, url = tmp_path / "ledger.sqlite3", postgres.new_database()
    rng = random.Random(7)
    phash = "a5a5a5a5a5a5a5a5"
    first = [result(1000, "a", phash), *unrelated(rng, 199, after=2000)]
    asyncio.run(record(db, first[:100], first[100:]))

    asyncio.run(record_nothing(url))  # the schema, so the test can add its trigger
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(NAP.format(frame_id=first[150].frame_id))
        killed = migrate(str(db), url, "--batch", "20")
        try:
            wait_until(
                lambda: (
                    admin.execute(
                        "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'PgSleep'"
                    ).fetchone()
                    == (1,)
                ),
                what="the migration to reach its row 151",
            )
            copied = admin.execute("SELECT count(*) FROM results").fetchone()
        finally:
            killed.kill()
            killed.communicate()
        # the server learns of a dead client only when it next writes to it
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE wait_event = 'PgSleep'"
        )
        admin.execute("DROP TRIGGER nap ON results")
        assert copied == (140,)  # seven batches committed, the eighth not
        assert admin.execute("SELECT count(*) FROM results").fetchone() == (140,)

    # meanwhile the SQLite ledger gains rows, one of them an earlier capture of a copied row
    earliest = result(0, "b", flip(phash, 2))
    asyncio.run(record(db, [earliest, *unrelated(rng, 30, after=5000)]))
    done = migrate(str(db), url, "--batch", "20")
    _, err = done.communicate(timeout=120)
    assert done.returncode == 0, err
    assert "copied 91 row(s)" in err
    assert "(0 there already, 1 re-capture link(s) moved)" in err
    source = rows(db)
    assert len(source) == 231
    assert next(r for r in source if r["frame_id"] == first[0].frame_id)["duplicate_of"] == (
        earliest.frame_id
    )
    assert rows(url) == source

    again = migrate(str(db), url)
    _, err = again.communicate(timeout=120)
    assert again.returncode == 0, err
    assert "copied 0 row(s)" in err
    assert rows(url) == source

    # the CLI reads either ledger the same: rows copied as they were, when ledgered included
    for fmt in ("json", "csv"):
        exports = [ledger("export", "--db", str(where), "-f", fmt) for where in (db, url)]
        (sqlite_out, _), (postgres_out, _) = (e.communicate(timeout=120) for e in exports)
        assert sqlite_out == postgres_out and sqlite_out.count(first[7].frame_id) == 1
    shown = ledger("show", first[0].frame_id, "--db", url)
    out, err = shown.communicate(timeout=120)
    assert shown.returncode == 0, err
    assert json.loads(out)["duplicate_of"] == earliest.frame_id


def test_a_wrong_destination_is_refused(tmp_path: Path) -> None:
    asyncio.run(record(tmp_path / "ledger.sqlite3"))
    wrong = migrate(str(tmp_path / "ledger.sqlite3"), "mysql://host/db")
    _, err = wrong.communicate(timeout=60)
    assert wrong.returncode == 2
    assert "not a postgresql:// URL" in err
