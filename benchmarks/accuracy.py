"""Card recognition accuracy on generated cards, in-catalog and not.

    python benchmarks/accuracy.py --cards 300 --strangers 100 [--backend onnx] [--strength 1.0]

Renders labelled cards from the sample catalog (varied fonts, colours, artwork, then
perspective, tilt, blur, noise, uneven light and JPEG compression), runs the inference
pipeline in-process, and prints the rates. Aims: >= 99 % of in-catalog cards identified
correctly, <= 0.5 % identified wrongly, and no out-of-catalog card ever `identified`.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

from framewire.samples import card_jpeg, load_specs, sample_catalog_path, stranger
from inference_agent.build import build_pipeline
from inference_agent.pipeline import local_frame
from inference_agent.settings import InferenceSettings
from schemas import utc_now


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--cards", type=int, default=300, help="in-catalog cards")
    ap.add_argument("--strangers", type=int, default=100, help="out-of-catalog cards")
    ap.add_argument("--strength", type=float, default=1.0, help="capture perturbation, 0..2")
    ap.add_argument("--backend", default="onnx", choices=["auto", "onnx", "mlx"])
    ap.add_argument("--catalog", type=Path, default=sample_catalog_path())
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--show-errors", action="store_true")
    args = ap.parse_args()

    settings = InferenceSettings(catalog=args.catalog, model_backend=args.backend, cache_entries=0)
    pipeline = build_pipeline(settings, agent_id="bench")
    specs = load_specs(args.catalog)
    rng = random.Random(args.seed)
    jobs = [(rng.choice(specs), True) for _ in range(args.cards)]
    jobs += [(stranger(rng, specs), False) for _ in range(args.strangers)]
    rng.shuffle(jobs)

    outcomes: Counter[str] = Counter()
    times: list[float] = []
    errors: list[str] = []
    for i, (spec, known) in enumerate(jobs, start=1):
        data = card_jpeg(spec, rng, strength=args.strength)

        meta = local_frame(data, seq=i, source_name=f"{i}.jpg", station="bench")
        start = time.perf_counter()
        result = pipeline.process(meta, data, utc_now()).result
        times.append(time.perf_counter() - start)
        card = result.card if result else None
        status = card.status if card else "error"
        right = card is not None and card.card_name == spec.name and card.card_number == spec.number
        if known:
            key = {"identified": "correct" if right else "WRONG"}.get(status, status)
            outcomes[f"in-catalog {key}"] += 1
        else:
            outcomes[f"stranger {status}"] += 1
        wrong = (known and status == "identified" and not right) or (
            not known and status == "identified"
        )
        if wrong or (args.show_errors and known and status != "identified"):
            errors.append(
                f"  {'in' if known else 'out'} {spec.name} {spec.number} -> {status} "
                f"{card.card_name if card else ''} {card.card_number if card else ''} "
                f"{card.confidence if card else ''} {card.ocr_text if card else ''}"
            )
        if i % 50 == 0:
            print(f"  {i}/{len(jobs)} cards", file=sys.stderr)

    n_in, n_out = args.cards, args.strangers
    print(f"\ncard recognition on {n_in} in-catalog + {n_out} out-of-catalog generated cards")
    print(f"backend {args.backend}; models {pipeline.models()}")
    for key in ("correct", "WRONG", "needs_review", "unknown", "error"):
        n = outcomes[f"in-catalog {key}"]
        print(f"  in-catalog  {key:13s} {n:5d}  {100 * n / max(1, n_in):6.2f} %")
    for key in ("identified", "needs_review", "unknown", "error"):
        n = outcomes[f"stranger {key}"]
        print(f"  stranger    {key:13s} {n:5d}  {100 * n / max(1, n_out):6.2f} %")
    q = statistics.quantiles(times, n=20) if len(times) > 1 else times
    print(f"  per card: mean {statistics.fmean(times) * 1e3:.0f} ms, p95 {q[-1] * 1e3:.0f} ms")
    for line in errors:
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
