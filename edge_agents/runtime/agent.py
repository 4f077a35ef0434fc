"""The agent runtime every framewire agent runs inside.

An agent module declares what it does (an `AgentSpec`: the channels it receives and sends
on, its lanes, counters, gauges and commands) and supplies its handlers, long-running tasks
and a drain step; the runtime does the rest, each part in its own module:

    session.py    the MQTT connection: connect, reconnect with backoff, TLS, Last Will
    dispatch.py   lanes: decode, validate, handle, dead-letter, acknowledge once handled
    telemetry.py  declared counters and gauges, details, the status message
    lifecycle.py  signals, systemd READY/WATCHDOG/STATUS, the event loop
    homeassistant.py, metrics.py   what Home Assistant and Prometheus read

`AgentRuntime` puts them together for one agent: availability (retained `online`, Last Will
`offline`), the retained status heartbeat (APScheduler), scheduled jobs, and the graceful
drain on SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any

import aiomqtt
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from paho.mqtt.properties import Properties

from framewire.edge_agents.runtime.commands import (
    CommandHandler,
    CommandResult,
    CommandTable,
    Scalar,
)
from framewire.edge_agents.runtime.dispatch import Dispatcher, Handler, Route
from framewire.edge_agents.runtime.endpoints import (
    CONTROL,
    RUNTIME,
    AgentSpec,
    Inbound,
    Send,
    UndeclaredError,
)
from framewire.edge_agents.runtime.homeassistant import (
    Announcer,
    Entity,
    state_sensor,
    status_sensor,
)
from framewire.edge_agents.runtime.lifecycle import SignalStop, SystemdNotifier
from framewire.edge_agents.runtime.metrics import AgentMetrics
from framewire.edge_agents.runtime.session import (
    Backoff,
    ConfigurationError,
    NotConnectedError,
    Session,
    connect_problem,
)
from framewire.edge_agents.runtime.settings import AgentSettings
from framewire.edge_agents.runtime.telemetry import Detail, State, Telemetry
from framewire.schemas import (
    AgentStatus,
    Availability,
    CommandRequest,
    CommandResponse,
    DeadLetter,
    ErrorKind,
    MessageError,
    TopicTree,
    encode_json,
    utc_now,
)
from framewire.schemas.channels import AVAILABILITY, REQUESTS, STATUS, Channel
from framewire.schemas.topics import ha_discovery_topic, ha_status_topic

logger = logging.getLogger(__name__)

__version__ = "0.1.0"
__all__ = [
    "AgentRuntime",
    "Backoff",
    "ConfigurationError",
    "NotConnectedError",
    "UndeclaredError",
    "connect_problem",
]


async def cancel_until_done(tasks: list[asyncio.Task[Any]]) -> None:
    """Cancel `tasks` and wait for them, cancelling again any that go on: on Python 3.11,
    asyncio.wait_for can swallow a cancellation that arrives as its inner await finishes,
    and a task that swallowed one would keep the agent from ever stopping."""
    while pending := [t for t in tasks if not t.done()]:
        for task in pending:
            task.cancel()
        await asyncio.wait(pending, timeout=1.0)


class AgentRuntime:
    """Connection, dispatch, telemetry and lifecycle for one agent, as its spec declares."""

    def __init__(self, settings: AgentSettings, spec: AgentSpec, *, persistent: bool) -> None:
        self.settings = settings
        self.spec = spec.merged(RUNTIME)
        self.spec.check()
        self.kind = spec.kind
        self.agent_id = settings.identity
        self.topics = TopicTree(settings.topic_prefix)
        self.version = __version__
        self.degraded_reason: str | None = None
        self.telemetry = Telemetry(self.spec)
        self._notifier = SystemdNotifier()
        self._ready_sent = False
        self.dispatcher = Dispatcher(self.topics, self.dead_letter, self.count)
        self.session = Session(
            settings,
            self.dispatcher,
            self._notifier,
            persistent=persistent,
            will_topic=self.topics.availability(self.agent_id),
            count=self.count,
        )
        self._connect_hooks: list[Callable[[], None]] = []
        self._sendable: dict[str, Send | None] = {}
        self._commands = CommandTable(self.agent_id)
        self.command("status", self._status_command)
        self.receive(REQUESTS, self._on_request, ident=self.agent_id)
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
        self._jobs: list[tuple[str, Callable[[], Awaitable[str]], dict[str, Any]]] = []
        self._scheduler: AsyncIOScheduler | None = None
        self.home_assistant = Announcer(self)
        if settings.ha_discovery:
            birth = ha_status_topic(settings.ha_prefix)
            self.dispatcher.add(Route(birth, birth, None, self.home_assistant.on_birth, CONTROL))

    # --- what agents declare and call ------------------------------------------------------
    def receive(
        self,
        channel: Channel,
        handler: Callable[[Inbound[Any]], Awaitable[None]],
        *,
        ident: str | None = None,
        share: str | None = None,
        on: bool = True,
    ) -> None:
        """Handle what arrives on `channel` (for `ident` only, or every topic of it; through
        the shared subscription `share`); call before `run`. The handler gets the message
        decoded and validated, in the lane the spec names. `on=False`: not subscribed until
        `set_receiving` switches it on."""
        declared = [r for r in self.spec.receives if r.channel == channel]
        if not declared:
            raise UndeclaredError(
                f"the {self.kind} agent does not declare receiving {channel.name}"
            )
        if share is not None and not declared[0].shared:
            raise UndeclaredError(f"{channel.name} is not declared as a shared subscription")
        match = channel.topic(self.topics, ident) if ident else channel.filter(self.topics)
        topic = f"$share/{share}/{match}" if share else match
        lane = self.spec.lane(declared[0].lane)
        self.dispatcher.add(Route(topic, match, channel, handler, lane))
        if not on:
            self.dispatcher.paused.add(topic)

    async def set_receiving(self, channel: Channel, on: bool) -> None:
        """Subscribe to `channel` (as `receive` declared it) or unsubscribe, while connected
        and on every reconnect: a fallback agent joins its share group only while it is
        needed."""
        routes = [r for r in self.dispatcher.routes if r.channel == channel]
        if not routes:
            raise UndeclaredError(f"the {self.kind} agent does not receive {channel.name}")
        await self.session.switch([(r.topic, r.lane.qos) for r in routes], on=on)

    def receiving(self, channel: Channel) -> bool:
        """True while `channel` is subscribed to (or will be, on the next connection)."""
        return any(
            r.channel == channel and r.topic not in self.dispatcher.paused
            for r in self.dispatcher.routes
        )

    def on_connect(self, callback: Callable[[], None]) -> None:
        """Call `callback()` each time a connection is up and subscribed (after a broker
        restart, say, when what the broker held for others may be gone)."""
        self._connect_hooks.append(callback)

    def command(self, name: str, handler: CommandHandler) -> None:
        """Answer requests `name` on this agent's request topic with `handler(args)`."""
        if name not in self.spec.commands:
            raise UndeclaredError(f"the {self.kind} agent does not declare command {name!r}")
        self._commands.add(name, handler)

    def count(self, name: str, n: int = 1) -> None:
        """Add `n` to the declared counter `name`."""
        self.telemetry.count(name, n)

    def gauge(self, name: str, read: Callable[[], int]) -> None:
        """Report `read()` as a queue depth in every status message (and a HA sensor)."""
        self.telemetry.gauge(name, read)
        self.entities.append(
            status_sensor(
                f"queue_{name}",
                f"Queue {name.replace('_', ' ')}",
                f"{{{{ value_json.queues.{name} }}}}",
                unit="items",
            )
        )

    def count_throughput(self, counter: str) -> None:
        """Report the rate of `counter` as frames per minute (status and Home Assistant)."""
        self.telemetry.count_throughput(counter)
        self.entities.append(
            status_sensor(
                "frames_per_minute",
                "Frames per minute",
                "{{ value_json.details.frames_per_minute }}",
                unit="frames/min",
            )
        )

    def schedule(self, job_id: str, job: Callable[[], Awaitable[str]], **trigger: Any) -> None:
        """Run `job` on an APScheduler trigger (`trigger="cron", hour=3` ...); its last
        outcome and next run are reported in status as job.<id>.last / job.<id>.next."""
        self.telemetry.declare(f"jobs.{job_id}.ok", f"scheduled {job_id} runs that succeeded")
        self.telemetry.declare(f"jobs.{job_id}.failed", f"scheduled {job_id} runs that failed")
        self._jobs.append((job_id, job, trigger))

    # what the rest of the runtime (metrics, Home Assistant) reads
    @property
    def counters(self) -> Mapping[str, int]:
        return self.telemetry.counters

    @property
    def details(self) -> dict[str, Detail]:
        return self.telemetry.details

    @property
    def state(self) -> State:
        return self.telemetry.state

    @property
    def connected(self) -> asyncio.Event:
        return self.session.connected

    def gauges(self) -> dict[str, Callable[[], int]]:
        return self.telemetry.gauges()

    def uptime(self) -> float:
        return self.telemetry.uptime()

    def set_degraded(self, reason: str | None) -> None:
        """Report the agent degraded (up, but unable to do its work: a full disk, say) with
        a reason a person can act on, or, with None, running again. Shown in status, Home
        Assistant, metrics and `systemctl status`."""
        if reason == self.degraded_reason:
            return
        self.degraded_reason = reason
        self.details["degraded_reason"] = reason
        if self.state in ("running", "degraded"):
            self.telemetry.state = "degraded" if reason else "running"
        self._notifier.notify(f"STATUS={'degraded: ' + reason if reason else 'running'}")

    # --- publishing --------------------------------------------------------------------------
    def _declared_send(self, topic: str) -> Send | None:
        if topic in self._sendable:
            return self._sendable[topic]
        found = next(
            (s for s in self.spec.sends if s.channel.param_of(self.topics, topic) is not None),
            None,
        )
        if found is None and topic != ha_discovery_topic(self.settings.ha_prefix, self.agent_id):
            raise UndeclaredError(
                f"the {self.kind} agent does not declare sending on {topic[:200]!r}"
            )
        if len(self._sendable) < 10_000:
            self._sendable[topic] = found
        return found

    async def send(
        self,
        channel: Channel,
        ident: str,
        payload: bytes | str,
        *,
        properties: Properties | None = None,
    ) -> None:
        """Publish on a declared channel, with the QoS and retain flag it declares; raises
        NotConnectedError (an MqttError) while disconnected."""
        topic = channel.topic(self.topics, ident)
        declared = self._declared_send(topic)
        assert declared is not None
        await self.session.publish(
            topic, payload, qos=declared.qos, retain=declared.retain, properties=properties
        )

    async def publish(
        self,
        topic: str,
        payload: bytes | str,
        *,
        qos: int = 1,
        retain: bool = False,
        properties: Properties | None = None,
    ) -> None:
        """Publish now on a topic of a declared channel; raises NotConnectedError (an
        MqttError) while disconnected."""
        self._declared_send(topic)
        await self.session.publish(topic, payload, qos=qos, retain=retain, properties=properties)

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
        self.count(f"dead_letters.{kind.value}")
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

    # --- commands ----------------------------------------------------------------------------
    async def _status_command(self, args: dict[str, Scalar]) -> CommandResult:
        status = self.status()
        data: dict[str, Scalar] = {f"counter.{k}": v for k, v in status.counters.items()}
        data.update({f"queue.{k}": v for k, v in status.queues.items()})
        data.update(status.details)
        return f"{self.agent_id} is {status.state}", data

    async def _on_request(self, inbound: Inbound[CommandRequest]) -> None:
        self.count("requests")
        reply_to = getattr(inbound.properties, "ResponseTopic", None)
        if reply_to is not None and not self._is_response_topic(reply_to):
            # Replying would publish with this agent's rights (its acks, results...) on a
            # topic the requester chose; the request is refused, not carried out.
            raise MessageError(
                ErrorKind.UNDELIVERABLE,
                f"response topic {reply_to[:200]!r} is not one level under "
                f"{self.topics.prefix}/responses/; request not carried out",
            )
        await self._commands.answer(inbound.value, inbound.properties, self._reply)

    def _is_response_topic(self, topic: str) -> bool:
        try:
            return self.topics.responses(self.topics.segment(topic, 1)) == topic
        except ValueError:
            return False

    async def _reply(self, topic: str, response: CommandResponse, props: Properties) -> None:
        await self.publish(topic, encode_json(response), properties=props)

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
        scheduler = self._make_scheduler()
        self.metrics.serve(self.settings.metrics_bind, self.settings.metrics_endpoint)
        with signals:
            scheduler.start()
            try:
                async with asyncio.TaskGroup() as tg:
                    conn = tg.create_task(
                        self.session.run(self._on_connect), name=f"{self.agent_id}:mqtt"
                    )
                    lanes = [
                        tg.create_task(
                            self.dispatcher.work(lane.name), name=f"{self.agent_id}:{lane.name}"
                        )
                        for lane in self.dispatcher.lanes()
                        for _ in range(lane.workers)
                    ]
                    workers = [
                        tg.create_task(fn(), name=f"{self.agent_id}:{name}")
                        for name, fn in tasks.items()
                    ]
                    await stop.wait()
                    await self._drain(drain)
                    await cancel_until_done(workers + lanes)
                    await self._say_goodbye()
                    await cancel_until_done([conn])
            finally:
                # jobs not yet run are dropped with the scheduler, never left to a closed loop
                for job in scheduler.get_jobs():
                    job.remove()
                scheduler.shutdown(wait=False)
                self.metrics.close()
        logger.info("%s stopped", self.agent_id)

    def _make_scheduler(self) -> AsyncIOScheduler:
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
        return scheduler

    async def _run_job(self, job_id: str, job: Callable[[], Awaitable[str]]) -> None:
        try:
            outcome = await job()
            self.details[f"job.{job_id}.last"] = f"{utc_now().isoformat()} ok: {outcome}"
            self.count(f"jobs.{job_id}.ok")
        except asyncio.CancelledError:
            raise
        except Exception as err:
            logger.exception("scheduled job %s failed", job_id)
            self.details[f"job.{job_id}.last"] = f"{utc_now().isoformat()} failed: {err}"
            self.count(f"jobs.{job_id}.failed")

    async def _drain(self, drain: Callable[[], Awaitable[None]] | None) -> None:
        self.telemetry.state = "draining"
        self.session.accepting = False
        self._notifier.notify("STOPPING=1")
        try:
            async with asyncio.timeout(self.settings.drain_timeout):
                await self.dispatcher.join()
                if drain is not None:
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
            await self.send(AVAILABILITY, self.agent_id, Availability.OFFLINE.value)

    async def _on_connect(self, client: aiomqtt.Client) -> None:
        if self.state == "starting":
            self.telemetry.state = "degraded" if self.degraded_reason else "running"
        await self.send(AVAILABILITY, self.agent_id, Availability.ONLINE.value)
        self.connected.set()
        for hook in self._connect_hooks:
            hook()
        await self.publish_status()
        await self.home_assistant.announce()
        if not self._ready_sent:
            self._ready_sent = True
            self._notifier.notify("READY=1")

    # --- status ----------------------------------------------------------------------------
    def status(self) -> AgentStatus:
        if self._scheduler is not None:
            for job in self._scheduler.get_jobs():
                if job.id != "watchdog" and job.next_run_time is not None:
                    self.details[f"job.{job.id}.next"] = job.next_run_time.isoformat()
        for lane in self.dispatcher.lanes():
            self.details[f"lane.{lane.name}"] = self.dispatcher.depth(lane.name)
        return self.telemetry.status(self.agent_id, self.kind, self.version)

    async def publish_status(self) -> None:
        if self.session.client is None:
            return
        try:
            await self.send(STATUS, self.agent_id, encode_json(self.status()))
        except aiomqtt.MqttError as err:
            logger.debug("status not published: %s", err)


__all__ += ["Dispatcher", "Handler"]
