"""The frames every figure is measured on: rendered card photos, each file's bytes unique.

Rendering a photo takes about a quarter of a second, so a run renders a few dozen and
makes as many distinct files from them as it needs: a JPEG comment segment with the
frame's number goes in after the start-of-image marker. The picture is the same; the
sha256 differs, so no cache or duplicate check sees a frame it has seen before.
"""

from __future__ import annotations

import random
import struct

from framewire.samples import card_jpeg, load_specs


def card_photos(n: int, *, seed: int = 1) -> list[bytes]:
    """`n` distinct card photos from the sample catalog."""
    rng = random.Random(seed)
    specs = load_specs()
    return [card_jpeg(specs[i % len(specs)], rng) for i in range(n)]


def tagged(photo: bytes, tag: str) -> bytes:
    """`photo` with a JPEG comment holding `tag`: the same image, different bytes."""
    if photo[:2] != b"\xff\xd8":
        raise ValueError("not a JPEG (no start-of-image marker)")
    text = tag.encode()
    return photo[:2] + b"\xff\xfe" + struct.pack(">H", len(text) + 2) + text + photo[2:]


def frame_set(photos: list[bytes], n: int, tag: str) -> list[bytes]:
    """`n` frames cycling through `photos`, each one's bytes unique within `tag`."""
    return [tagged(photos[i % len(photos)], f"{tag}-{i}") for i in range(n)]
