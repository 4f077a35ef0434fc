"""End to end: `framewire demo` runs the whole pipeline and exits 0 only when complete."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def test_demo_ledgers_every_sample_card(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRAMEWIRE_")}
    out = subprocess.run(
        [sys.executable, "-m", "framewire", "demo", "--cards", "6", "--keep", str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "every frame is in the ledger exactly once" in out.stdout
    assert out.stdout.count("ledgered card-") == 6
    assert len(list((tmp_path / "captures").glob("card-*.jpg"))) == 6  # originals kept
    exported = subprocess.run(
        [
            sys.executable,
            "-m",
            "framewire",
            "ledger",
            "export",
            "-f",
            "csv",
            "--db",
            str(tmp_path / "data" / "ledger.sqlite3"),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert len(exported.stdout.splitlines()) == 7
