"""The one image validator: the shape an image may have before anything decodes or scales it.

Capture checks a file before it becomes a frame, inference checks a frame again before it
decodes it (a frame may come from any client); both call `open_image`, so both refuse the
same images for the same reasons, and a rule changes here only.

A file of a few KiB can declare 20000x2 pixels: under a pixel limit, yet every stage that
scales its short side up (text detection scales it to 736 px) would allocate gigabytes.
Bounding the sides and the aspect ratio as well as the pixel count bounds what every later
stage allocates. Pillow's own decompression-bomb limit (`Image.MAX_IMAGE_PIXELS`) stays a
ceiling above `max_pixels`: it is refused the same way whatever the warning filters say.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from framewire.schemas import ErrorKind, MessageError

# An image no stage may decode; `reason` names the limit.
ImageShapeError = MessageError

FORMATS = ("JPEG", "PNG", "WEBP")  # what a frame may be


@dataclass(frozen=True)
class ShapeLimits:
    max_pixels: int = 50_000_000
    max_side: int = 20_000
    min_side: int = 16
    max_aspect_ratio: float = 10.0


def _mib(n: int) -> str:
    return f"{n / 1024 / 1024:,.1f} MiB"


def _pixel_bytes(mode: str) -> int:
    """Bytes a pixel takes once Pillow has decoded it: bands of several channels are kept
    in 4 bytes, 16-bit grey in 2, 32-bit integer and float grey in 4, the rest in 1."""
    if Image.getmodebands(mode) > 1 or mode in ("I", "F"):
        return 4
    return 2 if mode.startswith("I;16") else 1


def decoded_bytes(width: int, height: int, mode: str = "RGB") -> int:
    """What decoding a `width` x `height` image of `mode` allocates: its raster, and the RGB
    copy the decode stage converts every mode but RGB and L into."""
    pixels = max(0, width) * max(0, height)
    converted = 0 if mode in ("RGB", "L") else pixels * _pixel_bytes("RGB")
    return pixels * _pixel_bytes(mode) + converted


@dataclass(frozen=True)
class ImageHeader:
    """What an image's header declares, read before any pixel is decoded."""

    format: str  # JPEG, PNG, WEBP
    mode: str  # RGB, L, RGBA...
    width: int
    height: int

    @property
    def pixels(self) -> int:
        return self.width * self.height

    @property
    def longest_side(self) -> int:
        return max(self.width, self.height)

    @property
    def aspect_ratio(self) -> float:
        return self.longest_side / max(1, min(self.width, self.height))

    @property
    def decoded_bytes(self) -> int:
        """What the decode stage allocates for it (`decoded_bytes`)."""
        return decoded_bytes(self.width, self.height, self.mode)


def check_shape(width: int, height: int, limits: ShapeLimits, *, mode: str = "RGB") -> None:
    """Raise ImageShapeError unless a `width` x `height` image is within `limits`."""
    size = f"{width}x{height}"
    if width * height > limits.max_pixels:
        raise ImageShapeError(
            ErrorKind.DECOMPRESSION_BOMB,
            f"{size} is {width * height:,} pixels ({_mib(decoded_bytes(width, height, mode))} "
            f"decoded), over the {limits.max_pixels:,} limit (max_pixels)",
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


def check_header(header: ImageHeader, limits: ShapeLimits) -> None:
    """Raise ImageShapeError unless the image `header` declares may be decoded."""
    check_shape(header.width, header.height, limits, mode=header.mode)
    ceiling = Image.MAX_IMAGE_PIXELS
    # Pillow only warns between its limit and twice it; refused here whatever the filters
    if ceiling is not None and header.pixels > ceiling:
        raise ImageShapeError(
            ErrorKind.DECOMPRESSION_BOMB,
            f"{header.width}x{header.height} is {header.pixels:,} pixels, over the decoder's "
            f"own {ceiling:,} limit (above max_pixels)",
        )


def open_image(
    data: bytes, limits: ShapeLimits, formats: Sequence[str] = FORMATS
) -> tuple[Image.Image, ImageHeader]:
    """`data` opened as an image of one of `formats`, with what its header declares, once
    that is within `limits`; no pixel is decoded yet (`decode` does that).

    The type is found from the bytes. Raises ImageShapeError: NOT_IMAGE for bytes of no
    allowed type or an unreadable header, TRUNCATED for bytes that end inside the header,
    DECOMPRESSION_BOMB (or NOT_IMAGE for a side under `min_side`) for a shape past a limit.
    """
    try:
        image = Image.open(io.BytesIO(data), formats=list(formats))
    except UnidentifiedImageError:
        raise ImageShapeError(
            ErrorKind.NOT_IMAGE, f"not an image of an allowed type ({', '.join(formats)})"
        ) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ImageShapeError(
            ErrorKind.DECOMPRESSION_BOMB, f"refused as a decompression bomb: {err}"
        ) from None
    except Exception as err:  # Pillow plugins raise several kinds on corrupt headers
        if "truncated" in str(err).lower():
            raise ImageShapeError(
                ErrorKind.TRUNCATED, f"image is truncated: it ends inside its header ({err})"
            ) from None
        raise ImageShapeError(ErrorKind.NOT_IMAGE, f"unreadable image header: {err}") from None
    width, height = image.size
    header = ImageHeader(format=image.format or "", mode=image.mode, width=width, height=height)
    try:
        check_header(header, limits)
    except BaseException:
        image.close()
        raise
    return image, header


def decode(image: Image.Image, *, reduced: bool = False) -> None:
    """Decode every pixel of an image `open_image` gave. `reduced`: a JPEG decodes at 1/8
    scale, which still reads the whole entropy-coded stream (so still finds truncation and
    corruption) at a fraction of the cost. Raises ImageShapeError: TRUNCATED for a stream
    that ends early or is corrupt, NOT_IMAGE for one that cannot be decoded otherwise."""
    try:
        if reduced and image.format == "JPEG":
            image.draft("RGB", (max(1, image.width // 8), max(1, image.height // 8)))
        image.load()
    except OSError as err:
        raise ImageShapeError(
            ErrorKind.TRUNCATED, f"image data is truncated or corrupt: {err}"
        ) from None
    except Exception as err:
        raise ImageShapeError(ErrorKind.NOT_IMAGE, f"image could not be decoded: {err}") from None
