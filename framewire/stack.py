"""The whole pipeline on one machine: a broker (embedded Mosquitto unless one is configured)
and the capture, inference and ledger agents, each with its own broker identity."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiomqtt

from framewire.broker_config import (
    BrokerError,
    BrokerPlan,
    EmbeddedBroker,
    default_accounts,
    free_port,
)
from framewire.broker_config.embedded import port_open
from framewire.edge_agents.capture.agent import run as run_capture
from framewire.edge_agents.capture.settings import CaptureSettings
from framewire.edge_agents.ledger.agent import run as run_ledger
from framewire.edge_agents.ledger.settings import LedgerSettings
from framewire.inference_agent.agent import run as run_inference
from framewire.inference_agent.settings import InferenceSettings
from framewire.observe import BrokerLogin
from framewire.samples import sample_catalog_path
from framewire.schemas import Availability, TopicTree

logger = logging.getLogger(__name__)

MQTT_PORT = 1883
PORT_FILE = Path("broker") / "port"  # under the data dir: the port `up` keeps


@dataclass
class Stack:
    broker_url: str
    capture: CaptureSettings
    inference: InferenceSettings
    ledger: LedgerSettings
    secrets: dict[str, Path]

    @property
    def observer_password_file(self) -> Path | None:
        return self.secrets.get("observer")

    @property
    def agents(self) -> dict[str, str]:
        """Agent id by kind."""
        return {
            "capture": self.capture.identity,
            "inference": self.inference.identity,
            "ledger": self.ledger.identity,
        }

    def observer(self) -> BrokerLogin:
        """A login that may read every agent's availability: the embedded broker's observer,
        else whatever the agents were configured with."""
        if self.observer_password_file is not None:
            return BrokerLogin(self.broker_url, "observer", self.observer_password_file)
        s = self.capture
        return BrokerLogin(self.broker_url, s.username(), s.mqtt_password_file)


# --- the broker's port -----------------------------------------------------------------------
def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a broker could listen on host:port now (as Mosquitto binds: SO_REUSEADDR, so
    connections of a broker stopped a moment ago do not count)."""
    if port_open(host, port):
        return False
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def broker_port(data_dir: Path, requested: int | None, host: str = "127.0.0.1") -> int:
    """The port `framewire up` keeps, so that Home Assistant, mosquitto_sub and other boxes
    configured against it keep working across restarts: `requested` (--port), else the one
    remembered in <data_dir>/broker/port, else 1883 when free, else a free port."""
    memory = data_dir / PORT_FILE
    remembered: int | None = None
    with contextlib.suppress(OSError, ValueError):
        remembered = int(memory.read_text(encoding="ascii").strip())
    if requested is not None:
        port, why = requested, "--port"
    elif remembered is not None and 0 < remembered < 65536:
        port, why = remembered, f"remembered in {memory}"
    elif port_free(MQTT_PORT, host):
        return MQTT_PORT
    else:
        return free_port(host)
    if not port_free(port, host):
        raise BrokerError(
            f"port {port} ({why}) is in use on {host}: is another `framewire up` (or a broker "
            f"it left behind) running with this data dir? Stop it, or choose another port "
            f"with --port"
        )
    return port


def remember_port(data_dir: Path, port: int) -> Path:
    memory = data_dir / PORT_FILE
    memory.parent.mkdir(parents=True, exist_ok=True)
    memory.write_text(f"{port}\n", encoding="ascii")
    return memory


# --- the stack -------------------------------------------------------------------------------
@contextlib.asynccontextmanager
async def open_stack(
    data_dir: Path,
    captures: Path,
    *,
    broker_url: str | None = None,
    port: int | None = None,
    station: str = "station-1",
    prefix: str = "framewire",
    overrides: dict[str, object] | None = None,
) -> AsyncIterator[Stack]:
    """Start the broker (when `broker_url` is None; on `port`, else a free one) and build
    each agent's settings."""
    common: dict[str, Any] = {"topic_prefix": prefix, "data_dir": data_dir, **(overrides or {})}
    creds: dict[str, Path] = {}
    async with contextlib.AsyncExitStack() as exits:
        if broker_url is None:
            plan = BrokerPlan(
                data_dir / "broker",
                port=port or free_port(),
                prefix=prefix,
                accounts=default_accounts([station, "import"]),
            )
            broker = await exits.enter_async_context(EmbeddedBroker(plan))
            broker_url, creds = broker.url, broker.secrets
        common["broker_url"] = broker_url

        def login(user: str) -> dict[str, Any]:
            if user not in creds:
                return {}
            return {"mqtt_username": user, "mqtt_password_file": creds[user]}

        capture_user = f"capture-{station}"
        yield Stack(
            broker_url=broker_url,
            capture=CaptureSettings(
                **common,
                **login(capture_user),
                agent_id=capture_user,
                station=station,
                watch_dir=captures,
            ),
            inference=_inference_settings(common, login("inference"), station),
            ledger=LedgerSettings(
                **common,
                **login("ledger"),
                agent_id="ledger",
            ),
            secrets=creds,
        )


def _inference_settings(
    common: dict[str, Any], login: dict[str, Any], station: str
) -> InferenceSettings:
    """The sample catalog unless one is configured, so cards are recognised out of the box."""
    settings = InferenceSettings(**common, **login, agent_id=f"inference-{station}")
    if settings.catalog is None:
        logger.info("no catalog configured: using the sample catalog %s", sample_catalog_path())
        settings = settings.model_copy(update={"catalog": sample_catalog_path()})
    return settings


# --- waiting for the agents ------------------------------------------------------------------
class AgentsOnline:
    """Which agents have come online since this watch began: their retained availability
    topics, as published after the subscription (a retained "online" delivered at subscribe
    time may be left over from a run that ended without its Last Will, and proves nothing).

    When the availability topics cannot be read (a broker whose ACL says no), `wait`
    does not block, and says so once."""

    def __init__(self, login: BrokerLogin, topics: TopicTree) -> None:
        self._login = login
        self._topics = topics
        self.online: set[str] = set()
        self.problem: str | None = None
        self._changed = asyncio.Event()
        self._exits = contextlib.AsyncExitStack()
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> AgentsOnline:
        try:
            client = await self._exits.enter_async_context(self._login.client())
            granted = await client.subscribe(self._topics.all_availability(), qos=1)
        except (aiomqtt.MqttError, OSError) as err:
            self.problem = f"cannot watch agent availability on {self._login.url}: {err}"
            await self._exits.aclose()
            return self
        codes = [getattr(g, "value", g) for g in granted]
        if any(isinstance(c, int) and c >= 0x80 for c in codes):
            self.problem = f"the broker refused the availability topics (reason codes {codes})"
            await self._exits.aclose()
            return self
        self._reader = asyncio.create_task(self._read(client), name="agents-online")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await self._reader
        await self._exits.aclose()

    async def _read(self, client: aiomqtt.Client) -> None:
        try:
            async for message in client.messages:
                try:
                    agent = self._topics.segment(message.topic.value, 1)
                except ValueError:
                    continue
                payload = message.payload if isinstance(message.payload, bytes) else b""
                if payload == Availability.ONLINE.value.encode() and not message.retain:
                    self.online.add(agent)
                elif payload == Availability.OFFLINE.value.encode():
                    self.online.discard(agent)
                self._changed.set()
        except aiomqtt.MqttError as err:
            self.problem = f"lost the availability watch on {self._login.url}: {err}"
            self._changed.set()

    async def wait(self, agents: Iterable[str], stop: asyncio.Event, within: float) -> bool:
        """Until every one of `agents` is online (True), `stop` is set (False), or `within`
        seconds have passed (True, with a warning: the agents go on without them)."""
        wanted = set(agents)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while not wanted <= self.online:
            if stop.is_set():
                return False
            if self.problem is not None:
                logger.warning("%s; not waiting for %s", self.problem, ", ".join(sorted(wanted)))
                return True
            left = deadline - loop.time()
            if left <= 0:
                logger.warning(
                    "%s not online after %.0f s; going on without waiting",
                    ", ".join(sorted(wanted - self.online)),
                    within,
                )
                return True
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(left, 0.25))
        return True


async def run_agents(
    stack: Stack,
    stop: asyncio.Event,
    *,
    ready: asyncio.Event | None = None,
    online_timeout: float = 120.0,
) -> None:
    """Run the three agents until `stop` is set.

    Capture starts once the ledger and inference agents are online: a frame published
    before inference has joined its share group goes to a group with no member, and waits
    for the resend (`ack_timeout`). `ready` is set once all three are online. Signals are
    the caller's (SignalStop around the whole stack, so that a second Ctrl-C while the
    broker stops still stops at once)."""
    topics = TopicTree(stack.capture.topic_prefix)
    started: list[asyncio.Task[None]] = []
    limit = max(s.drain_timeout for s in (stack.capture, stack.inference, stack.ledger))
    stragglers = asyncio.create_task(_stop_stragglers(stop, started, limit + STOP_GRACE))
    try:
        async with asyncio.TaskGroup() as tg, AgentsOnline(stack.observer(), topics) as online:
            started.append(tg.create_task(run_ledger(stack.ledger, stop=stop), name="ledger"))
            started.append(
                tg.create_task(run_inference(stack.inference, stop=stop), name="inference")
            )
            ids = stack.agents
            if await online.wait([ids["ledger"], ids["inference"]], stop, online_timeout):
                started.append(
                    tg.create_task(run_capture(stack.capture, stop=stop), name="capture")
                )
                if await online.wait([ids["capture"]], stop, online_timeout) and ready:
                    ready.set()
    finally:
        stragglers.cancel()


STOP_GRACE = 15.0  # beyond drain_timeout: saying goodbye, disconnecting, closing databases


async def _stop_stragglers(
    stop: asyncio.Event, agents: list[asyncio.Task[None]], within: float
) -> None:
    """Once `stop` is set, give the agents `within` seconds, then cancel those still
    running, so that a stop never hangs (an agent's cancellation can be lost on Python
    3.11, whose asyncio.wait_for may swallow one that meets a completing operation)."""
    await stop.wait()
    await asyncio.sleep(within)
    for task in agents:
        if not task.done():
            logger.warning("%s did not stop within %.0f s; stopping it", task.get_name(), within)
            task.cancel()


async def until_ready(ready: asyncio.Event, agents: asyncio.Task[None]) -> bool:
    """Wait for `ready`, or for the agents to end first (False)."""
    waiter = asyncio.ensure_future(ready.wait())
    try:
        await asyncio.wait({waiter, agents}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
    return ready.is_set()
