"""Images that declare a hostile shape: a few KiB that would make the OCR allocate gigabytes.

A 3 KiB JPEG of 20000x2 pixels is under the pixel limit, yet the text detector scales its
short side up to 736 px. The inference agent must refuse such frames before decoding them,
stay within its stated memory ceiling, and go on with the frames behind them.
"""

from __future__ import annotations

import hashlib
import io
import random
from pathlib import Path

import pytest
from PIL import Image

from framewire.edge_agents.capture.inspect import FrameRejectedError, ImageLimits, inspect_image
from framewire.edge_agents.runtime.images import (
    ImageShapeError,
    ShapeLimits,
    check_shape,
    open_image,
)
from framewire.inference_agent.stages import DecodeImage, FrameWork, StageError
from framewire.samples import card_jpeg, load_specs
from framewire.schemas import (
    ErrorKind,
    FrameMeta,
    InferenceResult,
    TopicTree,
    decode_json,
    frame_properties,
    new_frame_id,
    utc_now,
)
from tests.conftest import STATION, USERS, Pipeline, wait_until
from tests.recorder import Recorder
from tests.test_pipeline import observer, wait_online
from tests.test_recognition import with_catalog

# The inference agent's stated ceiling with the OCR models loaded (README, "Memory"; the
# systemd unit's MemoryMax is set above it).
INFERENCE_CEILING_MIB = 1024
SLIVERS = [(20000, 2), (2, 20000), (3000, 8), (8000, 400)]


def jpeg(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 200, 200)).save(out, "JPEG", quality=50)
    return out.getvalue()


def meta_for(data: bytes, seq: int, name: str) -> FrameMeta:
    return FrameMeta(
        frame_id=new_frame_id(),
        station=STATION,
        seq=seq,
        captured_at=utc_now(),
        sha256=hashlib.sha256(data).hexdigest(),
        content_type="image/jpeg",
        size=len(data),
        source_name=name,
    )


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM in /proc status")


@pytest.mark.parametrize(("width", "height"), SLIVERS)
def test_the_decode_stage_refuses_slivers_before_decoding(width: int, height: int) -> None:
    data = jpeg(width, height)
    assert len(data) < 200_000
    work = FrameWork(meta=meta_for(data, 1, "sliver.jpg"), payload=data)
    with pytest.raises(StageError) as err:
        DecodeImage().run(work)
    assert err.value.kind is ErrorKind.DECOMPRESSION_BOMB
    assert "limit" in err.value.reason and f"{width}x{height}" in err.value.reason
    assert work.image is None


def test_shape_limits_name_the_setting_that_was_exceeded() -> None:
    limits = ShapeLimits(max_pixels=1000, max_side=50, min_side=4, max_aspect_ratio=3)
    cases = {
        (40, 40): "max_pixels",
        (60, 10): "max_side",
        (3, 3): "min_side",
        (30, 8): "max_aspect_ratio",
    }
    for (w, h), setting in cases.items():
        with pytest.raises(ImageShapeError, match=setting):
            check_shape(w, h, limits)
    check_shape(30, 10, limits)  # 3:1, 300 px: within every limit


def encoded(fmt: str, width: int, height: int, mode: str = "RGB") -> bytes:
    out = io.BytesIO()
    Image.new(mode, (width, height), 120).save(out, fmt)
    return out.getvalue()


def capture_verdict(data: bytes, limits: ShapeLimits, *, decode: bool) -> tuple[str, str] | None:
    """How the capture agent answers a file: None when it is a frame, else (kind, reason)."""
    capture_limits = ImageLimits(
        max_bytes=10_000_000,
        max_pixels=limits.max_pixels,
        max_side=limits.max_side,
        max_aspect_ratio=limits.max_aspect_ratio,
        decode=decode,
    )
    try:
        inspect_image(data, capture_limits)
    except FrameRejectedError as err:
        return err.kind.value, err.reason
    return None


def inference_verdict(data: bytes, limits: ShapeLimits) -> tuple[str, str] | None:
    """How the inference agent's decode stage answers a frame: None when it decodes it."""
    work = FrameWork(meta=meta_for(data, 1, "frame"), payload=data)
    try:
        DecodeImage(limits).run(work)
    except StageError as err:
        assert work.image is None
        return err.kind.value, err.reason
    assert work.image is not None
    work.image.close()
    return None


SIDES = [1, 15, 16, 17, 24, 25, 99, 100, 101, 399, 400, 401, 2000]


def test_capture_and_inference_refuse_exactly_the_same_shapes_for_the_same_reasons() -> None:
    """One validator: every shape on either side of every limit, in every format, answered
    alike by the capture agent (by structure and by decoding) and the inference agent."""
    limits = ShapeLimits(max_pixels=10_000, max_side=400, max_aspect_ratio=4)
    cases = {
        f"{fmt} {w}x{h}": encoded(fmt, w, h)
        for fmt in ("JPEG", "PNG", "WEBP")
        for w in SIDES
        for h in SIDES
    }
    for mode in ("L", "RGBA", "P", "1", "I;16"):
        cases[f"PNG {mode} 90x30"] = encoded("PNG", 90, 30, mode)
        cases[f"PNG {mode} 120x90"] = encoded("PNG", 120, 90, mode)
    cases["GIF 40x40"] = encoded("GIF", 40, 40)
    cases["text"] = b"not an image at all, only words"
    cases["JPEG header cut"] = encoded("JPEG", 40, 40)[:40]
    cases["PNG header cut"] = encoded("PNG", 40, 40)[:20]
    refused: dict[str, str] = {}
    for name, data in cases.items():
        inference = inference_verdict(data, limits)
        for decode in (False, True):
            assert capture_verdict(data, limits, decode=decode) == inference, (name, decode)
        if inference is not None:
            refused[name] = inference[0]
    # the verdicts are the shape rules' own: refused exactly where check_shape refuses
    for fmt in ("JPEG", "PNG", "WEBP"):
        for w in SIDES:
            for h in SIDES:
                try:
                    check_shape(w, h, limits)
                except ImageShapeError as err:
                    assert refused[f"{fmt} {w}x{h}"] == err.kind.value
                else:
                    assert f"{fmt} {w}x{h}" not in refused
    assert set(refused.values()) == {"decompression_bomb", "not_image", "truncated"}
    assert "PNG I;16 90x30" not in refused and refused["PNG I;16 120x90"] == "decompression_bomb"


def test_a_bomb_past_pillows_own_limit_is_refused_alike_whatever_max_pixels_says() -> None:
    limits = ShapeLimits(max_pixels=10**12, max_side=50_000)
    bomb = encoded("PNG", 20000, 20000, "1")
    verdict = inference_verdict(bomb, limits)
    assert verdict is not None and verdict[0] == "decompression_bomb"
    assert capture_verdict(bomb, limits, decode=False) == verdict


def test_what_decoding_allocates_is_read_from_the_header() -> None:
    image, header = open_image(encoded("PNG", 300, 200, "RGBA"), ShapeLimits())
    image.close()
    assert (header.format, header.mode, header.pixels) == ("PNG", "RGBA", 60_000)
    assert (header.longest_side, header.aspect_ratio) == (300, 1.5)
    # RGBA is kept in 4 bytes a pixel, and converted to RGB (4 bytes a pixel again)
    assert header.decoded_bytes == 60_000 * 8
    image, grey = open_image(encoded("PNG", 300, 200, "L"), ShapeLimits())
    image.close()
    assert grey.decoded_bytes == 60_000
    with pytest.raises(ImageShapeError, match=r"\(0\.5 MiB decoded\)"):
        check_shape(300, 200, ShapeLimits(max_pixels=50_000), mode="RGBA")


@pytest.mark.integration
def test_sliver_frames_neither_exhaust_inference_nor_hold_back_the_next_card(
    pipeline: Pipeline,
) -> None:
    p = pipeline
    t = TopicTree(p.broker.prefix)
    with_catalog(p)
    with observer(p) as rec:
        p.start("inference")
        wait_online(rec, p, USERS["inference"])
        capture = Recorder(
            p.broker.port, username=USERS["capture"], password=p.broker.password(USERS["capture"])
        )
        with capture:
            for seq, (w, h) in enumerate(SLIVERS, start=1):
                data = jpeg(w, h)
                meta = meta_for(data, seq, f"sliver-{w}x{h}.jpg")
                props = frame_properties(meta).UserProperty
                capture.publish(t.frames(STATION), data, user_properties=props)
            spec = load_specs()[0]
            card = card_jpeg(spec, random.Random(2), strength=0.3)
            meta = meta_for(card, len(SLIVERS) + 1, "card.jpg")
            capture.publish(
                t.frames(STATION), card, user_properties=frame_properties(meta).UserProperty
            )

            def results() -> dict[str, InferenceResult]:
                found = [
                    decode_json(InferenceResult, m.payload) for m in rec.on(t.results(STATION))
                ]
                return {r.source_name: r for r in found}

            wait_until(lambda: len(results()) == len(SLIVERS) + 1, timeout=120, what="results")
    got = results()
    for w, h in SLIVERS:
        sliver = got[f"sliver-{w}x{h}.jpg"]
        assert sliver.status == "error" and sliver.error and "limit" in sliver.error
    assert got["card.jpg"].status == "ok"
    assert got["card.jpg"].card is not None and got["card.jpg"].card.card_name == spec.name
    proc = p.agents["inference"].proc
    assert proc is not None and proc.poll() is None, p.agents["inference"].output()
    assert peak_rss_mib(proc.pid) < INFERENCE_CEILING_MIB
