"""Home Assistant MQTT discovery: each agent appears as a device with its sensors.

Device-based discovery (`<ha_prefix>/device/<agent>/config`, one message for all of a
device's entities, with `origin`). Entities read the agent's retained status and
availability topics, so Home Assistant needs nothing else; availability is the agent's Last
Will. Discovery is sent on every connection and again, after a short random delay, whenever
Home Assistant announces itself on `<ha_prefix>/status` (its birth message).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aiomqtt

from schemas import TopicTree

if TYPE_CHECKING:
    from edge_agents.runtime.agent import AgentRuntime

logger = logging.getLogger(__name__)


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

    def __init__(self, runtime: AgentRuntime) -> None:
        self.runtime = runtime
        self._later: set[asyncio.Task[None]] = set()

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
        """Home Assistant's birth message: announce again after a short random delay."""
        if message.payload != b"online" or message.retain:
            return
        # not awaited here (the message pump must not sleep): a task announces later
        task = asyncio.create_task(self._announce_later())
        self._later.add(task)
        task.add_done_callback(self._later.discard)

    async def _announce_later(self) -> None:
        await asyncio.sleep(random.uniform(0, self.runtime.settings.ha_birth_delay))
        await self.announce()
