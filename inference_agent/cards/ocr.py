"""OCR of a card photo: PP-OCR detection, direction and recognition.

Pre- and post-processing come from rapidocr (the package that ships the models); the
networks themselves run on framewire's registry sessions, so they are checksum-verified,
warmed up, swappable, and run on onnxruntime or MLX alike.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
from PIL import Image

from inference_agent.cards.matcher import OcrLine
from inference_agent.models import ModelRegistry

logger = logging.getLogger(__name__)

MAX_SIDE = 1600  # larger photos are scaled down first: card text stays legible


def _session_of(registry: ModelRegistry, name: str) -> Callable[[np.ndarray], list[np.ndarray]]:
    def run(x: np.ndarray) -> list[np.ndarray]:
        return registry.session(name)(x)  # looked up per call, so a swap takes effect at once

    return run


class CardOcr:
    def __init__(self, registry: ModelRegistry) -> None:
        from rapidocr_onnxruntime import RapidOCR

        paths = {
            "det_model_path": str(registry.get("ocr-det").manifest.path()),
            "cls_model_path": str(registry.get("ocr-cls").manifest.path()),
            "rec_model_path": str(registry.get("ocr-rec").manifest.path()),
        }
        logging.getLogger("RapidOCR").setLevel(logging.WARNING)
        logging.getLogger("OrtInferSession").setLevel(logging.WARNING)
        self.engine = RapidOCR(**paths)
        self.engine.text_det.infer = _session_of(registry, "ocr-det")
        self.engine.text_cls.infer = _session_of(registry, "ocr-cls")
        self.engine.text_rec.session = _session_of(registry, "ocr-rec")

    def read(self, image: Image.Image) -> list[OcrLine]:
        if max(image.size) > MAX_SIDE:
            image = image.copy()
            image.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.BILINEAR)
        rgb = np.asarray(image.convert("RGB"))
        bgr = np.ascontiguousarray(rgb[:, :, ::-1])
        result, _ = self.engine(bgr)
        if not result:
            return []
        # top to bottom, then left to right, as a person reads the card
        ordered = sorted(result, key=lambda r: (round(r[0][0][1] / 20), r[0][0][0]))
        return [OcrLine(text=str(r[1]), score=float(r[2])) for r in ordered]
