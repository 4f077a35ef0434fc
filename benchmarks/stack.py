"""The whole pipeline as systemd runs it: an embedded Mosquitto, and capture, inference and
ledger agents as separate `python -m framewire run <kind>` processes, each logged in as its
own broker user. Frames are files written into the capture folder; they are counted as rows
in the ledger's database.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import TracebackType

import aiomqtt

from framewire.broker_config import BrokerPlan, EmbeddedBroker, default_accounts, free_port
from framewire.schemas import TopicTree

STATION = "station-1"
CAPTURE_USER = f"capture-{STATION}"
STALL_SECONDS = 120.0  # no new ledger row for this long: something is broken, not slow
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


class StackError(RuntimeError):
    """An agent died or the pipeline stopped moving; the message carries the agents' logs."""


@dataclass(frozen=True)
class ProcSample:
    """One process's resident memory and CPU time so far (Linux /proc)."""

    rss_bytes: int
    cpu_seconds: float


def proc_sample(pid: int) -> ProcSample | None:
    """VmRSS from /proc/<pid>/status and utime + stime from /proc/<pid>/stat; None where
    there is no /proc (macOS) or the process is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    rss_kib = next(
        (int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0
    )
    # the command name is in parentheses and may hold spaces: count fields after the last ')'
    fields = stat[stat.rindex(")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])
    return ProcSample(rss_bytes=rss_kib * 1024, cpu_seconds=(utime + stime) / _CLOCK_TICKS)


@dataclass
class Agent:
    agent_id: str
    kind: str
    proc: subprocess.Popen[bytes]
    log: Path

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


class AgentStack:
    """Broker and agents under `root`; use as a context manager (everything stops on exit).

    `inference_env` is added to every inference agent's environment (FRAMEWIRE_STAGES,
    FRAMEWIRE_CATALOG, ...)."""

    def __init__(self, root: Path, *, inference_env: Mapping[str, str] | None = None) -> None:
        self.root = root
        self.captures = root / "captures"
        self.inference_env = dict(inference_env or {})
        self.plan = BrokerPlan(root / "broker", port=free_port(), accounts=default_accounts())
        self.broker = EmbeddedBroker(self.plan)
        self.topics = TopicTree(self.plan.prefix)
        self.agents: dict[str, Agent] = {}

    # --- lifecycle --------------------------------------------------------------------------
    def __enter__(self) -> AgentStack:
        self.captures.mkdir(parents=True, exist_ok=True)
        self.broker.start()
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop_agents()
        self.broker.stop()

    def stop_agents(self) -> None:
        """SIGTERM to every agent (they drain and go offline); the broker keeps running."""
        for agent in self.agents.values():
            if agent.proc.poll() is None:
                agent.proc.send_signal(signal.SIGTERM)
        for agent in self.agents.values():
            try:
                agent.proc.wait(30)
            except subprocess.TimeoutExpired:
                agent.proc.kill()
                agent.proc.wait()
        self.agents.clear()

    def password(self, user: str) -> str:
        return self.broker.secrets[user].read_text().strip()

    def _env(self, kind: str, user: str, agent_id: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FRAMEWIRE_")}
        env.update(
            FRAMEWIRE_BROKER_URL=self.broker.url,
            FRAMEWIRE_MQTT_USERNAME=user,
            FRAMEWIRE_MQTT_PASSWORD_FILE=str(self.broker.secrets[user]),
            FRAMEWIRE_AGENT_ID=agent_id,
            FRAMEWIRE_DATA_DIR=str(self.root / agent_id),
            FRAMEWIRE_STATION=STATION,
            FRAMEWIRE_WATCH_DIR=str(self.captures),
            FRAMEWIRE_METRICS_PORT="0",
            FRAMEWIRE_HA_DISCOVERY="false",
            FRAMEWIRE_LOG_LEVEL="WARNING",
        )
        if kind == "inference":
            env.update(self.inference_env)
        return env

    def _spawn(self, kind: str, user: str, agent_id: str) -> Agent:
        log = self.root / f"{agent_id}.log"
        with log.open("ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "framewire", "run", kind],
                env=self._env(kind, user, agent_id),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        agent = Agent(agent_id, kind, proc, log)
        self.agents[agent_id] = agent
        return agent

    def start(self, *, inference: int = 1, timeout: float = 180.0) -> None:
        """Ledger, `inference` inference agents and capture; returns once all are online."""
        self._spawn("ledger", "ledger", "ledger")
        for _ in range(inference):
            self._spawn("inference", "inference", f"inference-{self.inference_count + 1}")
        self._spawn("capture", CAPTURE_USER, CAPTURE_USER)
        self.wait_online(list(self.agents), timeout)

    @property
    def inference_count(self) -> int:
        return sum(1 for a in self.agents.values() if a.kind == "inference")

    def add_inference(self, timeout: float = 180.0) -> str:
        """One more inference agent in the share group; returns its id once it is online."""
        agent = self._spawn("inference", "inference", f"inference-{self.inference_count + 1}")
        self.wait_online([agent.agent_id], timeout)
        return agent.agent_id

    def wait_online(self, agent_ids: list[str], timeout: float) -> None:
        """Until each agent's retained availability says online (models loaded, connected)."""
        asyncio.run(self._wait_online(set(agent_ids), timeout))

    async def _wait_online(self, wanted: set[str], seconds: float) -> None:
        online: set[str] = set()
        deadline = time.monotonic() + seconds
        async with aiomqtt.Client(
            self.plan.plain_bind,
            self.plan.port,
            username="observer",
            password=self.password("observer"),
            protocol=aiomqtt.ProtocolVersion.V5,
        ) as client:
            await client.subscribe(self.topics.all_availability(), qos=1)
            messages = aiter(client.messages)
            while not wanted <= online:
                self.check_alive()
                if time.monotonic() > deadline:
                    raise StackError(self._report(f"not online after {seconds:.0f} s", wanted))
                try:
                    message = await asyncio.wait_for(anext(messages), 1.0)
                except TimeoutError:
                    continue
                agent = self.topics.segment(message.topic.value, 1)
                if message.payload == b"online":
                    online.add(agent)
                else:
                    online.discard(agent)

    def check_alive(self) -> None:
        dead = [a for a in self.agents.values() if a.proc.poll() is not None]
        if dead:
            raise StackError(self._report("exited", {a.agent_id for a in dead}))

    def _report(self, what: str, agent_ids: set[str]) -> str:
        parts = [f"{', '.join(sorted(agent_ids))}: {what}"]
        for agent_id in sorted(agent_ids):
            agent = self.agents.get(agent_id)
            if agent is not None:
                parts.append(f"--- {agent.log} (exit {agent.proc.poll()})\n{agent.log_tail()}")
        return "\n".join(parts)

    # --- frames in, rows out ----------------------------------------------------------------
    def drop(self, frames: Mapping[str, bytes], *, rate: float | None = None) -> dict[str, float]:
        """Write each frame as a file in the capture folder, at `rate` files per second (as
        fast as possible when None). Returns the wall-clock time each file was closed."""
        closed: dict[str, float] = {}
        start = time.perf_counter()
        for i, (name, data) in enumerate(frames.items()):
            if rate is not None:
                wait = start + i / rate - time.perf_counter()
                if wait > 0:
                    time.sleep(wait)
            with (self.captures / name).open("wb") as f:
                f.write(data)
            closed[name] = time.time()
        return closed

    @property
    def ledger_db(self) -> Path:
        return self.root / "ledger" / "ledger.sqlite3"

    @contextlib.contextmanager
    def _ledger(self) -> Iterator[sqlite3.Connection | None]:
        if not self.ledger_db.exists():
            yield None
            return
        conn = sqlite3.connect(f"file:{self.ledger_db}?mode=ro", uri=True, timeout=10)
        try:
            yield conn
        finally:
            conn.close()

    def ledger_count(self) -> int:
        with self._ledger() as conn:
            if conn is None:
                return 0
            try:
                return int(conn.execute("SELECT count(*) FROM results").fetchone()[0])
            except sqlite3.OperationalError:  # the table is not created yet
                return 0

    def ledgered_at(self) -> dict[str, float]:
        """Each ledgered file's name and when its row was committed (wall clock, seconds)."""
        with self._ledger() as conn:
            if conn is None:
                return {}
            rows = conn.execute("SELECT source_name, ledgered_at FROM results").fetchall()
        return {str(name): datetime.fromisoformat(at).timestamp() for name, at in rows}

    def wait_ledgered(self, total: int) -> None:
        """Until the ledger holds `total` rows; StackError when no row arrives for
        STALL_SECONDS or an agent dies."""
        last, moved = -1, time.monotonic()
        while True:
            count = self.ledger_count()
            if count >= total:
                return
            now = time.monotonic()
            if count != last:
                last, moved = count, now
            elif now - moved > STALL_SECONDS:
                raise StackError(
                    self._report(f"ledger stuck at {count} of {total} rows", set(self.agents))
                )
            self.check_alive()
            time.sleep(0.05)

    def samples(self) -> dict[str, ProcSample | None]:
        """Memory and CPU of every agent and of the broker, now."""
        out = {a.agent_id: proc_sample(a.proc.pid) for a in self.agents.values()}
        if self.broker.process is not None:
            out["broker"] = proc_sample(self.broker.process.pid)
        return out
