"""OCR of a card photo: PP-OCR detection, direction and recognition.

Pre- and post-processing come from rapidocr (the package that ships the models); the
networks themselves run on framewire's registry sessions, so they are checksum-verified,
warmed up, swappable, and run on onnxruntime or MLX alike. rapidocr is given the model
files by path, so its run-time model download is never reached.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from PIL import Image

from inference_agent.cards.matcher import OcrLine
from inference_agent.models import ModelRegistry

logger = logging.getLogger(__name__)

MAX_SIDE = 1600  # larger photos are scaled down first: card text stays legible
# Text detection scales the short side to this many pixels (rapidocr's default). With
# MAX_SIDE and the decode stage's aspect-ratio bound, the detector's input stays a few
# tens of MiB whatever the photo.
DET_SIDE = 736


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
    def __init__(self, registry: ModelRegistry, *, det_side: int = DET_SIDE) -> None:
        for name in ("RapidOCR", "rapidocr", "OrtInferSession"):
            logging.getLogger(name).setLevel(logging.WARNING)
        from rapidocr import EngineType, RapidOCR

        params: dict[str, Any] = {"Global.log_level": "warning"}
        for section, model in (("Det", "ocr-det"), ("Cls", "ocr-cls"), ("Rec", "ocr-rec")):
            params[f"{section}.engine_type"] = EngineType.ONNXRUNTIME
            params[f"{section}.model_path"] = str(registry.get(model).manifest.path())
        params["Det.limit_side_len"] = det_side
        params["Det.limit_type"] = "min"
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

    def read(self, image: Image.Image) -> list[OcrLine]:
        if max(image.size) > MAX_SIDE:
            image = image.copy()
            image.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.BILINEAR)
        rgb = np.asarray(image.convert("RGB"))
        bgr = np.ascontiguousarray(rgb[:, :, ::-1])
        output = self.engine(bgr)
        boxes, txts, scores = (getattr(output, a, None) for a in ("boxes", "txts", "scores"))
        if boxes is None or txts is None or scores is None or not len(txts):
            return []
        rows = list(zip(boxes, txts, scores, strict=True))
        # top to bottom, then left to right, as a person reads the card
        rows.sort(key=lambda r: (round(float(r[0][0][1]) / 20), float(r[0][0][0])))
        return [OcrLine(text=str(text), score=float(score)) for _, text, score in rows]


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
