"""Integration: cards recognised through the real broker and agent processes; models and the
catalog reloaded at run time without losing a frame."""

from __future__ import annotations

import io
import json
import random
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest
from PIL import Image

from framewire.inference_agent.cards.catalog import load_catalog
from framewire.inference_agent.cards.matcher import CardMatcher
from framewire.inference_agent.cards.ocr import CardOcr
from framewire.inference_agent.models import (
    BackendOptions,
    ModelRegistry,
    default_manifest_path,
    load_manifests,
)
from framewire.samples import (
    CardSpec,
    card_jpeg,
    jpeg,
    load_specs,
    sample_catalog_path,
    stranger,
    write_cards,
)
from framewire.samples_catalog import by_trait, hard_catalog, write_catalog
from framewire.samples_hard import hard_photograph
from framewire.samples_layouts import render_printing
from tests.conftest import USERS, Pipeline, cli_env, wait_until
from tests.test_pipeline import ledger_rows, observer, wait_online

pytestmark = pytest.mark.integration


def with_catalog(p: Pipeline, catalog: Path | None = None) -> None:
    p.agents["inference"].env["FRAMEWIRE_CATALOG"] = str(catalog or sample_catalog_path())


def request(p: Pipeline, agent: str, command: str, *args: str) -> tuple[int, dict[str, object]]:
    env = cli_env(p.broker, "operator")
    out = subprocess.run(
        [sys.executable, "-m", "framewire", "request", agent, command, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.stdout, out.stderr
    return out.returncode, json.loads(out.stdout)


def test_cards_are_identified_and_recaptures_marked(pipeline: Pipeline) -> None:
    p = pipeline
    with_catalog(p)
    with observer(p) as rec:
        p.start()
        wait_online(rec, p, *USERS.values())
        written = write_cards(p.captures, 6, seed=4, recapture_every=3)
        rng = random.Random(9)
        unknown = stranger(rng, load_specs())
        (p.captures / "stranger.jpg").write_bytes(card_jpeg(unknown, rng))
        wait_until(lambda: len(ledger_rows(p.ledger_db)) == 7, timeout=120, what="7 rows")
    rows = {r["source_name"]: r for r in ledger_rows(p.ledger_db)}
    for path, spec in written:
        row = rows[path.name]
        assert row["card_status"] == "identified", json.loads(row["result"])["card"]
        assert (row["card_name"], row["card_number"], row["set_name"]) == (
            spec.name,
            spec.number,
            spec.set_name,
        )
        assert row["market_price"] is not None and 0 < row["confidence"] <= 1
    assert rows["stranger.jpg"]["card_status"] != "identified"
    # cards 3 and 6 are the cards of photos 1 and 4, photographed again
    by_name = {name: r["frame_id"] for name, r in rows.items()}
    assert rows["card-0003.jpg"]["duplicate_of"] == by_name["card-0001.jpg"]
    assert rows["card-0006.jpg"]["duplicate_of"] == by_name["card-0004.jpg"]
    others = [n for n in rows if n not in ("card-0003.jpg", "card-0006.jpg")]
    assert all(rows[n]["duplicate_of"] is None for n in others)
    card = json.loads(rows["card-0001.jpg"]["result"])
    assert card["models"]["ocr-rec"].startswith("PP-OCRv6")
    assert [s["name"] for s in card["stages"]][-1] == "recognize_card"


def test_reloading_models_and_catalog_during_traffic_loses_no_frame(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    p = pipeline
    catalog = tmp_path / "catalog.csv"
    catalog.write_bytes(sample_catalog_path().read_bytes())
    with_catalog(p, catalog)
    bad = tmp_path / "bad.toml"
    rec_sha = load_manifests(default_manifest_path())["ocr-rec"].sha256
    bad.write_text(default_manifest_path().read_text().replace(rec_sha, "0" * 64))
    assert bad.read_text() != default_manifest_path().read_text()
    with observer(p) as rec:
        p.start()
        wait_online(rec, p, *USERS.values())

        def produce() -> None:
            write_cards(p.captures, 12, seed=5)

        writer = threading.Thread(target=produce)
        writer.start()
        wait_until(lambda: len(ledger_rows(p.ledger_db)) >= 1, timeout=60, what="first row")
        code, answer = request(p, "inference", "reload_model")
        assert code == 0 and answer["ok"], answer
        code, answer = request(p, "inference", "reload_model", "name=ocr-rec", f"manifest={bad}")
        assert code == 1 and not answer["ok"]
        assert "previous model stays in use" in str(answer["message"])
        code, answer = request(p, "inference", "reload_catalog")
        assert code == 0 and answer["data"] == {"cards": 150}
        writer.join()
        wait_until(lambda: len(ledger_rows(p.ledger_db)) == 12, timeout=120, what="12 rows")
        time.sleep(1)
    rows = ledger_rows(p.ledger_db)
    assert len(rows) == 12 and len({r["frame_id"] for r in rows}) == 12
    assert all(r["card_status"] == "identified" for r in rows)
    code, answer = request(p, "inference", "status")
    assert answer["data"]["counter.model_swaps"] == 3  # det, cls, rec; the bad one refused
    assert answer["data"]["counter.model_swaps.refused"] == 1


def test_hard_printings_are_read_and_identified_by_their_number_through_the_real_ocr(
    tmp_path: Path,
) -> None:
    """Photos of generated cards, turned every way, of a catalog where one name has many
    printings: a gallery number printed `TG05/TG30` and kept as `TG05`, a secret rare,
    a name with a symbol, a Pikachu of 40, Magic and Yu-Gi-Oh! layouts, a Magic name and
    number in several sets told apart by the set code; and a Pikachu with a number none of
    its printings has."""
    specs = hard_catalog(5)
    catalog = load_catalog(write_catalog(specs, tmp_path / "hard.csv", seed=5))
    traits = by_trait(specs)
    chosen: list[CardSpec] = [
        next(s for s in traits["gallery"] if "/" not in s.number),
        traits["secret rare"][0],
        next(s for s in traits["symbol name"] if s.name in ("Nidoran♀", "Type: Null")),
        next(s for s in traits["many printings"] if s.name == "Pikachu"),
        traits["magic"][0],
        traits["yugioh"][0],
        traits["set code"][0],  # one name and number in several Magic sets: the code decides
    ]
    ocr = CardOcr(ModelRegistry(load_manifests(default_manifest_path()), BackendOptions("onnx")))
    matcher = CardMatcher()
    rng = random.Random(5)

    def photographed(spec: CardSpec, turns: int) -> Image.Image:
        shot = hard_photograph(render_printing(spec, rng), rng, kinds=(), quarter_turns=turns)
        return Image.open(io.BytesIO(jpeg(shot.image, rng)))

    for turns, spec in enumerate(chosen):
        m = matcher.match(catalog, ocr.read(photographed(spec, turns % 4)))
        assert m.status == "identified", (spec, m.reason)
        assert m.best is not None
        found = (m.best.card.name, m.best.card.set_name, m.best.card.number)
        assert found == (spec.name, spec.set_name, spec.number)
    pikachu = chosen[4]
    other = next(s for s in specs if s.set_name == pikachu.set_name and "Pikachu" not in s.name)
    m = matcher.match(catalog, ocr.read(photographed(replace(other, name="Pikachu"), 1)))
    assert m.status == "needs_review" and m.reason is not None
    assert m.reason.startswith("name reads 'Pikachu', number") and other.name in m.reason
