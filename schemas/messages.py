"""Every message framewire sends, as pydantic models.

Each JSON message carries `schema_version`; a reader refuses versions it does not know
instead of guessing. Input is strict about shape (`extra="forbid"`): an unknown field is a
contract change, not something to drop silently.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    Base64Bytes,
    BaseModel,
    ConfigDict,
    Field,
)

from framewire.schemas.ids import AgentId, FrameId, StationId
from framewire.schemas.names import mqtt_string_problem

SCHEMA_VERSION = 1

Sha256Hex = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$", description="SHA-256, lower-case hex")]
ImageContentType = Literal["image/jpeg", "image/png", "image/webp"]
SOURCE_NAME_MAX = 512
SourceName = Annotated[
    str,
    Field(
        min_length=1,
        max_length=SOURCE_NAME_MAX,
        description="Path of the original file relative to the capture folder (display only).",
    ),
]


def _sendable(value: str) -> str:
    problem = mqtt_string_problem(value)
    if problem is not None:
        raise ValueError(f"not an escaped name: {problem}")
    return value


EscapedSourceName = Annotated[
    str,
    Field(
        min_length=1,
        max_length=SOURCE_NAME_MAX,
        description="Path of the original file relative to the capture folder, "
        "percent-encoded where needed: '%', bytes that are not UTF-8 and characters MQTT "
        "refuses (controls, non-characters) appear as %XX, one per byte, so "
        "urllib.parse.unquote_to_bytes gives the exact original bytes.",
    ),
    AfterValidator(_sendable),
]


def utc_now() -> datetime:
    return datetime.now(UTC)


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FrameMeta(Message):
    """Metadata of one frame. Travels as MQTT 5 user properties beside the raw image bytes."""

    schema_version: Literal[1] = Field(default=1, description="Message version.")
    frame_id: FrameId = Field(description="Unique id of this frame (a ULID), stable on resend.")
    station: StationId = Field(description="Capture station that took the frame.")
    seq: int = Field(ge=0, description="Per-station sequence number, in order of capture.")
    captured_at: AwareDatetime = Field(description="When the camera wrote the file (its mtime).")
    sha256: Sha256Hex = Field(description="SHA-256 of the payload bytes.")
    content_type: ImageContentType = Field(description="Image type, found from the bytes.")
    size: int = Field(ge=1, description="Payload size in bytes.")
    source_name: EscapedSourceName
    attempt: int = Field(default=1, ge=1, description="1 on first publication, more on resend.")


class FrameAnnouncement(Message):
    """Published by the capture station before it first publishes a frame, straight to the
    ledger: only the station's own broker user may write it, so a result counts as
    inventory only for a frame its station vouched for (same id, station and sha256)."""

    schema_version: Literal[1] = Field(default=1, description="Message version.")
    frame_id: FrameId = Field(description="The frame's id, as its FrameMeta carries it.")
    station: StationId = Field(description="Capture station that took the frame.")
    seq: int = Field(ge=0, description="Per-station sequence number, in order of capture.")
    sha256: Sha256Hex = Field(description="SHA-256 of the frame's bytes.")
    size: int = Field(ge=1, description="The frame's size in bytes.")
    captured_at: AwareDatetime = Field(description="When the camera wrote the file (its mtime).")
    source_name: EscapedSourceName


class ImageFacts(Message):
    format: str = Field(description="Image format as decoded (JPEG, PNG, WEBP).")
    width: int = Field(ge=1)
    height: int = Field(ge=1)
    mode: str = Field(description="Pixel mode as decoded (RGB, L, RGBA...).")


class StageTiming(Message):
    name: str = Field(description="Pipeline stage.")
    ms: float = Field(ge=0, description="Wall time the stage took, in milliseconds.")


class Thumbnail(Message):
    content_type: Literal["image/jpeg"] = "image/jpeg"
    width: int = Field(ge=1)
    height: int = Field(ge=1)
    data: Base64Bytes = Field(description="The thumbnail image, base64 in JSON.")


class CardCandidate(Message):
    card_name: str
    set_name: str
    card_number: str
    confidence: float = Field(ge=0, le=1)


class CardRecognition(Message):
    """What the card recogniser read and which catalog card it matched."""

    status: Literal["identified", "needs_review", "unknown"] = Field(
        description="identified: confidence at or above the threshold; needs_review: a "
        "plausible match below it (see candidates); unknown: no catalog card fits."
    )
    card_name: str | None = None
    set_name: str | None = None
    card_number: str | None = None
    rarity: str | None = None
    market_price: float | None = Field(default=None, description="From the catalog.")
    hp: int | None = Field(default=None, description="HP as printed, when read.")
    confidence: float = Field(ge=0, le=1, description="Match confidence, 0..1.")
    ocr_text: list[str] = Field(default_factory=list, description="Text lines the OCR read.")
    candidates: list[CardCandidate] = Field(
        default_factory=list, description="Best catalog matches, best first."
    )
    metadata: dict[str, str] = Field(
        default_factory=dict, description="Extra catalog columns of the matched card."
    )
    review_reason: str | None = Field(
        default=None,
        description="Why the card is not identified, for a person: what was read and which "
        "catalog cards it fits.",
    )


Role = Literal["primary", "fallback", "shadow", "escalation"]


class Opinion(Message):
    """One agent's reading of a frame, beside the result that counts: a shadow agent's (on
    the shadow channel, never inventory), or each of the two readings of an escalated frame
    (in the kept result's `opinions`)."""

    schema_version: Literal[1] = Field(default=1, description="Message version.")
    frame_id: FrameId
    station: StationId
    agent_id: AgentId = Field(description="Inference agent that read the frame.")
    role: Role = Field(description="What the agent was doing: primary, shadow, escalation...")
    sha256: Sha256Hex
    status: Literal["ok", "error"] = Field(description="`error`: the frame could not be read.")
    card_status: Literal["identified", "needs_review", "unknown"] | None = Field(
        default=None, description="The card recogniser's verdict; None: no card stage ran."
    )
    card_name: str | None = Field(default=None, max_length=200)
    set_name: str | None = Field(default=None, max_length=200)
    card_number: str | None = Field(default=None, max_length=64)
    confidence: float | None = Field(default=None, ge=0, le=1)
    processing_ms: float = Field(ge=0, description="Pipeline time, milliseconds.")
    models: dict[str, str] = Field(
        default_factory=dict, description="Models used: name -> version and backend."
    )
    kept: bool = Field(
        default=False, description="For an escalated frame: this reading is the one kept."
    )

    def verdict(self) -> tuple[str | None, str | None, str | None, str | None]:
        """What two readings must share to agree: the verdict and the card."""
        if self.card_status != "identified":
            return (self.card_status, None, None, None)
        return (self.card_status, self.card_name, self.set_name, self.card_number)


class InferenceResult(Message):
    """What an inference agent found in one frame."""

    schema_version: Literal[1] = Field(default=1, description="Message version.")
    frame_id: FrameId
    station: StationId
    agent_id: AgentId = Field(description="Inference agent that produced the result.")
    sha256: Sha256Hex
    source_name: SourceName
    captured_at: AwareDatetime
    received_at: AwareDatetime = Field(description="When the inference agent received the frame.")
    completed_at: AwareDatetime = Field(description="When the pipeline finished.")
    status: Literal["ok", "error"] = Field(description="`error`: the frame could not be read.")
    error: str | None = Field(default=None, description="Why the pipeline failed, for people.")
    image: ImageFacts | None = None
    phash: str | None = Field(
        default=None, pattern=r"^[0-9a-f]{16}$", description="64-bit perceptual hash, hex."
    )
    thumbnail: Thumbnail | None = None
    card: CardRecognition | None = Field(default=None, description="Card recogniser output.")
    models: dict[str, str] = Field(
        default_factory=dict, description="Models used: name -> version and backend."
    )
    stages: list[StageTiming] = Field(default_factory=list, description="Per-stage timings.")
    cached: bool = Field(
        default=False, description="True when the outputs came from the sha256 cache."
    )
    opinions: list[Opinion] = Field(
        default_factory=list,
        description="An escalated frame: both readings, the kept one marked (this result "
        "is that one). Left out of the JSON when empty, so readers that predate it read "
        "every other result.",
        exclude_if=lambda opinions: not opinions,
    )

    def opinion(self, role: Role) -> Opinion:
        """This result as an Opinion (what shadow agents publish, what escalation keeps)."""
        card = self.card
        return Opinion(
            frame_id=self.frame_id,
            station=self.station,
            agent_id=self.agent_id,
            role=role,
            sha256=self.sha256,
            status=self.status,
            card_status=card.status if card else None,
            card_name=_clip(card.card_name, 200) if card else None,
            set_name=_clip(card.set_name, 200) if card else None,
            card_number=_clip(card.card_number, 64) if card else None,
            confidence=card.confidence if card else None,
            processing_ms=round(sum(s.ms for s in self.stages), 3),
            models=dict(self.models),
        )


def _clip(text: str | None, limit: int) -> str | None:
    return text[:limit] if text is not None else None


class LedgerAck(Message):
    """Published by the ledger once a result is committed; the capture agent waits for it."""

    schema_version: Literal[1] = Field(default=1, description="Message version.")
    frame_id: FrameId
    station: StationId
    ledgered_at: AwareDatetime
    duplicate: bool = Field(description="True when the frame was already in the ledger.")
    duplicate_of: FrameId | None = Field(
        default=None,
        description="An earlier frame of the same card (a re-capture), when there is one.",
    )
    result_status: Literal["ok", "error"]


class Availability(StrEnum):
    """Plain-text, retained payload of `<prefix>/agents/<agent>/availability`."""

    ONLINE = "online"
    OFFLINE = "offline"


class AgentStatus(Message):
    """Retained heartbeat of one agent."""

    schema_version: Literal[1] = Field(default=1, description="Message version.")
    agent_id: AgentId
    kind: Literal["capture", "inference", "ledger"]
    version: str = Field(description="framewire version the agent runs.")
    state: Literal["starting", "running", "degraded", "draining"]
    started_at: AwareDatetime
    reported_at: AwareDatetime
    uptime_s: float = Field(ge=0)
    counters: dict[str, int] = Field(default_factory=dict, description="Monotonic counters.")
    queues: dict[str, int] = Field(default_factory=dict, description="Current queue depths.")
    details: dict[str, str | int | float | bool | None] = Field(
        default_factory=dict, description="Agent-specific facts (station, folder, models...)."
    )


class ErrorKind(StrEnum):
    NOT_IMAGE = "not_image"
    TRUNCATED = "truncated"
    EMPTY = "empty"
    TOO_LARGE = "too_large"
    DECOMPRESSION_BOMB = "decompression_bomb"
    CHECKSUM_MISMATCH = "checksum_mismatch"
    MALFORMED = "malformed"
    SCHEMA_INVALID = "schema_invalid"
    UNSUPPORTED_VERSION = "unsupported_version"
    BAD_IDENTIFIER = "bad_identifier"
    UNKNOWN_FRAME = "unknown_frame"
    SOURCE_CHANGED = "source_changed"
    NOT_A_FILE = "not_a_file"
    UNREADABLE = "unreadable"
    NAME_TOO_LONG = "name_too_long"
    UNDELIVERABLE = "undeliverable"
    PROCESSING_ERROR = "processing_error"


class DeadLetter(Message):
    """What an agent refused, and why, so a person can act on it."""

    schema_version: Literal[1] = Field(default=1, description="Message version.")
    agent_id: AgentId
    at: AwareDatetime
    kind: ErrorKind
    reason: str = Field(description="What was wrong, in words a person can act on.")
    source_topic: str | None = Field(default=None, description="Topic the input came from.")
    source_name: str | None = Field(default=None, description="File the input came from.")
    frame_id: str | None = Field(default=None, description="Frame id, if one could be read.")
    payload_size: int | None = Field(default=None, ge=0)
    payload_sha256: Sha256Hex | None = None


Scalar = str | int | float | bool | None


class CommandRequest(Message):
    """A request to one agent, on its request topic. The reply goes to the MQTT 5 response
    topic of the request, with the request's correlation data."""

    schema_version: Literal[1] = Field(default=1, description="Message version.")
    command: str = Field(pattern=r"^[a-z_]{1,32}$", description="What to do.")
    args: dict[str, Scalar] = Field(default_factory=dict, description="Command arguments.")


class CommandResponse(Message):
    schema_version: Literal[1] = Field(default=1, description="Message version.")
    agent_id: AgentId
    command: str
    ok: bool
    message: str = Field(description="What happened, for people.")
    data: dict[str, Scalar] = Field(default_factory=dict)


#: Every JSON message model, by the name used in generated documents.
JSON_MESSAGES: dict[str, type[Message]] = {
    "FrameAnnouncement": FrameAnnouncement,
    "InferenceResult": InferenceResult,
    "Opinion": Opinion,
    "LedgerAck": LedgerAck,
    "AgentStatus": AgentStatus,
    "DeadLetter": DeadLetter,
    "CommandRequest": CommandRequest,
    "CommandResponse": CommandResponse,
}
