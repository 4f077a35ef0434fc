"""What keeps framewire working on every supported Python and platform.

Python 3.14 cannot be run here, so these hold the code off what 3.14 deprecates or changes,
and prove that the OCR models come from the installed package, never from the network.
"""

from __future__ import annotations

import ast
import io
import random
from pathlib import Path

import pytest
from PIL import Image

from framewire.inference_agent.models import default_manifest_path, load_manifests
from framewire.samples import card_jpeg, load_specs

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("schemas", "edge_agents", "inference_agent", "broker_config", "framewire")

# Deprecated in 3.14 (the event-loop policy system goes in 3.16) or changed there
# (multiprocessing's default start method is forkserver on Linux from 3.14).
FORBIDDEN_CALLS = {
    "asyncio.set_event_loop_policy": "use asyncio.Runner(loop_factory=...)",
    "asyncio.get_event_loop_policy": "use asyncio.Runner(loop_factory=...)",
    "asyncio.get_event_loop": "use asyncio.get_running_loop() inside a coroutine",
    "asyncio.iscoroutinefunction": "use inspect.iscoroutinefunction",
    "uvloop.install": "it goes through the event-loop policy; use uvloop.new_event_loop",
    "uvloop.EventLoopPolicy": "use uvloop.new_event_loop as the Runner's loop_factory",
    "multiprocessing.Process": "take a context with an explicit start method",
    "multiprocessing.Pool": "take a context with an explicit start method",
    "concurrent.futures.ProcessPoolExecutor": "pass mp_context with an explicit start method",
}


def _dotted(node: ast.expr) -> str:
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
    return ".".join(reversed(parts))


def test_the_code_stays_off_what_python_314_deprecates_or_changes() -> None:
    found = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
            imported: dict[str, str] = {}  # local name -> dotted origin
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom) and node.module:
                    for alias in node.names:
                        imported[alias.asname or alias.name] = f"{node.module}.{alias.name}"
            for node in ast.walk(tree):
                if not isinstance(node, ast.Call):
                    continue
                name = _dotted(node.func)
                head, _, rest = name.partition(".")
                name = imported.get(head, head) + (f".{rest}" if rest else "")
                if name in FORBIDDEN_CALLS:
                    where = path.relative_to(ROOT)
                    found.append(f"{where}:{node.lineno} {name}: {FORBIDDEN_CALLS[name]}")
    assert not found, "\n".join(found)


def test_the_shipped_models_are_the_ones_inside_the_ocr_package() -> None:
    manifests = load_manifests(default_manifest_path())
    for manifest in manifests.values():
        assert manifest.file.startswith("package:rapidocr/models/")
        assert manifest.path().is_file(), manifest.path()
        manifest.verified_bytes()  # raises unless the sha256 matches


def test_ocr_never_reaches_its_model_download(monkeypatch: pytest.MonkeyPatch) -> None:
    """rapidocr downloads missing models at run time; framewire hands it every file."""
    from rapidocr.utils import download_file

    from framewire.inference_agent.cards.ocr import CardOcr
    from framewire.inference_agent.models import BackendOptions, ModelRegistry

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the OCR package tried to download a model")

    monkeypatch.setattr(download_file.DownloadFile, "run", classmethod(refuse))
    registry = ModelRegistry(load_manifests(default_manifest_path()), BackendOptions("onnx"))
    spec = load_specs()[0]
    image = Image.open(io.BytesIO(card_jpeg(spec, random.Random(5), strength=0.3)))
    texts = [line.text for line in CardOcr(registry).read(image)]
    assert spec.name in texts and spec.number in texts


def test_the_wheel_carries_every_file_the_code_reads_at_run_time(tmp_path: Path) -> None:
    """An installed framewire (not this checkout) must find its manifest, sample catalog
    and broker plugin source: build the wheel from a copy and look inside."""
    import shutil
    import subprocess
    import sys
    import zipfile

    src = tmp_path / "src"
    for name in (*PACKAGES, "pyproject.toml", "README.md"):
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(path, src / name)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "-w",
            str(tmp_path / "dist"),
            str(src),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = (tmp_path / "dist").glob("framewire-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in (
        "framewire/inference_agent/models/ocr.toml",
        "framewire/data/catalog.csv",
        "framewire/broker_config/identity_plugin.c",
        "framewire/schemas/codec.py",
    ):
        assert needed in names, f"{needed} is missing from the wheel"
    # one import name in site-packages: `schemas`, say, is another project's on PyPI
    tops = {n.split("/")[0] for n in names} - {n.split("/")[0] for n in names if ".dist-info" in n}
    assert tops == {"framewire"}


def test_the_code_imports_its_packages_only_under_the_framewire_name() -> None:
    """schemas/, edge_agents/, inference_agent/ and broker_config/ are framewire.schemas
    and so on (framewire/ links to them): a bare `import schemas` would load a second copy
    of every class in it, and find another project's package where one is installed."""
    bare = set(PACKAGES) - {"framewire"}
    for path in [*ROOT.glob("*/**/*.py")]:
        rel = path.relative_to(ROOT)
        if rel.parts[0].startswith(".") or rel.parts[0] in ("build", "framewire"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            for name in names:
                assert name.split(".")[0] not in bare, f"{rel}: import {name}"
