"""Home Assistant MQTT discovery: each agent appears as a device with its sensors.

Device-based discovery (`<ha_prefix>/device/<agent>/config`, one message for all of a
device's entities, with `origin`). Entities read the agent's retained status and
availability topics, so Home Assistant needs nothing else; availability is the agent's Last
Will. Discovery is sent on every connection and again, after a short random delay, whenever
Home Assistant announces itself on `<ha_prefix>/status` (its birth message). Births are
coalesced: while one re-announcement is pending the others join it, and an agent answers at
most one birth per BIRTH_INTERVAL seconds (2,000 births once made 6,000 retained discovery
messages).

What Home Assistant does with a device message, and so what this module must say
(homeassistant/components/mqtt/discovery.py, schemas.py, 2026.2): only the options in
SHARED_OPTIONS (availability and the state/command topics) pass from the device to its
components, so `qos` is set on every component; the Online entity *is* the availability,
so it has none of its own (inheriting it made it `unavailable`, never `off`, when the Last
Will fired). Totals are read from the agents' databases (StoredFacts), never counted by
the process: a restart that set them back to 0 would read as a meter reset.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import sqlite3
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, get_args

import aiomqtt

from framewire.edge_agents.runtime.endpoints import Inbound
from framewire.schemas import AgentStatus, TopicTree
from framewire.schemas.topics import ha_discovery_topic

if TYPE_CHECKING:
    from framewire.edge_agents.runtime.agent import AgentRuntime

logger = logging.getLogger(__name__)

BIRTH_INTERVAL = 30.0  # seconds: at most one re-announcement per agent this often
QOS = 1  # every component subscribes with it (HA's default is 0)

Fact = str | int | float | bool | None
StateClass = Literal["measurement", "total", "total_increasing"]


@dataclass(frozen=True)
class Entity:
    """One Home Assistant entity of an agent's device."""

    key: str  # unique within the agent
    platform: str  # sensor, binary_sensor, image
    name: str
    config: dict[str, Any] = field(default_factory=dict)


def status_sensor(
    key: str,
    name: str,
    template: str,
    *,
    unit: str | None = None,
    state_class: StateClass | None = None,
    **extra: Any,
) -> Entity:
    """A sensor whose value is read from the agent's status JSON with `template`.

    A sensor with a unit is a number and gets state_class measurement unless it says
    otherwise (a counter: total or total_increasing); a number without a unit names its
    state_class, or Home Assistant keeps no statistics of it."""
    config: dict[str, Any] = {"value_template": template, **extra}
    if unit:
        config["unit_of_measurement"] = unit
        state_class = state_class or "measurement"
    if state_class:
        config["state_class"] = state_class
    return Entity(key, "sensor", name, config)


def state_sensor() -> Entity:
    """The agent's state, an enum of exactly the states a status message may carry."""
    states = list(get_args(AgentStatus.model_fields["state"].annotation))
    return status_sensor(
        "state",
        "State",
        "{{ value_json.state }}",
        device_class="enum",
        options=states,
        entity_category="diagnostic",
    )


class StoredFacts:
    """Facts an agent keeps on disk (rows in its database, its newest backup), reported in
    its status details as `stored.<key>` and shown as Home Assistant sensors.

    A total a person reads as a total must not start again from 0 when the agent restarts
    while its database still holds every row, so these are read from the database: at
    start (`refresh` before the agent runs), on `refresh`, and every `poll` seconds when
    given (for totals that change in many places). Between reads, an agent that has just
    committed a row may `add` it. Each of `reads` is one source (one database query, one
    folder); one that fails keeps its last values (logged once) and spoils no other."""

    PREFIX = "stored."

    def __init__(
        self,
        runtime: AgentRuntime,
        *reads: Callable[[], Awaitable[Mapping[str, Fact]]],
        poll: float | None = None,
    ) -> None:
        self.runtime = runtime
        self.poll = poll
        self._reads = reads
        self._failing: set[int] = set()

    def _template(self, key: str) -> str:
        # `None` (not read yet, or never) is Home Assistant's "unknown"; 0 would be a value
        return f"{{{{ value_json.details['{self.PREFIX}{key}'] | default(None) }}}}"

    def count(
        self, key: str, name: str, *, state_class: StateClass, unit: str | None = None
    ) -> None:
        """Declare `key`, a count one of the reads returns, as a sensor: total_increasing
        for a count that only grows, total for one that may also fall (rows pruned),
        measurement for a count of what is there now."""
        self.runtime.entities.append(
            status_sensor(key, name, self._template(key), unit=unit, state_class=state_class)
        )

    def timestamp(self, key: str, name: str, **extra: Any) -> None:
        """Declare `key`, an ISO 8601 time with its offset (or None) one of the reads
        returns, as a sensor."""
        self.runtime.entities.append(
            status_sensor(key, name, self._template(key), device_class="timestamp", **extra)
        )

    async def refresh(self) -> None:
        for i, read in enumerate(self._reads):
            try:
                facts = await read()
            except (sqlite3.Error, OSError) as err:
                if i not in self._failing:
                    logger.warning("%s: stored facts not read: %s", self.runtime.agent_id, err)
                self._failing.add(i)
                continue
            # Set at once, with no await between: a database runs its calls in order, so a
            # row committed before the read is in it, and one after it is added to this.
            self._failing.discard(i)
            for key, value in facts.items():
                self.runtime.details[self.PREFIX + key] = value

    def add(self, key: str, n: int = 1) -> None:
        """Count `n` rows just committed, until the next read (which counts them anyway)."""
        name = self.PREFIX + key
        value = self.runtime.details.get(name)
        if isinstance(value, int) and not isinstance(value, bool):
            self.runtime.details[name] = value + n

    async def run(self) -> None:
        """Read again every `poll` seconds; without `poll`, only on `refresh`."""
        if self.poll is None:
            return
        while True:
            await asyncio.sleep(self.poll)
            await self.refresh()


discovery_topic = ha_discovery_topic


def discovery_payload(
    agent_id: str, kind: str, version: str, topics: TopicTree, entities: list[Entity]
) -> dict[str, Any]:
    availability = topics.availability(agent_id)
    status = topics.status(agent_id)
    components: dict[str, Any] = {
        f"{agent_id}_online": {
            "platform": "binary_sensor",
            "name": "Online",
            "device_class": "connectivity",
            "entity_category": "diagnostic",
            "state_topic": availability,
            "payload_on": "online",
            "payload_off": "offline",
            # Its own availability is Home Assistant's broker connection, not the agent's
            # (which it shows): so the Last Will turns it off, and "turned off" fires.
            "availability": [],
            "qos": QOS,
            "unique_id": f"framewire_{agent_id}_online",
        }
    }
    for entity in entities:
        config: dict[str, Any] = {
            "platform": entity.platform,
            "name": entity.name,
            "unique_id": f"framewire_{agent_id}_{entity.key}",
        }
        if entity.platform in ("sensor", "binary_sensor"):
            config["state_topic"] = status
        config.update(entity.config)
        config["qos"] = QOS
        components[f"{agent_id}_{entity.key}"] = config
    return {
        "device": {
            "identifiers": [f"framewire_{agent_id}"],
            "name": f"framewire {agent_id}",
            "manufacturer": "framewire",
            "model": f"{kind} agent",
            "sw_version": version,
        },
        "origin": {"name": "framewire", "sw_version": version},
        "availability": [
            {
                "topic": availability,
                "payload_available": "online",
                "payload_not_available": "offline",
            }
        ],
        "components": components,
    }


class Announcer:
    """Publishes an agent's discovery on connect and when Home Assistant comes online."""

    def __init__(self, runtime: AgentRuntime, *, interval: float = BIRTH_INTERVAL) -> None:
        self.runtime = runtime
        self.interval = interval
        self._pending: asyncio.Task[None] | None = None
        self._last_answer = -float("inf")  # monotonic time of the last birth answered

    async def announce(self) -> None:
        rt = self.runtime
        if not rt.settings.ha_discovery:
            return
        payload = discovery_payload(rt.agent_id, rt.kind, rt.version, rt.topics, rt.entities)
        topic = discovery_topic(rt.settings.ha_prefix, rt.agent_id)
        try:
            await rt.publish(topic, json.dumps(payload), retain=True)
            rt.count("ha_discovery")
        except aiomqtt.MqttError as err:
            logger.warning("Home Assistant discovery not published: %s", err)

    async def on_birth(self, message: Inbound[bytes]) -> None:
        """Home Assistant's birth message: announce again after a short random delay, and
        no sooner than `interval` after the last birth this agent answered."""
        if message.payload != b"online" or message.retain:
            return
        if self._pending is not None and not self._pending.done():
            self.runtime.count("ha_births_coalesced")
            return  # the pending announcement answers this birth too
        jitter = random.uniform(0, self.runtime.settings.ha_birth_delay)
        wait = max(jitter, self._last_answer + self.interval - time.monotonic())
        # not awaited here (the message pump must not sleep): a task announces later
        self._pending = asyncio.create_task(self._announce_later(wait))

    async def _announce_later(self, wait: float) -> None:
        await asyncio.sleep(wait)
        self._last_answer = time.monotonic()
        await self.announce()
