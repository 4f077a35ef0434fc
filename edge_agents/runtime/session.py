"""The MQTT session of one agent: connect (MQTT 5, TLS, its Last Will), reconnect with
jittered backoff, say once what a person must fix when the broker refuses it, publish, and
pump what arrives into the dispatcher."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
from collections.abc import Awaitable, Callable

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from framewire.edge_agents.runtime.dispatch import Dispatcher
from framewire.edge_agents.runtime.lifecycle import SystemdNotifier
from framewire.edge_agents.runtime.mqtt_adapter import acknowledge_manually, disconnected, messages
from framewire.edge_agents.runtime.settings import AgentSettings
from framewire.schemas import Availability

logger = logging.getLogger(__name__)


class NotConnectedError(aiomqtt.MqttError):
    """Raised by `publish` while the agent has no broker connection."""


class ConfigurationError(RuntimeError):
    """The broker refused something only a configuration change can fix (an ACL, say)."""


class Backoff:
    """Exponential backoff with full jitter, capped."""

    def __init__(self, initial: float = 0.2, cap: float = 30.0) -> None:
        self.initial, self.cap, self.attempt = initial, cap, 0

    def next(self) -> float:
        ceiling = min(self.cap, self.initial * 2**self.attempt)
        self.attempt += 1
        return random.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        self.attempt = 0


def connect_problem(err: aiomqtt.MqttError, settings: AgentSettings) -> str | None:
    """What a person must change when the broker cannot be used as configured (a
    certificate not trusted, a login refused); None for failures a retry may fix."""
    cause = err.__context__  # aiomqtt re-raises connect errors `from None`; the cause stays
    if isinstance(cause, ssl.SSLCertVerificationError):
        ca = settings.mqtt_ca_file
        which = f"mqtt_ca_file {ca}" if ca else "the system trust store (mqtt_ca_file unset)"
        why = cause.verify_message or str(cause)
        if cause.verify_code == 62:  # X509_V_ERR_HOSTNAME_MISMATCH
            fix = (
                f"connect to a name the broker certificate lists, or issue one that lists "
                f"{settings.broker.host} (framewire broker certs --host {settings.broker.host})"
            )
        else:
            fix = (
                "set mqtt_ca_file to the CA that signed the broker certificate "
                "(framewire broker certs writes one; its certificates pass strict checks)"
            )
        return f"certificate verify failed: {why}, checked against {which} — {fix}"
    rc = getattr(err, "rc", None)
    if getattr(rc, "value", rc) in (0x86, 0x87):  # bad user name or password; not authorized
        user = settings.username()
        return (
            f"the broker refused user {user!r} with client id {settings.identity!r} ({err}) — "
            "check mqtt_username and mqtt_password_file; framewire's broker also requires "
            "agent_id to be the user name or to start with '<user name>-'"
        )
    return None


class Session:
    """One agent's connection to the broker, kept up for as long as `run` runs."""

    def __init__(
        self,
        settings: AgentSettings,
        dispatcher: Dispatcher,
        notifier: SystemdNotifier,
        *,
        persistent: bool,
        will_topic: str,
        count: Callable[[str], None],
    ) -> None:
        self.settings = settings
        self.agent_id = settings.identity
        self.dispatcher = dispatcher
        self.persistent = persistent
        self.will_topic = will_topic
        self.connected = asyncio.Event()
        self.accepting = True  # False while draining: what arrives is left to the broker
        self._client: aiomqtt.Client | None = None
        # held while subscribing on connect and while a route is switched on or off, so a
        # switch made during a reconnect is never lost between the two
        self._subscribing = asyncio.Lock()
        self._notifier = notifier
        self._count = count

    @property
    def client(self) -> aiomqtt.Client | None:
        return self._client

    async def publish(
        self,
        topic: str,
        payload: bytes | str,
        *,
        qos: int = 1,
        retain: bool = False,
        properties: Properties | None = None,
    ) -> None:
        """Publish now; raises NotConnectedError (an MqttError) while disconnected."""
        client = self._client
        if client is None:
            raise NotConnectedError(f"not connected; cannot publish to {topic}")
        await client.publish(topic, payload, qos=qos, retain=retain, properties=properties)

    def make_client(self) -> aiomqtt.Client:
        s = self.settings
        broker = s.broker
        password = s.mqtt_password()
        connect_props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        if self.persistent:
            connect_props.SessionExpiryInterval = s.session_expiry
        # the broker sends at most this many QoS 1 messages not yet acknowledged: what the
        # lanes can hold, so the rest of a backlog waits on the broker, not in this process
        connect_props.ReceiveMaximum = self.dispatcher.receive_maximum()
        tls = None
        if broker.tls:
            tls = ssl.create_default_context(cafile=str(s.mqtt_ca_file) if s.mqtt_ca_file else None)
            # Python 3.13 verifies strictly by default; ask for it everywhere, so that a
            # certificate that works on one box works on all of them.
            tls.verify_flags |= ssl.VERIFY_X509_STRICT
            if s.mqtt_cert_file is not None:  # a broker that wants client certificates
                tls.load_cert_chain(s.mqtt_cert_file, s.mqtt_key_file)
        will = aiomqtt.Will(self.will_topic, Availability.OFFLINE.value, qos=1, retain=True)
        client = aiomqtt.Client(
            broker.host,
            broker.port,
            username=s.username(),
            password=password.get_secret_value() if password else None,
            identifier=self.agent_id,
            protocol=aiomqtt.ProtocolVersion.V5,
            will=will,
            clean_start=not self.persistent,
            properties=connect_props,
            keepalive=s.mqtt_keepalive,
            tls_context=tls,
            timeout=10,
        )
        acknowledge_manually(client)
        return client

    async def run(self, on_connect: Callable[[aiomqtt.Client], Awaitable[None]]) -> None:
        """Connect, call `on_connect` (subscribe, announce), pump messages; again after
        every loss, until cancelled."""
        backoff = Backoff(cap=self.settings.reconnect_max)
        broker = self.settings.broker
        problem: str | None = None  # said once, not on every attempt
        while True:
            try:
                async with self.make_client() as client:
                    logger.info("%s connected to %s:%d", self.agent_id, broker.host, broker.port)
                    backoff.reset()
                    problem = None
                    self._notifier.notify(f"STATUS=connected to {broker.host}:{broker.port}")
                    self.dispatcher.generation += 1
                    async with self._subscribing:
                        await self._subscribe(client)
                        self._client = client
                    await on_connect(client)
                    self.connected.set()
                    await self._pump(client)
            except aiomqtt.MqttError as err:
                self._count("reconnects")
                explained = connect_problem(err, self.settings)
                if explained is None:
                    logger.warning("%s: broker connection lost or refused: %s", self.agent_id, err)
                elif explained != problem:
                    problem = explained
                    logger.error(
                        "%s: cannot connect to %s:%d: %s (retrying quietly)",
                        self.agent_id,
                        broker.host,
                        broker.port,
                        problem,
                    )
                    self._notifier.notify(f"STATUS=not connected: {problem}")
                else:
                    logger.debug("%s: still refused: %s", self.agent_id, err)
            finally:
                self._client = None
                self.connected.clear()
            await asyncio.sleep(backoff.next())

    async def _subscribe(self, client: aiomqtt.Client) -> None:
        for route in self.dispatcher.routes:
            if route.topic not in self.dispatcher.paused:
                await self._subscribe_one(client, route.topic, route.lane.qos)

    async def _subscribe_one(self, client: aiomqtt.Client, topic: str, qos: int) -> None:
        granted = await client.subscribe(topic, qos=qos)
        codes = [getattr(g, "value", g) for g in granted]
        if any(isinstance(c, int) and c >= 0x80 for c in codes):
            raise ConfigurationError(
                f"broker refused subscription to {topic!r} for user "
                f"{self.settings.username()!r} (reason codes {codes}); check the ACL"
            )

    async def switch(self, topics: list[tuple[str, int]], *, on: bool) -> None:
        """Subscribe to `topics` ((filter, qos) pairs) or unsubscribe from them, now if
        connected, and on every later connection. What arrives on a filter after it is
        switched off (the broker had sent it already) is still handled."""
        paused = self.dispatcher.paused
        async with self._subscribing:
            for topic, _ in topics:
                (paused.discard if on else paused.add)(topic)
            client = self._client
            if client is None:
                return  # the next connection subscribes as the flags now say
            try:
                for topic, qos in topics:
                    if on:
                        await self._subscribe_one(client, topic, qos)
                    else:
                        await client.unsubscribe(topic)
            except aiomqtt.MqttError as err:
                # the connection is going: the next one subscribes as the flags say
                logger.info(
                    "%s: subscription change waits for the next connection: %s", self.agent_id, err
                )

    async def _pump(self, client: aiomqtt.Client) -> None:
        # A lane that is full makes the pump wait (the broker's flow control keeps that
        # rare), but never past the connection: what waits for room in a lane that only
        # drains over this connection must give way when it drops.
        lost = disconnected(client)
        dispatcher = self.dispatcher
        async for message in messages(client):
            if not self.accepting:
                continue  # not acknowledged: the broker keeps it for the next session
            if dispatcher.offer_nowait(message, client):
                continue
            offering = asyncio.ensure_future(dispatcher.offer(message, client))
            await asyncio.wait({offering, lost}, return_when=asyncio.FIRST_COMPLETED)
            if not offering.done():
                offering.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await offering
                if not lost.cancelled():
                    lost.exception()  # retrieved, so asyncio does not report it as lost
                raise aiomqtt.MqttError("disconnected while a lane was full")
