"""Synthetic trading-card images, rendered from a catalog, for the demo and benchmarks.

Each card is drawn the way a real one is laid out (name and HP on top, artwork box, set
and card number at the bottom) with varied colours and fonts, then optionally photographed
badly: a slight rotation, blur, noise, uneven light and JPEG compression.
"""

from __future__ import annotations

import csv
import io
import random
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter, ImageFont

CARD_SIZE = (630, 880)
_FONT_NAMES = (
    "DejaVuSans-Bold.ttf",
    "DejaVuSerif-Bold.ttf",
    "DejaVuSans.ttf",
    "DejaVuSerif.ttf",
    "DejaVuSansCondensed-Bold.ttf",
    "DejaVuSansMono-Bold.ttf",
    "Arial Bold.ttf",
    "Georgia Bold.ttf",
    "Verdana Bold.ttf",
)
_FONT_DIRS = (
    "/usr/share/fonts/truetype/dejavu",
    "/Library/Fonts",
    "/System/Library/Fonts/Supplemental",
    "/System/Library/Fonts",
)


@dataclass(frozen=True)
class CardSpec:
    name: str
    set_name: str
    number: str  # as the catalog keeps it
    rarity: str
    hp: str = ""
    layout: str = "pokemon"  # how it is drawn: pokemon, magic, yugioh (`samples_layouts`)
    printed: str = ""  # the number as the card prints it, when the catalog keeps it otherwise
    set_code: str = ""  # the set's code, printed on Magic cards (`MKM`)
    trait: str = ""  # what the printing puts to the test (`samples_catalog.TRAITS`)


def sample_catalog_path() -> Path:
    return Path(str(resources.files("framewire") / "data" / "catalog.csv"))


def load_specs(path: Path | None = None) -> list[CardSpec]:
    with (path or sample_catalog_path()).open(newline="", encoding="utf-8") as f:
        return [
            CardSpec(r["name"], r["set"], r["number"], r["rarity"], r.get("hp") or "")
            for r in csv.DictReader(f)
        ]


def available_fonts() -> list[Path]:
    return [Path(d) / n for d in _FONT_DIRS for n in _FONT_NAMES if (Path(d) / n).is_file()]


_FONTS = available_fonts()


def font(
    size: int, rng: random.Random, text: str = ""
) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """One of the fonts at random; one that has every character of `text` when some lack
    one (DejaVu Serif has no ★)."""
    fonts = [f for f in _FONTS if _covers(f, text)] or _FONTS
    if fonts:
        return ImageFont.truetype(str(rng.choice(fonts)), size)
    return ImageFont.load_default(size=size)


@lru_cache(maxsize=256)
def _covers(path: Path, text: str) -> bool:
    """Whether the font draws every character of `text` as itself, not as its "missing"
    box (PIL has no other way to ask)."""
    if text.isascii():
        return True
    face = ImageFont.truetype(str(path), 24)
    missing = _glyph(face, "\ue000")  # a private-use character: no font here has it
    return all(_glyph(face, c) != missing for c in set(text) if not c.isascii())


def _glyph(face: ImageFont.FreeTypeFont, char: str) -> bytes:
    image = Image.new("L", (48, 48))
    ImageDraw.Draw(image).text((8, 8), char, font=face, fill=255)
    return image.tobytes()


def render_card(card: CardSpec, rng: random.Random) -> Image.Image:
    w, h = CARD_SIZE
    hue = rng.randrange(360)
    frame = _hsv(hue, 0.55, 0.85)
    img = Image.new("RGB", CARD_SIZE, _hsv(hue, 0.25, 0.97))
    draw = ImageDraw.Draw(img)
    draw.rounded_rectangle([4, 4, w - 5, h - 5], radius=28, outline=frame, width=18)
    draw.rectangle([40, 40, w - 40, 110], fill=_hsv(hue, 0.15, 1.0))
    title = font(rng.randint(38, 46), rng, card.name)
    draw.text((56, 75), card.name, font=title, fill=(20, 20, 20), anchor="lm")
    if card.hp:
        draw.text(
            (w - 56, 75), f"HP {card.hp}", font=font(32, rng), fill=(150, 20, 20), anchor="rm"
        )
    art = [52, 130, w - 52, 500]
    draw.rectangle(art, fill=_hsv((hue + 180) % 360, 0.35, 0.8), outline=(60, 60, 60), width=4)
    for _ in range(rng.randint(4, 9)):
        x0, y0 = rng.randint(art[0], art[2] - 60), rng.randint(art[1], art[3] - 60)
        x1, y1 = x0 + rng.randint(30, 200), y0 + rng.randint(30, 200)
        box = [x0, y0, min(x1, art[2]), min(y1, art[3])]
        colour = _hsv(rng.randrange(360), 0.6, 0.8)
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=colour)
    body = font(24, rng)
    for i, line in enumerate(("Attack", "Defend")):
        y = 545 + i * 70
        draw.text((60, y), f"{line}  {rng.randint(10, 120)}", font=body, fill=(30, 30, 30))
        draw.line([60, y + 45, w - 60, y + 45], fill=(150, 150, 150), width=2)
    number = card.printed or card.number
    foot = font(26, rng, card.set_name + number)
    draw.text((56, h - 80), card.set_name, font=foot, fill=(40, 40, 40), anchor="lm")
    draw.text((w - 56, h - 80), number, font=foot, fill=(10, 10, 10), anchor="rm")
    draw.text((56, h - 50), card.rarity, font=font(20, rng), fill=(90, 90, 90), anchor="lm")
    return img


def _perspective(img: Image.Image, rng: random.Random, amount: float) -> Image.Image:
    """Tilt the card away from the camera a little: a random quadrilateral warp."""
    w, h = img.size
    pad = int(0.06 * max(w, h))
    canvas = Image.new("RGB", (w + 2 * pad, h + 2 * pad), (70, 70, 70))
    canvas.paste(img, (pad, pad))
    j = amount * 0.04 * min(w, h)
    corners = [
        (pad + rng.uniform(-j, j), pad + rng.uniform(-j, j)),
        (pad + rng.uniform(-j, j), pad + h + rng.uniform(-j, j)),
        (pad + w + rng.uniform(-j, j), pad + h + rng.uniform(-j, j)),
        (pad + w + rng.uniform(-j, j), pad + rng.uniform(-j, j)),
    ]
    quad = tuple(v for corner in corners for v in corner)
    return canvas.transform(canvas.size, Image.Transform.QUAD, quad, Image.Resampling.BICUBIC)


def photograph(img: Image.Image, rng: random.Random, *, strength: float = 1.0) -> Image.Image:
    """What a real capture does to a card: perspective, tilt, blur, noise, uneven light."""
    out = _perspective(img, rng, strength) if strength > 0 else img
    angle = rng.uniform(-3, 3) * strength
    out = out.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True, fillcolor=(70, 70, 70))
    if strength > 0:
        out = out.filter(ImageFilter.GaussianBlur(rng.uniform(0, 1.2) * strength))
        # a soft spot of light somewhere over the card: a radial gradient, cropped at random
        big = Image.radial_gradient("L").resize((out.width * 2, out.height * 2))
        x, y = rng.randrange(out.width), rng.randrange(out.height)
        light = big.crop((x, y, x + out.width, y + out.height))
        dim = Image.new("RGB", out.size, (0, 0, 0))
        out = Image.composite(out, dim, light.point(lambda v: 255 - int(v * 0.3 * strength)))
        noise = _noise(out.size, 12 * strength, rng).convert("RGB")
        out = Image.blend(out, noise, 0.06 * strength)
    return out


def _noise(size: tuple[int, int], sigma: float, rng: random.Random) -> Image.Image:
    """Gaussian grey noise around 128, like Image.effect_noise, but drawn from `rng`'s
    state (without drawing from it), so that the same seed makes the same images."""
    import numpy as np

    gen = np.random.default_rng(list(rng.getstate()[1]))
    values = gen.normal(128.0, sigma, (size[1], size[0]))
    return Image.fromarray(np.clip(values, 0, 255).astype(np.uint8), "L")


def jpeg(image: Image.Image, rng: random.Random) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=rng.randint(70, 93))
    return buf.getvalue()


def card_jpeg(card: CardSpec, rng: random.Random, *, strength: float = 1.0) -> bytes:
    return jpeg(photograph(render_card(card, rng), rng, strength=strength), rng)


_SYLLABLES = ("zor", "qua", "vix", "lum", "tek", "rah", "mip", "gol", "yun", "dre", "kos", "baz")


def stranger(rng: random.Random, catalog: list[CardSpec]) -> CardSpec:
    """A card that is not in the catalog: a made-up name, a plausible set and number."""
    known = {c.name.casefold() for c in catalog}
    while True:
        if rng.random() < 0.5:  # a made-up word
            name = "".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 3))).capitalize()
        else:  # a near miss: the catalog's own naming, but a card it does not list
            a, b = rng.choice(catalog).name, rng.choice(catalog).name
            name = a[: max(3, len(a) // 2)] + b[len(b) // 2 :]
        if name.casefold() not in known:
            break
    template = rng.choice(catalog)
    total = template.number.split("/")[-1]
    number = f"{rng.randint(1, int(total) if total.isdigit() else 200):03d}/{total}"
    return CardSpec(name, template.set_name, number, "Common", str(rng.randrange(30, 250, 10)))


def write_cards(
    folder: Path, count: int, *, seed: int = 0, recapture_every: int = 0
) -> list[tuple[Path, CardSpec]]:
    """Write `count` card photos into `folder` the way camera software does (write a
    temporary name, then rename), going through the sample catalog. With `recapture_every`
    N, every Nth photo is the card of N-1 photos before, photographed again."""
    return list(iter_cards(folder, count, seed=seed, recapture_every=recapture_every))


def iter_cards(
    folder: Path, count: int, *, seed: int = 0, recapture_every: int = 0
) -> Iterator[tuple[Path, CardSpec]]:
    """`write_cards`, one card at a time (each is written when it is yielded)."""
    rng = random.Random(seed)
    specs = load_specs()
    folder.mkdir(parents=True, exist_ok=True)
    # the cards that may be photographed again: the last N-1 (N = 1: the first); memory
    # stays flat however many cards are written
    rendered: list[tuple[Image.Image, CardSpec]] = []
    drawn = 0
    for i in range(count):
        if recapture_every and i % recapture_every == recapture_every - 1 and rendered:
            card, spec = rendered[-(recapture_every - 1)]
        else:
            spec = specs[drawn % len(specs)]
            card = render_card(spec, rng)
            drawn += 1
            if recapture_every > 1:
                rendered.append((card, spec))
                del rendered[: -(recapture_every - 1)]
            elif recapture_every == 1 and not rendered:
                rendered.append((card, spec))
        path = folder / f"card-{i + 1:04d}.jpg"
        tmp = path.with_suffix(".jpg.part")
        tmp.write_bytes(jpeg(photograph(card, rng), rng))
        tmp.replace(path)
        yield path, spec


def _hsv(h: float, s: float, v: float) -> tuple[int, int, int]:
    import colorsys

    r, g, b = colorsys.hsv_to_rgb(h / 360, s, v)
    return int(r * 255), int(g * 255), int(b * 255)
