"""`[inference] stages`: which stages run, checked at start, and a checksum-only pipeline."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from framewire.inference_agent.build import build_pipeline
from framewire.inference_agent.pipeline import local_frame
from framewire.inference_agent.settings import InferenceSettings
from framewire.inference_agent.stages import STAGES
from framewire.samples import sample_catalog_path
from framewire.schemas import InferenceResult, utc_now
from tests.conftest import USERS, Pipeline, jpeg_bytes, wait_until
from tests.test_pipeline import capture_rows, ledger_rows, observer, wait_online

KNOWN = "checksum, decode, thumbnail, phash, card"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("FRAMEWIRE_"):
            monkeypatch.delenv(key)


def cli(*args: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("FRAMEWIRE_")}
    base.update(COLUMNS="200", FRAMEWIRE_DATA_DIR=str(tmp_path / "data"), **env)
    return subprocess.run(
        [sys.executable, "-m", "framewire", *args],
        env=base,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_default_stages_are_the_image_stages_plus_the_card_with_a_catalog() -> None:
    assert InferenceSettings().stage_names() == ["checksum", "decode", "thumbnail", "phash"]
    with_catalog = InferenceSettings(catalog=sample_catalog_path())
    assert with_catalog.stage_names() == ["checksum", "decode", "thumbnail", "phash", "card"]
    pipeline = build_pipeline(InferenceSettings(), agent_id="test")
    data = jpeg_bytes(3)
    meta = local_frame(data, seq=1, source_name="a.jpg")
    result = pipeline.process(meta, data, utc_now()).result
    assert result is not None and result.status == "ok"
    assert [s.name for s in result.stages] == ["verify_sha256", "decode", "thumbnail", "phash"]
    assert result.image is not None and result.thumbnail is not None and result.phash


def test_checksum_only_gives_a_valid_result_without_image_facts() -> None:
    pipeline = build_pipeline(InferenceSettings(stages=["checksum"]), agent_id="test")
    data = jpeg_bytes(4)
    meta = local_frame(data, seq=1, source_name="a.jpg")
    result = pipeline.process(meta, data, utc_now()).result
    assert result is not None and result.status == "ok"
    assert [s.name for s in result.stages] == ["verify_sha256"]
    assert (result.image, result.thumbnail, result.phash, result.card) == (None,) * 4
    assert InferenceResult.model_validate_json(result.model_dump_json()) == result
    # bytes that do not match still go back to the capture box, as with every stage
    bad = pipeline.process(meta, data[:-1] + b"\0", utc_now())
    assert bad.result is None and bad.error is not None


def test_stages_from_the_environment_as_json_or_names_and_commas(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FRAMEWIRE_STAGES", '["checksum", "decode"]')
    assert InferenceSettings().stage_names() == ["checksum", "decode"]
    monkeypatch.setenv("FRAMEWIRE_STAGES", "checksum, decode,phash")
    assert InferenceSettings().stage_names() == ["checksum", "decode", "phash"]


@pytest.mark.parametrize(
    ("stages", "said"),
    [
        (["checksum", "ocr"], f"unknown stage 'ocr'; the known stages are {KNOWN}"),
        (["decode"], "the first stage must be 'checksum'"),
        ([], "the first stage must be 'checksum'"),
        (["checksum", "thumbnail"], "stage 'thumbnail' needs 'decode' before it"),
        (["checksum", "decode", "decode"], "stage 'decode' is listed twice"),
        (["checksum", "decode", "card"], "stage 'card' needs a catalog"),
    ],
)
def test_a_stage_list_that_cannot_run_is_refused_saying_why(stages: list[str], said: str) -> None:
    with pytest.raises(ValidationError) as caught:
        InferenceSettings(stages=stages)
    assert [e["loc"] for e in caught.value.errors()] == [("stages",)]
    assert said in str(caught.value)


def test_the_card_stage_runs_when_listed_with_a_catalog() -> None:
    names = ["checksum", "decode", "card"]
    assert InferenceSettings(stages=names, catalog=sample_catalog_path()).stage_names() == names


def test_unknown_stage_in_the_configuration_file_exits_2_listing_the_known_ones(
    tmp_path: Path,
) -> None:
    cfg = tmp_path / "framewire.toml"
    cfg.write_text('[inference]\nstages = ["checksum", "ocr"]\n')
    for command in (["config", "check"], ["run", "inference"]):
        out = cli(*command, tmp_path=tmp_path, FRAMEWIRE_CONFIG=str(cfg))
        assert out.returncode == 2, out.stdout + out.stderr
        assert f"stages = ['checksum', 'ocr'] ([inference] in {cfg})" in out.stderr
        assert f"the known stages are {KNOWN}" in out.stderr
        assert "Traceback" not in out.stdout + out.stderr
    assert not (tmp_path / "data").exists()  # refused before doing anything


def test_card_without_a_catalog_exits_2_naming_the_setting(tmp_path: Path) -> None:
    out = cli("run", "inference", tmp_path=tmp_path, FRAMEWIRE_STAGES="checksum,decode,card")
    assert out.returncode == 2, out.stdout + out.stderr
    assert "environment FRAMEWIRE_STAGES" in out.stderr and "needs a catalog" in out.stderr
    assert "Traceback" not in out.stdout + out.stderr


def test_the_configuration_reference_lists_every_stage(tmp_path: Path) -> None:
    out = cli("config", "reference", tmp_path=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "FRAMEWIRE_STAGES" in out.stdout
    for name in STAGES:
        assert f"| `{name}` |" in out.stdout


@pytest.mark.integration
def test_a_checksum_only_pipeline_ledgers_every_frame(pipeline: Pipeline) -> None:
    """Real broker, capture, inference and ledger processes; inference only checks bytes."""
    p = pipeline
    p.agents["inference"].env["FRAMEWIRE_STAGES"] = '["checksum"]'
    with observer(p) as rec:
        p.start()
        wait_online(rec, p, *USERS.values())
        names = {f"card-{i}.jpg": jpeg_bytes(i) for i in range(12)}
        for name, data in names.items():
            (p.captures / name).write_bytes(data)
        wait_until(lambda: len(ledger_rows(p.ledger_db)) >= len(names), what="ledger rows")
        wait_until(
            lambda: (
                all(r["state"] == "ledgered" for r in capture_rows(p.state_db))
                and len(capture_rows(p.state_db)) == len(names)
            ),
            what="every frame acknowledged",
        )
    rows = ledger_rows(p.ledger_db)
    assert sorted(r["source_name"] for r in rows) == sorted(names)
    for r in rows:
        assert r["status"] == "ok" and r["width"] is None and r["phash"] is None
        result = InferenceResult.model_validate_json(r["result"])
        assert [s.name for s in result.stages] == ["verify_sha256"]
        assert result.image is None and result.thumbnail is None
