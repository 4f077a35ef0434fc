"""How a command finds the agent it talks to, and sends it a command over MQTT.

An agent named on the command line (or by `agent_id` in the configuration) is used as is;
otherwise the agents `framewire up` runs (from <data_dir>/up.json), else the default id, and
when that one is not online but a single agent of the kind is, that one. Before a request
goes out, the retained availability topics say whether its agent is online: a wrong name
fails at once, listing the agents that are, instead of waiting out the answer timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Annotated

import typer

from framewire.cli_common import (
    EXIT_BROKER,
    EXIT_FAILED,
    _observer_login,
    console,
    err,
    load_settings,
    up_info,
)
from framewire.edge_agents.runtime import AgentSettings, run_main
from framewire.observe import BrokerLogin
from framewire.schemas import AgentStatus, CommandResponse, MessageError, TopicTree, decode_json

Scalar = str | int | float | bool | None

AgentOption = Annotated[
    str | None,
    typer.Option(
        "--agent",
        help="Agent id (default: the one `framewire up` runs, or agent_id in the configuration).",
    ),
]
WaitOption = Annotated[float, typer.Option(help="Seconds to wait for the answer.")]


@dataclass(frozen=True)
class AgentTarget:
    agent_id: str
    kind: str | None = None  # capture, inference, ledger; None: any
    strict: bool = True  # named by the person: never replaced by another agent
    source: str = "--agent"


@dataclass(frozen=True)
class AgentSeen:
    agent_id: str
    availability: str
    kind: str | None


class AgentNotFoundError(LookupError):
    """The agent a command is for is not online; the message lists those that are."""


def agent_target(kind: str, explicit: str | None, settings: AgentSettings) -> AgentTarget:
    """The agent of `kind` a command goes to when the person did not say (see module doc)."""
    if explicit:
        return AgentTarget(explicit, kind)
    if "agent_id" in settings.model_fields_set:
        return AgentTarget(settings.identity, kind, source="agent_id in the configuration")
    info = up_info(settings)
    if info is not None and kind in info.agents:
        return AgentTarget(
            info.agents[kind], kind, strict=False, source=f"the {kind} agent of {info.path}"
        )
    return AgentTarget(settings.identity, kind, strict=False, source="the default agent id")


async def read_agents(
    login: BrokerLogin, topics: TopicTree, *, want: str | None = None, wait: float = 1.5
) -> dict[str, AgentSeen]:
    """Every agent's retained availability (and kind, from its retained status). Returns as
    soon as `want` is seen online, else after `wait` seconds."""
    availability: dict[str, str] = {}
    kinds: dict[str, str] = {}
    async with login.client() as client:
        await client.subscribe(topics.all_availability(), qos=1)
        await client.subscribe(topics.all_status(), qos=1)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait):
                async for message in client.messages:
                    try:
                        agent = topics.segment(message.topic.value, 1)
                    except ValueError:
                        continue
                    payload = message.payload if isinstance(message.payload, bytes) else b""
                    if message.topic.value.endswith("/availability"):
                        availability[agent] = payload.decode(errors="replace")[:20]
                        if agent == want and availability[agent] == "online":
                            break
                    else:
                        with contextlib.suppress(MessageError):
                            kinds[agent] = decode_json(AgentStatus, payload).kind
    return {
        a: AgentSeen(a, availability.get(a, "unknown"), kinds.get(a))
        for a in sorted(availability.keys() | kinds.keys())
    }


def resolve(target: AgentTarget, seen: dict[str, AgentSeen], url: str) -> str:
    """The agent id to send to, or AgentNotFoundError saying which agents are online."""
    online = [a for a in seen.values() if a.availability == "online"]
    if any(a.agent_id == target.agent_id for a in online):
        return target.agent_id
    same_kind = [a for a in online if target.kind is None or a.kind == target.kind]
    if not target.strict and target.kind is not None and len(same_kind) == 1:
        err.print(
            f"{target.agent_id} ({target.source}) is not online; using "
            f"{same_kind[0].agent_id}, the {target.kind} agent that is"
        )
        return same_kind[0].agent_id
    if not online:
        listing = f"no agent is online at {url} (is `framewire up` or an agent running?)"
    else:
        listing = "online: " + ", ".join(
            f"{a.agent_id} ({a.kind or 'kind unknown'})" for a in online
        )
    known = seen.get(target.agent_id)
    state = f"is {known.availability}" if known else "has never reported"
    hint = " — pass --agent ID" if target.kind is not None else ""
    raise AgentNotFoundError(
        f"agent {target.agent_id} ({target.source}) {state} at {url}; {listing}{hint}"
    )


def send(
    target: AgentTarget, command: str, args: dict[str, Scalar], wait: float
) -> CommandResponse:
    """Send one command over MQTT and print the answer; exit 1 if the agent is not online,
    does not answer or refuses, 3 if the broker cannot be reached."""
    response = ask(target, command, args, wait)
    console.print_json(data=response.model_dump(mode="json"))
    if not response.ok:
        raise typer.Exit(EXIT_FAILED)
    return response


def ask(target: AgentTarget, command: str, args: dict[str, Scalar], wait: float) -> CommandResponse:
    """`send` without printing: the answer, whether the agent accepted or refused."""
    import aiomqtt

    from framewire.observe import request as send_request

    base = load_settings(AgentSettings)
    login = _observer_login(base, user="operator")
    info = up_info(base)
    prefix = base.topic_prefix
    if info is not None and info.topic_prefix and "topic_prefix" not in base.model_fields_set:
        prefix = info.topic_prefix
    topics = TopicTree(prefix)
    agent_id = target.agent_id

    async def go() -> CommandResponse:
        nonlocal agent_id
        seen = await read_agents(login, topics, want=target.agent_id)
        agent_id = resolve(target, seen, login.url)
        return await send_request(login, topics, agent_id, command, args, wait=wait)

    try:
        return run_main(go())
    except AgentNotFoundError as exc:
        err.print(str(exc), style="red", soft_wrap=True, markup=False)
        raise typer.Exit(EXIT_FAILED) from None
    except TimeoutError:
        err.print(
            f"[red]{agent_id} is online but did not answer {command!r} within {wait:.0f} s[/]"
        )
        raise typer.Exit(EXIT_FAILED) from None
    except aiomqtt.MqttError as exc:
        err.print(f"[red]cannot reach the broker at {login.url}: {exc}[/]")
        raise typer.Exit(EXIT_BROKER) from None
