"""What the ledger costs per result: group commit, and look-alike detection by ledger size.

    python benchmarks/ledger.py [--rows 2000] [--batches 1,8,64] [--repeat 1]
        [--postgres URL] [--sizes 1000,10000,100000] [--probes 200]

- inserts per second: `rows` results into a new SQLite ledger (synchronous=FULL, so one
  fsync per transaction), `batch` results and their announcements per `write_many`
  transaction, and the CPU time per result (every thread of this process); with
  `--repeat`, the median of that many runs; with `--postgres`, into a new database on that
  server (created and dropped by each run) instead;
- look-alike cost: a ledger pre-filled with N rows (directly in SQL: random perceptual
  hashes, a third of them identified cards), then `probes` unidentified results, one
  `record` each, as the ledger agent stores a result. It reports the CPU time per insert
  (every thread of this process) and its ratio to the smallest ledger: a flat cost reads
  about 1.0 at every size.

Figures vary with the machine and its disk; read the ratios, not the ms.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import sqlite3
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from datetime import timedelta
from pathlib import Path

from framewire.edge_agents.ledger.lookalike import PhashIndex, Probe, phash_bits
from framewire.edge_agents.ledger.store import LedgerStore
from framewire.edge_agents.ledger.stores import open_ledger
from framewire.schemas import (
    CardRecognition,
    FrameAnnouncement,
    InferenceResult,
    new_frame_id,
    utc_now,
)
from framewire.schemas.names import escape_name

T0 = utc_now() - timedelta(days=365)
CARDS = 500  # catalog cards the identified pre-fill rows are spread over


def _result(rng: random.Random, seconds: float, *, identified: bool) -> InferenceResult:
    at = T0 + timedelta(seconds=seconds)
    number = rng.randrange(CARDS)
    card = (
        CardRecognition(
            status="identified",
            card_name=f"Card {number}",
            set_name="Bench",
            card_number=str(number),
            confidence=0.9,
        )
        if identified
        else CardRecognition(status="unknown", confidence=0.0)
    )
    return InferenceResult(
        frame_id=new_frame_id(),
        station="bench",
        agent_id="bench-inference",
        sha256=f"{rng.getrandbits(256):064x}",
        source_name=f"frame-{seconds:.3f}.jpg",
        captured_at=at,
        received_at=at,
        completed_at=at,
        status="ok",
        phash=f"{rng.getrandbits(64):016x}",
        card=card,
    )


def _announcement(r: InferenceResult) -> FrameAnnouncement:
    """What the result's station announced before it sent the frame (so the result is
    inventory, as in the field, not a suspect row)."""
    return FrameAnnouncement(
        frame_id=r.frame_id,
        station=r.station,
        seq=0,
        sha256=r.sha256,
        size=1,
        captured_at=r.captured_at,
        source_name=escape_name(r.source_name),
    )


async def _insert_batches(
    location: str | Path, results: Sequence[InferenceResult], batch: int
) -> tuple[float, float]:
    """Each batch: its results' announcements, which reach the ledger first, then them.
    The messages are made before the clock starts (the ledger agent receives them decoded).
    (wall seconds, CPU seconds of every thread of this process)."""
    batches: list[list[InferenceResult | FrameAnnouncement]] = [
        [*(_announcement(r) for r in results[i : i + batch]), *results[i : i + batch]]
        for i in range(0, len(results), batch)
    ]
    async with open_ledger(location) as store:
        cpu, start = time.process_time(), time.perf_counter()
        for items in batches:
            await store.write_many(items)
        return time.perf_counter() - start, time.process_time() - cpu


@contextlib.contextmanager
def _new_ledger(postgres: str | None) -> Iterator[str | Path]:
    """A new, empty ledger: a SQLite file, or a database of its own on the PostgreSQL
    server at `postgres` (created, and dropped at the end)."""
    if postgres is None:
        with tempfile.TemporaryDirectory() as tmp:
            yield Path(tmp) / "ledger.sqlite3"
        return
    import psycopg
    from psycopg import conninfo

    name = f"framewire_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield conninfo.make_conninfo(postgres, dbname=name)
    finally:
        with psycopg.connect(postgres, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE "{name}"')


def ledger_insert_detail(rows: int, batch: int, postgres: str | None = None) -> tuple[float, float]:
    """(results committed per second, CPU microseconds per result of this process), `batch`
    results and their announcements per transaction, into a new ledger: SQLite, or a
    database on the PostgreSQL server at `postgres`."""
    rng = random.Random(1)
    results = [_result(rng, i, identified=i % 3 == 0) for i in range(rows)]
    with _new_ledger(postgres) as location:
        wall, cpu = asyncio.run(_insert_batches(location, results, batch))
    return rows / wall, cpu / rows * 1e6


def ledger_inserts_per_s(rows: int, batch: int) -> float:
    """Results committed per second, `batch` of them per transaction, into a new ledger."""
    return ledger_insert_detail(rows, batch)[0]


def prefill(path: Path, rows: int, seed: int = 2) -> None:
    """`rows` rows written straight into a ledger's table, in one transaction."""
    asyncio.run(_create(path))
    rng = random.Random(seed)
    conn = sqlite3.connect(path)
    try:
        with conn:
            conn.executemany(
                "INSERT INTO results (frame_id, station, source_name, source_path, sha256,"
                " status, phash, phash_int, card_status, card_name, set_name, card_number,"
                " agent_id, captured_at, completed_at, ledgered_at, result)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                _rows(rng, rows),
            )
    finally:
        conn.close()


def _rows(rng: random.Random, n: int) -> Iterator[tuple[object, ...]]:
    for i in range(n):
        at = (T0 + timedelta(seconds=i)).isoformat()
        phash = f"{rng.getrandbits(64):016x}"
        number = rng.randrange(CARDS)
        identified = i % 3 == 0
        yield (
            new_frame_id(),
            "bench",
            f"{i}.jpg",
            f"{i}.jpg".encode(),
            f"{rng.getrandbits(256):064x}",
            "ok",
            phash,
            phash_bits(phash),
            "identified" if identified else "unknown",
            f"Card {number}" if identified else None,
            "Bench" if identified else None,
            str(number) if identified else None,
            "bench-inference",
            at,
            at,
            at,
            "{}",
        )


async def _create(path: Path) -> None:
    async with LedgerStore(path):
        pass


async def _probe(path: Path, results: Sequence[InferenceResult]) -> tuple[float, float]:
    async with LedgerStore(path) as store:
        await store.announce_many([_announcement(r) for r in results])
        await store.record(results[0])  # warm: the first insert pages the indexes in
        cpu, wall = time.process_time(), time.perf_counter()
        for r in results[1:]:
            await store.record(r)
        n = len(results) - 1
        return (time.process_time() - cpu) / n, (time.perf_counter() - wall) / n


def lookalike_cost_detail(
    sizes: Sequence[int] = (1_000, 10_000, 100_000), probes: int = 200
) -> dict[int, tuple[float, float]]:
    """(CPU ms, wall ms) per insert of an unidentified result, by ledger size."""
    out: dict[int, tuple[float, float]] = {}
    for size in sizes:
        rng = random.Random(size)
        # captured after the pre-fill, in order, as a running station's frames arrive
        results = [
            _result(rng, size + i + rng.random(), identified=False) for i in range(probes + 1)
        ]
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "ledger.sqlite3"
            prefill(path, size)
            cpu, wall = asyncio.run(_probe(path, results))
        out[size] = (cpu * 1e3, wall * 1e3)
    return out


def lookalike_cost(sizes: Sequence[int] = (1_000, 10_000, 100_000)) -> dict[int, float]:
    """CPU ms per insert of an unidentified result into a ledger of each size."""
    return {size: cpu for size, (cpu, _) in lookalike_cost_detail(sizes).items()}


def comparison_cost(sizes: Sequence[int], rounds: int = 500) -> dict[int, float]:
    """Microseconds the look-alike comparison alone takes (an unidentified frame against an
    index of N random hashes): the part of an insert that depends on the ledger's size."""
    out: dict[int, float] = {}
    for size in sizes:
        rng = random.Random(size)
        index = PhashIndex.of(
            [new_frame_id() for _ in range(size)],
            [phash_bits(f"{rng.getrandbits(64):016x}") for _ in range(size)],
            list(range(size)),
            [None] * size,
        )
        probe = Probe(bits=rng.getrandbits(64), captured_us=size // 2, identified=False, card=None)
        start = time.perf_counter()
        for _ in range(rounds):
            index.relatives(probe)
        out[size] = (time.perf_counter() - start) / rounds * 1e6
    return out


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rows", type=int, default=2000, help="results per insert run")
    ap.add_argument("--batches", type=_ints, default=[1, 8, 64], help="results per transaction")
    ap.add_argument(
        "--sizes",
        type=_ints,
        default=[1_000, 10_000, 100_000],
        help='ledger rows for the look-alike cost ("": none)',
    )
    ap.add_argument("--probes", type=int, default=200, help="results timed at each size")
    ap.add_argument("--repeat", type=int, default=1, help="insert runs per batch size (median)")
    ap.add_argument(
        "--postgres",
        metavar="URL",
        help="time the inserts on this PostgreSQL server instead (a new database each run)",
    )
    args = ap.parse_args()

    runs = {
        batch: sorted(
            ledger_insert_detail(args.rows, batch, args.postgres) for _ in range(args.repeat)
        )
        for batch in args.batches
    }
    # the median run: fsync times on a shared disk vary from run to run
    rates = {batch: found[len(found) // 2] for batch, found in runs.items()}
    first = rates[args.batches[0]][0]
    where = "PostgreSQL" if args.postgres else "SQLite"
    print(f"inserts into a new {where} ledger, {args.rows} results, each with its announcement")
    for batch, (rate, cpu_us) in rates.items():
        spread = f"{runs[batch][0][0]:.0f}-{runs[batch][-1][0]:.0f}"
        print(
            f"  batch {batch:5d}   {rate:9.0f} results/s   {rate / first:6.2f}x batch "
            f"{args.batches[0]}   CPU {cpu_us:6.1f} us a result"
            + (f"   (median of {args.repeat}: {spread})" if args.repeat > 1 else "")
        )

    if not args.sizes:  # --sizes "": the inserts alone
        return 0
    costs = lookalike_cost_detail(args.sizes, args.probes)
    base_cpu, base_wall = costs[args.sizes[0]]
    print(f"one unidentified result into a ledger of N rows ({args.probes} timed)")
    for size, (cpu, wall) in costs.items():
        print(
            f"  N {size:8d}   CPU {cpu:6.2f} ms ({cpu / base_cpu:5.2f}x)"
            f"   wall {wall:6.2f} ms ({wall / base_wall:5.2f}x)"
        )
    print("of which the look-alike comparison (the in-memory index)")
    for size, us in comparison_cost(args.sizes).items():
        print(f"  N {size:8d}   {us:7.1f} us")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
