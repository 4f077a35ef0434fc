"""scripts/bootstrap, test and demo: syntax, shellcheck, and the ways bootstrap refuses before it
installs anything (a missing or unsupported Python, a venv path that is not a venv)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = [ROOT / "scripts" / name for name in ("bootstrap", "test", "demo")]
BOOTSTRAP = ROOT / "scripts" / "bootstrap"


def bootstrap(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    # The venv is always under tmp_path, so nothing here can touch the checkout's .venv.
    run_env = {**os.environ, "FRAMEWIRE_VENV": str(tmp_path / "venv"), **env}
    return subprocess.run(
        [str(BOOTSTRAP), *args], env=run_env, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_script_parses(script: Path) -> None:
    subprocess.run(["bash", "-n", str(script)], check=True)


def test_scripts_are_shellcheck_clean() -> None:
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck is not installed")
    out = subprocess.run([shellcheck, *map(str, SCRIPTS)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout


def test_missing_python_says_how_to_get_one(tmp_path: Path) -> None:
    out = bootstrap(tmp_path, PYTHON=str(tmp_path / "no-such-python"))
    assert out.returncode == 1
    assert "no such interpreter" in out.stderr
    assert "CPython 3.11 to 3.14" in out.stderr and "PYTHON=" in out.stderr
    assert not (tmp_path / "venv").exists()


def test_unsupported_python_is_refused(tmp_path: Path) -> None:
    # Answers bootstrap's probe the way a Python 3.10 does.
    old = tmp_path / "python3.10"
    old.write_text('#!/bin/sh\necho "Python 3.10"\nexit 3\n')
    old.chmod(0o755)
    out = bootstrap(tmp_path, PYTHON=str(old))
    assert out.returncode == 1
    assert "is Python 3.10" in out.stderr
    assert not (tmp_path / "venv").exists()


def test_a_folder_that_is_not_a_venv_is_left_alone(tmp_path: Path) -> None:
    keep = tmp_path / "venv" / "keep.txt"
    keep.parent.mkdir()
    keep.write_text("mine")
    out = bootstrap(tmp_path)
    assert out.returncode == 1
    assert "is not a virtual environment" in out.stderr
    assert keep.read_text() == "mine"


def test_options() -> None:
    usage = subprocess.run([str(BOOTSTRAP), "--help"], capture_output=True, text=True)
    assert usage.returncode == 0 and "--dev" in usage.stdout and "FRAMEWIRE_VENV" in usage.stdout
    wrong = subprocess.run([str(BOOTSTRAP), "--nope"], capture_output=True, text=True)
    assert wrong.returncode == 2 and "unknown option --nope" in wrong.stderr
