"""End to end: `framewire demo` runs the whole pipeline and exits 0 only when complete."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from framewire.schemas import TopicTree
from tests.recorder import Recorder
from tests.test_cli import anonymous_broker  # noqa: F401 - a fixture

pytestmark = pytest.mark.integration


def test_demo_ledgers_every_sample_card(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRAMEWIRE_")}
    out = subprocess.run(
        [sys.executable, "-m", "framewire", "demo", "--cards", "6", "--keep", str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "every frame is in the ledger exactly once" in out.stdout
    assert out.stdout.count("ledgered card-") == 6
    assert len(list((tmp_path / "captures").glob("card-*.jpg"))) == 6  # originals kept
    exported = subprocess.run(
        [
            sys.executable,
            "-m",
            "framewire",
            "ledger",
            "export",
            "-f",
            "csv",
            "--db",
            str(tmp_path / "data" / "ledger.sqlite3"),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert len(exported.stdout.splitlines()) == 7


def test_demo_writes_its_cards_once_every_agent_is_online(
    anonymous_broker: str,  # noqa: F811 - the fixture
    tmp_path: Path,
) -> None:
    """On a first demo, inference came online seconds after capture, and the first frames
    went to a share group with no member yet, to be ledgered only at the resend 60 s
    later. Now the cards are written once all three agents have said they are online;
    with a resend after 600 s, a frame lost that way would fail the demo's 200 s wait."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRAMEWIRE_")}
    env.update(FRAMEWIRE_BROKER_URL=anonymous_broker, FRAMEWIRE_ACK_TIMEOUT="600")
    t = TopicTree()  # the demo's own prefix
    port = int(anonymous_broker.rsplit(":", 1)[1])
    with Recorder(port, t.all_availability(), t.all_frames()) as rec:
        out = subprocess.run(
            [*[sys.executable, "-m", "framewire", "demo"], "--cards", "3", "--timeout", "200"],
            env=env,
            capture_output=True,
            text=True,
            timeout=400,
        )
        seen = list(rec.messages)
    assert out.returncode == 0, out.stdout + out.stderr
    live = [m for m in seen if not m.retain]
    first_frame = next(i for i, m in enumerate(live) if m.topic.startswith(f"{t.prefix}/frames/"))
    online_before = {
        t.segment(m.topic, 1)
        for m in live[:first_frame]
        if m.topic.endswith("/availability") and m.payload == b"online"
    }
    assert online_before == {"capture-station-1", "inference-station-1", "ledger"}
    assert sum(m.topic.startswith(f"{t.prefix}/frames/") for m in live) == 3  # none resent
