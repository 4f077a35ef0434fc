"""What the pipeline costs beyond the model, as ratios against baselines from this run.

    python benchmarks/pipeline.py [--frames 60] [--no-ocr]

Baselines, measured first on the same machine:
  model   the inference pipeline called directly, frame after frame (no broker, no agents);
  broker  one frame-sized QoS 1 message to Mosquitto and back to the same client.
Then the whole pipeline (embedded Mosquitto; capture, inference and ledger agents as separate
processes, as systemd runs them) takes the same frames from a capture folder into the ledger.
It prints per-frame cost and its ratio to the model time (1.00 would mean the pipeline
costs nothing beyond the model), and the capture-to-ledger latency. Figures vary with the
machine; read the ratios, not the ms.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import aiomqtt

from broker_config import BrokerPlan, EmbeddedBroker, default_accounts, free_port
from edge_agents.ledger.store import LedgerReader
from framewire.samples import card_jpeg, load_specs, sample_catalog_path
from inference_agent.build import build_pipeline
from inference_agent.pipeline import local_frame
from inference_agent.settings import InferenceSettings
from schemas import utc_now


def make_frames(n: int) -> list[bytes]:
    rng = random.Random(1)
    specs = load_specs()
    return [card_jpeg(specs[i % len(specs)], rng) for i in range(n)]


def model_baseline(frames: list[bytes], ocr: bool) -> float:
    settings = InferenceSettings(catalog=sample_catalog_path() if ocr else None, cache_entries=0)
    pipeline = build_pipeline(settings, agent_id="bench")
    times = []
    for i, data in enumerate(frames):
        meta = local_frame(data, seq=i, source_name=f"{i}.jpg", station="bench")
        start = time.perf_counter()
        pipeline.process(meta, data, utc_now())
        times.append(time.perf_counter() - start)
    return statistics.fmean(times[1:] if len(times) > 1 else times)


async def broker_baseline(size: int, rounds: int = 50) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        plan = BrokerPlan(Path(tmp), port=free_port(), accounts=default_accounts())
        async with EmbeddedBroker(plan) as broker:
            secret = broker.secrets["operator"].read_text().strip()
            async with (
                aiomqtt.Client(
                    "127.0.0.1",
                    plan.port,
                    username="observer",
                    password=broker.secrets["observer"].read_text().strip(),
                    protocol=aiomqtt.ProtocolVersion.V5,
                ) as sub,
                aiomqtt.Client(
                    "127.0.0.1",
                    plan.port,
                    username="operator",
                    password=secret,
                    protocol=aiomqtt.ProtocolVersion.V5,
                ) as pub,
            ):
                # the operator may publish requests; the observer reads everything
                topic = "framewire/agents/bench/request"
                await sub.subscribe(topic, qos=1)
                payload = b"x" * size
                times = []
                messages = aiter(sub.messages)
                for _ in range(rounds):
                    start = time.perf_counter()
                    await pub.publish(topic, payload, qos=1)
                    await anext(messages)
                    times.append(time.perf_counter() - start)
    return statistics.fmean(times[5:])


def end_to_end(frames: list[bytes], ocr: bool) -> tuple[float, list[float]]:
    """The agents as separate processes (`framewire run X`), as systemd runs them."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        captures = root / "captures"
        captures.mkdir()
        plan = BrokerPlan(root / "broker", port=free_port(), accounts=default_accounts())
        with EmbeddedBroker(plan) as broker:
            users = {"capture": "capture-station-1", "inference": "inference", "ledger": "ledger"}
            procs = []
            for kind, user in users.items():
                env = {k: v for k, v in os.environ.items() if not k.startswith("FRAMEWIRE_")}
                env.update(
                    FRAMEWIRE_BROKER_URL=broker.url,
                    FRAMEWIRE_MQTT_USERNAME=user,
                    FRAMEWIRE_MQTT_PASSWORD_FILE=str(broker.secrets[user]),
                    FRAMEWIRE_AGENT_ID=user,
                    FRAMEWIRE_DATA_DIR=str(root / kind),
                    FRAMEWIRE_WATCH_DIR=str(captures),
                    FRAMEWIRE_METRICS_PORT="0",
                    FRAMEWIRE_HA_DISCOVERY="false",
                    FRAMEWIRE_LOG_LEVEL="WARNING",
                )
                if ocr:
                    env["FRAMEWIRE_CATALOG"] = str(sample_catalog_path())
                procs.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "framewire", "run", kind],
                        env=env,
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                )
            try:
                path = root / "ledger" / "ledger.sqlite3"
                time.sleep(4)  # connected, models loaded and warmed up
                start = time.perf_counter()
                for i, data in enumerate(frames):
                    (captures / f".{i}.tmp").write_bytes(data)
                    (captures / f".{i}.tmp").rename(captures / f"f{i:04d}.jpg")
                while True:
                    time.sleep(0.05)
                    if path.exists():
                        with LedgerReader(path) as reader:
                            if reader.count() >= len(frames):
                                break
                elapsed = time.perf_counter() - start
                with LedgerReader(path) as reader:
                    latencies = [
                        (
                            datetime.fromisoformat(r["ledgered_at"])
                            - datetime.fromisoformat(r["captured_at"])
                        ).total_seconds()
                        for r in reader.rows()
                    ]
            finally:
                for proc in procs:
                    proc.terminate()
                for proc in procs:
                    proc.wait(30)
    return elapsed / len(frames), latencies


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--no-ocr", action="store_true", help="image stages only, no card model")
    args = ap.parse_args()
    ocr = not args.no_ocr
    frames = make_frames(args.frames)
    size = int(statistics.fmean(len(f) for f in frames))
    print(
        f"{args.frames} card photos, mean {size / 1024:.0f} KiB, OCR {'on' if ocr else 'off'}",
        file=sys.stderr,
    )
    model = model_baseline(frames, ocr)
    rtt = asyncio.run(broker_baseline(size))
    per_frame, latencies = end_to_end(frames, ocr)
    lat = sorted(latencies)
    p95 = lat[min(len(lat) - 1, round(0.95 * (len(lat) - 1)))]
    print(f"baseline model time per frame      {model * 1e3:8.1f} ms")
    print(f"baseline broker round trip         {rtt * 1e3:8.2f} ms  ({size / 1024:.0f} KiB)")
    print(f"pipeline cost per frame            {per_frame * 1e3:8.1f} ms")
    print(f"  ratio to model time              {per_frame / model:8.2f}x")
    print(
        f"  beyond the model, per frame      {(per_frame - model) * 1e3:8.1f} ms"
        f"  = {(per_frame - model) / rtt:.1f} broker round trips"
    )
    print(
        f"capture-to-ledger latency mean     {statistics.fmean(lat) * 1e3:8.0f} ms"
        f"  (all {len(frames)} frames dropped at once; includes queueing and the"
        " file-settle wait)"
    )
    print(f"capture-to-ledger latency p95      {p95 * 1e3:8.0f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
