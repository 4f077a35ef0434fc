"""Model manifests: what a model is, where its file is, and the checksum it must have."""

from __future__ import annotations

import hashlib
import importlib.util
import tomllib
from importlib import resources
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from framewire.schemas import check_identifier


class ModelError(RuntimeError):
    """A model that cannot be used; the message says which model and why."""


class InputSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(description="Graph input name.")
    shape: list[int] = Field(description="Shape used for the warm-up run.")
    dtype: Literal["float32"] = "float32"


class ModelManifest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(description="Name the pipeline asks for (ocr-det, ...).")
    version: str
    task: str = ""
    backend: Literal["onnx"] = Field(
        default="onnx", description="File format; any backend that reads it may run it."
    )
    file: str = Field(description="Path, relative to the manifest, or package:<pkg>/<path>.")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    inputs: list[InputSpec] = Field(min_length=1)
    base_dir: Path | None = Field(default=None, exclude=True)

    def path(self) -> Path:
        if self.file.startswith("package:"):
            package, _, rel = self.file.removeprefix("package:").partition("/")
            if importlib.util.find_spec(package) is None:
                raise ModelError(f"model {self.name}: package {package!r} is not installed")
            return Path(str(resources.files(package).joinpath(rel)))
        path = Path(self.file)
        return path if path.is_absolute() else (self.base_dir or Path.cwd()) / path

    def verified_bytes(self) -> bytes:
        """The model file's bytes, after checking them against the manifest's sha256."""
        path = self.path()
        try:
            data = path.read_bytes()
        except OSError as err:
            raise ModelError(f"model {self.name}: cannot read {path}: {err.strerror}") from None
        digest = hashlib.sha256(data).hexdigest()
        if digest != self.sha256:
            raise ModelError(
                f"model {self.name} {self.version}: {path} has sha256 {digest}, but the "
                f"manifest says {self.sha256}; the file is not the model the manifest describes"
            )
        return data


def load_manifests(path: Path) -> dict[str, ModelManifest]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise ModelError(f"cannot read model manifest {path}: {err}") from None
    out: dict[str, ModelManifest] = {}
    for i, entry in enumerate(data.get("model", []), start=1):
        try:
            manifest = ModelManifest.model_validate({**entry, "base_dir": path.parent})
            check_identifier(manifest.name, "model name")
        except (ValidationError, ValueError) as err:
            raise ModelError(f"{path}: model entry {i} is invalid: {err}") from None
        out[manifest.name] = manifest
    if not out:
        raise ModelError(f"{path} describes no [[model]]")
    return out


def default_manifest_path() -> Path:
    return Path(str(resources.files("framewire.inference_agent.models") / "ocr.toml"))
