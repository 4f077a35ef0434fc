"""`framewire import`: a backlog folder through the real pipeline, resumable, bounded."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import USERS, Pipeline, cli_env, jpeg_bytes, wait_until
from tests.test_pipeline import ledger_rows, observer, wait_online

pytestmark = pytest.mark.integration

RSS_PROBE = (
    "import resource, subprocess, sys\n"
    "code = subprocess.run(sys.argv[1:]).returncode\n"
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
    "sys.exit(code)\n"
)


def import_env(p: Pipeline) -> dict[str, str]:
    return cli_env(
        p.broker,
        "capture-import",
        FRAMEWIRE_DATA_DIR=str(p.root / "import-data"),
        FRAMEWIRE_ACK_TIMEOUT="5",
        FRAMEWIRE_MAX_IN_FLIGHT="16",
    )


def fill(folder: Path, n: int, start: int = 0) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(start, start + n):
        sub = folder / f"batch-{i // 100}"
        sub.mkdir(exist_ok=True)
        (sub / f"img-{i:05d}.jpg").write_bytes(jpeg_bytes(i, size=(64, 48)))


def run_import(
    p: Pipeline, folder: Path, *args: str, env: dict[str, str] | None = None
) -> tuple[int, int, str]:
    """Exit code, peak RSS in KiB, and stderr of one `framewire import` process."""
    cmd = [sys.executable, "-m", "framewire", "import", str(folder), *args]
    out = subprocess.run(
        [sys.executable, "-c", RSS_PROBE, *cmd],
        env={**import_env(p), **(env or {})},
        capture_output=True,
        text=True,
        timeout=600,
    )
    return out.returncode, int(out.stdout.strip().splitlines()[-1]), out.stderr


def started(p: Pipeline) -> None:
    with observer(p) as rec:
        p.start("ledger", "inference")
        wait_online(rec, p, USERS["ledger"], USERS["inference"])


def test_import_sends_a_folder_once_and_resumes_after_a_crash(pipeline: Pipeline) -> None:
    p = pipeline
    started(p)
    folder = p.root / "backlog"
    fill(folder, 300)
    (folder / "broken.jpg").write_bytes(b"not a picture")
    (folder / "big.jpg").write_bytes(jpeg_bytes(7, size=(1200, 900)))
    small_limit = {"FRAMEWIRE_MAX_FRAME_BYTES": "20000"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "framewire", "import", str(folder)],
        env={**import_env(p), **small_limit},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_until(lambda: len(ledger_rows(p.ledger_db)) >= 60, timeout=120, what="partial import")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = len(ledger_rows(p.ledger_db))
    assert partial < 300

    code, _, err = run_import(p, folder, env=small_limit)
    assert code == 1, err  # broken.jpg and big.jpg are quarantined
    rows = ledger_rows(p.ledger_db)
    names = [r["source_name"] for r in rows]
    assert len(names) == 300 and len(set(names)) == 300  # none lost, none sent twice

    # with the limit raised, a plain rerun keeps its verdicts and sends nothing again...
    code, _, err = run_import(p, folder)
    assert code == 1 and len(ledger_rows(p.ledger_db)) == 300
    # ...and --retry-failed looks at the quarantined files afresh: big.jpg now passes
    code, _, err = run_import(p, folder, "--retry-failed")
    assert code == 1, err  # broken.jpg is still not a picture
    names = {r["source_name"] for r in ledger_rows(p.ledger_db)}
    assert len(names) == 301 and "big.jpg" in names and "broken.jpg" not in names


def test_import_memory_does_not_grow_with_the_folder(pipeline: Pipeline) -> None:
    p = pipeline
    started(p)
    small, large = p.root / "small", p.root / "large"
    fill(small, 50)
    fill(large, 1500)
    code, rss_small, err = run_import(p, small)
    assert code == 0, err
    code, rss_large, err = run_import(p, large)
    assert code == 0, err
    assert len(ledger_rows(p.ledger_db)) == 1550
    print(
        f"\nimport peak RSS: 50 files {rss_small // 1024} MiB, 1500 files {rss_large // 1024} MiB"
    )
    # 30x the files; the only growth allowed is noise, not per-file state held in memory
    assert rss_large - rss_small < 40 * 1024, (rss_small, rss_large)


def test_capture_status_counts_states_and_shows_the_oldest_pending(pipeline: Pipeline) -> None:
    p = pipeline
    # no inference or ledger, and capture told to send anyway: frames stay pending
    p.agents["capture"].env["FRAMEWIRE_WAIT_FOR_INFERENCE"] = "false"
    with observer(p) as rec:
        p.start("capture")
        wait_online(rec, p, USERS["capture"])
        for i in range(3):
            (p.captures / f"p{i}.jpg").write_bytes(jpeg_bytes(i))
        (p.captures / "junk.jpg").write_bytes(b"junk")

        def counts() -> dict[str, int]:
            conn = sqlite3.connect(f"file:{p.state_db}?mode=ro", uri=True)
            try:
                return dict(conn.execute("SELECT state, count(*) FROM frames GROUP BY state"))
            except sqlite3.OperationalError:
                return {}
            finally:
                conn.close()

        wait_until(lambda: counts() == {"published": 3, "quarantined": 1}, what="states")
    out = subprocess.run(
        [sys.executable, "-m", "framewire", "capture", "status", "--db", str(p.state_db)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "COLUMNS": "120"},
    )
    assert "published" in out.stdout and "quarantined" in out.stdout
    assert "oldest pending:" in out.stdout and "published, 1 attempt(s)" in out.stdout
