"""The channels of the topic tree as data: what each carries, and which segment names whom.

Agents declare the channels they send and receive on (edge_agents/runtime/endpoints.py),
the runtime decodes every message on them here, and the AsyncAPI document is generated
from those declarations (framewire/contract.py): one description, three uses.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

from paho.mqtt.properties import Properties

from framewire.schemas.codec import (
    MessageError,
    decode_json,
    frame_meta_from_properties,
    user_properties,
)
from framewire.schemas.messages import (
    JSON_MESSAGES,
    AgentStatus,
    Availability,
    ErrorKind,
    FrameMeta,
)
from framewire.schemas.topics import TopicTree

Param = Literal["station", "agent", "client"]
_HOLE = "x-channel-parameter-x"  # a valid identifier no real station or agent is named
_PREFIX_HOLE = "x-channel-prefix-x"


class Frame(NamedTuple):
    """A frame as received: its metadata (from the MQTT 5 user properties) and its bytes."""

    meta: FrameMeta
    payload: bytes


class Cleared(Exception):
    """An empty retained message: the retained value was cleared; nothing to handle."""


@dataclass(frozen=True)
class Channel:
    """One family of topics: `<prefix>/<...>/<param>`, carrying one message."""

    name: str  # AsyncAPI channel id
    message: str  # AsyncAPI message name: a JSON model, Frame, Availability or Thumbnail
    param: Param
    build: Callable[[TopicTree, str], str]
    summary: str
    # the message's field that must name the topic's `param` (a result of station A must
    # not arrive on station B's topic), checked once, for every channel, in `decode`
    names_field: str | None = None

    def topic(self, tree: TopicTree, ident: str) -> str:
        return self.build(tree, ident)

    def filter(self, tree: TopicTree) -> str:
        """Every topic of the channel (`+` for the parameter)."""
        return self.build(tree, _HOLE).replace(_HOLE, "+")

    def address(self) -> str:
        """The AsyncAPI address, `{prefix}/frames/{station}`."""
        topic = self.build(TopicTree(_PREFIX_HOLE), _HOLE)
        return topic.replace(_PREFIX_HOLE, "{prefix}", 1).replace(_HOLE, f"{{{self.param}}}")

    def param_of(self, tree: TopicTree, topic: str) -> str | None:
        """The parameter's value if `topic` is one of this channel's, else None."""
        pattern = self.build(tree, _HOLE).split("/")
        parts = topic.split("/")
        if len(parts) != len(pattern):
            return None
        value = None
        for want, got in zip(pattern, parts, strict=True):
            if want == _HOLE:
                value = got
            elif want != got:
                return None
        return value

    def decode(self, payload: bytes, properties: Properties | None, ident: str) -> Any:
        """The message, validated; MessageError says what is wrong with it."""
        value = _DECODERS[self.message](payload, properties)
        if self.names_field is not None:
            framed = isinstance(value, Frame)
            named = getattr(value.meta if framed else value, self.names_field)
            if named != ident:
                what = "frame" if framed else self.message
                raise MessageError(
                    ErrorKind.SCHEMA_INVALID,
                    f"{what} of {self.param} {named!r} arrived on the topic of {ident!r}",
                )
        return value


def _frame(payload: bytes, properties: Properties | None) -> Frame:
    return Frame(frame_meta_from_properties(user_properties(properties)), payload)


def _availability(payload: bytes, properties: Properties | None) -> Availability:
    try:
        return Availability(payload.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise MessageError(
            ErrorKind.MALFORMED, "availability is neither online nor offline"
        ) from None


def _status(payload: bytes, properties: Properties | None) -> AgentStatus:
    if not payload:
        raise Cleared
    return decode_json(AgentStatus, payload)


def _json(name: str) -> Callable[[bytes, Properties | None], Any]:
    model = JSON_MESSAGES[name]
    return lambda payload, properties: decode_json(model, payload)


_DECODERS: dict[str, Callable[[bytes, Properties | None], Any]] = {
    **{name: _json(name) for name in JSON_MESSAGES},
    "AgentStatus": _status,
    "Frame": _frame,
    "Availability": _availability,
    "Thumbnail": lambda payload, properties: payload,
}


FRAMES = Channel(
    "frames", "Frame", "station", TopicTree.frames, "Frames of one station.", "station"
)
ANNOUNCEMENTS = Channel(
    "announce",
    "FrameAnnouncement",
    "station",
    TopicTree.announcements,
    "Frames one station vouches for, announced before they are sent.",
    "station",
)
RESULTS = Channel(
    "results",
    "InferenceResult",
    "station",
    TopicTree.results,
    "Results for one station.",
    "station",
)
SHADOW = Channel(
    "shadow",
    "Opinion",
    "station",
    TopicTree.shadow,
    "Shadow agents' readings of one station's frames, compared with the results; never inventory.",
    "station",
)
ESCALATIONS = Channel(
    "escalate",
    "Frame",
    "station",
    TopicTree.escalations,
    "Frames of one station read below the confidence threshold, for a second reading; "
    "the MQTT 5 response topic names where the reading goes (under escalated/).",
    "station",
)
ESCALATED = Channel(
    "escalated",
    "InferenceResult",
    "agent",
    TopicTree.escalated,
    "An escalation agent's reading of a frame, to the agent that sent it.",
)
ACKS = Channel(
    "acks",
    "LedgerAck",
    "station",
    TopicTree.acks,
    "Acknowledgements for one station.",
    "station",
)
AVAILABILITY = Channel(
    "availability", "Availability", "agent", TopicTree.availability, "Online or offline."
)
STATUS = Channel(
    "status", "AgentStatus", "agent", TopicTree.status, "An agent's status.", "agent_id"
)
DEAD_LETTERS = Channel(
    "deadletter",
    "DeadLetter",
    "agent",
    TopicTree.dead_letters,
    "What an agent refused.",
    "agent_id",
)
THUMBNAIL = Channel(
    "thumbnail", "Thumbnail", "agent", TopicTree.thumbnail, "The last frame an agent handled."
)
REQUESTS = Channel(
    "request", "CommandRequest", "agent", TopicTree.requests, "Commands to one agent."
)
RESPONSES = Channel(
    "response", "CommandResponse", "client", TopicTree.responses, "Replies to one client."
)

CHANNELS: tuple[Channel, ...] = (
    FRAMES,
    ANNOUNCEMENTS,
    RESULTS,
    SHADOW,
    ESCALATIONS,
    ESCALATED,
    ACKS,
    AVAILABILITY,
    STATUS,
    DEAD_LETTERS,
    THUMBNAIL,
    REQUESTS,
    RESPONSES,
)


@dataclass(frozen=True)
class Operation:
    """One thing an agent kind does on a channel, as the AsyncAPI document lists it."""

    agent: str  # capture, inference, ledger, or "agent" for what every agent does
    action: Literal["send", "receive"]
    channel: Channel
    summary: str
    qos: int = 1
    retain: bool = False
    shared: bool = False  # received through an MQTT 5 shared subscription

    @property
    def operation_id(self) -> str:
        verb = "Sends" if self.action == "send" else "Receives"
        name = "".join(p.capitalize() for p in self.channel.name.split("_"))
        return f"{self.agent}{verb}{name}"


def every_channel() -> Iterator[Channel]:
    yield from CHANNELS
