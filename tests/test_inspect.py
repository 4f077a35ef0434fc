"""Unit tests of frame admission: the type comes from the bytes, bad files get a reason."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from framewire.edge_agents.capture.inspect import (
    FrameRejectedError,
    ImageLimits,
    inspect_image,
    read_bounded,
)
from framewire.schemas import ErrorKind
from tests.conftest import jpeg_bytes

LIMITS = ImageLimits(max_bytes=1_000_000, max_pixels=4_000_000)


def encoded(fmt: str, size: tuple[int, int] = (64, 48), mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, 200).save(buf, fmt)
    return buf.getvalue()


@pytest.mark.parametrize(
    ("fmt", "ctype"), [("JPEG", "image/jpeg"), ("PNG", "image/png"), ("WEBP", "image/webp")]
)
def test_accepts_allowed_types_found_from_content(fmt: str, ctype: str) -> None:
    data = encoded(fmt)
    found = inspect_image(data, LIMITS)
    assert (found.content_type, found.width, found.height, found.size) == (ctype, 64, 48, len(data))


@pytest.mark.parametrize(
    ("data", "kind", "words"),
    [
        (b"", ErrorKind.EMPTY, "empty"),
        (b"hello, I am a text file", ErrorKind.NOT_IMAGE, "not an image"),
        (encoded("GIF"), ErrorKind.NOT_IMAGE, "allowed type"),
        (encoded("BMP"), ErrorKind.NOT_IMAGE, "allowed type"),
        (jpeg_bytes()[:600], ErrorKind.TRUNCATED, "truncated"),
        (jpeg_bytes()[:-40], ErrorKind.TRUNCATED, "truncated"),
        (encoded("PNG")[:-30], ErrorKind.TRUNCATED, "truncated"),
        (b"x" * 1_000_001, ErrorKind.TOO_LARGE, "max_frame_bytes"),
    ],
    ids=["empty", "text", "gif", "bmp", "jpeg-header-cut", "jpeg-tail-cut", "png-cut", "large"],
)
def test_refuses_bad_input_with_a_readable_reason(data: bytes, kind: ErrorKind, words: str) -> None:
    with pytest.raises(FrameRejectedError) as exc:
        inspect_image(data, LIMITS)
    assert exc.value.kind == kind
    assert words in exc.value.reason


def test_refuses_a_decompression_bomb_before_decoding_it() -> None:
    # 3000 x 3000 of one colour: 9 Mpx, a few KiB compressed
    bomb = encoded("PNG", size=(3000, 3000), mode="L")
    assert len(bomb) < 100_000
    with pytest.raises(FrameRejectedError) as exc:
        inspect_image(bomb, LIMITS)
    assert exc.value.kind == ErrorKind.DECOMPRESSION_BOMB
    assert "max_pixels" in exc.value.reason


def test_refuses_a_bomb_past_pillows_own_hard_limit() -> None:
    bomb = encoded("PNG", size=(20000, 20000), mode="1")
    with pytest.raises(FrameRejectedError) as exc:
        inspect_image(bomb, ImageLimits(max_bytes=10_000_000, max_pixels=10**12))
    assert exc.value.kind == ErrorKind.DECOMPRESSION_BOMB


def test_read_bounded_refuses_large_files_without_reading_them(tmp_path: Path) -> None:
    big = tmp_path / "big.jpg"
    with big.open("wb") as f:
        f.truncate(2_000_000)  # sparse: stat says 2 MB, nothing to read
    with pytest.raises(FrameRejectedError) as exc:
        read_bounded(big, LIMITS)
    assert exc.value.kind == ErrorKind.TOO_LARGE
    assert "1.9 MiB" in exc.value.reason
    empty = tmp_path / "empty.jpg"
    empty.touch()
    with pytest.raises(FrameRejectedError) as exc:
        read_bounded(empty, LIMITS)
    assert exc.value.kind == ErrorKind.EMPTY


@pytest.mark.parametrize("size", [(20000, 2), (2, 20000), (3000, 8)])
def test_refuses_a_sliver_that_would_exhaust_the_ocr(size: tuple[int, int]) -> None:
    # a few KiB, under the pixel limit, yet the text detector would scale its short side up
    data = encoded("JPEG", size=size)
    assert len(data) < 100_000
    with pytest.raises(FrameRejectedError) as exc:
        inspect_image(data, ImageLimits(max_bytes=1_000_000, max_pixels=50_000_000))
    assert exc.value.kind == ErrorKind.DECOMPRESSION_BOMB
    assert "max_aspect_ratio" in exc.value.reason or "max_side" in exc.value.reason


def _with_exif_thumbnail() -> bytes:
    """A JPEG whose EXIF block holds a whole JPEG thumbnail, end marker and all."""
    thumb = encoded("JPEG", (16, 12))
    exif = Image.Exif()
    buf = io.BytesIO()
    image = Image.new("RGB", (320, 240), 90)
    image.save(buf, "JPEG", exif=exif.tobytes() + thumb)
    return buf.getvalue()


@pytest.mark.parametrize("decode", [False, True])
@pytest.mark.parametrize("cut", [600, 2000, -2])
def test_a_jpeg_cut_anywhere_is_truncated_even_past_an_exif_thumbnails_end(
    cut: int, decode: bool
) -> None:
    """Checked by structure (the default) or by decoding it all (decode_check): the same."""
    limits = ImageLimits(max_bytes=1_000_000, decode=decode)
    data = _with_exif_thumbnail()
    assert data.count(b"\xff\xd9") >= 2  # the thumbnail's end, then the image's
    with pytest.raises(FrameRejectedError) as err:
        inspect_image(data[:cut], limits)
    assert err.value.kind in (ErrorKind.TRUNCATED, ErrorKind.NOT_IMAGE)
    assert inspect_image(data, limits).format == "JPEG"


def test_what_a_camera_appends_after_the_image_does_not_make_it_truncated() -> None:
    motion_photo = jpeg_bytes() + b"\x00\x00\x00\x18ftypmp42" + bytes(5000)
    assert inspect_image(motion_photo, LIMITS).format == "JPEG"
