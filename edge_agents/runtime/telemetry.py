"""What an agent reports about itself: its declared counters and gauges, its details, and
the status message made from them (which Prometheus and Home Assistant read too)."""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Literal

from framewire.edge_agents.runtime.endpoints import AgentSpec, UndeclaredError
from framewire.schemas import AgentStatus, utc_now

State = Literal["starting", "running", "degraded", "draining"]
Detail = str | int | float | bool | None


class Telemetry:
    """Counters and gauges exist only as declared in the agent's spec: counting a name it
    does not declare raises UndeclaredError, so a typo fails where it is made instead of
    reading as a counter that stays 0. Every declared counter is reported from the start,
    at 0, so a rate over it is defined before the first event."""

    def __init__(self, spec: AgentSpec) -> None:
        self.spec = spec
        self._counters: Counter[str] = Counter(dict.fromkeys(spec.counters, 0))
        self._gauges: dict[str, Callable[[], int]] = {}
        self.details: dict[str, Detail] = {}
        self.state: State = "starting"
        self._started_at = utc_now()
        self._started_mono = time.monotonic()
        self.throughput_counter: str | None = None
        self._samples: deque[tuple[float, int]] = deque()

    @property
    def counters(self) -> Mapping[str, int]:
        return MappingProxyType(self._counters)

    def declare(self, name: str, meaning: str) -> None:
        """A counter known only when the agent starts (a scheduled job's outcomes)."""
        self.spec = AgentSpec(
            **{**self.spec.__dict__, "counters": {**self.spec.counters, name: meaning}}
        )
        self._counters.setdefault(name, 0)

    def count(self, name: str, n: int = 1) -> None:
        if name not in self._counters:
            raise UndeclaredError(
                f"counter {name!r} is not declared by the {self.spec.kind} agent's spec"
            )
        self._counters[name] += n

    def gauge(self, name: str, read: Callable[[], int]) -> None:
        if name not in self.spec.gauges:
            raise UndeclaredError(f"gauge {name!r} is not declared by the {self.spec.kind} agent")
        self._gauges[name] = read

    def gauges(self) -> dict[str, Callable[[], int]]:
        return dict(self._gauges)

    def uptime(self) -> float:
        return time.monotonic() - self._started_mono

    def count_throughput(self, counter: str) -> None:
        """Report the rate of `counter` as frames per minute."""
        if counter not in self._counters:
            raise UndeclaredError(f"counter {counter!r} is not declared")
        self.throughput_counter = counter

    def frames_per_minute(self) -> float:
        assert self.throughput_counter is not None
        now, value = time.monotonic(), self._counters[self.throughput_counter]
        self._samples.append((now, value))
        while len(self._samples) > 2 and now - self._samples[1][0] >= 60:
            self._samples.popleft()
        then, before = self._samples[0]
        return round((value - before) * 60 / (now - then), 1) if now - then >= 1 else 0.0

    def status(self, agent_id: str, kind: str, version: str) -> AgentStatus:
        if self.throughput_counter is not None:
            self.details["frames_per_minute"] = self.frames_per_minute()
        return AgentStatus(
            agent_id=agent_id,
            kind=kind,
            version=version,
            state=self.state,
            started_at=self._started_at,
            reported_at=utc_now(),
            uptime_s=round(self.uptime(), 3),
            counters=dict(self._counters),
            queues={name: read() for name, read in self._gauges.items()},
            details=dict(self.details),
        )
