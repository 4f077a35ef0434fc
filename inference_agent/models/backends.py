"""Inference backends behind one interface: a session is `session(x) -> [outputs]`.

- onnx: onnxruntime, with the best execution provider available (CoreML on macOS, CUDA where
  present, else CPU) and thread counts from configuration.
- mlx: the same ONNX graph run by MLX (Apple silicon GPU, or CPU with `mlx[cpu]`); imported
  only when used, so a box without MLX still starts.

`auto` takes MLX on Apple silicon, model by model: a graph with an operator the MLX
interpreter lacks runs on onnxruntime instead, and the reason is logged and kept with the
loaded model. Asking for `mlx` explicitly never falls back.
"""

from __future__ import annotations

import logging
import platform
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np

from framewire.inference_agent.models.manifest import ModelError, ModelManifest

logger = logging.getLogger(__name__)

BackendName = Literal["auto", "onnx", "mlx"]


class Session(Protocol):
    backend: str
    provider: str

    def __call__(self, x: np.ndarray) -> list[np.ndarray]: ...


@dataclass(frozen=True)
class BackendOptions:
    backend: BackendName = "auto"
    intra_op_threads: int = 0  # 0: onnxruntime decides
    inter_op_threads: int = 0
    providers: tuple[str, ...] = ()  # empty: choose automatically
    # onnxruntime's worker threads spin while they wait for work; on a small box that
    # shares its cores (capture, ledger, the broker) the spinning takes the cores the next
    # inference needs: on 2 cores a card read takes about a third less time without it
    # (benchmarks/accuracy.py). The inference setting `onnx_intra_op_spinning` turns it on.
    intra_op_spinning: bool = False
    # whether `auto` tries MLX first; None: only on Apple silicon (tests set it on Linux)
    auto_prefers_mlx: bool | None = None


@dataclass(frozen=True)
class OpenedSession:
    session: Session
    fallback: str = ""  # why `auto` did not run this model on MLX; empty when it did


def mlx_available() -> bool:
    try:
        import mlx.core  # noqa: F401
    except ImportError:
        return False
    return True


def apple_silicon() -> bool:
    return platform.system() == "Darwin" and platform.machine() == "arm64"


def choose_backend(
    requested: BackendName, *, prefer_mlx: bool | None = None
) -> Literal["onnx", "mlx"]:
    """The backend for `requested`, before looking at any model; `auto` may still fall
    back per model (see `open_session`). `prefer_mlx` None: MLX on Apple silicon."""
    if requested == "auto":
        wanted = apple_silicon() if prefer_mlx is None else prefer_mlx
        return "mlx" if wanted and mlx_available() else "onnx"
    if requested == "mlx" and not mlx_available():
        raise ModelError('backend "mlx" was asked for but MLX is not installed (pip install mlx)')
    return requested


def onnx_providers(preferred: tuple[str, ...] = ()) -> list[str]:
    import onnxruntime as ort

    available = ort.get_available_providers()
    if preferred:
        chosen = [p for p in preferred if p in available]
        if not chosen:
            raise ModelError(f"none of the providers {preferred} is available ({available})")
        return chosen
    order = ["CUDAExecutionProvider", "CoreMLExecutionProvider", "CPUExecutionProvider"]
    return [p for p in order if p in available] or available


class OnnxSession:
    backend = "onnx"

    def __init__(self, manifest: ModelManifest, model: bytes, options: BackendOptions) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if options.intra_op_threads:
            opts.intra_op_num_threads = options.intra_op_threads
        if options.inter_op_threads:
            opts.inter_op_num_threads = options.inter_op_threads
        spinning = "1" if options.intra_op_spinning else "0"  # "1" is onnxruntime's default
        opts.add_session_config_entry("session.intra_op.allow_spinning", spinning)
        providers = onnx_providers(options.providers)
        try:
            self.session = ort.InferenceSession(model, sess_options=opts, providers=providers)
        except Exception as err:  # onnxruntime raises its own exception types
            raise ModelError(f"model {manifest.name}: onnxruntime cannot load it: {err}") from None
        self.provider = self.session.get_providers()[0]
        self._input = self.session.get_inputs()[0].name
        self._outputs = [o.name for o in self.session.get_outputs()]
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)

    def __call__(self, x: np.ndarray) -> list[np.ndarray]:
        return list(self.session.run(self._outputs, {self._input: x}))


def open_session(manifest: ModelManifest, model: bytes, options: BackendOptions) -> OpenedSession:
    backend = choose_backend(options.backend, prefer_mlx=options.auto_prefers_mlx)
    if backend == "mlx":
        from framewire.inference_agent.models.mlx_graph import MlxSession, unsupported

        missing = unsupported(model) if options.backend == "auto" else []
        if not missing:
            return OpenedSession(MlxSession(manifest, model))  # explicit mlx: its ModelError
        fallback = f"MLX backend lacks operator(s) {missing}"
        logger.warning("model %s: %s; backend auto runs it on onnxruntime", manifest.name, fallback)
        return OpenedSession(OnnxSession(manifest, model, options), fallback)
    return OpenedSession(OnnxSession(manifest, model, options))
