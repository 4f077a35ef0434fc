"""Message models and the topic tree: the contract between framewire agents."""

from schemas.codec import (
    FRAME_SCHEMA,
    MessageError,
    decode_json,
    encode_json,
    frame_meta_from_properties,
    frame_properties,
    user_properties,
)
from schemas.ids import (
    AgentId,
    FrameId,
    InvalidIdentifierError,
    StationId,
    check_identifier,
    new_frame_id,
)
from schemas.messages import (
    SCHEMA_VERSION,
    AgentStatus,
    Availability,
    DeadLetter,
    ErrorKind,
    FrameMeta,
    ImageFacts,
    InferenceResult,
    LedgerAck,
    StageTiming,
    Thumbnail,
    utc_now,
)
from schemas.topics import DEFAULT_PREFIX, TopicTree

__all__ = [
    "DEFAULT_PREFIX",
    "FRAME_SCHEMA",
    "SCHEMA_VERSION",
    "AgentId",
    "AgentStatus",
    "Availability",
    "DeadLetter",
    "ErrorKind",
    "FrameId",
    "FrameMeta",
    "ImageFacts",
    "InferenceResult",
    "InvalidIdentifierError",
    "LedgerAck",
    "MessageError",
    "StageTiming",
    "StationId",
    "Thumbnail",
    "TopicTree",
    "check_identifier",
    "decode_json",
    "encode_json",
    "frame_meta_from_properties",
    "frame_properties",
    "new_frame_id",
    "user_properties",
    "utc_now",
]
