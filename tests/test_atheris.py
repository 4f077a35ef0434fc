"""The atheris harnesses (tests/fuzz_atheris.py): each one fuzzed for a bounded number of
runs where atheris installs, and everywhere the inputs they broke before, replayed through
the same harness (they need no atheris to run)."""

from __future__ import annotations

import importlib.util
import json
import platform
import re
import subprocess
import sys
from pathlib import Path

import pytest

from framewire.inference_agent.cards import json_stream
from framewire.inference_agent.cards.catalog import CatalogError, load_catalog
from framewire.schemas import (
    CommandRequest,
    LedgerAck,
    MessageError,
    decode_json,
    frame_meta_from_properties,
)
from framewire.schemas.codec import FRAME_SCHEMA
from framewire.schemas.messages import JSON_MESSAGES
from tests.fuzz_atheris import ACCEPTED, TARGETS, refusal

ROOT = Path(__file__).resolve().parent.parent

needs_atheris = pytest.mark.skipif(
    importlib.util.find_spec("atheris") is None,
    reason="atheris is not installed: it publishes wheels for CPython on Linux x86_64 only "
    f"(this is {platform.system()} {platform.machine()}, Python {platform.python_version()}); "
    "the regression inputs below run anyway",
)


@needs_atheris
@pytest.mark.parametrize("target", sorted(TARGETS))
def test_the_harness_holds_for_a_bounded_fuzzing_run(target: str, tmp_path: Path) -> None:
    runs = TARGETS[target].runs
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    command = [
        sys.executable,
        "-m",
        "tests.fuzz_atheris",
        target,
        str(tmp_path / "corpus"),
        f"-runs={runs}",
        f"-artifact_prefix={artifacts}/",
        "-timeout=120",  # seconds for one input: a hang, not a slow machine
        "-rss_limit_mb=2048",
    ]
    # the timeout only bounds a hang; libFuzzer stops after `runs` inputs
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900)
    found = sorted(artifacts.iterdir())
    if done.returncode != 0 or found:
        inputs = "\n".join(f"{p.name}: {p.read_bytes()[:300]!r}" for p in found)
        pytest.fail(
            f"{target}: the harness broke (exit {done.returncode})\n{inputs}\n"
            f"replay: python -m tests.fuzz_atheris {target} <input file>\n"
            f"{done.stderr[-4000:]}"
        )
    assert f"Done {runs} runs" in done.stderr, done.stderr[-2000:]
    # coverage came from framewire's instrumented code, not only from the harness loop
    instrumented = re.search(r"instrumented (\d+) functions", done.stderr)
    assert instrumented is not None and int(instrumented.group(1)) > 20, done.stderr[-2000:]
    cov = re.findall(r"cov: (\d+)", done.stderr)
    assert cov and int(cov[-1]) > 10, done.stderr[-2000:]


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_every_seed_passes_its_harness_and_reaches_what_it_accepts(target: str) -> None:
    before = ACCEPTED[target]
    seeds = TARGETS[target].seeds()
    for seed in seeds:
        TARGETS[target].run(seed)
    assert ACCEPTED[target] - before >= max(1, len(seeds) // 2)  # the seeds are valid inputs
    TARGETS[target].run(b"")


# --- what the harnesses found, kept -----------------------------------------------------------


def test_a_refusal_reason_stays_one_printable_line() -> None:
    """A key of the message (here a NUL, a newline and a forged log line) went into the
    reason as it was, so a dead letter's log line could be split or forged."""
    doc = {"schema_version": 1, "command": "status", "\x00\n2024 CRITICAL forged": 1}
    payload = json.dumps(doc).encode()
    with pytest.raises(MessageError) as err:
        decode_json(CommandRequest, payload)
    refusal(err.value)
    assert "\n" not in err.value.reason and "\\x00\\n2024 CRITICAL forged" in err.value.reason
    names = sorted(JSON_MESSAGES)  # the same input, through the harness
    TARGETS["messages"].run(bytes([names.index("CommandRequest"), 1]) + payload)


def test_a_refusal_reason_is_short_whatever_it_quotes() -> None:
    """A frame schema of 1,000 astral characters made a reason of 10,000 (repr escapes
    each one to ten); a huge schema_version did the same in a JSON message."""
    with pytest.raises(MessageError) as err:
        frame_meta_from_properties([("schema", "\U000e0001" * 1000)])
    refusal(err.value)
    assert FRAME_SCHEMA in err.value.reason
    with pytest.raises(MessageError) as err:
        decode_json(LedgerAck, json.dumps({"schema_version": "9" * 100_000}).encode())
    refusal(err.value)
    assert "schema_version '999" in err.value.reason


@pytest.mark.parametrize("chunk", [2, 3, 4, 5])
def test_a_number_cut_by_a_read_is_read_whole(
    chunk: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A chunk that ended inside a number after its integer part ("12." of "12.50") made
    the catalog reader stop at the "." and refuse a valid card-data dump."""
    monkeypatch.setattr(json_stream, "CHUNK", chunk)
    path = tmp_path / "cards.json"
    path.write_text('[12.50, 1e3, -2.5E-2, 0.125, {"price": 9.99}, 7]')
    assert list(json_stream.iter_records(path)) == [12.5, 1000.0, -0.025, 0.125, {"price": 9.99}, 7]
    TARGETS["catalog_json"].run(bytes([1, 0]) + path.read_bytes())  # chunk 2, key "data"


def test_a_catalog_header_that_is_not_utf8_is_a_catalog_error(tmp_path: Path) -> None:
    """Only the rows were decoded inside the error boundary: a bad byte in the header
    raised UnicodeDecodeError, which a reload (it catches CatalogError) let through."""
    path = tmp_path / "catalog.csv"
    path.write_bytes(b"name,set,number,rarity,market_price\x9c\nGalmor,Emberfall,1,Rare,2\n")
    with pytest.raises(CatalogError, match="not valid UTF-8"):
        load_catalog(path)
    TARGETS["catalog_csv"].run(b"\x02" + path.read_bytes())
