"""Proves that framewire installs from binary wheels on every platform it supports.

    python scripts/wheel_matrix.py [--wheel dist/framewire-*.whl] [--jobs 4]

CI cannot run macOS, Linux aarch64 or Python 3.14, so for each supported Python and
platform this resolves the built wheel's dependencies the way pip would install them there,
allowing binary wheels only (`pip install --dry-run --only-binary=:all: --python-version X
--platform P`, which resolves exactly as `pip download` does without fetching every wheel).
A dependency with no wheel for a target fails the run and is named.

pip evaluates environment markers against the machine it runs on, not the target, so the
wheel's own requirements are filtered here with the target's markers (the `mlx` extra, say,
differs between macOS and Linux) and passed to pip as plain requirements.
"""

from __future__ import annotations

import argparse
import email.parser
import json
import subprocess
import sys
import tempfile
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement

PYTHONS = ("3.11", "3.12", "3.13", "3.14")


@dataclass(frozen=True)
class Target:
    name: str
    floor: str  # the oldest platform the project promises: glibc 2.N or macOS N
    sys_platform: str
    machine: str
    extras: tuple[str, ...]

    def platforms(self) -> list[str]:
        """Every wheel platform tag that installs on `floor` (pip expands macOS tags itself,
        but not PEP 600 manylinux ones)."""
        if self.sys_platform == "darwin":
            return [f"macosx_{self.floor}_0_{self.machine}"]
        newest = int(self.floor.split(".")[1])
        tags = [f"manylinux_2_{minor}_{self.machine}" for minor in range(newest, 16, -1)]
        return [*tags, f"manylinux2014_{self.machine}"]


TARGETS = (
    # glibc 2.28 (RHEL 8, Debian 10 and newer) for the core; MLX's Linux build needs 2.35.
    Target("linux-x86_64", "2.28", "linux", "x86_64", ()),
    Target("linux-x86_64+mlx", "2.35", "linux", "x86_64", ("mlx", "dev")),
    Target("linux-aarch64", "2.28", "linux", "aarch64", ()),
    Target("linux-aarch64+mlx", "2.35", "linux", "aarch64", ("mlx", "dev")),
    # numpy, scipy, onnxruntime and mlx publish macOS arm64 wheels for macOS 14 and newer.
    Target("macos-arm64+mlx", "14", "darwin", "arm64", ("mlx", "dev")),
)


def requirements(wheel: Path, python: str, target: Target) -> list[str]:
    """The wheel's requirements that apply on `target`, extras expanded, markers dropped."""
    with zipfile.ZipFile(wheel) as zf:
        name = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        meta = email.parser.Parser().parsestr(zf.read(name).decode())
    project = meta["Name"]
    env = default_environment()
    env.update(
        python_version=python,
        python_full_version=f"{python}.0",
        sys_platform=target.sys_platform,
        platform_system={"linux": "Linux", "darwin": "Darwin"}[target.sys_platform],
        platform_machine=target.machine,
        os_name="posix",
    )
    wanted: list[str] = []
    pending = ["", *target.extras]
    seen: set[str] = set()
    while pending:
        extra = pending.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for line in meta.get_all("Requires-Dist") or []:
            req = Requirement(line)
            if req.marker is not None and not req.marker.evaluate({**env, "extra": extra}):
                continue
            if req.name == project:  # a self-reference such as framewire[mlx]
                pending.extend(req.extras)
                continue
            req.marker = None
            wanted.append(str(req))
    return sorted(set(wanted))


def resolve(wheel: Path, python: str, target: Target) -> tuple[str, bool, str]:
    label = f"cp{python.replace('.', '')} {target.name}"
    reqs = requirements(wheel, python, target)
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--dry-run",
            "--ignore-installed",
            "--quiet",
            "--disable-pip-version-check",
            "--only-binary=:all:",
            "--implementation",
            "cp",
            "--python-version",
            python,
            *(arg for tag in target.platforms() for arg in ("--platform", tag)),
            "--target",
            str(Path(tmp) / "target"),
            "--report",
            str(report),
            *reqs,
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            errors = [ln for ln in proc.stderr.splitlines() if "ERROR" in ln or "requires" in ln]
            return label, False, "\n    ".join(errors[-4:] or proc.stderr.splitlines()[-4:])
        data = json.loads(report.read_text())
    picked = {i["metadata"]["name"].lower(): i["metadata"]["version"] for i in data["install"]}
    shown = ", ".join(f"{n} {picked[n]}" for n in ("numpy", "onnxruntime", "mlx") if n in picked)
    return label, True, f"{len(picked)} wheels ({shown})"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--wheel", type=Path, help="the built framewire wheel (built if omitted)")
    ap.add_argument("--jobs", type=int, default=4, help="resolutions run at once")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        wheel = args.wheel
        if wheel is None:
            root = Path(__file__).resolve().parent.parent
            subprocess.run(
                [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", tmp, str(root)],
                check=True,
            )
            wheel = next(Path(tmp).glob("framewire-*.whl"))
        jobs = [(p, t) for p in PYTHONS for t in TARGETS]
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            results = list(pool.map(lambda job: resolve(wheel, *job), jobs))
    failed = 0
    for label, ok, detail in results:
        print(f"  {'ok  ' if ok else 'FAIL'} {label:28s} {detail}")
        failed += not ok
    print(f"wheel matrix: {len(results) - failed} resolved, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
