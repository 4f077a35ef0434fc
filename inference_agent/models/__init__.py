"""Models: manifests with checksums, backends (onnxruntime, MLX), a swappable registry."""

from framewire.inference_agent.models.backends import BackendName, BackendOptions, choose_backend
from framewire.inference_agent.models.manifest import (
    ModelError,
    ModelManifest,
    default_manifest_path,
    load_manifests,
)
from framewire.inference_agent.models.registry import LoadedModel, ModelRegistry, load_model

__all__ = [
    "BackendName",
    "BackendOptions",
    "LoadedModel",
    "ModelError",
    "ModelManifest",
    "ModelRegistry",
    "choose_backend",
    "default_manifest_path",
    "load_manifests",
    "load_model",
]
