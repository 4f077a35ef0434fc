"""Every figure of `python -m benchmarks`, each measured in the same run as its baseline.

Transport (no-op model: the inference agents run `stages = ["checksum"]`, every durability
feature at its default, which is on: QoS 1, persistent broker sessions and broker
persistence, the capture state database, the ledger's synchronous=FULL commits and its
acknowledgements back to capture):
  transport_raw_fps       the same frames, one aiomqtt publisher to one subscriber through
                          the same broker (benchmarks.transport);
  transport_pipeline_fps  files in the capture folder to rows in the ledger;
  latency p50/p95         file closed to ledger commit, files written at half of
                          transport_pipeline_fps;
  per agent               RSS when online and after the run, CPU seconds per frame.
Card OCR (default stages with the sample catalog):
  model_throughput_raw    the same pipeline called in-process, frame after frame, just
                          before and just after the one-agent run;
  pipeline_throughput     capture folder to ledger with one inference agent, then with two
                          and three in one share group, each on the same photos.
Ledger: `ledger_inserts_per_s` from benchmarks/ledger.py.

Throughput through the agents is the ledger's steady rate: rows after the first over the
time between the first and the last commit, so the file-settle wait before the first frame
(a latency, `settle_seconds`) is not counted as a cost per frame.
"""

from __future__ import annotations

import importlib
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchmarks.frames import card_photos, frame_set
from benchmarks.stack import AgentStack, ProcSample
from benchmarks.transport import WINDOW, transport_raw_fps
from framewire.edge_agents.capture.settings import CaptureSettings
from framewire.samples import sample_catalog_path

MIB = 1024 * 1024
_STARTED = time.perf_counter()


@dataclass(frozen=True)
class RunSize:
    """How much each figure is measured on."""

    frames: int  # transport and memory: frames through the no-op pipeline
    latency_frames: int
    ocr_frames: int  # per inference-agent count
    photos: int  # distinct rendered photos the frames are made from
    inference_agents: int  # throughput with 1..this many
    ledger_rows: int

    @classmethod
    def quick(cls) -> RunSize:
        return cls(
            frames=1_000,
            latency_frames=200,
            ocr_frames=10,
            photos=10,
            inference_agents=3,
            ledger_rows=2_000,
        )

    @classmethod
    def full(cls) -> RunSize:
        return cls(
            frames=10_000,
            latency_frames=1_000,
            ocr_frames=60,
            photos=30,
            inference_agents=3,
            ledger_rows=20_000,
        )


def say(text: str) -> None:
    elapsed = time.perf_counter() - _STARTED
    print(f"[benchmarks {elapsed:5.1f} s] {text}", file=sys.stderr, flush=True)


def steady_fps(
    ledgered: Mapping[str, float],
    names: list[str],
    closed: Mapping[str, float] | None = None,
) -> float:
    """Rows committed after the first commit over the time from it to the last (the ledger
    commits in groups, so the rows of the first group are where the clock starts). When
    every row came in one group: all rows over the time from the first file closed."""
    times = sorted(ledgered[n] for n in names)
    first, span = times[0], times[-1] - times[0]
    later = sum(1 for t in times if t > first)
    if later and span > 0:
        return later / span
    if closed:
        start = min(closed[n] for n in names)
        return len(times) / (times[-1] - start) if times[-1] > start else float("nan")
    return float("nan")


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def _ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def _agent_kind(agent_id: str) -> str:
    return agent_id if agent_id in ("ledger", "broker") else agent_id.split("-")[0]


def agent_figures(
    start: Mapping[str, ProcSample | None], end: Mapping[str, ProcSample | None], frames: int
) -> dict[str, dict[str, float | None]]:
    out: dict[str, dict[str, float | None]] = {}
    for agent_id, first in start.items():
        last = end.get(agent_id)
        if first is None or last is None:
            out[_agent_kind(agent_id)] = {"rss_start_mib": None, "rss_end_mib": None}
            continue
        out[_agent_kind(agent_id)] = {
            "rss_start_mib": round(first.rss_bytes / MIB, 1),
            "rss_end_mib": round(last.rss_bytes / MIB, 1),
            "cpu_s_per_frame": (last.cpu_seconds - first.cpu_seconds) / frames,
        }
    return out


# --- transport ----------------------------------------------------------------------------
def transport(photos: list[bytes], size: RunSize, work: Path) -> dict[str, Any]:
    """The agents first, then (with them stopped) the raw baseline on the same broker, so
    the broker's memory figures are the agents' traffic alone."""
    frames = frame_set(photos, size.frames, "transport")
    with AgentStack(work / "transport", inference_env={"FRAMEWIRE_STAGES": "checksum"}) as stack:
        say("transport: starting the agents (checksum stage only)")
        stack.start(inference=1)
        time.sleep(1.0)  # past the start-up work (subscriptions, first status)
        before = stack.samples()
        names = {f"t{i:05d}.jpg": data for i, data in enumerate(frames)}
        say(f"transport: {len(names)} files into the capture folder, as fast as they come")
        stack.drop(names)
        stack.wait_ledgered(len(names))
        after = stack.samples()
        fps = steady_fps(stack.ledgered_at(), list(names))
        rate = fps / 2
        late = {
            f"l{i:05d}.jpg": data
            for i, data in enumerate(frame_set(photos, size.latency_frames, "latency"))
        }
        say(f"latency: {len(late)} files at {rate:.0f}/s (half of {fps:.0f}/s)")
        closed = stack.drop(late, rate=rate)
        stack.wait_ledgered(len(names) + len(late))
        ledgered = stack.ledgered_at()
        latencies = [ledgered[name] - closed[name] for name in late]
        stack.stop_agents()
        say(f"transport baseline: {len(frames)} frames, one publisher to one subscriber")
        raw = transport_raw_fps(stack, frames)
    return {
        "transport_raw_fps": raw,
        "transport_pipeline_fps": fps,
        "transport_ratio": _ratio(fps, raw),
        "latency_p50_s": percentile(latencies, 0.50),
        "latency_p95_s": percentile(latencies, 0.95),
        "latency_rate_fps": rate,
        "agents": agent_figures(before, after, len(names)),
    }


# --- card OCR ------------------------------------------------------------------------------
class ModelBaseline:
    """The inference pipeline with OCR, called in-process frame after frame: what the card
    model costs with no broker and no agents around it."""

    def __init__(self, warm_up: bytes) -> None:
        from framewire.inference_agent.build import build_pipeline
        from framewire.inference_agent.settings import InferenceSettings

        settings = InferenceSettings(catalog=sample_catalog_path(), cache_entries=0)
        self.pipeline = build_pipeline(settings, agent_id="bench")
        self.seconds = 0.0
        self.frames = 0
        self._time([warm_up])  # the first frame through a fresh model is slower

    def _time(self, frames: list[bytes]) -> float:
        from framewire.inference_agent.pipeline import local_frame
        from framewire.schemas import utc_now

        start = time.perf_counter()
        for i, data in enumerate(frames):
            meta = local_frame(data, seq=i, source_name=f"{i}.jpg")
            self.pipeline.process(meta, data, utc_now())
        return time.perf_counter() - start

    def measure(self, frames: list[bytes]) -> None:
        self.seconds += self._time(frames)
        self.frames += len(frames)

    @property
    def fps(self) -> float:
        return self.frames / self.seconds


def ocr(photos: list[bytes], size: RunSize, work: Path) -> dict[str, Any]:
    """The model baseline is measured just before and just after the one-agent run (the
    agents idle meanwhile), so a machine busier during one than the other shows less."""
    count = size.ocr_frames
    say("model baseline: loading the models in-process")
    model = ModelBaseline(frame_set(photos, 1, "warm-up")[0])
    by_agents: dict[str, float] = {}
    catalog = {"FRAMEWIRE_CATALOG": str(sample_catalog_path())}
    with AgentStack(work / "ocr", inference_env=catalog) as stack:
        say("card OCR: starting the agents (models load and warm up)")
        stack.start(inference=1)
        total = 0
        for agents in range(1, size.inference_agents + 1):
            if agents > 1:
                stack.add_inference()
            frames = frame_set(photos, count, f"agents-{agents}")
            if agents == 1:
                say(f"model baseline: {count} card photos in-process")
                model.measure(frame_set(photos, count, "model-before"))
            names = {f"a{agents}-{i:04d}.jpg": data for i, data in enumerate(frames)}
            say(f"card OCR: {count} photos with {agents} inference agent(s)")
            closed = stack.drop(names)
            total += len(names)
            stack.wait_ledgered(total)
            by_agents[str(agents)] = steady_fps(stack.ledgered_at(), list(names), closed)
            if agents == 1:
                say(f"model baseline: {count} card photos in-process, again")
                model.measure(frame_set(photos, count, "model-after"))
    pipeline = by_agents["1"]
    return {
        "model_throughput_raw": model.fps,
        "pipeline_throughput": pipeline,
        "pipeline_ratio": _ratio(pipeline, model.fps),
        "inference_agents_fps": by_agents,
    }


# --- ledger --------------------------------------------------------------------------------
LEDGER_BATCHES = (1, 8, 64, 256)  # 256: the most the ledger agent commits at once


def ledger(size: RunSize) -> dict[str, Any]:
    """From benchmarks/ledger.py: inserts per second (one result per transaction, as a row
    is committed before it is acknowledged, and in larger batches) and the look-alike check's
    CPU ms per insert by ledger size. None where that module or a function is not there."""
    out: dict[str, Any] = {"ledger_inserts_per_s": None}
    try:
        module = importlib.import_module("benchmarks.ledger")
    except ImportError as err:
        say(f"ledger: benchmarks/ledger.py cannot be used ({err}); its figures are left out")
        return out
    inserts: Callable[..., float] | None = getattr(module, "ledger_inserts_per_s", None)
    if inserts is not None:
        say(f"ledger: {size.ledger_rows} inserts, batches of {LEDGER_BATCHES}")
        by_batch = {str(b): inserts(rows=size.ledger_rows, batch=b) for b in LEDGER_BATCHES}
        out["ledger_inserts_per_s"] = by_batch["1"]
        out["ledger_inserts_per_s_by_batch"] = by_batch
    lookalike: Callable[..., dict[int, float]] | None = getattr(module, "lookalike_cost", None)
    if lookalike is not None:
        sizes = [n for n in (1_000, 10_000, 100_000) if n <= max(1_000, 5 * size.ledger_rows)]
        say(f"ledger: look-alike cost at {sizes} rows")
        out["ledger_lookalike_cpu_ms"] = {str(n): ms for n, ms in lookalike(sizes).items()}
    return out


def run(size: RunSize, *, mode: str) -> dict[str, Any]:
    started = time.perf_counter()
    say(f"rendering {size.photos} card photos")
    photos = card_photos(size.photos)
    out: dict[str, Any] = {
        "mode": mode,
        "size": asdict(size),
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "photo_kib": round(statistics.fmean(len(p) for p in photos) / 1024, 1),
        "window": WINDOW,
        # latency includes the capture agent's wait for a file to settle
        "settle_seconds": CaptureSettings.model_fields["settle_seconds"].default,
    }
    with tempfile.TemporaryDirectory(prefix="framewire-bench-") as tmp:
        out.update(transport(photos, size, Path(tmp)))
        out.update(ocr(photos, size, Path(tmp)))
    out.update(ledger(size))
    out["seconds"] = round(time.perf_counter() - started, 1)
    return out
