"""From the broker to the handlers: each message is routed to its endpoint's lane, decoded
and validated there, and handled inside an error boundary; QoS 1 messages are acknowledged
to the broker only once handled (or dead-lettered)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiomqtt

from framewire.edge_agents.runtime.endpoints import Inbound, Lane
from framewire.edge_agents.runtime.mqtt_adapter import acknowledge
from framewire.schemas import ErrorKind, MessageError, TopicTree
from framewire.schemas.channels import Channel, Cleared

logger = logging.getLogger(__name__)

Handler = Callable[[Inbound[Any]], Awaitable[None]]
DeadLetter = Callable[..., Awaitable[None]]


@dataclass(frozen=True)
class Route:
    topic: str  # as subscribed, possibly "$share/<group>/..."
    match: str  # the filter incoming topics are matched against
    channel: Channel | None  # None: the payload is handed over as bytes
    handler: Handler
    lane: Lane


@dataclass(frozen=True)
class _Item:
    message: aiomqtt.Message
    route: Route
    client: aiomqtt.Client
    generation: int  # the connection it came on


class Dispatcher:
    def __init__(
        self, tree: TopicTree, dead_letter: DeadLetter, count: Callable[[str], None]
    ) -> None:
        self.tree = tree
        self.routes: list[Route] = []
        # routes not subscribed to now (switched off while connected, or not yet on): the
        # session leaves them out of every subscription, a reconnect included
        self.paused: set[str] = set()
        self._dead_letter = dead_letter
        self._count = count
        self._queues: dict[str, asyncio.Queue[_Item]] = {}
        self._lanes: dict[str, Lane] = {}
        self.generation = 0  # bumped by the session on every new connection

    def add(self, route: Route) -> None:
        self.routes.append(route)
        lane = route.lane
        if lane.name not in self._queues:
            self._lanes[lane.name] = lane
            self._queues[lane.name] = asyncio.Queue(maxsize=lane.capacity)

    def lanes(self) -> list[Lane]:
        return list(self._lanes.values())

    def depth(self, lane: str) -> int:
        return self._queues[lane].qsize()

    def receive_maximum(self) -> int:
        """The MQTT Receive Maximum: what the QoS 1 lanes hold, and what their workers have
        in hand (a message leaves the lane before its handler is done with it)."""
        total = sum(ln.capacity + ln.workers for ln in self._lanes.values() if ln.qos > 0)
        return max(1, min(65535, total))

    def _route(self, message: aiomqtt.Message) -> Route | None:
        for route in self.routes:
            if message.topic.matches(route.match):
                return route
        return None

    def offer_nowait(self, message: aiomqtt.Message, client: aiomqtt.Client) -> bool:
        """Queue `message` in its lane; False when a QoS 1 lane is full (the caller waits in
        `offer`). Messages no route takes are acknowledged and let go."""
        route = self._route(message)
        if route is None:
            acknowledge(client, message)
            return True
        queue = self._queues[route.lane.name]
        item = _Item(message, route, client, self.generation)
        try:
            queue.put_nowait(item)
        except asyncio.QueueFull:
            if route.lane.qos > 0:
                return False
            self._count("control.dropped")
            logger.warning(
                "lane %s full: message on %s dropped", route.lane.name, message.topic.value
            )
            acknowledge(client, message)
        return True

    async def offer(self, message: aiomqtt.Message, client: aiomqtt.Client) -> None:
        route = self._route(message)
        assert route is not None
        await self._queues[route.lane.name].put(_Item(message, route, client, self.generation))

    async def work(self, lane: str) -> None:
        """One worker of `lane`: handle its messages until cancelled."""
        queue = self._queues[lane]
        while True:
            item = await queue.get()
            try:
                # Handled even when it came on a connection since lost: the broker delivers
                # it again only if it still has it (a broker restarted from its last save
                # may not), and every handler takes a message twice as once.
                await self.handle(item.message, item.route)
                if item.generation == self.generation:
                    acknowledge(item.client, item.message)
            finally:
                queue.task_done()

    async def join(self) -> None:
        """Wait until every message taken so far is handled."""
        for queue in self._queues.values():
            await queue.join()

    async def handle(self, message: aiomqtt.Message, route: Route) -> None:
        """Decode, validate and handle one message; whatever is wrong with it becomes a dead
        letter, never an exception out of here."""
        topic = message.topic.value
        payload = message.payload if isinstance(message.payload, bytes) else b""
        try:
            channel = route.channel
            if channel is None:
                inbound: Inbound[Any] = Inbound(
                    payload, "", topic, payload, message.properties, message.retain
                )
            else:
                source = channel.param_of(self.tree, topic) or ""
                value = channel.decode(payload, message.properties, source)
                inbound = Inbound(value, source, topic, payload, message.properties, message.retain)
            await route.handler(inbound)
        except asyncio.CancelledError:
            raise
        except Cleared:
            return
        except MessageError as err:
            await self._dead_letter(err.kind, err.reason, source_topic=topic, payload=payload)
        except Exception as err:
            logger.exception("handler for %s failed", topic)
            await self._dead_letter(
                ErrorKind.PROCESSING_ERROR,
                f"{type(err).__name__}: {err}",
                source_topic=topic,
                payload=payload,
            )
