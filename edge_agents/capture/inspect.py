"""Deciding whether a file is a frame: by its bytes, never by its name."""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from framewire.edge_agents.runtime.images import (
    FORMATS,
    ImageHeader,
    ShapeLimits,
    decode,
    open_image,
)
from framewire.schemas import ErrorKind, MessageError

CONTENT_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}


# A file that cannot be a frame; `reason` is written for the person who reads it.
FrameRejectedError = MessageError


@dataclass(frozen=True)
class ImageLimits:
    max_bytes: int = 20 * 1024 * 1024
    max_pixels: int = ShapeLimits.max_pixels
    formats: tuple[str, ...] = FORMATS
    max_side: int = ShapeLimits.max_side
    max_aspect_ratio: float = ShapeLimits.max_aspect_ratio
    # decode the pixels too (a corrupt middle is caught here, not on the inference box);
    # without it a file is checked to be complete by its structure, at a fraction of the cost
    decode: bool = False

    @property
    def shape(self) -> ShapeLimits:
        return ShapeLimits(
            max_pixels=self.max_pixels,
            max_side=self.max_side,
            max_aspect_ratio=self.max_aspect_ratio,
        )


@dataclass(frozen=True)
class Inspection:
    sha256: str
    size: int
    content_type: str
    format: str
    width: int
    height: int


def _mib(n: int) -> str:
    return f"{n / 1024 / 1024:.1f} MiB"


def read_fd(fd: int, limits: ImageLimits) -> bytes:
    """Read an open file: a regular file only, refused before reading when it is empty or
    over the size limit, and never more than one byte past the limit (it may be growing)."""
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        raise FrameRejectedError(
            ErrorKind.NOT_A_FILE, "it is not a regular file (a FIFO, a device, a folder...)"
        )
    if st.st_size == 0:
        raise FrameRejectedError(ErrorKind.EMPTY, "file is empty (0 bytes)")
    if st.st_size > limits.max_bytes:
        raise FrameRejectedError(
            ErrorKind.TOO_LARGE,
            f"file is {_mib(st.st_size)}, over the {_mib(limits.max_bytes)} limit "
            "(max_frame_bytes)",
        )
    chunks: list[bytes] = []
    left = limits.max_bytes + 1
    while left > 0:
        chunk = os.read(fd, min(left, 1024 * 1024))
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    data = b"".join(chunks)
    if len(data) > limits.max_bytes:  # grew between stat and read
        raise FrameRejectedError(ErrorKind.TOO_LARGE, f"file grew past {_mib(limits.max_bytes)}")
    if not data:
        raise FrameRejectedError(ErrorKind.EMPTY, "file is empty (0 bytes)")
    return data


def read_bounded(path: Path, limits: ImageLimits) -> bytes:
    """Read a file named by a person (`framewire identify`): links are followed, but only a
    regular file is read, without blocking (a FIFO is refused), and never past the limit."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        return read_fd(fd, limits)
    finally:
        os.close(fd)


def inspect_image(data: bytes, limits: ImageLimits) -> Inspection:
    """Check that `data` is a complete image of an allowed type within the limits.

    The type, the size and the shape come from the header, checked by the validator the
    inference agent's decode stage uses too (`images.open_image`), before any pixel is
    decoded (a decompression bomb never gets decoded). Then the file is checked to be
    complete by its structure or, with `decode`, by decoding it all, so a truncated or
    corrupt file is caught here and not on the inference box.
    """
    if not data:
        raise FrameRejectedError(ErrorKind.EMPTY, "file is empty (0 bytes)")
    if len(data) > limits.max_bytes:
        raise FrameRejectedError(
            ErrorKind.TOO_LARGE,
            f"{_mib(len(data))} is over the {_mib(limits.max_bytes)} limit (max_frame_bytes)",
        )
    image, header = open_image(data, limits.shape, limits.formats)
    with image:
        if limits.decode:
            decode(image, reduced=True)
        elif not _complete(header.format, data):
            raise FrameRejectedError(
                ErrorKind.TRUNCATED,
                f"image data is truncated: the {header.format} stream has no end "
                "(still being written?)",
            )
    return _inspection(data, header)


def _inspection(data: bytes, header: ImageHeader) -> Inspection:
    return Inspection(
        sha256=hashlib.sha256(data).hexdigest(),
        size=len(data),
        content_type=CONTENT_TYPES[header.format],
        format=header.format,
        width=header.width,
        height=header.height,
    )


def _complete(fmt: str, data: bytes) -> bool:
    """Whether the image's stream reaches its end: a file still being written does not.

    JPEG: the end-of-image marker after the first scan (in entropy-coded data a 0xFF byte is
    always followed by 0x00 or a restart marker, so the first FF D9 there is the real end;
    an EXIF thumbnail's own end marker sits inside a segment that is skipped whole, and
    what some cameras append after the image, a motion clip, say, does not matter).
    PNG: the IEND chunk. WebP: the RIFF length the header declares."""
    if fmt == "JPEG":
        pos = 2
        while pos + 4 <= len(data):
            if data[pos] != 0xFF:
                return False
            marker = data[pos + 1]
            if marker == 0xFF:  # fill byte
                pos += 1
                continue
            if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # no length
                pos += 2
                continue
            length = int.from_bytes(data[pos + 2 : pos + 4], "big")
            if marker == 0xDA:  # start of scan: the end marker follows the entropy data
                return data.find(b"\xff\xd9", pos + 2 + length) != -1
            pos += 2 + length
        return False
    if fmt == "PNG":
        return data.find(b"IEND", 8) != -1
    if fmt == "WEBP":
        return len(data) >= 12 and int.from_bytes(data[4:8], "little") + 8 <= len(data)
    return True
