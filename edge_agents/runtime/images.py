"""The shape an image may have before any stage decodes or scales it.

Capture checks it before a file becomes a frame, inference again before it decodes one (a
frame may come from any client). A file of a few KiB can declare 20000x2 pixels: under a
pixel limit, yet every stage that scales its short side up (text detection scales it to
736 px) would allocate gigabytes. Bounding the sides and the aspect ratio as well as the
pixel count bounds what every later stage allocates.
"""

from __future__ import annotations

from dataclasses import dataclass

from framewire.schemas import ErrorKind, MessageError

# An image whose declared size no stage may decode; `reason` names the limit.
ImageShapeError = MessageError


@dataclass(frozen=True)
class ShapeLimits:
    max_pixels: int = 50_000_000
    max_side: int = 20_000
    min_side: int = 16
    max_aspect_ratio: float = 10.0


def check_shape(width: int, height: int, limits: ShapeLimits) -> None:
    """Raise ImageShapeError unless a `width` x `height` image is within `limits`."""
    size = f"{width}x{height}"
    if width * height > limits.max_pixels:
        raise ImageShapeError(
            ErrorKind.DECOMPRESSION_BOMB,
            f"{size} is {width * height:,} pixels, over the {limits.max_pixels:,} limit "
            "(max_pixels)",
        )
    if max(width, height) > limits.max_side:
        raise ImageShapeError(
            ErrorKind.DECOMPRESSION_BOMB,
            f"{size} has a side over the {limits.max_side:,} px limit (max_side)",
        )
    ratio = max(width, height) / max(1, min(width, height))
    if ratio > limits.max_aspect_ratio:
        raise ImageShapeError(
            ErrorKind.DECOMPRESSION_BOMB,
            f"{size} is {ratio:.0f}:1, over the {limits.max_aspect_ratio:g}:1 aspect-ratio "
            "limit (max_aspect_ratio)",
        )
    if min(width, height) < limits.min_side:
        raise ImageShapeError(
            ErrorKind.NOT_IMAGE,
            f"{size} has a side under the {limits.min_side} px limit: too small to be a frame "
            "(min_side)",
        )
