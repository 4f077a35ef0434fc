"""`python -m benchmarks --quick --json` on a tiny run: it exits 0 and prints one JSON
object with every figure, each a positive number. How fast anything was is not asserted."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
FIGURES = [
    "transport_raw_fps",
    "transport_pipeline_fps",
    "transport_ratio",
    "latency_p50_s",
    "latency_p95_s",
    "latency_rate_fps",
    "model_throughput_raw",
    "pipeline_throughput",
    "pipeline_ratio",
]


def positive(value: object) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


def test_a_tiny_benchmark_run_prints_every_figure_as_json() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRAMEWIRE_")}
    tiny = ["--frames", "40", "--latency-frames", "10", "--ocr-frames", "3", "--photos", "3"]
    tiny += ["--inference-agents", "1", "--ledger-rows", "50"]  # CI's run does 1 to 3
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--json", *tiny],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    for key in FIGURES:
        assert positive(result[key]), (key, result[key])
    assert set(result["inference_agents_fps"]) == {"1"}
    assert all(positive(v) for v in result["inference_agents_fps"].values())
    assert set(result["agents"]) == {"capture", "inference", "ledger", "broker"}
    for kind, figures in result["agents"].items():
        for key in ("rss_start_mib", "rss_end_mib"):
            assert positive(figures[key]), (kind, key, figures[key])
        # a tiny run may cost the broker less than one clock tick of CPU
        cpu = figures["cpu_s_per_frame"]
        assert isinstance(cpu, int | float) and math.isfinite(cpu) and cpu >= 0, (kind, cpu)
    if (ROOT / "benchmarks" / "ledger.py").exists():
        assert positive(result["ledger_inserts_per_s"])
