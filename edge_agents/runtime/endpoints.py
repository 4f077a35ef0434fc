"""What an agent declares: the channels it receives and sends on, the lanes its messages wait
in, its counters and gauges, and its commands.

An agent module states these once, as an `AgentSpec`; the runtime refuses to subscribe,
publish, count or answer anything the spec does not name (`UndeclaredError`), and status
messages, Prometheus metrics, Home Assistant sensors and the AsyncAPI document are made
from the same declarations. Every agent also gets what the runtime itself does (RUNTIME).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Generic, TypeVar

from paho.mqtt.properties import Properties

from framewire.schemas import ErrorKind
from framewire.schemas.channels import (
    AVAILABILITY,
    DEAD_LETTERS,
    REQUESTS,
    RESPONSES,
    STATUS,
    Channel,
    Operation,
)

T = TypeVar("T")


class UndeclaredError(LookupError):
    """An agent used a channel, counter, gauge or command its spec does not declare."""


@dataclass(frozen=True)
class Lane:
    """A bounded queue that messages wait in between the broker and their handlers, with its
    own workers, so one kind of message never waits behind another.

    QoS 1 lanes are acknowledged to the broker only once handled, and their capacities add
    up to the agent's MQTT Receive Maximum: the broker holds the rest of the stream (in the
    session, within its queue limits) instead of the agent's memory. QoS 0 lanes take
    retained state and requests, which the broker does not count against that window; when
    one is full its next message is dropped with a warning (a request then goes unanswered
    and its sender says so)."""

    name: str
    capacity: int
    workers: int = 1  # messages handled at once; 1 keeps their order
    qos: int = 1
    summary: str = ""


CONTROL = Lane(
    "control",
    capacity=256,
    qos=0,
    summary="requests, presence and Home Assistant; never behind the data",
)


@dataclass(frozen=True)
class Receive:
    channel: Channel
    summary: str
    lane: str = "data"
    shared: bool = False  # taken through a shared subscription


@dataclass(frozen=True)
class Send:
    channel: Channel
    summary: str
    qos: int = 1
    retain: bool = False


@dataclass(frozen=True)
class Inbound(Generic[T]):
    """A message as its handler gets it: decoded and validated, with where it came from."""

    value: T
    source: str  # the topic's parameter: the station, agent or client it is about
    topic: str
    payload: bytes
    properties: Properties | None
    retain: bool


@dataclass(frozen=True)
class AgentSpec:
    kind: str
    receives: tuple[Receive, ...] = ()
    sends: tuple[Send, ...] = ()
    lanes: tuple[Lane, ...] = ()
    counters: Mapping[str, str] = field(default_factory=dict)  # name -> what it counts
    gauges: Mapping[str, str] = field(default_factory=dict)  # name -> what it measures
    commands: Mapping[str, str] = field(default_factory=dict)  # name -> what it does

    def merged(self, other: AgentSpec) -> AgentSpec:
        return AgentSpec(
            kind=self.kind,
            receives=self.receives + other.receives,
            sends=self.sends + other.sends,
            lanes=self.lanes + tuple(ln for ln in other.lanes if ln.name not in self.lane_names()),
            counters={**other.counters, **self.counters},
            gauges={**other.gauges, **self.gauges},
            commands={**other.commands, **self.commands},
        )

    def lane_names(self) -> set[str]:
        return {lane.name for lane in self.lanes}

    def resized(self, name: str, *, capacity: int, workers: int | None = None) -> AgentSpec:
        """The same spec with lane `name` sized from settings."""
        lanes = tuple(
            replace(ln, capacity=capacity, workers=workers or ln.workers) if ln.name == name else ln
            for ln in self.lanes
        )
        if name not in self.lane_names():
            raise UndeclaredError(f"{self.kind} declares no lane {name!r}")
        return replace(self, lanes=lanes)

    def operations(self, agent: str | None = None) -> list[Operation]:
        who = agent or self.kind
        ops = [
            Operation(
                who, "receive", r.channel, r.summary, qos=self._lane_qos(r.lane), shared=r.shared
            )
            for r in self.receives
        ]
        ops += [Operation(who, "send", s.channel, s.summary, s.qos, s.retain) for s in self.sends]
        return ops

    def _lane_qos(self, name: str) -> int:
        lanes = {ln.name: ln for ln in (*RUNTIME.lanes, *self.lanes)}
        if name not in lanes:
            raise UndeclaredError(f"{self.kind} declares no lane {name!r}")
        return lanes[name].qos

    def lane(self, name: str) -> Lane:
        for lane in self.lanes:
            if lane.name == name:
                return lane
        raise UndeclaredError(f"{self.kind} declares no lane {name!r}")

    def check(self) -> None:
        """Every receive names a declared lane."""
        for receive in self.receives:
            self.lane(receive.lane)


def counter_family(prefix: str, names: Iterable[str], what: str) -> dict[str, str]:
    """Counters `<prefix>.<name>` for each name, each meaning `what` (with {name})."""
    return {f"{prefix}.{name}": what.format(name=name) for name in names}


RUNTIME = AgentSpec(
    kind="agent",
    receives=(
        Receive(
            REQUESTS,
            "Commands to this agent; replies go to the request's response topic.",
            lane="control",
        ),
    ),
    sends=(
        Send(AVAILABILITY, "Retained online; the Last Will says offline.", retain=True),
        Send(STATUS, "Retained status, every status_interval seconds and on change.", retain=True),
        Send(DEAD_LETTERS, "Input this agent refused, and why."),
        Send(RESPONSES, "Replies to commands, on the requester's response topic."),
    ),
    lanes=(CONTROL,),
    counters={
        "requests": "commands received",
        "reconnects": "broker connections lost or refused",
        "ha_discovery": "Home Assistant discovery messages published",
        "ha_births_coalesced": "Home Assistant births answered by an announcement already due",
        "control.dropped": "requests or presence messages dropped: the control lane was full",
        **counter_family("dead_letters", (k.value for k in ErrorKind), "inputs refused as {name}"),
    },
    commands={"status": "this agent's state, counters, queues and details"},
)
