"""Reading the live state of a framewire installation from its broker (status, results)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from framewire.edge_agents.runtime import BrokerAddress
from framewire.schemas import (
    AgentStatus,
    CommandRequest,
    CommandResponse,
    MessageError,
    TopicTree,
    decode_json,
    encode_json,
)


@dataclass(frozen=True)
class BrokerLogin:
    url: str
    username: str | None = None
    password_file: Path | None = None

    def client(self, **kwargs: object) -> aiomqtt.Client:
        address = BrokerAddress(self.url)
        password = None
        if self.password_file is not None:
            password = self.password_file.read_text(encoding="utf-8").strip()
        import ssl

        return aiomqtt.Client(
            address.host,
            address.port,
            username=self.username or address.username,
            password=password,
            protocol=aiomqtt.ProtocolVersion.V5,
            tls_context=ssl.create_default_context() if address.tls else None,
            timeout=10,
            **kwargs,  # type: ignore[arg-type]
        )


@dataclass
class AgentView:
    agent_id: str
    availability: str = "unknown"
    status: AgentStatus | None = None
    problem: str | None = None


@dataclass
class Snapshot:
    agents: dict[str, AgentView] = field(default_factory=dict)

    def view(self, agent_id: str) -> AgentView:
        return self.agents.setdefault(agent_id, AgentView(agent_id))


async def snapshot(login: BrokerLogin, topics: TopicTree, *, wait: float = 1.0) -> Snapshot:
    """Collect the retained availability and status of every agent."""
    snap = Snapshot()
    async with login.client() as client:
        await client.subscribe(topics.all_availability(), qos=1)
        await client.subscribe(topics.all_status(), qos=1)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait):
                async for message in client.messages:
                    agent = topics.segment(message.topic.value, 1)
                    payload = bytes(message.payload) if isinstance(message.payload, bytes) else b""
                    view = snap.view(agent)
                    if message.topic.value.endswith("/availability"):
                        view.availability = payload.decode(errors="replace")
                    else:
                        try:
                            view.status = decode_json(AgentStatus, payload)
                        except MessageError as err:
                            view.problem = err.reason
    return snap


async def follow(
    login: BrokerLogin,
    filters: list[str],
    *,
    subscribed: Callable[[], None] | None = None,
) -> AsyncIterator[tuple[str, dict[str, object] | bytes]]:
    """Yield (topic, decoded JSON or raw bytes) for every message on `filters`; call
    `subscribed()` once the broker has the subscriptions."""
    async with login.client() as client:
        for f in filters:
            await client.subscribe(f, qos=1)
        if subscribed is not None:
            subscribed()
        async for message in client.messages:
            payload = bytes(message.payload) if isinstance(message.payload, bytes) else b""
            try:
                yield message.topic.value, json.loads(payload)
            except ValueError:
                yield message.topic.value, payload


async def request(
    login: BrokerLogin,
    topics: TopicTree,
    agent: str,
    command: str,
    args: dict[str, str | int | float | bool | None],
    *,
    wait: float = 30.0,
) -> CommandResponse:
    """Send a command to one agent and wait for its response (MQTT 5 request/response)."""
    client_id = f"cli-{os.getpid()}-{os.urandom(3).hex()}"
    reply_to = topics.responses(client_id)
    correlation = os.urandom(8)
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    props.ResponseTopic = reply_to
    props.CorrelationData = correlation
    body = encode_json(CommandRequest(command=command, args=args))
    async with login.client(identifier=client_id) as client:
        await client.subscribe(reply_to, qos=1)
        await client.publish(topics.requests(agent), body, qos=1, properties=props)
        async with asyncio.timeout(wait):
            async for message in client.messages:
                got = getattr(message.properties, "CorrelationData", None)
                if got == correlation and isinstance(message.payload, bytes):
                    return decode_json(CommandResponse, message.payload)
    raise TimeoutError  # pragma: no cover - the timeout above raises first
