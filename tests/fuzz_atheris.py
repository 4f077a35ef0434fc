"""Coverage-guided fuzzing (atheris, libFuzzer) of every parser that reads bytes from the
network or the disk, the ones tests/test_fuzz.py feeds Hypothesis examples, and more.

    python -m tests.fuzz_atheris --list
    python -m tests.fuzz_atheris TARGET [CORPUS_DIR ...] [libFuzzer flags]

for instance, a ten-minute session that keeps what it learns in a corpus folder:

    python -m tests.fuzz_atheris catalog_json .fuzz/catalog_json -max_total_time=600

A corpus folder that does not exist yet is created and seeded with valid inputs (without
one, a new temporary folder is, and kept). libFuzzer writes an input that breaks a harness to
`crash-<sha1>` (`-artifact_prefix=DIR/` says where); replay it with
`python -m tests.fuzz_atheris TARGET crash-<sha1>`, and keep it as a regression case in
tests/test_atheris.py. Common flags: `-runs=N`, `-max_total_time=S`, `-jobs=N -workers=N`,
`-max_len=N`, `-timeout=S` (per input), `-rss_limit_mb=N`. tests/test_atheris.py runs
each target for a bounded number of runs.

Each harness asserts what must hold for any input, not merely that nothing crashed: only
the parser's declared rejection exception escapes, with a reason that fits on one log line;
what is accepted is within the limits; what is encoded decodes to the same thing, exactly.

The harnesses turn the fuzzer's bytes into structured inputs with `Draw`, not atheris's
FuzzedDataProvider, so an input replays the same anywhere, atheris installed or not (it
has no wheel for macOS or Linux aarch64).
"""

from __future__ import annotations

import gc
import hashlib
import importlib
import io
import json
import logging
import math
import os
import struct
import sys
import tempfile
import types
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

# Instrumented for coverage when the harness runs under atheris (`main`): framewire's own
# code and Pillow's Python image plugins; the rest is C or Rust, and only slows it down.
INSTRUMENTED = ("framewire", "PIL")
MAX_REASON = 1000  # a refusal's reason goes into a log line and a dead letter
# inputs each harness took down its accept path: the seeds must reach it (tests check)
ACCEPTED: Counter[str] = Counter()


class Draw:
    """Values taken from the fuzzer's bytes, front to back; when they run out, every draw
    gives its smallest value. Deterministic: the same bytes, the same values."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def byte(self) -> int:
        if self.pos >= len(self.data):
            return 0
        self.pos += 1
        return self.data[self.pos - 1]

    def integer(self, lo: int, hi: int) -> int:
        """An integer in [lo, hi], from as few bytes as the range needs."""
        span = hi - lo
        value, width = 0, 0
        while span >> (8 * width):
            value = (value << 8) | self.byte()
            width += 1
        return lo + value % (span + 1)

    def flag(self) -> bool:
        return self.byte() & 1 == 1

    def choice(self, options: Sequence[Any]) -> Any:
        return options[self.integer(0, len(options) - 1)]

    def raw(self, max_len: int) -> bytes:
        n = min(self.integer(0, max_len), len(self.data) - self.pos)
        self.pos += n
        return self.data[self.pos - n : self.pos]

    def rest(self) -> bytes:
        out = self.data[self.pos :]
        self.pos = len(self.data)
        return out

    def char(self) -> str:
        """Mostly ASCII; sometimes a control, a surrogate, a non-character, anything."""
        b = self.byte()
        if b < 0xC0:
            return chr(b & 0x7F)
        if b < 0xE0:
            return chr(self.choice([0x85, 0xA0, 0xE9, 0x2028, 0x202E, 0xFEFF, 0xFFFE, 0xFFFF]))
        if b < 0xF0:
            return chr(self.integer(0xD800, 0xDFFF))  # surrogates
        return chr(self.integer(0x80, 0x10FFFF))

    def text(self, max_len: int) -> str:
        return "".join(self.char() for _ in range(self.integer(0, max_len)))

    def number(self) -> float:
        """Any float: NaN, infinities, subnormals included."""
        return float(struct.unpack("<d", bytes(self.byte() for _ in range(8)))[0])


def refusal(err: Exception) -> None:
    """What every refusal must be: a MessageError with a kind and a reason that is one
    printable line of bounded length (it goes into a log line and a dead letter)."""
    from framewire.schemas import ErrorKind, MessageError
    from framewire.schemas.names import printable

    assert isinstance(err, MessageError), f"{type(err).__name__} escaped: {err}"
    assert isinstance(err.kind, ErrorKind)
    assert err.reason and len(err.reason) <= MAX_REASON, f"reason of {len(err.reason)} chars"
    assert printable(err.reason, limit=MAX_REASON) == err.reason, f"unprintable {err.reason!r}"


# --- JSON messages -------------------------------------------------------------------------


def _field_names() -> list[str]:
    """Every field name of every JSON message and of the models inside them."""
    from pydantic import BaseModel

    from framewire.schemas.messages import JSON_MESSAGES

    names: set[str] = set()
    todo: list[type[BaseModel]] = list(JSON_MESSAGES.values())
    seen: set[type[BaseModel]] = set()
    while todo:
        model = todo.pop()
        if model in seen:
            continue
        seen.add(model)
        for name, info in model.model_fields.items():
            names.add(name)
            for arg in _type_args(info.annotation):
                if isinstance(arg, type) and issubclass(arg, BaseModel):
                    todo.append(arg)
    return sorted(names)


def _type_args(annotation: object) -> Iterator[object]:
    yield annotation
    for arg in getattr(annotation, "__args__", ()):
        yield from _type_args(arg)


_FIELDS: list[str] = []
_SAMPLE_STRINGS = [
    "",
    "01J0000000000000000000000A",
    "station-1",
    "inference",
    "0" * 64,
    "2024-05-01T12:00:00+00:00",
    "2024-05-01T12:00:00",
    "ok",
    "error",
    "identified",
    "not_image",
    "running",
    "capture",
    "aGVsbG8=",
    "image/jpeg",
    "status",
]


def json_value(d: Draw, depth: int = 0) -> object:
    """A JSON value, shaped like a message more often than not: objects take their keys
    from the messages' field names and strings from values the models accept."""
    kind = d.integer(0, 9 if depth < 4 else 5)
    if kind == 0:
        return None
    if kind == 1:
        return d.flag()
    if kind == 2:
        return d.integer(-(2**70), 2**70) if d.flag() else d.integer(-3, 300)
    if kind == 3:
        return d.number() if d.flag() else d.integer(0, 10_000) / 100
    if kind == 4:
        return d.choice(_SAMPLE_STRINGS)
    if kind == 5:
        return d.text(40)
    if kind in (6, 7):
        return {json_key(d): json_value(d, depth + 1) for _ in range(d.integer(0, 8))}
    return [json_value(d, depth + 1) for _ in range(d.integer(0, 4))]


def json_key(d: Draw) -> str:
    if not _FIELDS:
        _FIELDS.extend(_field_names())
    return d.choice(_FIELDS) if d.byte() < 0xE0 else d.text(12)


def fuzz_messages(data: bytes) -> None:
    """decode_json for every JSON message: MessageError only; what it accepts encodes to
    JSON that decodes to the same message, byte for byte."""
    from framewire.schemas import MessageError, decode_json, encode_json
    from framewire.schemas.messages import JSON_MESSAGES

    d = Draw(data)
    model = JSON_MESSAGES[d.choice(sorted(JSON_MESSAGES))]
    if d.flag():
        payload = d.rest()
    else:
        doc = {json_key(d): json_value(d) for _ in range(d.integer(0, 14))}
        if d.byte() < 0xF0:
            doc["schema_version"] = 1
        payload = json.dumps(doc).encode()
    try:
        message = decode_json(model, payload)
    except MessageError as err:
        refusal(err)
        return
    ACCEPTED["messages"] += 1
    wire = encode_json(message)
    again = decode_json(model, wire)
    assert encode_json(again) == wire, (wire, encode_json(again))


# --- frame metadata, as MQTT 5 user properties ----------------------------------------------

_META_KEYS = [
    "schema",
    "frame_id",
    "station",
    "seq",
    "captured_at",
    "sha256",
    "content_type",
    "size",
    "source_name",
    "attempt",
    "schema_version",
]


def _good_values() -> dict[str, str]:
    from framewire.schemas.codec import FRAME_SCHEMA

    return {
        "schema": FRAME_SCHEMA,
        "frame_id": "01J0000000000000000000000A",
        "station": "station-1",
        "seq": "7",
        "captured_at": "2024-05-01T12:00:00.123456+02:00",
        "sha256": "ab" * 32,
        "content_type": "image/png",
        "size": "1234",
        "source_name": "sub/card-1%0A.jpg",
        "attempt": "2",
    }


def frame_pairs(d: Draw) -> list[tuple[str, str]]:
    """User properties: per pair, a byte picks a known key (or text), one more picks a
    value the key accepts (or text, sometimes long)."""
    good = _good_values()
    pairs = []
    for _ in range(d.integer(0, 14)):
        pick = d.byte()
        key = _META_KEYS[pick] if pick < len(_META_KEYS) else d.text(30)
        how = d.byte()
        if key in good and how < 0xC0:
            value = good[key]
        else:
            value = d.text(80) if how < 0xF8 else d.text(2000)
        pairs.append((key, value))
    return pairs


def fuzz_frame_meta_decode(data: bytes) -> None:
    """frame_meta_from_properties over any user properties: MessageError only; metadata it
    accepts goes out again as properties a broker takes, and those decode to it exactly."""
    from framewire.schemas import MessageError, frame_meta_from_properties
    from framewire.schemas.names import mqtt_string_problem

    pairs = frame_pairs(Draw(data))
    try:
        meta = frame_meta_from_properties(pairs)
    except MessageError as err:
        refusal(err)
        return
    ACCEPTED["frame_meta_decode"] += 1
    props = _properties(meta)
    for key, value in props:
        assert mqtt_string_problem(key) is None and mqtt_string_problem(value) is None
    assert frame_meta_from_properties(props) == meta
    assert _properties(frame_meta_from_properties(props)) == props


def _properties(meta: Any) -> list[tuple[str, str]]:
    """The user properties `meta` (a FrameMeta) travels as."""
    from framewire.schemas import frame_properties
    from framewire.schemas.codec import user_properties

    return user_properties(frame_properties(meta)) or []


def fuzz_frame_meta_encode(data: bytes) -> None:
    """A frame capture could send (any file name, time, numbers): its properties are all
    MQTT strings a broker takes (or PropertyRefusedError, before sending), and decode to
    the same metadata."""
    from pydantic import ValidationError

    from framewire.schemas import FrameMeta, frame_meta_from_properties
    from framewire.schemas.codec import PropertyRefusedError
    from framewire.schemas.names import escape_name, mqtt_string_problem, unescape_name

    d = Draw(data)
    raw_name = d.raw(600) or b"x"
    offset = timedelta(minutes=d.integer(-18 * 60 + 1, 18 * 60 - 1))
    seconds = d.integer(0, 253_400_000_000)  # up to December 9999, any offset added
    captured = datetime.fromtimestamp(0, UTC) + timedelta(seconds=seconds, microseconds=d.byte())
    try:
        meta = FrameMeta(
            frame_id="01J0000000000000000000000A",
            station=d.choice(["station-1", "s", "import"]),
            seq=d.integer(0, 2**63),
            captured_at=captured.astimezone(timezone(offset)),
            sha256=hashlib.sha256(raw_name).hexdigest(),
            content_type="image/jpeg",
            size=d.integer(1, 2**40),
            source_name=escape_name(raw_name),
            attempt=d.integer(1, 1000),
        )
    except ValidationError:
        assert len(escape_name(raw_name)) > 512  # the only field drawn out of bounds
        return
    ACCEPTED["frame_meta_encode"] += 1
    assert unescape_name(meta.source_name) == raw_name
    try:
        props = _properties(meta)
    except PropertyRefusedError:
        raise AssertionError(f"a valid FrameMeta was refused as properties: {meta}") from None
    for key, value in props:
        assert mqtt_string_problem(key) is None and mqtt_string_problem(value) is None
    assert frame_meta_from_properties(props) == meta


# --- names ------------------------------------------------------------------------------------


def fuzz_names(data: bytes) -> None:
    """Any file name (bytes, or text as os.fsdecode gives it) escapes to an MQTT string
    that unescapes to its exact bytes; `printable` makes any text one safe line."""
    from framewire.schemas.names import (
        escape_name,
        mqtt_refuses,
        mqtt_string_problem,
        name_as_text,
        printable,
        unescape_name,
    )

    d = Draw(data)
    raw = d.raw(400)
    ACCEPTED["names"] += 1  # every name is taken
    escaped = escape_name(raw)
    assert unescape_name(escaped) == raw
    assert escape_name(os.fsdecode(raw)) == escaped
    assert mqtt_string_problem(escaped, max_chars=len(escaped)) is None
    assert escape_name(unescape_name(escaped)) == escaped
    text = name_as_text(raw)
    assert text is None or text.encode("utf-8") == raw
    line = d.text(300)
    limit = d.integer(1, 400)
    shown = printable(line, limit=limit)
    assert len(shown) <= limit
    assert not any(mqtt_refuses(ord(ch)) for ch in shown), shown
    assert "\u2028" not in shown and "\u2029" not in shown


# --- images -----------------------------------------------------------------------------------


def _image_limits(d: Draw) -> tuple[int, int, float]:
    """Shape limits small enough that a fuzzed image never decodes to much memory."""
    return d.integer(1, 4_000_000), d.integer(1, 5000), d.integer(10, 200) / 10


def fuzz_inspect_image(data: bytes) -> None:
    """Capture's check of a file's bytes: MessageError only; what it accepts is an allowed
    type within every limit, and the inspection describes exactly those bytes."""
    from framewire.edge_agents.capture.inspect import ImageLimits, inspect_image
    from framewire.schemas import MessageError

    d = Draw(data)
    max_pixels, max_side, ratio = _image_limits(d)
    limits = ImageLimits(
        max_bytes=d.integer(1, 1 << 20),
        max_pixels=max_pixels,
        max_side=max_side,
        max_aspect_ratio=ratio,
        decode=d.flag(),
    )
    image = d.rest()
    try:
        found = inspect_image(image, limits)
    except MessageError as err:
        refusal(err)
        return
    ACCEPTED["inspect_image"] += 1
    assert found.sha256 == hashlib.sha256(image).hexdigest() and found.size == len(image)
    assert 0 < len(image) <= limits.max_bytes
    assert found.format in limits.formats
    assert found.content_type == f"image/{found.format.lower()}"
    _within(found.width, found.height, max_pixels, max_side, ratio, 16)


def _within(w: int, h: int, max_pixels: int, max_side: int, ratio: float, min_side: int) -> None:
    assert w * h <= max_pixels, (w, h)
    assert min_side <= min(w, h) and max(w, h) <= max_side, (w, h)
    assert max(w, h) <= ratio * min(w, h), (w, h)


def fuzz_decode_stage(data: bytes) -> None:
    """The inference agent's decode stage over a frame's bytes: StageError only; what it
    decodes is within the limits, and is RGB or grey as every later stage expects."""
    from framewire.edge_agents.runtime.images import ShapeLimits
    from framewire.inference_agent.pipeline import local_frame
    from framewire.inference_agent.stages import DecodeImage, FrameWork
    from framewire.schemas import MessageError

    d = Draw(data)
    max_pixels, max_side, ratio = _image_limits(d)
    stage = DecodeImage(
        ShapeLimits(max_pixels=max_pixels, max_side=max_side, max_aspect_ratio=ratio)
    )
    payload = d.rest() or b"\x00"
    work = FrameWork(meta=local_frame(payload, seq=1, source_name="f.jpg"), payload=payload)
    try:
        stage.run(work)
    except MessageError as err:
        refusal(err)
        assert work.image is None
        return
    ACCEPTED["decode_stage"] += 1
    assert work.image is not None and work.facts is not None
    try:
        assert work.image.mode in ("RGB", "L"), work.image.mode
        assert work.image.size == (work.facts.width, work.facts.height)
        _within(work.facts.width, work.facts.height, max_pixels, max_side, ratio, 16)
    finally:
        work.image.close()


def fuzz_shape(data: bytes) -> None:
    """The shape rule, for any sides and any limits the settings allow: a shape it passes
    is within every limit; one it refuses breaks the limit its reason names."""
    from framewire.edge_agents.runtime.images import ShapeLimits, check_shape
    from framewire.schemas import ErrorKind, MessageError

    d = Draw(data)
    big = d.flag()
    width = d.integer(-5, 2**40 if big else 30_000)
    height = d.integer(-5, 2**40 if big else 30_000)
    limits = ShapeLimits(
        max_pixels=d.integer(1, 2**40 if big else 60_000_000),
        max_side=d.integer(1, 2**40 if big else 30_000),
        min_side=d.integer(1, 64),
        max_aspect_ratio=d.integer(10, 100_000) / 10,
    )
    try:
        check_shape(width, height, limits)
    except MessageError as err:
        refusal(err)
        broken = {
            "max_pixels": width * height > limits.max_pixels,
            "max_side": max(width, height) > limits.max_side,
            "max_aspect_ratio": max(width, height)
            > limits.max_aspect_ratio * max(1, min(width, height)),
            "min_side": min(width, height) < limits.min_side,
        }
        named = [s for s in broken if f"({s})" in err.reason]
        assert len(named) == 1 and broken[named[0]], (err.reason, broken)
        kind = ErrorKind.NOT_IMAGE if named == ["min_side"] else ErrorKind.DECOMPRESSION_BOMB
        assert err.kind is kind
        return
    ACCEPTED["shape"] += 1
    _within(
        width, height, limits.max_pixels, limits.max_side, limits.max_aspect_ratio, limits.min_side
    )


# --- catalog files ------------------------------------------------------------------------


@contextmanager
def _file(data: bytes, name: str) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="fuzz-") as tmp:
        path = Path(tmp) / name
        path.write_bytes(data)
        yield path


def _plain_json(text: str) -> object:
    """`text` as json.loads reads it; ValueError also for a key repeated in an object,
    which json.loads reads as its last value and the stream reader as its first."""

    def unique(pairs: list[tuple[str, object]]) -> dict[str, object]:
        keys = [k for k, _ in pairs]
        if len(set(keys)) != len(keys):
            raise ValueError("a repeated key")
        return dict(pairs)

    return json.loads(text, object_pairs_hook=unique)


def fuzz_catalog_json(data: bytes) -> None:
    """The streaming reader of card-data dumps, over any bytes and any read size (a record
    or a number may straddle two reads): JsonStreamError only, and for a document json.loads
    reads, exactly the records json.loads finds."""
    from framewire.inference_agent.cards import json_stream

    d = Draw(data)
    chunk = d.choice([1, 2, 3, 4, 5, 7, 8, 13, 64, json_stream.CHUNK])
    key = d.choice(["data", "cards", ""])
    document = d.rest()
    saved = json_stream.CHUNK
    json_stream.CHUNK = chunk
    try:
        with _file(document, "cards.json") as path:
            try:
                records = list(json_stream.iter_records(path, key=key))
            except json_stream.JsonStreamError as err:
                assert str(err)
                records = None
    finally:
        json_stream.CHUNK = saved
    try:
        expected = _plain_json(document.decode("utf-8-sig"))
    except (ValueError, RecursionError):
        return  # not JSON json.loads reads the same way: the reader may refuse it
    if isinstance(expected, dict):
        if not isinstance(expected.get(key), list):
            assert records is None
            return
        expected = expected[key]
    if not isinstance(expected, list):
        assert records is None
        return
    ACCEPTED["catalog_json"] += 1
    assert records is not None, f"refused what json.loads reads: {document[:200]!r}"
    assert json.dumps(records) == json.dumps(expected), (records, expected)


def fuzz_catalog_csv(data: bytes) -> None:
    """The card catalog CSV: CatalogError only; a catalog it loads has named cards with
    prices that are numbers of at least 0, each printing once."""
    from framewire.inference_agent.cards.catalog import CatalogError, load_catalog, printing_key

    d = Draw(data)
    header = d.choice(
        [
            b"name,set,number,rarity,market_price\n",
            b"name,set,number,rarity,market_price,hp\r\n",
            b"",
        ]
    )
    with _file(header + d.rest(), "catalog.csv") as path:
        try:
            catalog = load_catalog(path)
        except CatalogError as err:
            assert str(err)
            return
    ACCEPTED["catalog_csv"] += 1
    assert catalog.cards
    keys = set()
    for card in catalog.cards:
        assert card.name
        assert card.market_price is None or card.market_price >= 0
        assert not math.isnan(card.market_price or 0.0)
        keys.add(printing_key(card.name, card.set_name, card.number, card.rarity))
    assert len(keys) == len(catalog.cards)


# --- seeds and the command line ------------------------------------------------------------


def _jpeg(size: tuple[int, int], mode: str = "RGB", fmt: str = "JPEG") -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new(mode, size, 128).save(out, fmt)
    return out.getvalue()


def _images() -> list[bytes]:
    images = [
        _jpeg((64, 48)),
        _jpeg((40, 40), "L"),
        _jpeg((32, 20), "RGBA", "PNG"),
        _jpeg((20, 32), "P", "PNG"),
        _jpeg((30, 30), "RGB", "WEBP"),
        _jpeg((320, 20)),
    ]
    return images


# the first bytes as the harnesses draw them: 4,000,000 px, 5000 px, 10:1 (_image_limits)
_LIMITS = b"\x3d\x08\xff" + b"\x13\x87" + b"\x5a"


def _inspect_seeds() -> list[bytes]:
    # then max_bytes (1 MiB) and decode (off, on)
    return [_LIMITS + b"\x0f\xff\xff" + bytes([i & 1]) + image for i, image in enumerate(_images())]


def _decode_seeds() -> list[bytes]:
    return [_LIMITS + image for image in _images()]


def _message_seeds() -> list[bytes]:
    from framewire.schemas.messages import JSON_MESSAGES

    docs: dict[str, dict[str, object]] = {
        "LedgerAck": {
            "frame_id": "01J0000000000000000000000A",
            "station": "station-1",
            "ledgered_at": "2024-05-01T12:00:00+00:00",
            "duplicate": False,
            "result_status": "ok",
        },
        "CommandRequest": {"command": "status", "args": {"name": "ocr", "n": 1.5}},
        "AgentStatus": {
            "agent_id": "ledger",
            "kind": "ledger",
            "version": "0.1.0",
            "state": "running",
            "started_at": "2024-05-01T12:00:00Z",
            "reported_at": "2024-05-01T12:00:01Z",
            "uptime_s": 1.0,
            "counters": {"frames": 3},
            "details": {"x": None, "y": 1e300},
        },
        "InferenceResult": {
            "frame_id": "01J0000000000000000000000A",
            "station": "station-1",
            "agent_id": "inference",
            "sha256": "0" * 64,
            "source_name": "card-1.jpg",
            "captured_at": "2024-05-01T12:00:00Z",
            "received_at": "2024-05-01T12:00:01Z",
            "completed_at": "2024-05-01T12:00:02Z",
            "status": "ok",
            "image": {"format": "JPEG", "width": 64, "height": 48, "mode": "RGB"},
            "phash": "0123456789abcdef",
            "card": {"status": "unknown", "confidence": 0.0, "market_price": 1.25},
            "stages": [{"name": "decode", "ms": 1.5}],
        },
    }
    names = sorted(JSON_MESSAGES)
    seeds = []
    for name, doc in docs.items():
        if name in names:
            payload = json.dumps({"schema_version": 1, **doc}).encode()
            seeds.append(bytes([names.index(name), 1]) + payload)
    return seeds


def _meta_seed() -> bytes:
    # ten properties: every key of FrameMeta (and `schema`) with a value it accepts
    return bytes([10]) + b"".join(bytes([k, 0]) for k in range(10))


def _catalog_json_seeds() -> list[bytes]:
    docs = [
        b'[{"name": "Galmor", "price": 12.50, "hp": 120}, {"name": "Vex", "price": 1e-3}]',
        b'{"meta": {"page": 1}, "data": [[1, -2.5E+3, "a\\u00e9"], true, null, "x"]}',
        b'\xef\xbb\xbf[0.125, -0, 1E9, {"deep": [[[]]]}]',
    ]
    return [bytes([chunk, 0]) + doc for chunk in (2, 6) for doc in docs]


def _catalog_csv_seeds() -> list[bytes]:
    rows = b'Galmor V,Emberfall,049/120,Rare,"$1,204.50"\nVex,Tidal,TG05,Ultra,\n'
    return [b"\x00" + rows, b"\x01" + rows.replace(b"\n", b",120\r\n"), b"\x02" + b'"a"\n1']


@dataclass(frozen=True)
class Target:
    run: Callable[[bytes], None]
    seeds: Callable[[], list[bytes]]
    runs: int  # what tests/test_atheris.py runs: the cheap targets more


TARGETS: dict[str, Target] = {
    "messages": Target(fuzz_messages, _message_seeds, 2000),
    "frame_meta_decode": Target(fuzz_frame_meta_decode, lambda: [_meta_seed()], 2000),
    "frame_meta_encode": Target(fuzz_frame_meta_encode, lambda: [b"card-1.jpg" * 3], 500),
    "names": Target(fuzz_names, lambda: ["card-é\n.jpg".encode() + b"\xff%"], 4000),
    "inspect_image": Target(fuzz_inspect_image, _inspect_seeds, 5000),
    "decode_stage": Target(fuzz_decode_stage, _decode_seeds, 4000),
    "shape": Target(fuzz_shape, lambda: [b"\x00" + b"\x10" * 20], 4000),
    "catalog_json": Target(fuzz_catalog_json, _catalog_json_seeds, 2000),
    "catalog_csv": Target(fuzz_catalog_csv, _catalog_csv_seeds, 2000),
}


def seed_corpus(target: str, folder: Path) -> None:
    """Write `target`'s seeds into `folder` unless it holds inputs already."""
    folder.mkdir(parents=True, exist_ok=True)
    if any(folder.iterdir()):
        return
    for seed in TARGETS[target].seeds():
        (folder / hashlib.sha1(seed).hexdigest()).write_bytes(seed)


def main(argv: list[str]) -> int:
    """`argv`: the program, a target, then corpus folders, input files and libFuzzer flags."""
    if len(argv) < 2 or argv[1] not in TARGETS:
        asked = len(argv) >= 2 and argv[1] in ("-h", "--help", "--list")
        print(__doc__ if asked else f"usage: {argv[0]} TARGET [CORPUS_DIR ...] [flags]")
        print("targets: " + ", ".join(TARGETS))
        return 0 if asked else 2
    atheris = importlib.import_module("atheris")  # untyped; only this needs it

    logging.disable(logging.CRITICAL)  # a parser's warnings are not what the harness checks
    target, flags = argv[1], argv[2:]
    inputs = [Path(a) for a in flags if not a.startswith("-")]
    if not inputs:
        # libFuzzer ends the process itself (no cleanup runs): the folder is kept and named
        corpus = Path(tempfile.mkdtemp(prefix=f"fuzz-{target}-"))
        print(f"INFO: corpus {corpus} (pass it again to go on from there)", file=sys.stderr)
        flags.append(str(corpus))
        inputs.append(corpus)
    for given in inputs:
        if not given.is_file():  # a corpus folder: libFuzzer adds what it finds to the first
            seed_corpus(target, given)
    run = TARGETS[target].run
    run(b"")  # every module the harness needs is imported before it is instrumented
    print(f"INFO: instrumented {_instrument(atheris)} functions", file=sys.stderr)
    atheris.Setup([argv[0], *flags], run)
    atheris.Fuzz()
    return 0


def _instrument(atheris: Any) -> int:
    """Coverage for every function of the INSTRUMENTED packages loaded so far (atheris
    instruments imports as they happen; these were imported already). Returns how many."""
    done = 0
    for obj in gc.get_objects():
        module = getattr(obj, "__module__", None) if isinstance(obj, types.FunctionType) else None
        if module is not None and module.split(".")[0] in INSTRUMENTED:
            atheris.instrument_func(obj)
            done += 1
    return done


if __name__ == "__main__":
    sys.exit(main(sys.argv))
