"""The model registry and both backends, on the real OCR models shipped in rapidocr."""

from __future__ import annotations

import io
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from framewire.samples import card_jpeg, load_specs
from inference_agent.cards.ocr import CardOcr
from inference_agent.models import (
    BackendOptions,
    ModelError,
    ModelRegistry,
    default_manifest_path,
    load_manifests,
    load_model,
)
from inference_agent.models.backends import OnnxSession, choose_backend, mlx_available

MANIFESTS = load_manifests(default_manifest_path())
needs_mlx = pytest.mark.skipif(
    not mlx_available(), reason="MLX not installed (pip install mlx[cpu])"
)


def copy_manifest(tmp_path: Path, name: str, sha256: str | None = None) -> Path:
    """A manifest for one model, with its file copied next to it."""
    m = MANIFESTS[name]
    shutil.copy(m.path(), tmp_path / "model.onnx")
    digest = sha256 or m.sha256
    shape = m.inputs[0].shape
    (tmp_path / "models.toml").write_text(
        f'[[model]]\nname = "{name}"\nversion = "test"\nfile = "model.onnx"\n'
        f'sha256 = "{digest}"\ninputs = [{{ name = "x", shape = {shape} }}]\n'
    )
    return tmp_path / "models.toml"


def test_shipped_manifest_verifies_and_warms_up_every_model() -> None:
    registry = ModelRegistry(MANIFESTS, BackendOptions(backend="onnx"))
    described = registry.describe()
    assert set(described) == {"ocr-det", "ocr-cls", "ocr-rec"}
    assert all("onnx/" in text for text in described.values())
    assert all(registry.get(n).warmup_ms > 0 for n in described)


def test_checksum_mismatch_is_a_clear_error(tmp_path: Path) -> None:
    manifest = load_manifests(copy_manifest(tmp_path, "ocr-cls", sha256="0" * 64))["ocr-cls"]
    with pytest.raises(ModelError) as exc:
        load_model(manifest, BackendOptions(backend="onnx"))
    text = str(exc.value)
    assert "ocr-cls" in text and "model.onnx" in text and "manifest says 0000" in text


def test_a_corrupted_model_file_is_refused(tmp_path: Path) -> None:
    path = copy_manifest(tmp_path, "ocr-cls")
    data = bytearray((tmp_path / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tmp_path / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(ModelError, match="not the model the manifest describes"):
        load_model(load_manifests(path)["ocr-cls"], BackendOptions(backend="onnx"))


def test_bad_manifests_name_the_problem(tmp_path: Path) -> None:
    (tmp_path / "m.toml").write_text('[[model]]\nname = "x"\n')
    with pytest.raises(ModelError, match="entry 1 is invalid"):
        load_manifests(tmp_path / "m.toml")
    (tmp_path / "m.toml").write_text("")
    with pytest.raises(ModelError, match="describes no"):
        load_manifests(tmp_path / "m.toml")


def test_a_refused_swap_leaves_the_old_model_serving(tmp_path: Path) -> None:
    registry = ModelRegistry({"ocr-cls": MANIFESTS["ocr-cls"]}, BackendOptions(backend="onnx"))
    before = registry.session("ocr-cls")
    bad = load_manifests(copy_manifest(tmp_path, "ocr-cls", sha256="1" * 64))["ocr-cls"]
    with pytest.raises(ModelError):
        registry.swap(bad)
    assert registry.session("ocr-cls") is before
    good = load_manifests(copy_manifest(tmp_path, "ocr-cls"))["ocr-cls"]
    assert registry.swap(good).manifest.version == "test"
    assert registry.session("ocr-cls") is not before


def test_onnx_provider_choice_and_backend_choice() -> None:
    session = OnnxSession(
        MANIFESTS["ocr-cls"], MANIFESTS["ocr-cls"].verified_bytes(), BackendOptions()
    )
    assert session.provider == "CPUExecutionProvider"  # no GPU on this machine
    assert choose_backend("onnx") == "onnx"
    with pytest.raises(ModelError, match=r"none of the providers .* is available"):
        OnnxSession(
            MANIFESTS["ocr-cls"],
            MANIFESTS["ocr-cls"].verified_bytes(),
            BackendOptions(providers=("NoSuchExecutionProvider",)),
        )


@needs_mlx
@pytest.mark.parametrize(
    ("name", "shape"),
    [("ocr-cls", (3, 3, 48, 192)), ("ocr-det", (1, 3, 96, 160)), ("ocr-rec", (2, 3, 48, 240))],
)
def test_mlx_runs_each_model_and_agrees_with_onnxruntime(name: str, shape: tuple[int, ...]) -> None:
    m = MANIFESTS[name]
    x = np.random.default_rng(7).uniform(-1, 1, shape).astype(np.float32)
    onnx_out = load_model(m, BackendOptions(backend="onnx")).session(x)
    mlx_loaded = load_model(m, BackendOptions(backend="mlx"))
    assert mlx_loaded.session.backend == "mlx"
    mlx_out = mlx_loaded.session(x)
    assert len(mlx_out) == len(onnx_out)
    for a, b in zip(onnx_out, mlx_out, strict=True):
        assert a.shape == b.shape
        np.testing.assert_allclose(b, a, rtol=1e-3, atol=1e-4)


@needs_mlx
def test_mlx_backend_reads_the_same_card_as_onnxruntime() -> None:
    spec = load_specs()[0]
    image = Image.open(io.BytesIO(card_jpeg(spec, random.Random(3), strength=0.5)))
    image.thumbnail((480, 480))  # keep the CPU build of MLX quick
    texts = {}
    for backend in ("onnx", "mlx"):
        registry = ModelRegistry(MANIFESTS, BackendOptions(backend=backend))  # type: ignore[arg-type]
        texts[backend] = [line.text for line in CardOcr(registry).read(image)]
    assert texts["mlx"] == texts["onnx"]
    assert spec.name in texts["onnx"] and spec.number in texts["onnx"]
