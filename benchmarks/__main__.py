"""python -m benchmarks [--quick] [--json] [--frames N] [--ocr-frames N] ...

Runs every benchmark (benchmarks/harness.py says what each figure is and what it is
measured against) and prints a Markdown table, the one the README carries, or with --json
one JSON object holding every figure and its baseline. --quick measures on fewer frames
(1,000 instead of 10,000 for transport and memory, 10 card photos instead of 60) and
finishes in under two minutes on a 2-core box. Progress goes to stderr.

Figures vary with the machine and whatever else runs on it; the ratios travel better.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from typing import Any

from benchmarks.harness import RunSize, run

_OVERRIDES = {
    "frames": "frames through the no-op pipeline (transport and memory)",
    "latency_frames": "frames for the latency figure",
    "ocr_frames": "card photos per inference-agent count",
    "photos": "distinct card photos rendered",
    "inference_agents": "throughput with 1 up to this many inference agents",
    "ledger_rows": "rows for ledger_inserts_per_s",
}


def _n(value: float | None, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:,.{digits}f}"


def table(r: dict[str, Any]) -> str:
    size = r["size"]
    rows = [
        "| figure | this run | baseline | ratio |",
        "|---|---:|---:|---:|",
        f"| transport: capture folder to ledger, no-op model, frames/s | "
        f"{_n(r['transport_pipeline_fps'])} | {_n(r['transport_raw_fps'])} (one aiomqtt "
        f"publisher to one subscriber) | {_n(r['transport_ratio'], 3)} |",
        f"| card OCR: capture folder to ledger, frames/s | {_n(r['pipeline_throughput'], 2)} | "
        f"{_n(r['model_throughput_raw'], 2)} (the pipeline in-process) | "
        f"{_n(r['pipeline_ratio'], 2)} |",
    ]
    for agents, fps in r["inference_agents_fps"].items():
        if agents != "1":
            rows.append(
                f"| card OCR with {agents} inference agents, frames/s | {_n(fps, 2)} | "
                f"{_n(r['pipeline_throughput'], 2)} (one agent) | "
                f"{_n(fps / r['pipeline_throughput'], 2)} |"
            )
    rows += [
        f"| latency file closed to ledger commit, p50 / p95, s (at "
        f"{_n(r['latency_rate_fps'])} files/s; includes the {r['settle_seconds']} s settle "
        f"wait) | {_n(r['latency_p50_s'], 2)} / {_n(r['latency_p95_s'], 2)} | | |",
    ]
    batches: dict[str, float] = r.get("ledger_inserts_per_s_by_batch") or {}
    if batches:
        rows.append(
            f"| ledger inserts/s, {' / '.join(batches)} results per transaction | "
            f"{' / '.join(_n(v) for v in batches.values())} | | |"
        )
    else:
        rows.append(f"| ledger inserts/s | {_n(r['ledger_inserts_per_s'])} | | |")
    lookalike: dict[str, float] = r.get("ledger_lookalike_cpu_ms") or {}
    if lookalike:
        sizes = " / ".join(f"{int(n):,}" for n in lookalike)
        costs = list(lookalike.values())
        rows.append(
            f"| ledger look-alike check, CPU ms per insert at {sizes} rows | "
            f"{' / '.join(_n(v, 2) for v in costs)} | {_n(costs[0], 2)} (smallest ledger) | "
            f"{_n(costs[-1] / costs[0], 2)} |"
        )
    for kind, a in r["agents"].items():
        cpu = a.get("cpu_s_per_frame")
        rows.append(
            f"| {kind}: RSS online / after {size['frames']:,} frames, MiB; CPU ms per frame | "
            f"{_n(a['rss_start_mib'])} / {_n(a['rss_end_mib'])}; "
            f"{_n(cpu * 1e3 if cpu is not None else None, 2)} | | |"
        )
    machine = r["machine"]
    rows += [
        "",
        f"{r['mode']} run: {size['frames']:,} transport frames of {r['photo_kib']:.0f} KiB, "
        f"{size['ocr_frames']} card photos per agent count; {machine['cpus']} CPUs, "
        f"Python {machine['python']}; {r['seconds']:.0f} s.",
    ]
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--quick", action="store_true", help="fewer frames; under two minutes")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    for name, text in _OVERRIDES.items():
        ap.add_argument(f"--{name.replace('_', '-')}", type=int, metavar="N", help=text)
    args = ap.parse_args(argv)
    size = RunSize.quick() if args.quick else RunSize.full()
    given = {k: getattr(args, k) for k in _OVERRIDES if getattr(args, k) is not None}
    bad = [k for k, v in given.items() if v < 1 or (k in ("frames", "ocr_frames") and v < 2)]
    if bad:
        ap.error(f"--{bad[0].replace('_', '-')} is too small")
    size = dataclasses.replace(size, **given)
    result = run(size, mode="quick" if args.quick else "full")
    print(json.dumps(result, indent=2) if args.json else table(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
