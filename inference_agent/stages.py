"""Pipeline stages. Each is a small class with a `name` and a `run(frame)` that reads what
earlier stages produced and adds its own outputs; all of it runs in a worker thread."""

from __future__ import annotations

import base64
import hashlib
import io
from dataclasses import dataclass
from typing import Protocol

import imagehash
from PIL import Image

from edge_agents.runtime.images import ImageShapeError, ShapeLimits, check_shape
from schemas import CardRecognition, ErrorKind, FrameMeta, ImageFacts, Thumbnail


class StageError(Exception):
    """A stage refused the frame; `kind` says how, `reason` says why."""

    def __init__(self, kind: ErrorKind, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


@dataclass
class FrameWork:
    """One frame on its way through the pipeline, with every stage's outputs."""

    meta: FrameMeta
    payload: bytes
    image: Image.Image | None = None
    small: Image.Image | None = None  # the thumbnail, for stages that need no detail
    facts: ImageFacts | None = None
    thumbnail: Thumbnail | None = None
    phash: str | None = None
    card: CardRecognition | None = None


class Stage(Protocol):
    name: str

    def run(self, frame: FrameWork) -> None: ...


class VerifyChecksum:
    """Refuses a frame whose bytes do not match the sha256 its metadata claims."""

    name = "verify_sha256"

    def run(self, frame: FrameWork) -> None:
        digest = hashlib.sha256(frame.payload).hexdigest()
        if digest != frame.meta.sha256:
            raise StageError(
                ErrorKind.CHECKSUM_MISMATCH,
                f"payload sha256 {digest[:16]}... does not match the frame's "
                f"{frame.meta.sha256[:16]}... (corrupted or altered in transit)",
            )
        if len(frame.payload) != frame.meta.size:
            raise StageError(
                ErrorKind.CHECKSUM_MISMATCH,
                f"payload is {len(frame.payload)} bytes, metadata says {frame.meta.size}",
            )


class DecodeImage:
    """Decodes the image once for every later stage, after checking the size its header
    declares (pixels, sides, aspect ratio), so no later stage allocates past the limits."""

    name = "decode"

    def __init__(self, limits: ShapeLimits | None = None) -> None:
        self.limits = limits or ShapeLimits()

    def run(self, frame: FrameWork) -> None:
        try:
            image = Image.open(io.BytesIO(frame.payload), formats=["JPEG", "PNG", "WEBP"])
            check_shape(image.width, image.height, self.limits)
            image.load()
        except ImageShapeError as err:
            raise StageError(err.kind, err.reason) from None
        except Exception as err:
            raise StageError(ErrorKind.NOT_IMAGE, f"image could not be decoded: {err}") from None
        frame.facts = ImageFacts(
            format=image.format or "unknown",
            width=image.width,
            height=image.height,
            mode=image.mode,
        )
        frame.image = image if image.mode in ("RGB", "L") else image.convert("RGB")


class MakeThumbnail:
    name = "thumbnail"

    def __init__(self, size: int = 256, quality: int = 75) -> None:
        self.size = size
        self.quality = quality

    def run(self, frame: FrameWork) -> None:
        assert frame.image is not None
        thumb = frame.image.copy()
        thumb.thumbnail((self.size, self.size), Image.Resampling.BILINEAR)
        out = io.BytesIO()
        thumb.convert("RGB").save(out, "JPEG", quality=self.quality)
        frame.small = thumb
        frame.thumbnail = Thumbnail(
            width=thumb.width, height=thumb.height, data=base64.b64encode(out.getvalue())
        )


class PerceptualHash:
    """64-bit DCT perceptual hash: near-identical photos of one card hash close together.

    Computed from the thumbnail when there is one: the hash looks at a 32x32 picture anyway,
    and scaling a full camera frame down with Lanczos cost more than the rest of the stage."""

    name = "phash"

    def run(self, frame: FrameWork) -> None:
        source = frame.small or frame.image
        assert source is not None
        frame.phash = str(imagehash.phash(source))


def image_stages(*, thumbnail_size: int = 256, limits: ShapeLimits | None = None) -> list[Stage]:
    """The stages every frame goes through, whatever is recognised in it."""
    return [
        VerifyChecksum(),
        DecodeImage(limits),
        MakeThumbnail(thumbnail_size),
        PerceptualHash(),
    ]
