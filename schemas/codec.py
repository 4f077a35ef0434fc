"""Turning messages into MQTT payloads and properties, and back, with readable errors."""

from __future__ import annotations

import json
import reprlib
from collections.abc import Iterable
from typing import TypeVar

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from pydantic import ValidationError

from framewire.schemas.messages import SCHEMA_VERSION, ErrorKind, FrameMeta, Message
from framewire.schemas.names import mqtt_string_problem, printable

M = TypeVar("M", bound=Message)

FRAME_SCHEMA = f"framewire.frame/{SCHEMA_VERSION}"
_MAX_PROPERTY = 1024
MAX_REASON = 1000  # characters: a reason is one log line and a dead letter's field

_shown = reprlib.Repr()  # a value from the input, as a reason quotes it: short
_shown.maxstring = _shown.maxother = 80


class PropertyRefusedError(ValueError):
    """A user property that a broker would refuse (and drop the connection over)."""


class MessageError(ValueError):
    """Input framewire refuses: a message, a file, a frame, an image. `kind` says which way
    it is wrong, `reason` why, for the person who reads the dead letter or the quarantine
    row. The one rejection exception: capture's FrameRejectedError, the pipeline's
    StageError and the image-shape check's ImageShapeError are this class, under the name
    their callers know it by, so one `except` catches every refusal."""

    def __init__(self, kind: ErrorKind, reason: str) -> None:
        # A reason quotes its input (a key, a version, a decoder's message): whatever that
        # holds, it stays one printable line of bounded length in a log and a dead letter.
        reason = printable(reason[: MAX_REASON + 1], limit=MAX_REASON)
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


def _summarise(err: ValidationError) -> str:
    parts = []
    for item in err.errors(include_url=False)[:5]:
        where = ".".join(str(p) for p in item["loc"]) or "(message)"
        parts.append(f"{where}: {item['msg']}")
    more = err.error_count() - len(parts)
    return "; ".join(parts) + (f" (+{more} more)" if more > 0 else "")


def _kind_of(err: ValidationError) -> ErrorKind:
    for item in err.errors(include_url=False):
        if item["loc"] and item["loc"][0] in {"frame_id", "station", "agent_id"}:
            return ErrorKind.BAD_IDENTIFIER
    return ErrorKind.SCHEMA_INVALID


def encode_json(message: Message) -> bytes:
    return message.model_dump_json().encode()


def decode_json(model: type[M], payload: bytes) -> M:
    """Parse a JSON message, checking its schema version before its shape."""
    try:
        data = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise MessageError(ErrorKind.MALFORMED, f"payload is not JSON: {err}") from None
    except RecursionError:
        raise MessageError(ErrorKind.MALFORMED, "payload is JSON nested too deeply") from None
    if not isinstance(data, dict):
        raise MessageError(ErrorKind.MALFORMED, "payload is JSON but not an object")
    version = data.get("schema_version")
    if version != SCHEMA_VERSION:
        raise MessageError(
            ErrorKind.UNSUPPORTED_VERSION,
            f"schema_version {_shown.repr(version)} is not supported "
            f"(this agent reads {SCHEMA_VERSION})",
        )
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise MessageError(_kind_of(err), f"invalid {model.__name__}: {_summarise(err)}") from None


# --- frames: raw bytes + user properties ---------------------------------------------------


def check_user_property(key: str, value: str) -> None:
    """Refuse a user property Mosquitto would refuse: it closes the connection over a string
    that is not valid MQTT UTF-8 (control characters, non-characters, surrogates), and a
    client that resends it reconnects and fails forever. Every property framewire emits
    passes through here; receivers refuse the same lengths (`_MAX_PROPERTY`)."""
    for what, text in (("name", key), ("value", value)):
        problem = mqtt_string_problem(text, max_chars=_MAX_PROPERTY)
        if problem is not None:
            raise PropertyRefusedError(
                f"user property {key!r}: its {what} cannot be sent, {problem}"
            )


def frame_properties(meta: FrameMeta) -> Properties:
    """MQTT 5 PUBLISH properties carrying the frame metadata, readable by any MQTT 5 client.

    Raises PropertyRefusedError rather than emit a property a broker would refuse."""
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    props.ContentType = meta.content_type
    props.PayloadFormatIndicator = 0
    pairs = [("schema", FRAME_SCHEMA)]
    for key, value in meta.model_dump(mode="json", exclude={"schema_version"}).items():
        pairs.append((key, str(value)))
    for key, value in pairs:
        check_user_property(key, value)
    props.UserProperty = pairs
    return props


def frame_meta_from_properties(pairs: Iterable[tuple[str, str]] | None) -> FrameMeta:
    """Rebuild FrameMeta from user properties; refuses duplicates and unknown schemas."""
    if not pairs:
        raise MessageError(ErrorKind.MALFORMED, "frame has no user properties (no metadata)")
    fields: dict[str, str] = {}
    for key, value in pairs:
        if len(value) > _MAX_PROPERTY:
            raise MessageError(ErrorKind.MALFORMED, f"user property {_shown.repr(key)} is too long")
        if key in fields:
            raise MessageError(
                ErrorKind.MALFORMED, f"user property {_shown.repr(key)} appears twice"
            )
        fields[key] = value
    schema = fields.pop("schema", None)
    if schema != FRAME_SCHEMA:
        raise MessageError(
            ErrorKind.UNSUPPORTED_VERSION,
            f"frame schema {_shown.repr(schema)} is not supported "
            f"(this agent reads {FRAME_SCHEMA!r})",
        )
    try:
        return FrameMeta.model_validate(fields)
    except ValidationError as err:
        raise MessageError(_kind_of(err), f"invalid frame metadata: {_summarise(err)}") from None


def user_properties(props: Properties | None) -> list[tuple[str, str]] | None:
    if props is None:
        return None
    pairs = getattr(props, "UserProperty", None)
    return list(pairs) if pairs else None
