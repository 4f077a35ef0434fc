"""Finding the card in a photo and reading it whatever way up it lies: real models."""

from __future__ import annotations

import io
import math
import random
from collections.abc import Iterator

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from framewire.inference_agent.cards.ocr import CardOcr, photo_pixels
from framewire.inference_agent.cards.rectify import find_card
from framewire.inference_agent.models import (
    BackendOptions,
    ModelRegistry,
    default_manifest_path,
    load_manifests,
)
from framewire.samples import CardSpec, available_fonts, jpeg, photograph, render_card
from framewire.samples_hard import place_card

SPEC = CardSpec("Glimmerfang", "Verdant Wilds", "010/120", "Common", "130")


@pytest.fixture(scope="module")
def ocr() -> Iterator[CardOcr]:
    registry = ModelRegistry(load_manifests(default_manifest_path()), BackendOptions("onnx"))
    yield CardOcr(registry)


def bgr(image: Image.Image) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(image.convert("RGB"))[:, :, ::-1])


def decoded(image: Image.Image, **save: object) -> Image.Image:
    """The image as the inference agent gets it: through a JPEG file."""
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=90, **save)
    out = Image.open(io.BytesIO(buf.getvalue()))
    out.load()
    return out


def key_lines(lines: list[str]) -> list[str]:
    """The lines that hold the card's name or its number."""
    return [t for t in lines if SPEC.name in t or SPEC.number in t]


def test_the_outline_is_found_on_a_busy_background_under_strong_perspective() -> None:
    rng = random.Random(5)
    card = render_card(SPEC, rng)
    for angle, perspective in ((8.0, 0.3), (-15.0, 0.2), (95.0, 0.25)):
        placed = place_card(card, rng, angle=angle, perspective=perspective, busy=True)
        outline = find_card(bgr(placed.image))
        assert outline is not None, f"no outline at {angle} degrees"
        # lying sideways, which short side is the top is for the text to tell
        turns = (0,) if abs(angle) < 45 else (0, 2)
        truth = min(
            (np.roll(np.array(placed.corners), k, axis=0) for k in turns),
            key=lambda t: float(np.abs(t - outline.corners).max()),
        )
        long_side = max(math.dist(truth[0], truth[3]), math.dist(truth[1], truth[2]))
        error = float(np.abs(outline.corners - truth).max())
        assert error < 0.025 * long_side, f"corners {error:.1f} px off at {angle} degrees"


def test_upside_down_and_sideways_cards_read_like_the_upright_one(ocr: CardOcr) -> None:
    rng = random.Random(11)
    card = render_card(SPEC, rng)
    read = {}
    for angle in (0, 180, 90, 270):
        placed = place_card(card, random.Random(3), angle=angle + 4)
        shot = decoded(photograph(placed.image, random.Random(4), strength=0.6))
        read[angle] = key_lines([line.text for line in ocr.read(shot)])
    assert any(SPEC.name in t for t in read[0]) and any(SPEC.number in t for t in read[0])
    assert read[180] == read[0]
    assert read[90] == read[0]
    assert read[270] == read[0]


def test_exif_orientation_is_honoured(ocr: CardOcr) -> None:
    rng = random.Random(2)
    upright = photograph(place_card(render_card(SPEC, rng), rng).image, rng, strength=0.5)
    # what a phone held sideways stores: the pixels turned, and a tag saying how to undo it
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # counter-clockwise
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to display"
    photo = decoded(stored, exif=exif.tobytes())
    assert photo.getexif()[0x0112] == 6
    pixels = photo_pixels(photo)
    assert pixels.shape[:2] == (upright.height, upright.width)
    as_taken = bgr(decoded(upright)).astype(np.int16)
    assert float(np.abs(pixels.astype(np.int16) - as_taken).mean()) < 6  # JPEG noise only
    lines = key_lines([line.text for line in ocr.read(photo)])
    assert any(SPEC.name in t for t in lines) and any(SPEC.number in t for t in lines)


def test_a_photo_without_a_card_outline_is_read_whole(ocr: CardOcr) -> None:
    # a printed list, not a card: no outline to find, so the whole photo is read
    page = Image.new("RGB", (900, 640), (236, 232, 222))
    draw = ImageDraw.Draw(page)
    fonts = available_fonts()
    font = ImageFont.truetype(str(fonts[0]), 44) if fonts else ImageFont.load_default(44)
    draw.text((80, 120), SPEC.name, font=font, fill=(20, 20, 20))
    draw.text((80, 320), f"{SPEC.set_name}  {SPEC.number}", font=font, fill=(20, 20, 20))
    for image in (page, page.transpose(Image.Transpose.ROTATE_270)):
        assert find_card(bgr(image)) is None
        lines = key_lines([line.text for line in ocr.read(decoded(image))])
        assert any(SPEC.name in t for t in lines), lines
        assert any(SPEC.number in t for t in lines), lines


def test_an_outline_that_is_not_the_card_falls_back_to_the_whole_photo(ocr: CardOcr) -> None:
    # a small card in the middle of a card-shaped mat: the mat's outline is the largest
    # card-shaped one, but nothing is printed where a card's name and number would be
    photo = Image.new("RGB", (1000, 1250), (200, 200, 200))
    mat = (100, 80, 900, 80 + round(800 / 0.716))
    ImageDraw.Draw(photo).rectangle(mat, fill=(40, 70, 120))
    card = render_card(SPEC, random.Random(8)).resize((315, 440), Image.Resampling.LANCZOS)
    photo.paste(card, (340, 420))
    outline = find_card(bgr(photo))
    assert outline is not None and outline.area > 0.5  # the mat, not the card
    lines = key_lines([line.text for line in ocr.read(decoded(photo))])
    assert any(SPEC.name in t for t in lines) and any(SPEC.number in t for t in lines), lines


def test_a_tiny_or_blank_photo_reads_nothing_and_does_not_fail(ocr: CardOcr) -> None:
    assert ocr.read(Image.new("RGB", (8, 8), (255, 255, 255))) == []
    grey = jpeg(Image.new("RGB", (640, 480), (90, 90, 90)), random.Random(1))
    assert ocr.read(Image.open(io.BytesIO(grey))) == []
