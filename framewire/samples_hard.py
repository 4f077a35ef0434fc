"""The hard tier of generated card photos: what careless handling and a real desk do.

Built on `framewire.samples`: a card from `render_printing` (Pokémon-, Magic- or
Yu-Gi-Oh!-like, `samples_layouts`) is turned (0, 90, 180 or 270 degrees
plus a small tilt) and given one or two of: strong perspective, glare, holo foil, a thumb
over the artwork, a busy background, a low resolution. It is then placed on its background
and goes through `photograph` (blur, noise, uneven light, JPEG) like every generated card.

`place_card` also returns where the card's corners ended up, so tests can check that the
outline is found where it is.
"""

from __future__ import annotations

import colorsys
import math
import random
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image, ImageDraw

from framewire.samples import CARD_SIZE, CardSpec, jpeg, photograph
from framewire.samples_layouts import render_printing

HARD_KINDS = ("perspective", "glare", "holo", "occlusion", "busy", "lowres")
_ART = (52, 130, CARD_SIZE[0] - 52, 500)  # about where the artwork is, in every layout
_WORDS = ("lorem", "ipsum", "table", "mat", "desk", "note", "tape", "pen", "box", "lamp")


@dataclass(frozen=True)
class Placed:
    image: Image.Image
    # where the upright card's top-left, top-right, bottom-right, bottom-left corners are
    corners: tuple[tuple[float, float], ...]


@dataclass(frozen=True)
class HardPhoto:
    image: Image.Image
    kinds: tuple[str, ...]  # the perturbations applied, besides the turn
    quarter_turns: int  # 0..3: the card is turned by this many times 90 degrees clockwise


def hard_card_jpeg(card: CardSpec, rng: random.Random) -> tuple[bytes, HardPhoto]:
    shot = hard_photograph(render_printing(card, rng), rng)
    return jpeg(shot.image, rng), shot


def hard_photograph(
    card: Image.Image,
    rng: random.Random,
    *,
    kinds: tuple[str, ...] | None = None,
    quarter_turns: int | None = None,
) -> HardPhoto:
    """A hard photo of a rendered card: by default a random turn and 1-2 random kinds."""
    turns = rng.randrange(4) if quarter_turns is None else quarter_turns
    chosen = kinds if kinds is not None else tuple(rng.sample(HARD_KINDS, rng.randint(1, 2)))
    surface = card.convert("RGB")
    if "holo" in chosen:
        surface = holo(surface, rng)
    if "glare" in chosen:
        surface = glare(surface, rng)
    placed = place_card(
        surface,
        rng,
        angle=90 * turns + rng.uniform(-12, 12),
        perspective=rng.uniform(0.22, 0.35) if "perspective" in chosen else rng.uniform(0, 0.06),
        busy="busy" in chosen,
        thumb="occlusion" in chosen,
    )
    out = photograph(placed.image, rng)
    if "busy" in chosen:
        # `photograph` frames the picture in grey; cut that off, so that the clutter runs
        # out of the photo as a real desk does, rather than ending in a card-like rectangle
        dx, dy = round(0.09 * out.width), round(0.09 * out.height)
        out = out.crop((dx, dy, out.width - dx, out.height - dy))
    if "lowres" in chosen:
        card_height = max(
            math.dist(placed.corners[0], placed.corners[3]),
            math.dist(placed.corners[1], placed.corners[2]),
        )
        factor = rng.uniform(230, 280) / card_height
        size = (max(1, round(out.width * factor)), max(1, round(out.height * factor)))
        out = out.resize(size, Image.Resampling.LANCZOS)
    return HardPhoto(out, chosen, turns)


def place_card(
    card: Image.Image,
    rng: random.Random,
    *,
    angle: float = 0.0,
    perspective: float = 0.0,
    busy: bool = False,
    thumb: bool = False,
) -> Placed:
    """The card on a background, turned by `angle` degrees clockwise, one side shrunk by
    `perspective` (0: none, 0.3: a strong tilt away from the camera), with a thumb holding
    it by a long side when `thumb`."""
    w, h = card.size
    pad = round(0.3 * w) if thumb else 0
    face = Image.new("RGBA", (w + 2 * pad, h + 2 * pad), (0, 0, 0, 0))
    face.paste(card.convert("RGBA"), (pad, pad))
    if thumb:
        _draw_thumb(face, pad, (w, h), rng)
    corners = np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float64) - [w / 2, h / 2]
    if perspective > 0:  # a side shrunk towards its middle: that edge is further away
        side = rng.randrange(4)
        a, b = side, (side + 1) % 4
        middle = (corners[a] + corners[b]) / 2
        corners[a] = middle + (corners[a] - middle) * (1 - perspective)
        corners[b] = middle + (corners[b] - middle) * (1 - perspective)
    corners += rng.uniform(-0.02, 0.02) * w
    theta = math.radians(angle)
    turn = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    corners = corners @ turn.T * rng.uniform(0.85, 1.05)
    margin = rng.uniform(0.25, 0.45) * w if busy else rng.uniform(0.06, 0.14) * w
    corners -= corners.min(axis=0) - margin
    size = (int(corners[:, 0].max() + margin), int(corners[:, 1].max() + margin))
    source = np.array([[pad, pad], [pad + w, pad], [pad + w, pad + h], [pad, pad + h]])
    homography = cv2.getPerspectiveTransform(source.astype(np.float32), corners.astype(np.float32))
    rgba = np.asarray(face)
    warped = cv2.warpPerspective(rgba, homography, size, flags=cv2.INTER_LINEAR)
    ground = busy_background(size, rng) if busy else Image.new("RGB", size, (70, 70, 70))
    alpha = warped[:, :, 3:4].astype(np.float32) / 255
    mixed = warped[:, :, :3] * alpha + np.asarray(ground, np.float32) * (1 - alpha)
    image = Image.fromarray(mixed.clip(0, 255).astype(np.uint8))
    return Placed(image, tuple((float(x), float(y)) for x, y in corners))


def _draw_thumb(face: Image.Image, pad: int, size: tuple[int, int], rng: random.Random) -> None:
    """A thumb over the artwork, coming in from the left or right edge of the card."""
    w, h = size
    draw = ImageDraw.Draw(face)
    cy = pad + rng.uniform(0.3, 0.55) * h
    rx, ry = rng.uniform(0.16, 0.22) * w, rng.uniform(0.07, 0.09) * h
    reach = rng.uniform(0.12, 0.3) * w  # how far the thumb comes in over the card
    left = rng.random() < 0.5
    cx = pad + reach - rx if left else pad + w - reach + rx
    # the rest of the finger runs from the tip's middle off the card
    x0, x1 = (pad - 2 * rx, cx) if left else (cx, pad + w + 2 * rx)
    skin = _hsv(rng.uniform(15, 30), rng.uniform(0.3, 0.5), rng.uniform(0.6, 0.9))
    shadow = (*(int(c * 0.6) for c in skin), 255)
    draw.rectangle([x0, cy - ry - 3, x1, cy + ry + 3], fill=shadow)
    draw.ellipse([cx - rx - 3, cy - ry - 3, cx + rx + 3, cy + ry + 3], fill=shadow)
    draw.rectangle([x0, cy - ry, x1, cy + ry], fill=(*skin, 255))
    draw.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=(*skin, 255))


def glare(card: Image.Image, rng: random.Random) -> Image.Image:
    """A bright elliptical highlight somewhere over the middle of the card."""
    w, h = card.size
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    cx, cy = rng.uniform(0.15, 0.85) * w, rng.uniform(0.25, 0.72) * h
    ax, ay = rng.uniform(0.12, 0.3) * w, rng.uniform(0.06, 0.14) * h
    t = math.radians(rng.uniform(0, 180))
    u = ((x - cx) * math.cos(t) + (y - cy) * math.sin(t)) / ax
    v = (-(x - cx) * math.sin(t) + (y - cy) * math.cos(t)) / ay
    strength = np.exp(-((u * u + v * v) ** 1.5))[:, :, None] * rng.uniform(0.75, 0.95)
    out = np.asarray(card, np.float32) * (1 - strength) + 255 * strength
    return Image.fromarray(out.clip(0, 255).astype(np.uint8))


def holo(card: Image.Image, rng: random.Random) -> Image.Image:
    """Holo foil: rainbow bands and speckle over the card, strongest over the artwork."""
    w, h = card.size
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    t = math.radians(rng.uniform(0, 180))
    period = rng.uniform(60, 160)
    noise = np.random.default_rng(rng.getrandbits(32))
    coarse = noise.random((h // 8, w // 8), dtype=np.float32)
    speckle = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
    hue = ((x * math.cos(t) + y * math.sin(t)) / period + 0.6 * speckle) % 1.0
    hsv = np.stack([hue * 180, np.full_like(hue, 200), np.full_like(hue, 240)], axis=2)
    rainbow = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB).astype(np.float32)
    grain = noise.normal(0, 25, (64, 64)).astype(np.float32)
    rainbow += cv2.resize(grain, (w, h), interpolation=cv2.INTER_NEAREST)[:, :, None]
    alpha = np.full((h, w, 1), rng.uniform(0.15, 0.28), np.float32)
    x0, y0, x1, y1 = _ART
    alpha[y0:y1, x0:x1] = rng.uniform(0.4, 0.6)
    out = np.asarray(card, np.float32) * (1 - alpha) + rainbow * alpha
    return Image.fromarray(out.clip(0, 255).astype(np.uint8))


def busy_background(size: tuple[int, int], rng: random.Random) -> Image.Image:
    """A cluttered desk: a gradient, shapes and lines of every colour, a few words."""
    w, h = size
    top, bottom = _hsv(rng.randrange(360), 0.3, 0.6), _hsv(rng.randrange(360), 0.4, 0.4)
    ramp = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
    base = np.asarray(top, np.float32) * (1 - ramp) + np.asarray(bottom, np.float32) * ramp
    image = Image.fromarray(np.repeat(base, w, axis=1).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(rng.randint(25, 45)):
        x0, y0 = rng.uniform(-0.1, 1) * w, rng.uniform(-0.1, 1) * h
        x1, y1 = x0 + rng.uniform(0.03, 0.25) * w, y0 + rng.uniform(0.03, 0.25) * h
        colour = _hsv(rng.randrange(360), rng.uniform(0.2, 0.9), rng.uniform(0.2, 1.0))
        shape = rng.randrange(3)
        if shape == 0:
            draw.ellipse([x0, y0, x1, y1], fill=colour)
        elif shape == 1:
            draw.rectangle([x0, y0, x1, y1], fill=colour)
        else:
            draw.line([x0, y0, x1, y1], fill=colour, width=rng.randint(2, 9))
    for _ in range(rng.randint(2, 6)):
        word = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(1, 3)))
        colour = _hsv(rng.randrange(360), 0.5, rng.uniform(0.1, 0.9))
        draw.text((rng.uniform(0, 0.8) * w, rng.uniform(0, 0.95) * h), word, fill=colour)
    return image


def _hsv(h: float, s: float, v: float) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb((h % 360) / 360, s, v)
    return int(r * 255), int(g * 255), int(b * 255)
