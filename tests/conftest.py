"""Fixtures: a real Mosquitto on a free port per test, real agent processes, real files."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from PIL import Image

from framewire.broker_config import BrokerPlan, EmbeddedBroker, default_accounts, free_port

STATION = "station-1"


def wait_until(predicate: Callable[[], object], timeout: float = 30.0, what: str = "") -> None:
    """Poll until `predicate()` is truthy; fail the test with `what` after `timeout` s.
    The timeout only bounds a hang; nothing asserts on how long things took."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")


def jpeg_bytes(seed: int = 0, size: tuple[int, int] = (320, 240)) -> bytes:
    img = Image.new("RGB", size, ((seed * 37) % 256, (seed * 91) % 256, (seed * 13) % 256))
    for x in range(0, size[0], 16):  # some structure so perceptual hashes differ
        img.paste(((seed * x) % 256, x % 256, 128), (x, (seed * 7) % size[1], x + 8, size[1]))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=85)
    return buf.getvalue()


@dataclass
class Broker:
    embedded: EmbeddedBroker
    prefix: str

    @property
    def url(self) -> str:
        return self.embedded.url

    @property
    def port(self) -> int:
        return self.embedded.plan.port

    def password_file(self, user: str) -> Path:
        return self.embedded.secrets[user]

    def password(self, user: str) -> str:
        return self.password_file(user).read_text().strip()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    prefix = f"t{uuid.uuid4().hex[:10]}"
    plan = BrokerPlan(
        tmp_path / "broker",
        port=free_port(),
        prefix=prefix,
        accounts=default_accounts([STATION, "import"]),
    )
    embedded = EmbeddedBroker(plan)
    embedded.start()
    try:
        yield Broker(embedded, prefix)
    finally:
        embedded.stop()


USERS = {"capture": f"capture-{STATION}", "inference": "inference", "ledger": "ledger"}


def cli_env(broker: Broker, user: str, **extra: str) -> dict[str, str]:
    """Environment for a `framewire` command logging in to `broker` as `user`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRAMEWIRE_")}
    env.update(
        FRAMEWIRE_BROKER_URL=broker.url,
        FRAMEWIRE_MQTT_USERNAME=user,
        FRAMEWIRE_MQTT_PASSWORD_FILE=str(broker.password_file(user)),
        FRAMEWIRE_TOPIC_PREFIX=broker.prefix,
        **extra,
    )
    return env


@dataclass
class AgentProcess:
    kind: str
    env: dict[str, str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    starts: int = field(default=0)

    def start(self) -> AgentProcess:
        self.starts += 1
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "framewire", "run", self.kind],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        return self

    def terminate(self, timeout: float = 30) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@dataclass
class Pipeline:
    broker: Broker
    root: Path
    captures: Path
    agents: dict[str, AgentProcess]

    @property
    def ledger_db(self) -> Path:
        return self.root / "ledger" / "ledger.sqlite3"

    @property
    def state_db(self) -> Path:
        return self.root / "capture" / "capture.sqlite3"

    def start(self, *kinds: str) -> None:
        for kind in kinds or ("ledger", "inference", "capture"):
            self.agents[kind].start()


@pytest.fixture
def pipeline(broker: Broker, tmp_path: Path) -> Iterator[Pipeline]:
    """Agent processes configured for `broker` (not started: call `.start()`)."""
    captures = tmp_path / "captures"
    captures.mkdir()
    agents = {}
    for kind, user in USERS.items():
        env = {k: v for k, v in os.environ.items() if not k.startswith("FRAMEWIRE_")}
        env.update(
            FRAMEWIRE_BROKER_URL=broker.url,
            FRAMEWIRE_MQTT_USERNAME=user,
            FRAMEWIRE_MQTT_PASSWORD_FILE=str(broker.password_file(user)),
            FRAMEWIRE_AGENT_ID=user,
            FRAMEWIRE_TOPIC_PREFIX=broker.prefix,
            FRAMEWIRE_DATA_DIR=str(tmp_path / kind),
            FRAMEWIRE_STATUS_INTERVAL="1",
            FRAMEWIRE_STATION=STATION,
            FRAMEWIRE_WATCH_DIR=str(captures),
            FRAMEWIRE_SETTLE_SECONDS="0.2",
            FRAMEWIRE_METRICS_PORT="0",
            PYTHONUNBUFFERED="1",
        )
        agents[kind] = AgentProcess(kind, env, tmp_path / f"{kind}.log")
    p = Pipeline(broker, tmp_path, captures, agents)
    try:
        yield p
    finally:
        for agent in agents.values():
            if agent.proc is not None and agent.proc.poll() is None:
                agent.kill()
