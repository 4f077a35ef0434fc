"""Which agents are online, and of which kind, read from the retained topics every agent
publishes: availability (`online`, or the Last Will's `offline`) and status (its kind).

Capture uses it to hold frames while no inference agent is online (a shared subscription
with no member drops what is published to it) and to resend at once what a dead inference
agent held, instead of waiting out the acknowledgement timeout.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from framewire.edge_agents.runtime.endpoints import Inbound
from framewire.schemas import AgentStatus, Availability, TopicTree

logger = logging.getLogger(__name__)


@dataclass
class _Seen:
    online: bool = False
    kind: str | None = None


class AgentPresence:
    """Online agents by kind; `changed` is set whenever the set of online agents changes."""

    def __init__(self, topics: TopicTree) -> None:
        self.topics = topics
        self._agents: dict[str, _Seen] = {}
        self.changed = asyncio.Event()
        self._went_offline: list[Callable[[str, str], None]] = []

    def on_offline(self, callback: Callable[[str, str], None]) -> None:
        """Call `callback(agent_id, kind)` when an agent of a known kind goes offline."""
        self._went_offline.append(callback)

    def online(self, kind: str) -> list[str]:
        return sorted(a for a, s in self._agents.items() if s.online and s.kind == kind)

    async def on_availability(self, message: Inbound[Availability]) -> None:
        self._update(message.source, online=message.value is Availability.ONLINE)

    async def on_status(self, message: Inbound[AgentStatus]) -> None:
        status = message.value
        seen = self._agents.setdefault(message.source, _Seen())
        if seen.kind != status.kind:
            seen.kind = status.kind
            if seen.online:
                self.changed.set()

    def _update(self, agent: str, *, online: bool) -> None:
        seen = self._agents.setdefault(agent, _Seen())
        if seen.online == online:
            return
        seen.online = online
        self.changed.set()
        if seen.kind is not None:
            logger.info("%s agent %s is %s", seen.kind, agent, "online" if online else "offline")
            if not online:
                for callback in self._went_offline:
                    callback(agent, seen.kind)
