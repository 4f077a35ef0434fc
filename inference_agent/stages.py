"""Pipeline stages. Each is a small class with a `name` and a `run(frame)` that reads what
earlier stages produced and adds its own outputs; all of it runs in a worker thread.

`STAGES` is the registry `[inference] stages` names them from: a short, stable name for the
configuration, what the stage does, which stages must run before it, and how it is made."""

from __future__ import annotations

import base64
import hashlib
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from PIL import Image

from framewire.edge_agents.runtime.images import ShapeLimits, decode, open_image
from framewire.schemas import (
    CardRecognition,
    ErrorKind,
    FrameMeta,
    ImageFacts,
    MessageError,
    Thumbnail,
)

# A stage refused the frame; `kind` says how, `reason` says why.
StageError = MessageError


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
    declares (pixels, sides, aspect ratio) with the validator capture uses too
    (`images.open_image`), so no later stage allocates past the limits."""

    name = "decode"

    def __init__(self, limits: ShapeLimits | None = None) -> None:
        self.limits = limits or ShapeLimits()

    def run(self, frame: FrameWork) -> None:
        image, _ = open_image(frame.payload, self.limits)
        try:
            decode(image)
        except BaseException:
            image.close()
            raise
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
        import imagehash  # here, not at the top: the settings read the registry below

        source = frame.small or frame.image
        assert source is not None
        frame.phash = str(imagehash.phash(source))


@dataclass(frozen=True)
class StageOptions:
    """What the stage factories need from the settings. `recogniser` builds the card stage
    with its models and catalog (inference_agent.build); None when no catalog is set."""

    thumbnail_size: int = 256
    limits: ShapeLimits = field(default_factory=ShapeLimits)
    recogniser: Callable[[], Stage] | None = None


def _recogniser(options: StageOptions) -> Stage:
    if options.recogniser is None:
        raise ValueError("the card stage needs a catalog (catalog)")
    return options.recogniser()


@dataclass(frozen=True)
class StageSpec:
    """One stage as the configuration names it."""

    summary: str
    make: Callable[[StageOptions], Stage]
    after: tuple[str, ...] = ()  # stages that must run earlier
    needs_catalog: bool = False


STAGES: dict[str, StageSpec] = {
    "checksum": StageSpec(
        "refuses bytes that do not match the frame's sha256 and size (the capture box sends "
        "them again); always first",
        lambda o: VerifyChecksum(),
    ),
    "decode": StageSpec(
        "decodes the image within the shape limits; width, height, format, mode",
        lambda o: DecodeImage(o.limits),
        after=("checksum",),
    ),
    "thumbnail": StageSpec(
        "a JPEG thumbnail of thumbnail_size pixels",
        lambda o: MakeThumbnail(o.thumbnail_size),
        after=("decode",),
    ),
    "phash": StageSpec(
        "64-bit perceptual hash, for the ledger's look-alike check",
        lambda o: PerceptualHash(),
        after=("decode",),
    ),
    "card": StageSpec(
        "reads the card (OCR) and matches it in the catalog",
        _recogniser,
        after=("decode",),
        needs_catalog=True,
    ),
}
IMAGE_STAGES = ("checksum", "decode", "thumbnail", "phash")


def default_stages(*, catalog: bool) -> list[str]:
    """The stages run when `stages` is unset: the image stages, and the card recogniser when
    a catalog is configured."""
    return [*IMAGE_STAGES, "card"] if catalog else list(IMAGE_STAGES)


def check_stages(names: Sequence[str], *, catalog: bool) -> list[str]:
    """`names` if they form a pipeline that can run, else ValueError saying what is wrong."""
    known = ", ".join(STAGES)
    unknown = [n for n in names if n not in STAGES]
    if unknown:
        listed = ", ".join(repr(n) for n in unknown)
        raise ValueError(f"unknown stage {listed}; the known stages are {known}")
    if not names or names[0] != "checksum":
        raise ValueError(
            "the first stage must be 'checksum': a frame whose bytes do not match its "
            f"sha256 is sent again by the capture box, never recorded (known stages: {known})"
        )
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ValueError(f"stage {name!r} is listed twice")
        missing = [a for a in STAGES[name].after if a not in seen]
        if missing:
            raise ValueError(f"stage {name!r} needs {', '.join(map(repr, missing))} before it")
        if STAGES[name].needs_catalog and not catalog:
            raise ValueError(f"stage {name!r} needs a catalog: set catalog, or leave it out")
        seen.add(name)
    return list(names)


def make_stages(names: Sequence[str], options: StageOptions) -> list[Stage]:
    return [STAGES[name].make(options) for name in names]
