"""Home Assistant MQTT discovery: each agent appears as a device with its sensors.

Device-based discovery (`<ha_prefix>/device/<agent>/config`, one message for all of a
device's entities, with `origin`). Entities read the agent's retained status and
availability topics, so Home Assistant needs nothing else; availability is the agent's Last
Will. Discovery is sent on every connection and again, after a short random delay, whenever
Home Assistant announces itself on `<ha_prefix>/status` (its birth message). Births are
coalesced: while one re-announcement is pending the others join it, and an agent answers at
most one birth per BIRTH_INTERVAL seconds (2,000 births once made 6,000 retained discovery
messages).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aiomqtt

from schemas import TopicTree

if TYPE_CHECKING:
    from edge_agents.runtime.agent import AgentRuntime

logger = logging.getLogger(__name__)

BIRTH_INTERVAL = 30.0  # seconds: at most one re-announcement per agent this often


@dataclass(frozen=True)
class Entity:
    """One Home Assistant entity of an agent's device."""

    key: str  # unique within the agent
    platform: str  # sensor, binary_sensor, image
    name: str
    config: dict[str, Any] = field(default_factory=dict)


def status_sensor(
    key: str, name: str, template: str, *, unit: str | None = None, **extra: Any
) -> Entity:
    """A sensor whose value is read from the agent's status JSON with `template`."""
    config: dict[str, Any] = {"value_template": template, **extra}
    if unit:
        config["unit_of_measurement"] = unit
        config.setdefault("state_class", "measurement")
    return Entity(key, "sensor", name, config)


def discovery_topic(ha_prefix: str, agent_id: str) -> str:
    return f"{ha_prefix}/device/framewire_{agent_id}/config"


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
        "qos": 1,
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
            rt.counters["ha_discovery"] += 1
        except aiomqtt.MqttError as err:
            logger.warning("Home Assistant discovery not published: %s", err)

    async def on_birth(self, message: aiomqtt.Message) -> None:
        """Home Assistant's birth message: announce again after a short random delay, and
        no sooner than `interval` after the last birth this agent answered."""
        if message.payload != b"online" or message.retain:
            return
        if self._pending is not None and not self._pending.done():
            self.runtime.counters["ha_births_coalesced"] += 1
            return  # the pending announcement answers this birth too
        jitter = random.uniform(0, self.runtime.settings.ha_birth_delay)
        wait = max(jitter, self._last_answer + self.interval - time.monotonic())
        # not awaited here (the message pump must not sleep): a task announces later
        self._pending = asyncio.create_task(self._announce_later(wait))

    async def _announce_later(self, wait: float) -> None:
        await asyncio.sleep(wait)
        self._last_answer = time.monotonic()
        await self.announce()
