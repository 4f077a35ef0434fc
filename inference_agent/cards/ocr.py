"""OCR of a card photo: find the card, turn it upright, read where name and number are.

1. The EXIF orientation is applied, then the card's outline is looked for (`rectify`). When
   one is found the card is warped flat and portrait at the detector's size; otherwise
   the whole photo is read.
2. Text is detected once, on that reduced picture. A photo read whole whose lines run
   mostly up and down is turned a quarter; then the direction classifier votes, over the
   detected lines, between upright and upside down.
3. On a card, only the lines inside the layout's bands (`layout.CARD_BANDS`: name on top,
   number and set at the bottom, the Yu-Gi-Oh! set code) are recognised, each cut from the
   full-resolution photo. Unless that gives a word where the name is printed and a digit
   where the number is (an outline that was not the card's, a layout that prints
   elsewhere, a wrong turn), the whole photo is read as well, so a card is never read
   worse than without the outline.

Pre- and post-processing come from rapidocr (the package that ships the models); the
networks themselves run on framewire's registry sessions, so they are checksum-verified,
warmed up, swappable, and run on onnxruntime or MLX alike. rapidocr is given the model
files by path, so its run-time model download is never reached.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from PIL import Image, ImageOps

from framewire.inference_agent.cards.layout import (
    CARD_BANDS,
    Band,
    Box,
    box_size,
    in_bands,
    order_box,
    quarter_turn,
    reading_order,
    transform,
)
from framewire.inference_agent.cards.matcher import OcrLine
from framewire.inference_agent.cards.rectify import CardOutline, find_card
from framewire.inference_agent.models import ModelRegistry

logger = logging.getLogger(__name__)

MAX_SIDE = 1600  # larger photos are scaled down first: card text stays legible
# The detector reads a found card at this size (portrait, multiples of 32): the smallest
# text on a card (its number) is still ~10 px tall there.
CARD_DET_SIZE = (352, 480)
# A photo without a card outline is read as before: its short side scaled to this. With
# MAX_SIDE and the decode stage's aspect-ratio bound the input stays a few tens of MiB.
DET_SIDE = 736
TEXT_SCORE = 0.5  # recognised lines below this score are dropped (rapidocr's default)
REC_HEIGHT = 48  # the recogniser's input height
MAX_LINE_RATIO = 25.0  # width / height of a cut-out line, at most
REC_BATCH = 6  # lines recognised together, at most
ORIENT_LINES = 6  # the longest detected lines vote on upright vs upside down
# a vote closer than this share of its weight is settled by where the largest print is
# (holo foil and glare make the classifier unsure of either way up)
CLOSE_VOTE = 0.25
NAME_SHARE = 0.2  # the top (or bottom) share of a card looked at for its largest print


@dataclass(frozen=True)
class _Canvas:
    """The picture text is detected on, and how its pixels map back onto the photo."""

    image: np.ndarray  # BGR
    to_photo: np.ndarray  # 3x3: canvas pixel -> photo pixel
    card: bool  # a rectified card (True) or the whole photo (False)


@dataclass(frozen=True)
class _Reading:
    boxes: list[Box]  # upright coordinates
    lines: list[OcrLine]
    # a word was read where the card's name is printed, and something with a digit where
    # its number is (on a photo read whole: anywhere)
    named: bool
    numbered: bool

    def identifies(self) -> bool:
        """Holds what identifying a card needs."""
        return self.named and self.numbered

    @property
    def score(self) -> float:
        return sum(line.score for line in self.lines)


def _word(line: OcrLine) -> bool:
    return sum(c.isalpha() for c in line.text) >= 3


def _digit(line: OcrLine) -> bool:
    return any(c.isdigit() for c in line.text)


class _RegistrySession:
    """Stands where rapidocr expects its own engine session; runs the registry's model.

    The model is looked up per call, so a swap takes effect at once.
    """

    def __init__(self, registry: ModelRegistry, name: str, original: Any) -> None:
        self._registry = registry
        self._name = name
        self._original = original  # keeps `have_key`/`get_character_list` of rapidocr's API

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self._registry.session(self._name)(np.ascontiguousarray(x, dtype=np.float32))[0]

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._original, attr)


class CardOcr:
    def __init__(
        self,
        registry: ModelRegistry,
        *,
        bands: tuple[Band, ...] = CARD_BANDS,
        card_det_size: tuple[int, int] = CARD_DET_SIZE,
        det_side: int = DET_SIDE,
    ) -> None:
        for name in ("RapidOCR", "rapidocr", "OrtInferSession"):
            logging.getLogger(name).setLevel(logging.WARNING)
        from rapidocr import EngineType, RapidOCR

        self.bands = bands
        self.card_det_size = card_det_size
        self.det_side = det_side
        params: dict[str, Any] = {"Global.log_level": "warning"}
        for section, model in (("Det", "ocr-det"), ("Cls", "ocr-cls"), ("Rec", "ocr-rec")):
            params[f"{section}.engine_type"] = EngineType.ONNXRUNTIME
            params[f"{section}.model_path"] = str(registry.get(model).manifest.path())
        # pictures reach the detector at the size they are given (see _canvas)
        params["Det.limit_side_len"] = 100_000
        params["Det.limit_type"] = "max"
        self.engine: Any = RapidOCR(params=params)
        # rapidocr opens its models lazily; open them now (the recogniser reads its
        # character list from the model's metadata), then hand the networks to the registry
        # and let rapidocr's own sessions go.
        loaders: list[tuple[Any, str, str]] = [
            (self.engine._load_det_model, "text_det", "ocr-det"),
            (self.engine._load_cls_model, "text_cls", "ocr-cls"),
            (self.engine._load_rec_model, "text_rec", "ocr-rec"),
        ]
        for loader, attr, model in loaders:
            component = loader()
            component.session = _RegistrySession(registry, model, _CharacterList(component))
            setattr(self.engine, attr, component)
        self._lock = threading.Lock()
        self.reads = 0
        self.ms: dict[str, float] = {}  # time spent per step, summed over all reads
        self.counts: dict[str, int] = {}  # how often each path was taken

    def read(self, image: Image.Image) -> list[OcrLine]:
        """The card's lines of text, top to bottom (as a person reads the upright card)."""
        with self._timed("pixels"):
            photo = photo_pixels(image)
        with self._timed("rectify"):
            outline = find_card(photo)
        if outline is not None:
            reading = self._read(self._card_canvas(photo, outline), photo)
            if reading.identifies():
                self._count("card")
                return reading.lines
            self._count("card, then whole photo")
            whole = self._read(self._photo_canvas(photo), photo)
            if whole.identifies() or whole.score > reading.score:
                return whole.lines
            return reading.lines
        self._count("whole photo")
        return self._read(self._photo_canvas(photo), photo).lines

    def timings(self) -> dict[str, float]:
        """Mean milliseconds per read for each step: pixels (EXIF, scaling), rectify, det
        (text detection), cls (upright or upside down), rec (recognition)."""
        with self._lock:
            return {k: v / max(1, self.reads) for k, v in self.ms.items()}

    # -- the steps ------------------------------------------------------------------------

    def _card_canvas(self, photo: np.ndarray, outline: CardOutline) -> _Canvas:
        width, height = self.card_det_size
        corners = outline.corners
        card_height = max(
            float(np.linalg.norm(corners[3] - corners[0])),
            float(np.linalg.norm(corners[2] - corners[1])),
        )
        # shrink a large photo first (area averaging): the warp itself only interpolates
        shrink = min(1.0, 1.25 * height / card_height)
        source = photo
        if shrink < 0.8:
            size = (round(photo.shape[1] * shrink), round(photo.shape[0] * shrink))
            source = cv2.resize(photo, size, interpolation=cv2.INTER_AREA)
        else:
            shrink = 1.0
        target = np.array([[0, 0], [width, 0], [width, height], [0, height]], np.float32)
        to_canvas = cv2.getPerspectiveTransform((corners * shrink).astype(np.float32), target)
        image = cv2.warpPerspective(source, to_canvas, (width, height), flags=cv2.INTER_LINEAR)
        to_photo = np.diag([1 / shrink, 1 / shrink, 1.0]) @ np.linalg.inv(to_canvas)
        return _Canvas(image, to_photo, card=True)

    def _photo_canvas(self, photo: np.ndarray) -> _Canvas:
        h, w = photo.shape[:2]
        scale = max(1.0, self.det_side / min(h, w))
        size = (round(w * scale / 32) * 32 or 32, round(h * scale / 32) * 32 or 32)
        image = cv2.resize(photo, size)
        to_photo = np.diag([w / size[0], h / size[1], 1.0])
        return _Canvas(image, to_photo, card=False)

    def _read(self, canvas: _Canvas, photo: np.ndarray) -> _Reading:
        with self._timed("det"):
            detected = self.engine.text_det(canvas.image).boxes
        if detected is None or not len(detected):
            return _Reading([], [], named=False, numbered=False)
        h, w = canvas.image.shape[:2]
        raw = [np.asarray(b, np.float64) for b in detected]
        # text running up and down: the photo (never a rectified card) lies sideways
        turns = 1 if not canvas.card and _mostly_vertical(raw) else 0
        upright, uw, uh = quarter_turn(turns, w, h)
        boxes = [order_box(transform(b, upright)) for b in raw]
        to_photo = canvas.to_photo @ np.linalg.inv(upright)
        with self._timed("cls"):
            if self._upside_down(boxes, to_photo, photo, uh if canvas.card else None):
                flip, uw, uh = quarter_turn(2, uw, uh)
                boxes = [order_box(transform(b, flip)) for b in boxes]
                to_photo = to_photo @ np.linalg.inv(flip)
        wanted = list(range(len(boxes)))
        if canvas.card:
            wanted = [i for i, b in enumerate(boxes) if in_bands(b, uw, uh, self.bands)]
        found = self._recognise(boxes, wanted, to_photo, photo)
        names = tuple(b for b in self.bands if b.name) if canvas.card else ()
        numbers = tuple(b for b in self.bands if not b.name) if canvas.card else ()
        order = reading_order([box for box, _ in found])
        return _Reading(
            [found[i][0] for i in order],
            [found[i][1] for i in order],
            named=any(_word(t) and _within(b, uw, uh, names) for b, t in found),
            numbered=any(_digit(t) and _within(b, uw, uh, numbers) for b, t in found),
        )

    def _upside_down(
        self, boxes: list[Box], to_photo: np.ndarray, photo: np.ndarray, card: float | None
    ) -> bool:
        """The direction classifier's vote over the longest lines, weighted by length. On
        a card (`card`: its height) a close vote goes by where the largest print is: every
        layout prints the name largest, at the top."""
        longest = sorted(range(len(boxes)), key=lambda i: -box_size(boxes[i])[0])
        chosen = longest[:ORIENT_LINES]
        crops = [_cut(photo, transform(boxes[i], to_photo)) for i in chosen]
        kept = [(i, c) for i, c in zip(chosen, crops, strict=True) if c is not None]
        if not kept:
            return False
        result = self.engine.text_cls([c for _, c in kept])
        vote = total = 0.0
        for (i, _), (label, score) in zip(kept, result.cls_res, strict=True):
            length = box_size(boxes[i])[0]
            vote += -length * float(score) if "180" in label else length * float(score)
            total += length
        if card is not None and abs(vote) < CLOSE_VOTE * total:
            return _largest_print(boxes, card, bottom=True) > _largest_print(boxes, card)
        return vote < 0

    def _recognise(
        self, boxes: list[Box], indices: list[int], to_photo: np.ndarray, photo: np.ndarray
    ) -> list[tuple[Box, OcrLine]]:
        crops = [(i, _cut(photo, transform(boxes[i], to_photo))) for i in indices]
        kept = [(i, c) for i, c in crops if c is not None]
        with self._timed("rec"):
            texts = self._rec([c for _, c in kept])
        return [
            (boxes[i], OcrLine(text=text, score=score))
            for (i, _), (text, score) in zip(kept, texts, strict=True)
            if text.strip() and score >= TEXT_SCORE
        ]

    def _rec(self, crops: list[np.ndarray]) -> list[tuple[str, float]]:
        """Recognise cut-out lines in batches of similar width, each batch padded only to
        its widest line (rapidocr pads every line to 320 px, which costs more than the
        line itself for a card number)."""
        rec = self.engine.text_rec
        ratios = [c.shape[1] / c.shape[0] for c in crops]
        results: list[tuple[str, float]] = [("", 0.0)] * len(crops)
        order = sorted(range(len(crops)), key=lambda i: ratios[i])
        for batch in _batches(order, ratios):
            widest = max(ratios[i] for i in batch)
            inputs = np.stack([rec.resize_norm_img(crops[i], widest) for i in batch])
            preds = rec.session(inputs.astype(np.float32))
            decoded, _ = rec.postprocess_op(
                preds, False, wh_ratio_list=[ratios[i] for i in batch], max_wh_ratio=widest
            )
            for i, (text, score) in zip(batch, decoded, strict=True):
                results[i] = (str(text), float(score))
        return results

    # -- bookkeeping ----------------------------------------------------------------------

    @contextmanager
    def _timed(self, step: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            elapsed = (time.perf_counter() - start) * 1e3
            with self._lock:
                self.ms[step] = self.ms.get(step, 0.0) + elapsed
                if step == "pixels":
                    self.reads += 1

    def _count(self, path: str) -> None:
        with self._lock:
            self.counts[path] = self.counts.get(path, 0) + 1


def _within(box: Box, width: float, height: float, bands: tuple[Band, ...]) -> bool:
    """In one of the bands; anywhere, when there are none (a photo read whole)."""
    return not bands or in_bands(box, width, height, bands)


def _largest_print(boxes: list[Box], height: float, *, bottom: bool = False) -> float:
    """The height of the tallest line in the card's top (or bottom) NAME_SHARE."""
    tallest = 0.0
    for box in boxes:
        y = float(box[:, 1].mean()) / height
        if (y > 1 - NAME_SHARE) if bottom else (y < NAME_SHARE):
            tallest = max(tallest, box_size(box)[1])
    return tallest


def photo_pixels(image: Image.Image) -> np.ndarray:
    """BGR pixels of the photo as the camera meant it: EXIF orientation applied, at most
    MAX_SIDE on its long side."""
    if image.getexif().get(0x0112, 1) != 1:
        image = ImageOps.exif_transpose(image)
    if max(image.size) > MAX_SIDE:
        image = image.copy()
        image.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.BILINEAR)
    rgb = np.asarray(image.convert("RGB"))
    return np.ascontiguousarray(rgb[:, :, ::-1])


def _mostly_vertical(boxes: list[np.ndarray]) -> bool:
    """Whether most of the text (by length) runs up and down rather than across. The
    detector gives each box's corners left to right, so 0-1 runs across and 0-3 down."""
    across = down = 0.0
    for box in boxes:
        wide = float(np.linalg.norm(box[1] - box[0]))
        tall = float(np.linalg.norm(box[3] - box[0]))
        if tall > 1.5 * wide:
            down += tall
        elif wide > 1.5 * tall:
            across += wide  # boxes too square to tell (a short number) do not vote
    return down > across


def _cut(photo: np.ndarray, box: np.ndarray) -> np.ndarray | None:
    """The line of text in `box` (photo pixels, TL TR BR BL), straightened, REC_HEIGHT px
    tall."""
    width, height = box_size(box)
    if width < 2 or height < 2:
        return None
    out_w = round(min(MAX_LINE_RATIO, width / height) * REC_HEIGHT)
    target = np.array([[0, 0], [out_w, 0], [out_w, REC_HEIGHT], [0, REC_HEIGHT]], np.float32)
    matrix = cv2.getPerspectiveTransform(box.astype(np.float32), target)
    return cv2.warpPerspective(
        photo, matrix, (out_w, REC_HEIGHT), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE
    )


def _batches(order: list[int], ratios: list[float]) -> Iterator[list[int]]:
    """Runs of lines (sorted by width) short enough that padding wastes little."""
    batch: list[int] = []
    for i in order:
        if batch and (len(batch) == REC_BATCH or ratios[i] > 1.3 * ratios[batch[0]]):
            yield batch
            batch = []
        batch.append(i)
    if batch:
        yield batch


class _CharacterList:
    """What rapidocr asks of a session besides running it, answered from its own session."""

    def __init__(self, component: Any) -> None:
        session = component.session
        self._keys: dict[str, list[str]] = {}
        if hasattr(session, "have_key") and session.have_key():
            self._keys["character"] = session.get_character_list()

    def have_key(self, key: str = "character") -> bool:
        return key in self._keys

    def get_character_list(self, key: str = "character") -> list[str]:
        return self._keys[key]
