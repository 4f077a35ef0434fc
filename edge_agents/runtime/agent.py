"""The agent runtime every framewire agent runs inside.

It owns the MQTT connection (MQTT 5, reconnect with jittered backoff, TLS), availability
(retained `online`, Last Will `offline`), the retained status heartbeat (APScheduler),
systemd READY/WATCHDOG, subscription dispatch with an error boundary per message, and the
graceful drain on SIGTERM. An agent module supplies only its own logic: subscriptions with
handlers, long-running tasks, and a drain step.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
import ssl
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import aiomqtt
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge_agents.runtime.commands import (
    CommandHandler,
    CommandResult,
    CommandTable,
    Scalar,
)
from edge_agents.runtime.homeassistant import Announcer, Entity, state_sensor, status_sensor
from edge_agents.runtime.lifecycle import SignalStop, SystemdNotifier
from edge_agents.runtime.metrics import AgentMetrics
from edge_agents.runtime.settings import AgentSettings
from schemas import (
    AgentStatus,
    Availability,
    CommandResponse,
    DeadLetter,
    ErrorKind,
    MessageError,
    TopicTree,
    encode_json,
    utc_now,
)

logger = logging.getLogger(__name__)

Handler = Callable[[aiomqtt.Message], Awaitable[None]]
AgentKind = Literal["capture", "inference", "ledger"]
__version__ = "0.1.0"


class NotConnectedError(aiomqtt.MqttError):
    """Raised by `publish` while the agent has no broker connection."""


class ConfigurationError(RuntimeError):
    """The broker refused something only a configuration change can fix (an ACL, say)."""


@dataclass(frozen=True)
class Subscription:
    topic: str  # as subscribed, possibly "$share/<group>/..."
    match: str  # filter that incoming topics are matched against
    handler: Handler
    qos: int = 1


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


async def cancel_until_done(tasks: list[asyncio.Task[Any]]) -> None:
    """Cancel `tasks` and wait for them, cancelling again any that go on: on Python 3.11,
    asyncio.wait_for can swallow a cancellation that arrives as its inner await finishes,
    and a task that swallowed one would keep the agent from ever stopping."""
    while pending := [t for t in tasks if not t.done()]:
        for task in pending:
            task.cancel()
        await asyncio.wait(pending, timeout=1.0)


class AgentRuntime:
    """Connection, availability, status and lifecycle for one agent."""

    def __init__(self, settings: AgentSettings, kind: AgentKind, *, persistent: bool) -> None:
        self.settings = settings
        self.kind: AgentKind = kind
        self.agent_id = settings.identity
        self.topics = TopicTree(settings.topic_prefix)
        self.persistent = persistent
        self.counters: Counter[str] = Counter()
        self.details: dict[str, str | int | float | bool | None] = {}
        self.connected = asyncio.Event()
        self.state: Literal["starting", "running", "degraded", "draining"] = "starting"
        self.degraded_reason: str | None = None
        self._gauges: dict[str, Callable[[], int]] = {}
        self._subs: list[Subscription] = []
        self._connect_hooks: list[Callable[[], None]] = []
        self._client: aiomqtt.Client | None = None
        self._accepting = True
        self._started_at = utc_now()
        self._started_mono = time.monotonic()
        self._notifier = SystemdNotifier()
        self._ready_sent = False
        self._commands = CommandTable(self.agent_id)
        self._commands.add("status", self._status_command)
        self.subscribe(self.topics.requests(self.agent_id), self._on_request)
        self.version = __version__
        self.metrics = AgentMetrics(self)
        self.entities: list[Entity] = [
            state_sensor(),
            status_sensor(
                "uptime",
                "Uptime",
                "{{ value_json.uptime_s | round(0) }}",
                unit="s",
                device_class="duration",
                entity_category="diagnostic",
            ),
        ]
        self.throughput_counter: str | None = None
        self._samples: deque[tuple[float, int]] = deque()
        self._jobs: list[tuple[str, Callable[[], Awaitable[str]], dict[str, Any]]] = []
        self._scheduler: AsyncIOScheduler | None = None
        self.home_assistant = Announcer(self)
        if settings.ha_discovery:
            self.subscribe(f"{settings.ha_prefix}/status", self.home_assistant.on_birth)

    # --- what agents call ----------------------------------------------------------------
    def subscribe(self, topic: str, handler: Handler, *, match: str | None = None) -> None:
        """Register `handler` for `topic` (QoS 1); call before `run`."""
        self._subs.append(Subscription(topic=topic, match=match or topic, handler=handler))

    def on_connect(self, callback: Callable[[], None]) -> None:
        """Call `callback()` each time a connection is up and subscribed (after a broker
        restart, say, when what the broker held for others may be gone)."""
        self._connect_hooks.append(callback)

    def command(self, name: str, handler: CommandHandler) -> None:
        """Answer requests `name` on this agent's request topic with `handler(args)`."""
        self._commands.add(name, handler)

    async def _status_command(self, args: dict[str, Scalar]) -> CommandResult:
        status = self.status()
        data: dict[str, Scalar] = {f"counter.{k}": v for k, v in status.counters.items()}
        data.update({f"queue.{k}": v for k, v in status.queues.items()})
        data.update(status.details)
        return f"{self.agent_id} is {status.state}", data

    async def _on_request(self, message: aiomqtt.Message) -> None:
        self.counters["requests"] += 1
        reply_to = getattr(message.properties, "ResponseTopic", None)
        if reply_to is not None and not self._is_response_topic(reply_to):
            # Replying would publish with this agent's rights (its acks, results...) on a
            # topic the requester chose; the request is refused, not carried out.
            raise MessageError(
                ErrorKind.UNDELIVERABLE,
                f"response topic {reply_to[:200]!r} is not one level under "
                f"{self.topics.prefix}/responses/; request not carried out",
            )
        await self._commands.answer(message, self._reply)

    def _is_response_topic(self, topic: str) -> bool:
        try:
            return self.topics.responses(self.topics.segment(topic, 1)) == topic
        except ValueError:
            return False

    async def _reply(self, topic: str, response: CommandResponse, props: Properties) -> None:
        await self.publish(topic, encode_json(response), properties=props)

    def set_degraded(self, reason: str | None) -> None:
        """Report the agent degraded (up, but unable to do its work: a full disk, say) with
        a reason a person can act on, or, with None, running again. Shown in status, Home
        Assistant, metrics and `systemctl status`."""
        if reason == self.degraded_reason:
            return
        self.degraded_reason = reason
        self.details["degraded_reason"] = reason
        if self.state in ("running", "degraded"):
            self.state = "degraded" if reason else "running"
        self._notifier.notify(f"STATUS={'degraded: ' + reason if reason else 'running'}")

    def gauge(self, name: str, read: Callable[[], int]) -> None:
        """Report `read()` as a queue depth in every status message (and a HA sensor)."""
        self._gauges[name] = read
        self.entities.append(
            status_sensor(
                f"queue_{name}",
                f"Queue {name.replace('_', ' ')}",
                f"{{{{ value_json.queues.{name} }}}}",
                unit="items",
            )
        )

    def gauges(self) -> dict[str, Callable[[], int]]:
        return dict(self._gauges)

    def uptime(self) -> float:
        return time.monotonic() - self._started_mono

    def count_throughput(self, counter: str) -> None:
        """Report the rate of `counter` as frames per minute (status and Home Assistant)."""
        self.throughput_counter = counter
        self.entities.append(
            status_sensor(
                "frames_per_minute",
                "Frames per minute",
                "{{ value_json.details.frames_per_minute }}",
                unit="frames/min",
            )
        )

    def _frames_per_minute(self) -> float:
        assert self.throughput_counter is not None
        now, value = time.monotonic(), self.counters[self.throughput_counter]
        self._samples.append((now, value))
        while len(self._samples) > 2 and now - self._samples[1][0] >= 60:
            self._samples.popleft()
        then, before = self._samples[0]
        return round((value - before) * 60 / (now - then), 1) if now - then >= 1 else 0.0

    def schedule(self, job_id: str, job: Callable[[], Awaitable[str]], **trigger: Any) -> None:
        """Run `job` on an APScheduler trigger (`trigger="cron", hour=3` ...); its last
        outcome and next run are reported in status as job.<id>.last / job.<id>.next."""
        self._jobs.append((job_id, job, trigger))

    async def _run_job(self, job_id: str, job: Callable[[], Awaitable[str]]) -> None:
        try:
            outcome = await job()
            self.details[f"job.{job_id}.last"] = f"{utc_now().isoformat()} ok: {outcome}"
            self.counters[f"jobs.{job_id}.ok"] += 1
        except asyncio.CancelledError:
            raise
        except Exception as err:
            logger.exception("scheduled job %s failed", job_id)
            self.details[f"job.{job_id}.last"] = f"{utc_now().isoformat()} failed: {err}"
            self.counters[f"jobs.{job_id}.failed"] += 1

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

    async def publish_when_connected(
        self,
        topic: str,
        payload: bytes | str,
        *,
        qos: int = 1,
        retain: bool = False,
        properties: Properties | None = None,
    ) -> None:
        """Publish, waiting for (re)connection as long as it takes. For background tasks only:
        a message handler must use `publish`, since it runs on the connection it waits for."""
        backoff = Backoff(initial=0.1, cap=2.0)
        while True:
            await self.connected.wait()
            try:
                await self.publish(topic, payload, qos=qos, retain=retain, properties=properties)
                return
            except aiomqtt.MqttError as err:
                # Only the connection loop changes `connected`: a publish that fails on a client
                # already replaced must not mark the new, healthy connection as down.
                logger.info("publish to %s failed (%s); retrying", topic, err)
                await asyncio.sleep(backoff.next())

    async def dead_letter(
        self,
        kind: ErrorKind,
        reason: str,
        *,
        source_topic: str | None = None,
        source_name: str | None = None,
        frame_id: str | None = None,
        payload: bytes | None = None,
        payload_sha256: str | None = None,
    ) -> None:
        """Log and publish what was refused; never raises (a dead letter is best effort)."""
        self.counters[f"dead_letters.{kind.value}"] += 1
        logger.warning(
            "dead letter (%s) %s%s: %s",
            kind.value,
            source_name or source_topic or "",
            f" frame {frame_id}" if frame_id else "",
            reason,
        )
        if payload is not None and payload_sha256 is None:
            payload_sha256 = hashlib.sha256(payload).hexdigest()
        letter = DeadLetter(
            agent_id=self.agent_id,
            at=utc_now(),
            kind=kind,
            reason=reason,
            source_topic=source_topic,
            source_name=source_name,
            frame_id=frame_id,
            payload_size=len(payload) if payload is not None else None,
            payload_sha256=payload_sha256,
        )
        try:
            await self.publish(self.topics.dead_letters(self.agent_id), encode_json(letter))
        except aiomqtt.MqttError as err:
            logger.warning("could not publish dead letter: %s", err)

    # --- lifecycle -----------------------------------------------------------------------
    async def run(
        self,
        tasks: Mapping[str, Callable[[], Coroutine[Any, Any, None]]],
        *,
        drain: Callable[[], Awaitable[None]] | None = None,
        stop: asyncio.Event | None = None,
    ) -> None:
        """Connect and run `tasks` until `stop` is set, then drain.

        Without a `stop` event of the caller's, SIGTERM and SIGINT stop the agent.
        """
        signals: contextlib.AbstractContextManager[object] = contextlib.nullcontext()
        if stop is None:
            stop = asyncio.Event()
            signals = SignalStop(stop)
        scheduler = AsyncIOScheduler()
        self._scheduler = scheduler
        scheduler.add_job(
            self.publish_status,
            "interval",
            seconds=self.settings.status_interval,
            id="status",
            max_instances=1,
            coalesce=True,
        )
        if self._notifier.watchdog_interval:
            scheduler.add_job(
                self._notifier.notify,
                "interval",
                args=["WATCHDOG=1"],
                seconds=self._notifier.watchdog_interval,
                id="watchdog",
            )
        for job_id, job, trigger in self._jobs:
            scheduler.add_job(
                self._run_job,
                args=[job_id, job],
                id=job_id,
                max_instances=1,
                coalesce=True,
                **trigger,
            )
        self.metrics.serve(self.settings.metrics_bind, self.settings.metrics_endpoint)
        with signals:
            scheduler.start()
            try:
                async with asyncio.TaskGroup() as tg:
                    conn = tg.create_task(self._connection_loop(), name=f"{self.agent_id}:mqtt")
                    workers = [
                        tg.create_task(fn(), name=f"{self.agent_id}:{name}")
                        for name, fn in tasks.items()
                    ]
                    await stop.wait()
                    await self._drain(drain)
                    await cancel_until_done(workers)
                    await self._say_goodbye()
                    await cancel_until_done([conn])
            finally:
                scheduler.shutdown(wait=False)
                self.metrics.close()
        logger.info("%s stopped", self.agent_id)

    async def _drain(self, drain: Callable[[], Awaitable[None]] | None) -> None:
        self.state = "draining"
        self._accepting = False
        self._notifier.notify("STOPPING=1")
        if drain is None:
            return
        try:
            async with asyncio.timeout(self.settings.drain_timeout):
                await drain()
        except TimeoutError:
            logger.warning(
                "drain did not finish within %.1f s (drain_timeout); unfinished work will be "
                "redelivered",
                self.settings.drain_timeout,
            )

    async def _say_goodbye(self) -> None:
        with contextlib.suppress(aiomqtt.MqttError):
            await self.publish_status()
            await self.publish(
                self.topics.availability(self.agent_id), Availability.OFFLINE.value, retain=True
            )

    # --- status ----------------------------------------------------------------------------
    def status(self) -> AgentStatus:
        if self.throughput_counter is not None:
            self.details["frames_per_minute"] = self._frames_per_minute()
        if self._scheduler is not None:
            for job in self._scheduler.get_jobs():
                if job.id != "watchdog" and job.next_run_time is not None:
                    self.details[f"job.{job.id}.next"] = job.next_run_time.isoformat()
        return AgentStatus(
            agent_id=self.agent_id,
            kind=self.kind,
            version=self.version,
            state=self.state,
            started_at=self._started_at,
            reported_at=utc_now(),
            uptime_s=round(self.uptime(), 3),
            counters=dict(self.counters),
            queues={name: read() for name, read in self._gauges.items()},
            details=dict(self.details),
        )

    async def publish_status(self) -> None:
        if self._client is None:
            return
        try:
            await self.publish(
                self.topics.status(self.agent_id), encode_json(self.status()), retain=True
            )
        except aiomqtt.MqttError as err:
            logger.debug("status not published: %s", err)

    # --- connection ------------------------------------------------------------------------
    def _make_client(self) -> aiomqtt.Client:
        s = self.settings
        broker = s.broker
        password = s.mqtt_password()
        connect_props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        if self.persistent:
            connect_props.SessionExpiryInterval = s.session_expiry
        tls = None
        if broker.tls:
            tls = ssl.create_default_context(cafile=str(s.mqtt_ca_file) if s.mqtt_ca_file else None)
            # Python 3.13 verifies strictly by default; ask for it everywhere, so that a
            # certificate that works on one box works on all of them.
            tls.verify_flags |= ssl.VERIFY_X509_STRICT
            if s.mqtt_cert_file is not None:  # a broker that wants client certificates
                tls.load_cert_chain(s.mqtt_cert_file, s.mqtt_key_file)
        will = aiomqtt.Will(
            self.topics.availability(self.agent_id), Availability.OFFLINE.value, qos=1, retain=True
        )
        return aiomqtt.Client(
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

    async def _connection_loop(self) -> None:
        backoff = Backoff(cap=self.settings.reconnect_max)
        broker = self.settings.broker
        problem: str | None = None  # said once, not on every attempt
        while True:
            try:
                async with self._make_client() as client:
                    logger.info("%s connected to %s:%d", self.agent_id, broker.host, broker.port)
                    backoff.reset()
                    problem = None
                    self._notifier.notify(f"STATUS=connected to {broker.host}:{broker.port}")
                    await self._on_connect(client)
                    await self._pump(client)
            except aiomqtt.MqttError as err:
                self.counters["reconnects"] += 1
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

    async def _on_connect(self, client: aiomqtt.Client) -> None:
        for sub in self._subs:
            granted = await client.subscribe(sub.topic, qos=sub.qos)
            codes = [getattr(g, "value", g) for g in granted]
            if any(isinstance(c, int) and c >= 0x80 for c in codes):
                raise ConfigurationError(
                    f"broker refused subscription to {sub.topic!r} for user "
                    f"{self.settings.username()!r} (reason codes {codes}); check the ACL"
                )
        self._client = client
        if self.state == "starting":
            self.state = "degraded" if self.degraded_reason else "running"
        await client.publish(
            self.topics.availability(self.agent_id), Availability.ONLINE.value, qos=1, retain=True
        )
        self.connected.set()
        for hook in self._connect_hooks:
            hook()
        await self.publish_status()
        await self.home_assistant.announce()
        if not self._ready_sent:
            self._ready_sent = True
            self._notifier.notify("READY=1")

    async def _pump(self, client: aiomqtt.Client) -> None:
        # aiomqtt acknowledges a QoS 1 message as soon as it is queued, so a frame is only
        # safe once the ledger acknowledges it end to end; handlers may block (backpressure)
        # but must give way when the connection drops, or a handler waiting for room in a
        # queue that only drains over this connection would wait forever.
        lost: asyncio.Future[None] = client._disconnected
        async for message in client.messages:
            if not self._accepting:
                continue
            handling = asyncio.ensure_future(self._handle(message))
            await asyncio.wait({handling, lost}, return_when=asyncio.FIRST_COMPLETED)
            if not handling.done():
                handling.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await handling
                if not lost.cancelled():
                    lost.exception()  # retrieved, so asyncio does not report it as lost
                raise aiomqtt.MqttError("disconnected while handling a message")

    async def _handle(self, message: aiomqtt.Message) -> None:
        topic = message.topic.value
        payload = message.payload if isinstance(message.payload, bytes) else b""
        for sub in self._subs:
            if not message.topic.matches(sub.match):
                continue
            try:
                await sub.handler(message)
            except asyncio.CancelledError:
                raise
            except MessageError as err:
                await self.dead_letter(err.kind, err.reason, source_topic=topic, payload=payload)
            except Exception as err:
                logger.exception("handler for %s failed", topic)
                await self.dead_letter(
                    ErrorKind.PROCESSING_ERROR,
                    f"{type(err).__name__}: {err}",
                    source_topic=topic,
                    payload=payload,
                )
            return
