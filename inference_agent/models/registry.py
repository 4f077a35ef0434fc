"""The models an inference agent has loaded: verified, warmed up, swappable at run time."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

import numpy as np

from framewire.inference_agent.models.backends import BackendOptions, Session, open_session
from framewire.inference_agent.models.manifest import ModelError, ModelManifest

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadedModel:
    manifest: ModelManifest
    session: Session
    load_ms: float
    warmup_ms: float
    fallback: str = ""  # why backend `auto` did not run this model on MLX; empty when it did

    def describe(self) -> str:
        text = f"{self.manifest.version} {self.session.backend}/{self.session.provider}"
        return f"{text} (auto fell back: {self.fallback})" if self.fallback else text


def load_model(manifest: ModelManifest, options: BackendOptions) -> LoadedModel:
    """Verify the checksum, open a session on the chosen backend, and run it once."""
    start = time.perf_counter()
    model = manifest.verified_bytes()
    opened = open_session(manifest, model, options)
    session = opened.session
    loaded = time.perf_counter()
    for spec in manifest.inputs:
        try:
            session(np.zeros(spec.shape, dtype=np.float32))
        except Exception as err:
            raise ModelError(
                f"model {manifest.name}: warm-up with input {spec.name}{spec.shape} failed: {err}"
            ) from None
    done = time.perf_counter()
    result = LoadedModel(
        manifest, session, (loaded - start) * 1e3, (done - loaded) * 1e3, opened.fallback
    )
    logger.info(
        "model %s %s loaded on %s/%s in %.0f ms (warm-up %.0f ms)",
        manifest.name,
        manifest.version,
        session.backend,
        session.provider,
        result.load_ms,
        result.warmup_ms,
    )
    return result


class ModelRegistry:
    def __init__(self, manifests: dict[str, ModelManifest], options: BackendOptions) -> None:
        self.options = options
        self._lock = threading.Lock()
        self._models = {name: load_model(m, options) for name, m in manifests.items()}

    def session(self, name: str) -> Session:
        try:
            return self._models[name].session
        except KeyError:
            raise ModelError(f"no model named {name!r} is loaded") from None

    def get(self, name: str) -> LoadedModel:
        return self._models[name]

    def swap(self, manifest: ModelManifest) -> LoadedModel:
        """Load, verify and warm up `manifest`, then replace the model of that name.

        The old model keeps serving until the new one is ready; a model that fails any check
        is refused and the old one stays.
        """
        if manifest.name not in self._models:
            raise ModelError(f"no model named {manifest.name!r} to replace")
        fresh = load_model(manifest, self.options)
        with self._lock:
            self._models[manifest.name] = fresh
        return fresh

    def describe(self) -> dict[str, str]:
        return {name: m.describe() for name, m in sorted(self._models.items())}

    def total_load_ms(self) -> float:
        return sum(m.load_ms + m.warmup_ms for m in self._models.values())
