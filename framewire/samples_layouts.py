"""Magic-like and Yu-Gi-Oh!-like generated cards, laid out where those games print things.

- Magic: the name in the title bar, mana cost on the right, artwork, type line, rules text,
  power/toughness at the bottom right (`3/2`: a number that is not the card's), and in the
  black border at the bottom left the collector number (`0123/0281 R`, or `R 0123`) over
  the set code and language (`MKM • EN`), in small print.
- Yu-Gi-Oh!: the name on top, level stars, a square artwork, then on the right just under
  it (about 72 % of the height) the set code (`LOB-EN001`), the text box with `ATK/2500
  DEF/2100`, and at the bottom left the eight-digit passcode.

`render_printing` draws any `CardSpec` by its `layout`; Pokémon-like cards are
`samples.render_card`'s.
"""

from __future__ import annotations

import colorsys
import random

from PIL import Image, ImageDraw, ImageFont

from framewire.samples import CARD_SIZE, CardSpec, font, render_card

YUGIOH_SIZE = (600, 874)  # 59 x 86 mm
_WORDS = ("target", "creature", "you", "control", "gets", "until", "end", "of", "turn",
          "draw", "a", "card", "destroy", "each", "player", "may", "search", "your", "deck",
          "for", "when", "this", "enters", "the", "battlefield", "to", "hand")  # fmt: skip
_TYPES = ("Creature — Elf Druid", "Instant", "Sorcery", "Creature — Goblin", "Artifact")
_ARTISTS = ("Jo Vale", "Ren Ito", "Ada Brook", "Kim Sato", "Lu Moreau")
_MAGIC_FRAMES = (  # frame, boxes
    ((225, 220, 200), (245, 243, 235)),  # white
    ((40, 100, 170), (200, 220, 240)),  # blue
    ((60, 55, 55), (200, 195, 190)),  # black
    ((180, 60, 40), (240, 210, 195)),  # red
    ((50, 120, 60), (205, 225, 200)),  # green
    ((200, 170, 80), (240, 230, 200)),  # gold
)
_YUGIOH_FRAMES = (
    ((205, 170, 90), "[Dragon / Normal]"),
    ((210, 120, 60), "[Spellcaster / Effect]"),
    ((40, 150, 135), "[Spell Card]"),
    ((170, 70, 135), "[Trap Card]"),
)


def render_printing(card: CardSpec, rng: random.Random) -> Image.Image:
    """The card drawn in its game's layout."""
    if card.layout == "magic":
        return render_magic(card, rng)
    if card.layout == "yugioh":
        return render_yugioh(card, rng)
    return render_card(card, rng)


def render_magic(card: CardSpec, rng: random.Random) -> Image.Image:
    w, h = CARD_SIZE
    frame, boxes = rng.choice(_MAGIC_FRAMES)
    img = Image.new("RGB", CARD_SIZE, (18, 18, 18))  # the black border
    draw = ImageDraw.Draw(img)
    draw.rounded_rectangle([28, 28, w - 28, h - 66], radius=18, fill=frame)
    draw.rounded_rectangle([42, 42, w - 42, 100], radius=14, fill=boxes, outline=(30, 30, 30))
    name_font = _fitting(card.name, w - 220, rng.randint(32, 38), rng)
    draw.text((58, 71), card.name, font=name_font, fill=(15, 15, 15), anchor="lm")
    for i in range(rng.randint(1, 4)):  # mana symbols
        x = w - 70 - 34 * i
        draw.ellipse([x - 14, 57, x + 14, 85], fill=_hsv(rng.randrange(360), 0.5, 0.8))
    _artwork(draw, (50, 110, w - 50, 488), rng)
    draw.rounded_rectangle([42, 496, w - 42, 546], radius=12, fill=boxes, outline=(30, 30, 30))
    kind = rng.choice(_TYPES)
    draw.text((58, 521), kind, font=font(24, rng), fill=(15, 15, 15), anchor="lm")
    draw.rectangle([52, 556, w - 52, 786], fill=boxes)
    rules = font(21, rng)
    for i in range(rng.randint(2, 4)):
        text = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(5, 8))).capitalize() + "."
        draw.text((66, 580 + 44 * i), text[:44], font=rules, fill=(25, 25, 25), anchor="lm")
    if kind.startswith("Creature"):
        draw.rounded_rectangle([w - 150, 768, w - 44, 822], radius=10, fill=boxes, outline=frame)
        power = f"{rng.randint(1, 6)}/{rng.randint(1, 6)}"
        draw.text((w - 97, 795), power, font=font(32, rng), fill=(15, 15, 15), anchor="mm")
    small = rng.randint(18, 21)
    white = (235, 235, 235)
    draw.text(
        (46, 840), card.printed or card.number, font=font(small, rng), fill=white, anchor="lm"
    )
    code = f"{card.set_code} • EN   {rng.choice(_ARTISTS)}"
    draw.text((46, 864), code, font=font(small - 1, rng, code), fill=white, anchor="lm")
    draw.text((w - 46, 864), "™ & © 2024", font=font(14, rng), fill=white, anchor="rm")
    return img


def render_yugioh(card: CardSpec, rng: random.Random) -> Image.Image:
    w, h = YUGIOH_SIZE
    frame, kind = rng.choice(_YUGIOH_FRAMES)
    img = Image.new("RGB", YUGIOH_SIZE, frame)
    draw = ImageDraw.Draw(img)
    draw.rounded_rectangle([2, 2, w - 3, h - 3], radius=12, outline=(40, 35, 30), width=10)
    light = tuple(min(255, c + 45) for c in frame)
    draw.rectangle([34, 30, w - 34, 96], fill=light, outline=(60, 50, 40), width=3)
    name_font = _fitting(card.name, w - 160, rng.randint(34, 40), rng)
    draw.text((48, 64), card.name, font=name_font, fill=(10, 10, 10), anchor="lm")
    draw.ellipse([w - 92, 38, w - 42, 88], fill=_hsv(rng.randrange(360), 0.7, 0.7))
    if "Card]" in kind:
        draw.text((w - 44, 122), kind, font=font(24, rng), fill=(10, 10, 10), anchor="rm")
    else:
        for i in range(rng.randint(1, 8)):  # level stars
            x = w - 60 - 40 * i
            draw.ellipse([x - 15, 107, x + 15, 137], fill=(200, 50, 30), outline=(240, 200, 60))
    art_bottom = 612 + rng.randint(-6, 6)
    _artwork(draw, (70, art_bottom - 460, w - 70, art_bottom), rng)
    y = art_bottom + rng.randint(16, 24)  # 72-74 % of the height, on the right
    draw.text((w - 72, y), card.number, font=font(rng.randint(18, 21), rng), fill=(10, 10, 10),
              anchor="rm")  # fmt: skip
    if rng.random() < 0.4:
        draw.text((72, y), "1st Edition", font=font(18, rng), fill=(10, 10, 10), anchor="lm")
    draw.rectangle([40, y + 18, w - 40, 822], fill=(235, 225, 200), outline=(90, 70, 50))
    draw.text((54, y + 40), kind, font=font(20, rng), fill=(10, 10, 10), anchor="lm")
    text = font(16, rng)
    for i in range(3):
        line = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(6, 9))).capitalize()
        draw.text((54, y + 68 + 24 * i), line[:60], font=text, fill=(30, 30, 30), anchor="lm")
    if "Card]" not in kind:
        draw.line([54, 790, w - 54, 790], fill=(30, 30, 30), width=2)
        stats = f"ATK/{rng.randrange(0, 3100, 100)}  DEF/{rng.randrange(0, 3100, 100)}"
        draw.text((w - 56, 806), stats, font=font(20, rng), fill=(10, 10, 10), anchor="rm")
    passcode = str(rng.randrange(10**7, 10**8))
    draw.text((44, 844), passcode, font=font(16, rng), fill=(10, 10, 10), anchor="lm")
    draw.text((w - 44, 844), "©2020 STUDIO", font=font(14, rng), fill=(10, 10, 10), anchor="rm")
    return img


def _fitting(
    text: str, width: int, size: int, rng: random.Random
) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """A font for `text` no wider than `width` (long names are set smaller, as printed)."""
    face = font(size, rng, text)
    while isinstance(face, ImageFont.FreeTypeFont) and size > 16 and face.getlength(text) > width:
        size -= 2
        face = face.font_variant(size=size)
    return face


def _artwork(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], rng: random.Random) -> None:
    x0, y0, x1, y1 = box
    draw.rectangle(box, fill=_hsv(rng.randrange(360), 0.35, 0.8), outline=(50, 50, 50), width=4)
    for _ in range(rng.randint(4, 9)):
        a, b = rng.randint(x0, x1 - 60), rng.randint(y0, y1 - 60)
        shape = [a, b, min(a + rng.randint(30, 200), x1), min(b + rng.randint(30, 200), y1)]
        colour = _hsv(rng.randrange(360), 0.6, 0.8)
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(shape, fill=colour)


def _hsv(h: float, s: float, v: float) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(h / 360, s, v)
    return int(r * 255), int(g * 255), int(b * 255)
