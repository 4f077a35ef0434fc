"""Card recognition accuracy and speed on generated cards, in-catalog and not.

    python benchmarks/accuracy.py --tier plain|hard|both --cards 100 --strangers 30
        [--seed 1] [--strength 1.0] [--backend onnx] [--compare-backend mlx]
        [--no-baseline] [--show-errors]

Renders labelled cards from the sample catalog and runs the inference pipeline in-process.

- plain: varied fonts, colours and artwork, then perspective, tilt, blur, noise, uneven
  light and JPEG compression (`framewire.samples`);
- hard: on top of that the card is turned 0/90/180/270 degrees plus a tilt, and gets one or
  two of strong perspective, glare, holo foil, a thumb over the artwork, a busy background,
  a low resolution (`framewire.samples_hard`). Its cards come from a generated catalog of
  some 3,000 printings (`framewire.samples_catalog`, the same for the same seed): one name
  in many sets (`Pikachu` 40 times), names with symbols (`Farfetch'd`, `Nidoran♀`,
  `Type: Null`), numbers above the set total and `TG05/TG30`, `SV049/SV094`, `RC12/RC32`,
  `SWSH050`, and Magic-like (`0123/0281 R`, `MKM • EN`) and Yu-Gi-Oh!-like (`LOB-EN001`)
  layouts. Each card is drawn from one of these traits in turn, so each is measured.

`--cards` and `--strangers` are per tier. Per tier it prints the share of in-catalog cards
identified correctly (name, number and set), identified wrongly, sent to review or unknown,
and how many out-of-catalog cards were identified (there must be none). Aims: plain
>= 99.5 % and hard >= 97 % identified correctly, nothing identified wrongly.

Speed is a ratio measured in this run, never a fixed number of ms: each photo is also read
by the OCR package on its own (`rapidocr.RapidOCR`, the same model files, its default
settings, over the whole photo: what framewire did before it looked for the card), timing
only, alternating which of the two goes first. It prints the mean ms per card of both, the
ratio, and where the time goes (text detection, direction, recognition).

`--compare-backend mlx` also runs every photo through a second pipeline on that backend
(the same models, photos and catalog; which of the two goes first alternates) and prints
its ms per card, its ratio to `--backend`'s, and on how many cards both gave the same
result. MLX's CPU build (`mlx[cpu]`, Linux) measures the interpreter on a CPU only: it
says nothing of MLX on Apple silicon, where it runs on the GPU.
"""

from __future__ import annotations

import argparse
import io
import random
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from framewire.inference_agent.build import build_pipeline
from framewire.inference_agent.cards.catalog import CatalogSource
from framewire.inference_agent.cards.ocr import CardOcr
from framewire.inference_agent.cards.recognizer import RecognizeCard
from framewire.inference_agent.models import ModelRegistry
from framewire.inference_agent.pipeline import Pipeline, local_frame
from framewire.inference_agent.settings import InferenceSettings
from framewire.samples import CardSpec, card_jpeg, load_specs, sample_catalog_path, stranger
from framewire.samples_catalog import by_trait, hard_catalog, hard_stranger, write_catalog
from framewire.samples_hard import hard_card_jpeg
from framewire.schemas import CardRecognition, utc_now


@dataclass
class Tally:
    outcomes: Counter[str] = field(default_factory=Counter)
    ms: list[float] = field(default_factory=list)  # framewire, whole pipeline
    baseline_ms: list[float] = field(default_factory=list)
    baseline_steps: dict[str, float] = field(default_factory=dict)  # det / cls / rec, ms
    steps: dict[str, float] = field(default_factory=dict)  # CardOcr's own split, ms per read
    paths: dict[str, int] = field(default_factory=dict)
    kinds: Counter[str] = field(default_factory=Counter)  # hard: cards per perturbation
    kinds_right: Counter[str] = field(default_factory=Counter)
    traits: Counter[str] = field(default_factory=Counter)  # hard: cards per catalog trait
    traits_right: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    other_ms: list[float] = field(default_factory=list)  # --compare-backend's pipeline
    other_correct: int = 0
    other_same: int = 0  # cards where both backends gave the same status and card
    other_steps: dict[str, float] = field(default_factory=dict)


class Baseline:
    """The OCR package alone over the whole photo, with the files framewire verified."""

    def __init__(self, registry: ModelRegistry) -> None:
        from rapidocr import EngineType, RapidOCR

        params: dict[str, Any] = {"Global.log_level": "warning"}
        for section, model in (("Det", "ocr-det"), ("Cls", "ocr-cls"), ("Rec", "ocr-rec")):
            params[f"{section}.engine_type"] = EngineType.ONNXRUNTIME
            params[f"{section}.model_path"] = str(registry.get(model).manifest.path())
        self.engine: Any = RapidOCR(params=params)
        self.engine(np.zeros((64, 64, 3), np.uint8))  # opens its sessions

    def run(self, data: bytes, tally: Tally) -> None:
        rgb = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
        bgr = np.ascontiguousarray(rgb[:, :, ::-1])
        start = time.perf_counter()
        output = self.engine(bgr)
        tally.baseline_ms.append((time.perf_counter() - start) * 1e3)
        for step, elapsed in zip(("det", "cls", "rec"), output.elapse_list or (), strict=False):
            tally.baseline_steps[step] = tally.baseline_steps.get(step, 0.0) + elapsed * 1e3


def photo(
    tier: str, spec: CardSpec, rng: random.Random, strength: float
) -> tuple[bytes, tuple[str, ...]]:
    """The photo's bytes and, for the hard tier, what was done to it."""
    if tier == "plain":
        return card_jpeg(spec, rng, strength=strength), ()
    data, shot = hard_card_jpeg(spec, rng)
    return data, (f"turn {90 * shot.quarter_turns}", *shot.kinds)


def card_ocr(pipeline: Pipeline) -> CardOcr | None:
    for stage in pipeline.stages:
        ocr = getattr(stage, "ocr", None)
        if isinstance(ocr, CardOcr):
            return ocr
    return None


def timed(pipeline: Pipeline, data: bytes, i: int) -> tuple[CardRecognition | None, float]:
    """The card recognition of one photo, and the ms the whole pipeline took."""
    meta = local_frame(data, seq=i, source_name=f"{i}.jpg", station="bench")
    start = time.perf_counter()
    result = pipeline.process(meta, data, utc_now()).result
    return (result.card if result else None), (time.perf_counter() - start) * 1e3


def outcome(card: CardRecognition | None) -> tuple[object, ...]:
    if card is None:
        return ("error",)
    return (card.status, card.card_name, card.card_number, card.set_name)


def use_catalog(pipeline: Pipeline, path: Path) -> None:
    """Point the card stage at this catalog, as a reload would."""
    for stage in pipeline.stages:
        if isinstance(stage, RecognizeCard):
            stage.catalog = CatalogSource(path)


def draw_jobs(
    tier: str, rng: random.Random, args: argparse.Namespace, specs: list[CardSpec]
) -> list[tuple[CardSpec, bool]]:
    """The cards to photograph, and whether each is in the catalog."""
    if tier == "plain":
        jobs = [(rng.choice(specs), True) for _ in range(args.cards)]
        jobs += [(stranger(rng, specs), False) for _ in range(args.strangers)]
    else:
        traits = by_trait(specs)
        names = list(traits)
        jobs = [(rng.choice(traits[names[i % len(names)]]), True) for i in range(args.cards)]
        jobs += [(hard_stranger(rng, specs), False) for _ in range(args.strangers)]
    rng.shuffle(jobs)
    return jobs


def run_tier(
    tier: str,
    args: argparse.Namespace,
    pipeline: Pipeline,
    baseline: Baseline | None,
    specs: list[CardSpec],
    other: Pipeline | None = None,
) -> Tally:
    rng = random.Random(f"{args.seed}-{tier}")
    jobs = draw_jobs(tier, rng, args, specs)
    tally = Tally()
    ocr = card_ocr(pipeline)
    ocr_before = (dict(ocr.ms), ocr.reads, dict(ocr.counts)) if ocr else None
    other_ocr = card_ocr(other) if other is not None else None
    other_before = (dict(other_ocr.ms), other_ocr.reads) if other_ocr else None
    for i, (spec, known) in enumerate(jobs, start=1):
        data, how = photo(tier, spec, rng, args.strength)
        if baseline is not None and i % 2 == 0:
            baseline.run(data, tally)
        other_card: CardRecognition | None = None
        if other is not None and i % 2 == 0:
            other_card, elapsed = timed(other, data, i)
            tally.other_ms.append(elapsed)
        card, elapsed = timed(pipeline, data, i)
        tally.ms.append(elapsed)
        if other is not None and i % 2 == 1:
            other_card, elapsed = timed(other, data, i)
            tally.other_ms.append(elapsed)
        if baseline is not None and i % 2 == 1:
            baseline.run(data, tally)
        status = card.status if card else "error"
        expected = ("identified", spec.name, spec.number, spec.set_name)
        right = card is not None and outcome(card)[1:] == expected[1:]
        if other is not None:
            tally.other_same += outcome(other_card) == outcome(card)
            tally.other_correct += known and outcome(other_card) == expected
        if known:
            key = {"identified": "correct" if right else "WRONG"}.get(status, status)
            tally.outcomes[f"in-catalog {key}"] += 1
            for kind in how:
                tally.kinds[kind] += 1
                tally.kinds_right[kind] += key == "correct"
            if spec.trait:
                tally.traits[spec.trait] += 1
                tally.traits_right[spec.trait] += key == "correct"
        else:
            tally.outcomes[f"stranger {status}"] += 1
        wrong = status == "identified" and not (known and right)
        if wrong or (args.show_errors and known and status != "identified"):
            tally.errors.append(
                f"  {'in' if known else 'out'} {spec.name} {spec.number} ({spec.set_name}, "
                f"{spec.trait or 'plain'}) [{', '.join(how)}] -> {status} "
                f"{card.card_name if card else ''} {card.card_number if card else ''} "
                f"{card.confidence if card else ''} {card.ocr_text if card else ''} "
                f"{card.review_reason or '' if card else ''}"
            )
        if i % 20 == 0:
            print(f"  {tier}: {i}/{len(jobs)} cards", file=sys.stderr)
    if ocr is not None and ocr_before is not None:
        ms, reads, counts = ocr_before
        n = max(1, ocr.reads - reads)
        tally.steps = {k: (v - ms.get(k, 0.0)) / n for k, v in ocr.ms.items()}
        tally.paths = {k: v - counts.get(k, 0) for k, v in ocr.counts.items()}
    if other_ocr is not None and other_before is not None:
        ms, reads = other_before
        n = max(1, other_ocr.reads - reads)
        tally.other_steps = {k: (v - ms.get(k, 0.0)) / n for k, v in other_ocr.ms.items()}
    return tally


def report(tier: str, tally: Tally, args: argparse.Namespace) -> None:
    n_in, n_out = args.cards, args.strangers
    print(f"\n{tier} tier: {n_in} in-catalog + {n_out} out-of-catalog cards (seed {args.seed})")
    for key in ("correct", "WRONG", "needs_review", "unknown", "error"):
        n = tally.outcomes[f"in-catalog {key}"]
        print(f"  in-catalog  {key:13s} {n:5d}  {100 * n / max(1, n_in):6.2f} %")
    for key in ("identified", "needs_review", "unknown", "error"):
        n = tally.outcomes[f"stranger {key}"]
        print(f"  stranger    {key:13s} {n:5d}  {100 * n / max(1, n_out):6.2f} %")
    if tally.kinds:
        parts = [f"{k} {tally.kinds_right[k]}/{n}" for k, n in sorted(tally.kinds.items())]
        print(f"  identified correctly by perturbation: {', '.join(parts)}")
    if tally.traits:
        parts = [f"{k} {tally.traits_right[k]}/{n}" for k, n in tally.traits.items()]
        print(f"  identified correctly by printing: {', '.join(parts)}")
    mean = statistics.fmean(tally.ms)
    q = statistics.quantiles(tally.ms, n=20) if len(tally.ms) > 1 else tally.ms
    print(f"  framewire per card: mean {mean:.0f} ms, p95 {q[-1]:.0f} ms (whole pipeline)")
    if tally.steps:
        split = ", ".join(f"{k} {v:.0f}" for k, v in tally.steps.items())
        print(f"    of which OCR, ms per card: {split}")
        print(f"    paths: {tally.paths}")
    if tally.baseline_ms:
        base = statistics.fmean(tally.baseline_ms)
        n = len(tally.baseline_ms)
        split = ", ".join(f"{k} {v / n:.0f}" for k, v in tally.baseline_steps.items())
        print(f"  baseline (rapidocr on the whole photo) per card: mean {base:.0f} ms ({split})")
        print(f"  ratio framewire / baseline: {mean / base:.2f}")
    if tally.other_ms:
        other = statistics.fmean(tally.other_ms)
        n = len(tally.other_ms)
        print(
            f"  {args.compare_backend} per card: mean {other:.0f} ms against {mean:.0f} ms "
            f"on {args.backend} (ratio {other / mean:.2f}); the same result on "
            f"{tally.other_same}/{n} cards; in-catalog correct {tally.other_correct}/{n_in}"
        )
        split = ", ".join(f"{k} {v:.0f}" for k, v in tally.other_steps.items())
        print(f"    of which OCR on {args.compare_backend}, ms per card: {split}")
    for line in tally.errors:
        print(line)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--tier", choices=["plain", "hard", "both"], default="plain")
    ap.add_argument("--cards", type=int, default=100, help="in-catalog cards per tier")
    ap.add_argument("--strangers", type=int, default=30, help="out-of-catalog cards per tier")
    ap.add_argument("--strength", type=float, default=1.0, help="plain tier perturbation, 0..2")
    ap.add_argument("--backend", default="onnx", choices=["auto", "onnx", "mlx"])
    ap.add_argument(
        "--compare-backend",
        choices=["onnx", "mlx"],
        help="also run every photo on this backend and compare speed and results",
    )
    ap.add_argument("--catalog", type=Path, default=sample_catalog_path())
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--no-baseline", action="store_true", help="skip the speed baseline")
    ap.add_argument(
        "--hard-catalog", type=Path, help="write the hard tier's generated catalog here too"
    )
    ap.add_argument("--show-errors", action="store_true")
    args = ap.parse_args()

    settings = InferenceSettings(catalog=args.catalog, model_backend=args.backend, cache_entries=0)
    pipeline = build_pipeline(settings, agent_id="bench")
    baseline = None
    if not args.no_baseline and pipeline.registry is not None:
        baseline = Baseline(pipeline.registry)
    other = None
    if args.compare_backend:
        other_settings = settings.model_copy(update={"model_backend": args.compare_backend})
        other = build_pipeline(other_settings, agent_id="bench-compare")
        print(f"compared with backend {args.compare_backend}; models {other.models()}")
    print(f"backend {args.backend}; models {pipeline.models()}")
    tiers = ["plain", "hard"] if args.tier == "both" else [args.tier]
    tallies: dict[str, Tally] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for tier in tiers:
            if tier == "plain":
                catalog, specs = args.catalog, load_specs(args.catalog)
            else:
                specs = hard_catalog(args.seed)
                catalog = write_catalog(specs, Path(tmp) / "hard.csv", seed=args.seed)
                if args.hard_catalog:
                    write_catalog(specs, args.hard_catalog, seed=args.seed)
                print(f"hard tier catalog: {len(specs)} printings, {len(by_trait(specs))} traits")
            use_catalog(pipeline, catalog)
            if other is not None:
                use_catalog(other, catalog)
            tallies[tier] = run_tier(tier, args, pipeline, baseline, specs, other)
    for tier, tally in tallies.items():
        report(tier, tally, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
