"""A memory soak: 10,000 frames through a real broker and the three agent processes, each
agent's memory sampled from /proc all along and held to the ceiling its systemd unit
states, and what it holds once warm held to a bounded growth.

The inference agent runs the checksum stage only (`stages = ["checksum"]`): what is soaked
here is what every frame costs every agent (MQTT, dispatch, caches, state and ledger
databases), 10,000 times; the OCR stages take about a second a card, so 10,000 would take
hours, and their memory is held to the same ceiling by tests/test_hostile_images.py.

Run with `-s` to see each agent's memory online, at 1,000, 2,000, 5,000 and 10,000 frames
and at the end. For a longer soak, or frames the size of real photos:

    FRAMEWIRE_SOAK_FRAMES=50000 FRAMEWIRE_SOAK_FRAME_KIB=57 \
        .venv/bin/python -m pytest -s -n 0 tests/test_soak.py
"""

from __future__ import annotations

import io
import os
import re
import sqlite3
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from PIL import Image

from framewire.schemas import TopicTree
from tests.conftest import USERS, Pipeline, wait_until
from tests.recorder import Recorder
from tests.test_pipeline import wait_online

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads memory from /proc"),
]

FRAMES = int(os.environ.get("FRAMEWIRE_SOAK_FRAMES", "10000"))
FRAME_KIB = int(os.environ.get("FRAMEWIRE_SOAK_FRAME_KIB", "6"))
# Capture's full rescans of its folder (every 60 s by default) are kept out of the soak, so
# what it measures does not depend on how many a machine's speed lets happen: a rescan
# holds every file of the folder in memory at once, a cost that grows with the folder, not
# with the frames sent. Set it to 5 to soak them too.
RESCAN_INTERVAL = float(os.environ.get("FRAMEWIRE_SOAK_RESCAN_INTERVAL", "3600"))
WARM = 2_000  # frames ledgered before memory counts as warm: caches and allocator settled
CHECKPOINTS = [n for n in (1_000, WARM, 5_000, 10_000, 20_000, 50_000, 100_000) if n < FRAMES]
BACKLOG = 2_000  # files written and not yet ledgered, at most: a stream, with a backlog
STALL_SECONDS = 120.0  # no new ledger row for this long: something is stuck, not slow
# What an agent's anonymous memory may grow once warm, over the 8,000 frames that follow.
# Seen here: 0.6 to 2.2 MiB (the inference cache filling to its 4,096 entries, SQLite's
# caches, the allocator's working set); a frame's bytes kept per frame would be 50 MiB.
GROWTH_MIB = 16
UNITS = Path(__file__).resolve().parent.parent / "systemd"


def ceiling_mib(kind: str) -> float:
    """The memory an agent's systemd unit holds it to, MiB: MemoryHigh= where set (past it
    the kernel slows the agent down), else MemoryMax= (past it the kernel ends it)."""
    text = (UNITS / f"framewire-{kind}.service").read_text()
    for key in ("MemoryHigh", "MemoryMax"):
        found = re.search(rf"^{key}=(\d+)([KMG])\s*$", text, re.M)
        if found:
            return int(found.group(1)) * {"K": 1 / 1024, "M": 1, "G": 1024}[found.group(2)]
    raise AssertionError(f"framewire-{kind}.service states no memory ceiling")


def frame_bytes(i: int, base: bytes) -> bytes:
    """`base` with a JPEG comment holding `i`: the same picture, its own sha256."""
    tag = f"soak-{i}".encode()
    return base[:2] + b"\xff\xfe" + struct.pack(">H", len(tag) + 2) + tag + base[2:]


def base_jpeg(kib: int) -> bytes:
    """A noisy 96x64 JPEG (about 6 KiB: a frame's bytes kept per frame would show),
    padded with comments to `kib` KiB."""
    image = Image.frombytes("RGB", (96, 64), bytes((i * 7919) % 251 for i in range(96 * 64 * 3)))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=95)
    data = out.getvalue()
    while len(data) < kib * 1024:
        pad = min(65_000, kib * 1024 - len(data))
        data = data[:2] + b"\xff\xfe" + struct.pack(">H", pad + 2) + b"." * pad + data[2:]
    return data


@dataclass
class Memory:
    """One process's memory, from /proc/<pid>/status, MiB."""

    rss: float  # VmRSS: resident, shared libraries' pages included
    anon: float  # RssAnon: what the process allocated itself, where a leak shows
    peak: float  # VmHWM: the highest VmRSS so far

    @classmethod
    def of(cls, pid: int) -> Memory:
        fields = {}
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name in ("VmRSS", "RssAnon", "VmHWM"):
                fields[name] = int(value.split()[0]) / 1024
        return cls(fields["VmRSS"], fields["RssAnon"], fields["VmHWM"])


@dataclass
class Sampler:
    """Each agent's memory every quarter second, in a thread, for as long as it runs."""

    pids: dict[str, int]
    highest: dict[str, float] = field(default_factory=dict)
    samples: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)

    def _run(self) -> None:
        while not self._stop.wait(0.25):
            for kind, pid in self.pids.items():
                rss = Memory.of(pid).rss
                self.highest[kind] = max(self.highest.get(kind, 0.0), rss)
            self.samples += 1

    @contextmanager
    def running(self) -> Iterator[Sampler]:
        thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            thread.join()


def ledger_count(db: Path) -> int:
    if not db.exists():
        return 0
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)) as conn:
        try:
            return int(conn.execute("SELECT count(*) FROM results").fetchone()[0])
        except sqlite3.OperationalError:  # the table is not created yet
            return 0


def test_ten_thousand_frames_each_ledgered_once_every_agent_within_its_memory_ceiling(
    pipeline: Pipeline,
) -> None:
    assert FRAMES > WARM, f"FRAMEWIRE_SOAK_FRAMES: more than {WARM:,} frames, to warm up first"
    p = pipeline
    t = TopicTree(p.broker.prefix)
    for agent in p.agents.values():
        agent.env["FRAMEWIRE_LOG_LEVEL"] = "WARNING"  # a line per frame would be the soak
    p.agents["inference"].env["FRAMEWIRE_STAGES"] = "checksum"
    p.agents["capture"].env["FRAMEWIRE_RESCAN_INTERVAL"] = str(RESCAN_INTERVAL)
    base = base_jpeg(FRAME_KIB)
    names = [f"soak-{i:05d}.jpg" for i in range(FRAMES)]
    watched = Recorder(
        p.broker.port,
        t.all_availability(),
        t.all_dead_letters(),
        username="observer",
        password=p.broker.password("observer"),
    )
    with watched as rec:
        p.start()
        wait_online(rec, p, *USERS.values())
        pids = {kind: agent.proc.pid for kind, agent in p.agents.items() if agent.proc}
        online = {kind: Memory.of(pid) for kind, pid in pids.items()}
        at: dict[int, dict[str, Memory]] = {}  # memory when each checkpoint was ledgered
        with Sampler(pids).running() as sampler:
            written, ledgered = 0, 0
            moved = time.monotonic()
            while ledgered < FRAMES:
                while written < FRAMES and written - ledgered < BACKLOG:
                    (p.captures / names[written]).write_bytes(frame_bytes(written, base))
                    written += 1
                count = ledger_count(p.ledger_db)
                if count != ledgered:
                    ledgered, moved = count, time.monotonic()
                for n in CHECKPOINTS:
                    if n not in at and ledgered >= n:
                        at[n] = {kind: Memory.of(pid) for kind, pid in pids.items()}
                for agent in p.agents.values():
                    assert agent.proc is not None and agent.proc.poll() is None, agent.output()
                assert time.monotonic() - moved < STALL_SECONDS, f"stuck at {ledgered} rows"
                time.sleep(0.05)
            # every frame acknowledged back to capture, so its work is done too
            wait_until(
                lambda: frames_ledgered(p.state_db) == FRAMES,
                timeout=STALL_SECONDS,
                what="capture's state: every frame ledgered",
            )
            time.sleep(1.0)  # a doubled row or a late dead letter would land now
            end = {kind: Memory.of(pid) for kind, pid in pids.items()}
        dead_letters = [m for m in rec.messages if "/deadletter/" in m.topic]

    at[FRAMES] = end
    warm = at[WARM]
    kinds = list(pids)
    report = [
        f"memory over {FRAMES:,} frames of {len(base) / 1024:.0f} KiB, MiB, RSS / anonymous "
        f"({sampler.samples} samples)",
        "   frames  " + "".join(f"{kind:>20}" for kind in kinds),
    ]
    for label, row in [("online", online), *((f"{n:,}", at[n]) for n in sorted(at))]:
        report.append(
            f"  {label:>7}  " + "".join(f"{row[k].rss:12.1f} /{row[k].anon:6.1f}" for k in kinds)
        )
    report.append("     peak  " + "".join(f"{end[k].peak:12.1f}       " for k in kinds))
    report.append("  ceiling  " + "".join(f"{ceiling_mib(k):12.0f}       " for k in kinds))
    report.append("   growth  " + "".join(f"{end[k].anon - warm[k].anon:+19.1f}" for k in kinds))
    report.append(f"  (anonymous memory from {WARM:,} frames to the end; at most {GROWTH_MIB})")
    print("\n" + "\n".join(report))

    with closing(sqlite3.connect(f"file:{p.ledger_db}?mode=ro", uri=True)) as conn:
        rows = conn.execute("SELECT frame_id, source_name FROM results").fetchall()
    assert len(rows) == FRAMES
    assert len({frame_id for frame_id, _ in rows}) == FRAMES
    assert sorted(name for _, name in rows) == sorted(names)
    assert not dead_letters, dead_letters[:3]
    for kind in pids:
        ceiling = ceiling_mib(kind)
        assert end[kind].peak < ceiling, report
        assert sampler.highest[kind] < ceiling, report
        assert end[kind].anon - warm[kind].anon < GROWTH_MIB, report


def frames_ledgered(db: Path) -> int:
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)) as conn:
        row = conn.execute("SELECT count(*) FROM frames WHERE state = 'ledgered'").fetchone()
    return int(row[0])
