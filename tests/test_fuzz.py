"""Every parser that reads bytes from the network or the disk, fed arbitrary input: each
either returns a valid value or raises its own readable error, never anything else (an
uncaught exception in an agent is a dead letter at best, a crash loop at worst)."""

from __future__ import annotations

import io
import json
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from framewire.edge_agents.capture.inspect import FrameRejectedError, ImageLimits, inspect_image
from framewire.edge_agents.runtime.images import ImageShapeError, ShapeLimits, check_shape
from framewire.inference_agent.cards.json_stream import JsonStreamError, iter_records
from framewire.schemas import (
    AgentStatus,
    CommandRequest,
    FrameMeta,
    InferenceResult,
    LedgerAck,
    MessageError,
    decode_json,
    frame_meta_from_properties,
    frame_properties,
    new_frame_id,
    utc_now,
)
from framewire.schemas.codec import PropertyRefusedError
from framewire.schemas.names import escape_name, mqtt_string_problem, unescape_name

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MODELS = [InferenceResult, LedgerAck, AgentStatus, CommandRequest]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=20,
)


@FUZZ
@given(st.binary(max_size=2048))
def test_json_messages_from_arbitrary_bytes(payload: bytes) -> None:
    for model in MODELS:
        try:
            decode_json(model, payload)
        except MessageError as err:
            assert err.reason
            assert err.kind


@FUZZ
@given(json_values)
def test_json_messages_from_arbitrary_json_with_the_right_version(value: object) -> None:
    doc = {"schema_version": 1, "frame_id": new_frame_id(), "payload": value}
    for model in MODELS:
        try:
            decode_json(model, json.dumps(doc).encode())
        except MessageError as err:
            assert err.reason


def test_json_nested_ten_thousand_deep_is_refused_readably() -> None:
    for model in MODELS:
        try:
            decode_json(model, b"[" * 10_000 + b"]" * 10_000)
        except MessageError as err:
            assert err.reason


@FUZZ
@given(st.lists(st.tuples(st.text(max_size=40), st.text(max_size=80)), max_size=12))
def test_frame_metadata_from_arbitrary_user_properties(pairs: list[tuple[str, str]]) -> None:
    try:
        meta = frame_meta_from_properties(pairs)
    except MessageError as err:
        assert err.reason
        return
    assert isinstance(meta, FrameMeta)


@FUZZ
@given(st.binary(min_size=1, max_size=300))
def test_any_file_name_travels_as_a_property_the_broker_accepts(raw: bytes) -> None:
    escaped = escape_name(raw)
    assert unescape_name(escaped) == raw
    assert mqtt_string_problem(escaped) is None
    meta = FrameMeta(
        frame_id=new_frame_id(),
        station="s",
        seq=1,
        captured_at=utc_now(),
        sha256="0" * 64,
        content_type="image/jpeg",
        size=1,
        source_name=escaped[:512] if len(escaped) <= 512 else escape_name(raw[:100]),
    )
    try:
        props = frame_properties(meta)
    except PropertyRefusedError:  # too long for a property: refused before it is sent
        return
    for key, value in props.UserProperty:
        assert mqtt_string_problem(key) is None and mqtt_string_problem(value) is None


@FUZZ
@given(st.binary(max_size=4096))
def test_images_from_arbitrary_bytes(data: bytes) -> None:
    try:
        inspect_image(data, ImageLimits(max_bytes=1_000_000, max_pixels=4_000_000))
    except FrameRejectedError as err:
        assert err.reason and err.kind


@FUZZ
@given(st.integers(0, 300), st.integers(0, 300), st.integers(0, 40))
def test_images_with_a_corrupted_header_byte(width: int, height: int, flip: int) -> None:
    out = io.BytesIO()
    Image.new("RGB", (max(1, width), max(1, height)), (9, 9, 9)).save(out, "PNG")
    data = bytearray(out.getvalue())
    data[min(flip, len(data) - 1)] ^= 0xFF
    try:
        inspect_image(bytes(data), ImageLimits(max_bytes=1_000_000, max_pixels=4_000_000))
    except FrameRejectedError as err:
        assert err.reason


@FUZZ
@given(st.integers(-5, 10**6), st.integers(-5, 10**6))
def test_image_shapes(width: int, height: int) -> None:
    try:
        check_shape(width, height, ShapeLimits())
    except ImageShapeError as err:
        assert err.reason
        return
    assert min(width, height) >= 16 and max(width, height) <= 20_000


@FUZZ
@given(st.binary(max_size=4096))
def test_catalog_json_from_arbitrary_bytes(data: bytes) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "cards.json"
        path.write_bytes(data)
        try:
            for _ in iter_records(path):
                pass
        except JsonStreamError as err:
            assert str(err)
