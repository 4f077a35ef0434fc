"""Mosquitto as a child process: the default broker of `framewire up` and of the tests."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

from framewire.broker_config.errors import BrokerError
from framewire.broker_config.render import BrokerPlan, write_broker_files

logger = logging.getLogger(__name__)

INSTALL_HINT = """Mosquitto (the MQTT broker framewire uses) is not installed. Install it with:
  Debian/Ubuntu:  sudo apt-get install -y mosquitto
  Fedora/RHEL:    sudo dnf install -y mosquitto
  macOS:          brew install mosquitto
or point framewire at an existing broker with FRAMEWIRE_BROKER_URL=mqtt://host:1883"""

_SEARCH = ("/usr/sbin", "/usr/local/sbin", "/opt/homebrew/sbin", "/opt/homebrew/opt/mosquitto/sbin")


def find_mosquitto() -> Path:
    found = shutil.which("mosquitto")
    if found:
        return Path(found)
    for folder in _SEARCH:
        candidate = Path(folder) / "mosquitto"
        if candidate.is_file():
            return candidate
    raise BrokerError(INSTALL_HINT)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_open(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.2):
        return True
    return False


class EmbeddedBroker:
    """Starts Mosquitto with a rendered configuration and stops it on exit.

    Usable from sync code (`with`) and async code (`async with`).
    """

    def __init__(self, plan: BrokerPlan) -> None:
        self.plan = plan
        self.secrets: dict[str, Path] = {}
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = plan.data_dir / "mosquitto.log"

    @property
    def url(self) -> str:
        return f"mqtt://{self.plan.plain_bind}:{self.plan.port}"

    def start(self, timeout: float = 10.0) -> None:
        binary = find_mosquitto()
        self.secrets = write_broker_files(self.plan)
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [str(binary), "-c", str(self.plan.conf_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            # Its own session: Ctrl-C in a terminal reaches framewire, which drains the
            # agents first and then stops the broker, rather than both at once.
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while not port_open(self.plan.plain_bind, self.plan.port):
            if self.process.poll() is not None:
                raise BrokerError(
                    f"mosquitto exited with code {self.process.returncode}:\n{self.log_tail()}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise BrokerError(
                    f"mosquitto did not listen within {timeout} s:\n{self.log_tail()}"
                )
            time.sleep(0.05)
        logger.info("broker listening on %s (data in %s)", self.url, self.plan.data_dir)

    def stop(self, *, kill: bool = False) -> None:
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        if kill:
            proc.kill()
        else:
            proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> EmbeddedBroker:
        self.start()
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    async def __aenter__(self) -> EmbeddedBroker:
        await asyncio.to_thread(self.start)
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await asyncio.to_thread(self.stop)
