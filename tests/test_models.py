"""The model registry and both backends, on the real OCR models shipped in rapidocr."""

from __future__ import annotations

import functools
import hashlib
import io
import logging
import random
import shutil
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from framewire.inference_agent.build import backend_options
from framewire.inference_agent.cards.ocr import CardOcr
from framewire.inference_agent.models import (
    BackendOptions,
    ModelError,
    ModelRegistry,
    default_manifest_path,
    load_manifests,
    load_model,
)
from framewire.inference_agent.models.backends import OnnxSession, choose_backend, mlx_available
from framewire.inference_agent.models.manifest import InputSpec, ModelManifest
from framewire.inference_agent.models.mlx_graph import MlxSession, unsupported
from framewire.inference_agent.settings import InferenceSettings
from framewire.samples import card_jpeg, load_specs

MANIFESTS = load_manifests(default_manifest_path())
needs_mlx = pytest.mark.skipif(
    not mlx_available(), reason="MLX not installed (pip install mlx[cpu])"
)
# The models rapidocr 3 ships, read straight from the package, whatever ocr.toml says.
RAPIDOCR_MODELS = {
    "ocr-det": ("PP-OCRv6_det_small.onnx", [1, 3, 64, 64]),
    "ocr-cls": ("ch_ppocr_mobile_v2.0_cls_mobile.onnx", [1, 3, 48, 192]),
    "ocr-rec": ("PP-OCRv6_rec_small.onnx", [1, 3, 48, 320]),
}


def rapidocr_path(name: str) -> Path:
    return Path(str(resources.files("rapidocr") / "models" / RAPIDOCR_MODELS[name][0]))


def rapidocr_model(name: str) -> ModelManifest:
    path, warmup = rapidocr_path(name), RAPIDOCR_MODELS[name][1]
    return ModelManifest(
        name=name,
        version="rapidocr-3.10",
        file=str(path),
        sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
        inputs=[InputSpec(name="x", shape=warmup)],
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


def test_onnx_intra_op_spinning_is_off_unless_the_setting_turns_it_on() -> None:
    m = MANIFESTS["ocr-cls"]
    for settings, spinning in (
        (InferenceSettings(), "0"),
        (InferenceSettings(onnx_intra_op_spinning=True), "1"),
    ):
        session = OnnxSession(m, m.verified_bytes(), backend_options(settings))
        options = session.session.get_session_options()
        assert options.get_session_config_entry("session.intra_op.allow_spinning") == spinning


@functools.cache
def card_photo() -> Image.Image:
    spec = load_specs()[0]
    jpeg = card_jpeg(spec, random.Random(3), strength=0.5)
    return Image.open(io.BytesIO(jpeg)).convert("RGB")


def card_strips(shape: tuple[int, ...]) -> np.ndarray:
    """A batch of text strips from a sample card photo, every other one upside down,
    normalised as PP-OCR expects: what the models see in use, not noise (on noise the
    detector's map stays near 0 and a comparison of it proves little)."""
    n, _, h, w = shape
    photo = card_photo()
    strips = []
    for i in range(n):
        top = photo.height * i // 12
        strip = photo.crop((0, top, photo.width, top + photo.height // 6)).resize((w, h))
        if i % 2:
            strip = strip.rotate(180)
        strips.append((np.asarray(strip, np.float32) / 127.5 - 1).transpose(2, 0, 1))
    return np.ascontiguousarray(np.stack(strips))


@needs_mlx
@pytest.mark.parametrize(
    ("name", "shape"),
    [
        ("ocr-cls", (3, 3, 48, 192)),
        # the detector takes sides that are multiples of 32 only: onnxruntime itself refuses
        # (1, 3, 100, 150) (its feature pyramid's Add cannot broadcast 7 against 8)
        ("ocr-det", (1, 3, 96, 160)),
        ("ocr-det", (2, 3, 64, 128)),
        ("ocr-rec", (2, 3, 48, 240)),
    ],
    ids=lambda v: v if isinstance(v, str) else "x".join(map(str, v)),
)
def test_mlx_runs_each_model_and_agrees_with_onnxruntime(name: str, shape: tuple[int, ...]) -> None:
    m = rapidocr_model(name)
    x = card_strips(shape)
    onnx_out = load_model(m, BackendOptions(backend="onnx")).session(x)
    mlx_loaded = load_model(m, BackendOptions(backend="mlx"))
    assert mlx_loaded.session.backend == "mlx"
    mlx_out = mlx_loaded.session(x)
    assert len(mlx_out) == len(onnx_out)
    for a, b in zip(onnx_out, mlx_out, strict=True):
        assert a.shape == b.shape
        # rec's last softmax spans 18710 classes; MLX's CPU build sums them one after the
        # other in float32, which moves a 0.99 probability by up to ~3e-4: inside rtol
        np.testing.assert_allclose(b, a, rtol=1e-3, atol=1e-4)
    if name == "ocr-det":
        assert onnx_out[0].max() > 0.9  # the strips hold text, so the map has found some


def unchecked_manifest(name: str) -> ModelManifest:
    """What MlxSession needs of a manifest (a name for its errors), for bytes in hand."""
    return ModelManifest(
        name=name,
        version="1",
        file=f"{name}.onnx",
        sha256="0" * 64,
        inputs=[InputSpec(name="x", shape=[1])],
    )


def shipped_model_files() -> list[Path]:
    paths = {m.path() for m in MANIFESTS.values()}
    paths |= {rapidocr_path(name) for name in RAPIDOCR_MODELS}
    return sorted(paths)


@pytest.mark.parametrize("path", shipped_model_files(), ids=lambda p: p.name)
def test_every_operator_of_the_shipped_models_is_one_mlx_runs(path: Path) -> None:
    data = path.read_bytes()
    assert unsupported(data) == []
    if mlx_available():
        MlxSession(unchecked_manifest(path.stem), data)  # opens: no operator refused


def single_node_model(
    op: str,
    x_shape: list[int],
    constants: list[np.ndarray | None] | None = None,
    opset: int = 11,
    **attrs: Any,
) -> bytes:
    """`y = op(x, *constants)` as an ONNX model; a None constant is an omitted input."""
    names, initializers = ["x"], []
    for i, value in enumerate(constants or []):
        if value is None:
            names.append("")
            continue
        names.append(f"c{i}")
        initializers.append(numpy_helper.from_array(value, f"c{i}"))
    graph = helper.make_graph(
        [helper.make_node(op, names, ["y"], **attrs)],
        "single",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 7
    return bytes(model.SerializeToString())


def weights(*shape: int) -> np.ndarray:
    return np.random.default_rng(len(shape)).normal(0, 0.5, shape).astype(np.float32)


def sizes(*values: int) -> np.ndarray:
    return np.array(values, dtype=np.int64)


def scales(*values: float) -> np.ndarray:
    return np.array(values, dtype=np.float32)


ROI, NO_SCALES = np.zeros(0, np.float32), np.zeros(0, np.float32)
RESIZE_INPUTS: list[list[np.ndarray | None]] = [
    [ROI, scales(1, 1, 2, 0.6)],  # up by 2, down to floor(7 * 0.6)
    [ROI, NO_SCALES, sizes(2, 3, 3, 11)],
]
RESIZE_VARIANTS: list[tuple[str, str, list[np.ndarray | None]]] = [
    (coordinates, rounding, given)
    for coordinates in (
        "half_pixel",
        "pytorch_half_pixel",
        "align_corners",
        "asymmetric",
    )
    for rounding in ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")
    for given in RESIZE_INPUTS
]


# Each attribute variant the interpreter implements, on tiny tensors, against onnxruntime.
OPERATOR_VARIANTS: list[tuple[str, list[int], list[np.ndarray | None], dict[str, Any]]] = [
    ("Erf", [2, 3, 4, 5], [], {}),
    ("Unsqueeze", [2, 3, 4], [], {"axes": [0, -1]}),
    ("Squeeze", [1, 3, 1, 5], [], {"axes": [2]}),
    ("Squeeze", [1, 3, 1, 5], [], {}),
    ("Softmax", [2, 3, 4, 5], [], {"axis": 2}),  # opset 11: over the flattened last two axes
    ("ReduceMean", [2, 3, 4, 5], [], {"axes": [-1]}),
    ("ReduceMean", [2, 3, 4, 5], [], {"axes": [2, 3], "keepdims": 0}),
    ("GlobalAveragePool", [2, 3, 5, 7], [], {}),
    ("MaxPool", [1, 2, 7, 9], [], {"kernel_shape": [2, 2], "auto_pad": "SAME_UPPER"}),
    (
        "MaxPool",
        [1, 2, 7, 9],
        [],
        {"kernel_shape": [3, 3], "strides": [2, 2], "auto_pad": "SAME_LOWER"},
    ),
    (
        "MaxPool",
        [1, 2, 7, 9],
        [],
        {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 0, 1, 2]},
    ),
    ("MaxPool", [1, 2, 8, 9], [], {"kernel_shape": [3, 2], "strides": [2, 2], "ceil_mode": 1}),
    ("MaxPool", [1, 2, 8, 8], [], {"kernel_shape": [2, 2], "strides": [2, 2]}),
    # ceil mode, where a last window would start inside the end padding: it is dropped
    (
        "MaxPool",
        [1, 2, 5, 5],
        [],
        {"kernel_shape": [3, 3], "strides": [3, 3], "pads": [0, 0, 2, 2], "ceil_mode": 1},
    ),
    (
        "AveragePool",
        [1, 2, 5, 5],
        [],
        {"kernel_shape": [3, 3], "strides": [3, 3], "pads": [0, 0, 2, 2], "ceil_mode": 1},
    ),
    ("AveragePool", [2, 4, 12, 10], [], {"kernel_shape": [3, 2], "strides": [3, 2]}),
    ("AveragePool", [1, 2, 7, 9], [], {"kernel_shape": [3, 3], "pads": [1, 0, 2, 1]}),
    (
        "AveragePool",
        [1, 2, 7, 9],
        [],
        {"kernel_shape": [3, 3], "pads": [1, 0, 2, 1], "count_include_pad": 1},
    ),
    (
        "AveragePool",
        [1, 2, 8, 9],
        [],
        {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1], "ceil_mode": 1},
    ),
    (
        "AveragePool",
        [1, 2, 8, 9],
        [],
        {
            "kernel_shape": [3, 3],
            "strides": [2, 2],
            "pads": [1, 1, 1, 1],
            "ceil_mode": 1,
            "count_include_pad": 1,
        },
    ),
    ("AveragePool", [1, 2, 7, 9], [], {"kernel_shape": [2, 3], "auto_pad": "SAME_UPPER"}),
    ("Conv", [1, 4, 9, 11], [weights(6, 4, 2, 2)], {"auto_pad": "SAME_UPPER"}),
    ("Conv", [1, 4, 9, 11], [weights(6, 4, 4, 3)], {"auto_pad": "SAME_LOWER", "strides": [2, 2]}),
    ("Conv", [1, 4, 6, 13], [weights(4, 2, 1, 7), weights(4)], {"group": 2, "pads": [0, 3, 0, 3]}),
    (
        "Conv",
        [1, 4, 9, 11],
        [weights(4, 1, 3, 3)],
        {"group": 4, "dilations": [2, 1], "pads": [2, 1, 2, 1]},
    ),
    ("Conv", [2, 3, 10, 12], [weights(5, 3, 3, 3)], {"strides": [2, 1], "pads": [1, 1, 1, 1]}),
    ("ConvTranspose", [1, 4, 5, 6], [weights(4, 3, 2, 2), weights(3)], {"strides": [2, 2]}),
    (
        "ConvTranspose",
        [1, 4, 5, 6],
        [weights(4, 3, 3, 3)],
        {"group": 2, "strides": [2, 2], "pads": [1, 0, 1, 1], "output_padding": [1, 1]},
    ),
    *[
        (
            "Resize",
            [2, 3, 5, 7],
            given,
            {
                "mode": "nearest",
                "coordinate_transformation_mode": coordinates,
                "nearest_mode": rounding,
            },
        )
        for coordinates, rounding, given in RESIZE_VARIANTS
    ],
]


@needs_mlx
@pytest.mark.parametrize(
    ("op", "shape", "constants", "attrs"),
    OPERATOR_VARIANTS,
    ids=[f"{v[0]}-{i}" for i, v in enumerate(OPERATOR_VARIANTS)],
)
def test_mlx_operator_variants_agree_with_onnxruntime(
    op: str, shape: list[int], constants: list[np.ndarray | None], attrs: dict[str, Any]
) -> None:
    model = single_node_model(op, shape, constants, **attrs)
    x = np.random.default_rng(1).normal(0, 1, shape).astype(np.float32)
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    (want,) = session.run(None, {"x": x})
    (got,) = MlxSession(unchecked_manifest(op), model)(x)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_unsupported_names_operators_and_attribute_variants() -> None:
    linear = single_node_model("Resize", [1, 1, 2, 2], [ROI, scales(1, 1, 2, 2)], mode="linear")
    assert unsupported(linear) == ["Resize(mode=linear)"]
    crop = single_node_model(
        "Resize",
        [1, 1, 2, 2],
        [ROI, scales(1, 1, 2, 2)],
        coordinate_transformation_mode="tf_crop_and_resize",
    )
    assert unsupported(crop) == ["Resize(coordinate_transformation_mode=tf_crop_and_resize)"]
    dilated = single_node_model("MaxPool", [1, 1, 5, 5], kernel_shape=[2, 2], dilations=[2, 2])
    assert unsupported(dilated) == ["MaxPool(dilations)"]
    assert unsupported(single_node_model("Hardmax", [2, 4])) == ["Hardmax"]


def tiny_manifest(tmp_path: Path, model: bytes) -> ModelManifest:
    digest = hashlib.sha256(model).hexdigest()
    (tmp_path / f"{digest}.onnx").write_bytes(model)
    return ModelManifest(
        name="tiny",
        version="1",
        file=str(tmp_path / f"{digest}.onnx"),
        sha256=digest,
        inputs=[InputSpec(name="x", shape=[2, 4])],
    )


@needs_mlx
def test_auto_falls_back_to_onnxruntime_for_a_model_with_an_operator_mlx_lacks(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assert choose_backend("auto", prefer_mlx=True) == "mlx"
    assert choose_backend("auto", prefer_mlx=False) == "onnx"
    lacking = tiny_manifest(tmp_path, single_node_model("Hardmax", [2, 4], axis=1))
    assert unsupported(lacking.verified_bytes()) == ["Hardmax"]
    mlx_first = BackendOptions(backend="auto", auto_prefers_mlx=True)  # as on Apple silicon

    with caplog.at_level(logging.WARNING, logger="framewire.inference_agent.models"):
        registry = ModelRegistry({"tiny": lacking}, mlx_first)
    loaded = registry.get("tiny")
    assert loaded.session.backend == "onnx"
    assert "Hardmax" in loaded.fallback
    assert "auto fell back" in registry.describe()["tiny"]
    assert "Hardmax" in registry.describe()["tiny"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "tiny" in warnings[0] and "Hardmax" in warnings[0] and "onnxruntime" in warnings[0]
    (y,) = loaded.session(np.array([[1, 5, 2, 3], [9, 0, 1, 2]], np.float32))
    assert y.tolist() == [[0, 1, 0, 0], [1, 0, 0, 0]]

    with pytest.raises(
        ModelError, match=r"model tiny: MLX backend lacks operator\(s\) \['Hardmax'\]"
    ):
        load_model(lacking, BackendOptions(backend="mlx"))  # asked for by name: no fallback

    runnable = tiny_manifest(tmp_path, single_node_model("Erf", [2, 4]))
    loaded = load_model(runnable, mlx_first)
    assert loaded.session.backend == "mlx" and loaded.fallback == ""
    assert "auto fell back" not in loaded.describe()
    loaded = load_model(lacking, BackendOptions(backend="auto", auto_prefers_mlx=False))
    assert loaded.session.backend == "onnx" and loaded.fallback == ""  # MLX never considered


@needs_mlx
def test_mlx_backend_reads_the_same_card_as_onnxruntime() -> None:
    spec = load_specs()[0]
    image = Image.open(io.BytesIO(card_jpeg(spec, random.Random(3), strength=0.5)))
    image.thumbnail((480, 480))  # keep the CPU build of MLX quick
    manifests = {name: rapidocr_model(name) for name in RAPIDOCR_MODELS}
    texts = {}
    for backend in ("onnx", "mlx"):
        registry = ModelRegistry(manifests, BackendOptions(backend=backend))
        texts[backend] = [line.text for line in CardOcr(registry, det_side=320).read(image)]
    assert texts["mlx"] == texts["onnx"]
    assert spec.name in texts["onnx"] and spec.number in texts["onnx"]
