"""Which agents are online, of which kind and role, and whether they take frames, read from
the retained topics every agent publishes: availability (`online`, or the Last Will's
`offline`) and status (its kind; for inference agents, its role and whether it receives).

Capture uses it to hold frames while no agent takes them (a shared subscription with no
member drops what is published to it) and to resend at once what a dead inference agent
held, instead of waiting out the acknowledgement timeout. A fallback inference agent uses
it to take frames only while no primary does; a primary, to know whether an escalation
agent is there to ask.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from framewire.edge_agents.runtime.endpoints import Inbound
from framewire.schemas import AgentStatus, Availability, TopicTree

logger = logging.getLogger(__name__)

# inference roles whose agents take the frames stream (shadow agents read a copy of it, and
# escalation agents read what a primary sends them)
FRAME_TAKERS = frozenset({"primary", "fallback"})


@dataclass
class _Seen:
    online: bool = False
    kind: str | None = None
    role: str = "primary"  # agents that say no role: what every agent was before roles
    receiving: bool = True


# agent id, kind, role
Gone = Callable[[str, str, str], None]


class AgentPresence:
    """Online agents by kind and role; `changed` is set whenever who is online, or who
    receives, changes."""

    def __init__(self, topics: TopicTree) -> None:
        self.topics = topics
        self._agents: dict[str, _Seen] = {}
        self.changed = asyncio.Event()
        self._went_offline: list[Gone] = []

    def on_offline(self, callback: Gone) -> None:
        """Call `callback(agent_id, kind, role)` when an agent of a known kind goes offline,
        or stops receiving while it stays online (a fallback handing back)."""
        self._went_offline.append(callback)

    def online(self, kind: str, *, role: str | None = None) -> list[str]:
        """Agents of `kind` online (and of `role`, receiving, when a role is given)."""
        return sorted(
            a
            for a, s in self._agents.items()
            if s.online and s.kind == kind and (role is None or (s.role == role and s.receiving))
        )

    def taking_frames(self) -> list[str]:
        """Inference agents online that take frames from the stream now."""
        return sorted(
            a
            for a, s in self._agents.items()
            if s.online and s.kind == "inference" and s.role in FRAME_TAKERS and s.receiving
        )

    async def on_availability(self, message: Inbound[Availability]) -> None:
        self._update(message.source, online=message.value is Availability.ONLINE)

    async def on_status(self, message: Inbound[AgentStatus]) -> None:
        status = message.value
        seen = self._agents.setdefault(message.source, _Seen())
        role = status.details.get("role")
        receiving = status.details.get("receiving", True)
        new = (status.kind, role if isinstance(role, str) else "primary", receiving is not False)
        old = (seen.kind, seen.role, seen.receiving)
        if new == old:
            return
        stopped = seen.kind is not None and seen.receiving and not new[2]
        seen.kind, seen.role, seen.receiving = new
        if seen.online:
            self.changed.set()
            if stopped:
                logger.info(
                    "%s agent %s (%s) stopped receiving", seen.kind, message.source, seen.role
                )
                self._gone(message.source, seen)

    def _update(self, agent: str, *, online: bool) -> None:
        seen = self._agents.setdefault(agent, _Seen())
        if seen.online == online:
            return
        seen.online = online
        self.changed.set()
        if seen.kind is not None:
            logger.info("%s agent %s is %s", seen.kind, agent, "online" if online else "offline")
            if not online:
                self._gone(agent, seen)

    def _gone(self, agent: str, seen: _Seen) -> None:
        assert seen.kind is not None
        for callback in self._went_offline:
            callback(agent, seen.kind, seen.role)
