"""The command line as a new user meets it: `framewire up` (with its own broker and with an
external one), the commands run next to it, Ctrl-C, --version, samples, the quarantine.

Integration tests run `framewire` as real processes against a real Mosquitto; the unit tests
at the top cover pure logic (agent lookup, the kept port, thumbnails left out) and the signal
handling, with real signals."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import importlib.metadata
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from framewire.broker_config import BrokerError, free_port
from framewire.broker_config.embedded import find_mosquitto, port_open
from framewire.cli_agents import AgentNotFoundError, AgentSeen, AgentTarget, resolve
from framewire.cli_common import UpInfo, without_bytes
from framewire.edge_agents.runtime.lifecycle import ForcedStop, SignalStop
from framewire.schemas import TopicTree
from framewire.stack import broker_port, remember_port
from tests.conftest import jpeg_bytes, wait_until
from tests.recorder import Recorder
from tests.test_pipeline import ledger_rows

FRAMEWIRE = [sys.executable, "-m", "framewire"]


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRAMEWIRE_")}
    env.update(PYTHONUNBUFFERED="1", COLUMNS="200", **extra)
    return env


def fw(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*FRAMEWIRE, *args], env=env, capture_output=True, text=True, timeout=timeout
    )


@contextlib.contextmanager
def holding(port: int) -> Iterator[bool]:
    """Listen on 127.0.0.1:`port` for the block, if nobody does; True when it is taken
    (by us or by someone else) for the whole block."""
    sock = socket.socket()
    try:
        sock.bind(("127.0.0.1", port))
        sock.listen()
    except OSError:
        sock.close()
        yield port_open("127.0.0.1", port)
        return
    try:
        yield True
    finally:
        sock.close()


# --- pure logic --------------------------------------------------------------------------------
def test_an_agent_is_found_or_refused_with_the_agents_online_listed() -> None:
    seen = {
        "capture-station-1": AgentSeen("capture-station-1", "online", "capture"),
        "ledger": AgentSeen("ledger", "online", "ledger"),
        "capture-old": AgentSeen("capture-old", "offline", "capture"),
    }
    url = "mqtt://127.0.0.1:1883"
    assert resolve(AgentTarget("ledger", "ledger"), seen, url) == "ledger"
    # a default id that is not online gives way to the one agent of its kind that is
    guess = AgentTarget("capture-myhost", "capture", strict=False, source="the default agent id")
    assert resolve(guess, seen, url) == "capture-station-1"
    # a name the person gave is never swapped for another
    with pytest.raises(AgentNotFoundError) as named:
        resolve(AgentTarget("capture-old", "capture"), seen, url)
    assert "is offline" in str(named.value)
    assert "capture-station-1 (capture)" in str(named.value) and "ledger (ledger)" in str(
        named.value
    )
    with pytest.raises(AgentNotFoundError, match="no agent is online"):
        resolve(AgentTarget("x"), {}, url)


def test_thumbnail_bytes_are_left_out_unless_asked_for() -> None:
    data = base64.b64encode(b"\xff\xd8" + b"x" * 1000).decode()
    row = {"frame_id": "f", "thumbnail": {"width": 2, "height": 3, "data": data}}
    shown = without_bytes(row)
    assert shown["thumbnail"]["data"] == "<1002 bytes omitted: --raw includes them>"
    assert shown["thumbnail"]["width"] == 2 and row["thumbnail"]["data"] == data  # a copy
    assert without_bytes({"frame_id": "f", "thumbnail": None}) == {
        "frame_id": "f",
        "thumbnail": None,
    }


def test_up_info_round_trips_and_a_broken_file_is_ignored(tmp_path: Path) -> None:
    info = UpInfo("mqtt://127.0.0.1:1883", {"observer": tmp_path / "o"}, "fw", {"ledger": "l"})
    info.write(tmp_path / "fresh")  # the data dir need not exist yet
    back = UpInfo.read(tmp_path / "fresh")
    assert back is not None and back.agents == {"ledger": "l"} and back.topic_prefix == "fw"
    assert back.secrets == {"observer": tmp_path / "o"}
    (tmp_path / "fresh" / "up.json").write_text("{not json")
    assert UpInfo.read(tmp_path / "fresh") is None


def test_the_broker_port_is_kept_in_the_data_dir(tmp_path: Path) -> None:
    with holding(1883) as taken:
        assert taken
        first = broker_port(tmp_path, None)
        assert first != 1883  # taken: a free port instead
    remember_port(tmp_path, first)
    assert (tmp_path / "broker" / "port").read_text().strip() == str(first)
    assert broker_port(tmp_path, None) == first  # remembered, even with 1883 free now
    other = free_port()
    assert broker_port(tmp_path, other) == other  # --port wins
    with holding(first), pytest.raises(BrokerError, match=f"port {first} .*remembered in"):
        broker_port(tmp_path, None)


async def test_sigterm_only_drains_and_a_second_ctrl_c_stops_at_once() -> None:
    """Real signals to this process. (ForcedStop is a KeyboardInterrupt: it is caught in
    the coroutine here, since one escaping a task would stop pytest's event loop.)"""

    async def run(first: signal.Signals, said: list[str], stop: asyncio.Event) -> str:
        try:
            with SignalStop(stop, drain_timeout=7, say=said.append):
                os.kill(os.getpid(), first)
                await stop.wait()  # the first signal drains...
                os.kill(os.getpid(), first)  # ...and a second SIGTERM still only drains
                await asyncio.sleep(0.2)
                if first is signal.SIGTERM:
                    assert not said
                    os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C while draining
                await asyncio.sleep(30)  # a long drain, cut short
        except ForcedStop:
            return "forced"
        return "drained"

    said: list[str] = []
    assert await asyncio.wait_for(run(signal.SIGTERM, said, asyncio.Event()), 20) == "forced"
    assert len(said) == 1 and said[0].startswith("stopping at once")

    said = []
    assert await asyncio.wait_for(run(signal.SIGINT, said, asyncio.Event()), 20) == "forced"
    assert "at most 7 s (drain_timeout)" in said[0] and "Ctrl-C again" in said[0]
    assert said[1].startswith("stopping at once")

    # without a second signal the block ends as it would have
    stop = asyncio.Event()
    with SignalStop(stop, drain_timeout=7, say=said.append) as signals:
        os.kill(os.getpid(), signal.SIGTERM)
        await stop.wait()
    assert not signals.forced


# --- small commands ----------------------------------------------------------------------------
def test_version_is_the_package_version() -> None:
    out = fw("--version", env=clean_env())
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"framewire {importlib.metadata.version('framewire')}"


def test_samples_writes_card_photos_the_same_for_the_same_seed(tmp_path: Path) -> None:
    for folder, seed in (("a", "7"), ("b", "7"), ("c", "8")):
        out = fw("samples", str(tmp_path / folder), "--cards", "2", "--seed", seed, env=clean_env())
        assert out.returncode == 0, out.stderr
        assert "wrote 2 sample card(s)" in out.stdout
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert names == ["card-0001.jpg", "card-0002.jpg"]  # no temporary names left behind
    for name in names:
        with Image.open(tmp_path / "a" / name) as img:
            assert img.format == "JPEG" and img.width > 500
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
        assert (tmp_path / "a" / name).read_bytes() != (tmp_path / "c" / name).read_bytes()


def test_capture_quarantine_lists_files_with_their_reasons(tmp_path: Path) -> None:
    from framewire.edge_agents.capture.state import CaptureState, FileVersion

    db = tmp_path / "capture.sqlite3"

    async def fill() -> None:
        async with CaptureState(db) as state:
            for i, (name, reason) in enumerate(
                [("a.jpg", "not an image of an allowed type"), ("b [x].jpg", "over 20 MiB")]
            ):
                await state.record(
                    f"01M8SRY53Z2SKS2JZ65BVASJK{i}",
                    FileVersion(name, 10, 1_000_000_000 + i),
                    sha256=None,
                    state="quarantined",
                    reason=reason,
                    error_kind="not_image",
                    now=1_700_000_000.0 + i,
                )

    asyncio.run(fill())
    table = fw("capture", "quarantine", "--state", str(db), env=clean_env())
    assert table.returncode == 0, table.stderr
    assert "2 quarantined" in table.stdout and "b [x].jpg" in table.stdout
    assert "over 20 MiB" in table.stdout and "2023-11-1" in table.stdout
    listed = json.loads(
        fw("capture", "quarantine", "--db", str(db), "--json", env=clean_env()).stdout
    )
    assert [q["file"] for q in listed] == ["b [x].jpg", "a.jpg"]  # the most recent first
    assert listed[1]["reason"] == "not an image of an allowed type"
    assert listed[1]["quarantined_at"].startswith("2023-11-14T22:13:20")
    neither = fw("capture", "retry", env=clean_env())
    assert neither.returncode == 2 and "--all" in neither.stderr


# --- `framewire up` ----------------------------------------------------------------------------
class UpProcess:
    """A `framewire up` process, its output read as it comes."""

    def __init__(self, env: dict[str, str], *args: str) -> None:
        self.proc = subprocess.Popen(
            [*FRAMEWIRE, "up", *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        self.out: list[str] = []
        self.err: list[str] = []
        self._readers = [
            threading.Thread(target=self._read, args=(self.proc.stdout, self.out), daemon=True),
            threading.Thread(target=self._read, args=(self.proc.stderr, self.err), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _read(stream: object, into: list[str]) -> None:
        for line in stream:  # type: ignore[attr-defined]
            into.append(line)

    def text(self) -> str:
        return "".join(self.out) + "".join(self.err)

    def wait_for(
        self, pattern: str, *, in_err: bool = False, timeout: float = 180
    ) -> re.Match[str]:
        lines = self.err if in_err else self.out

        def found() -> re.Match[str] | None:
            if self.proc.poll() is not None and not any(re.search(pattern, x) for x in lines):
                raise AssertionError(f"up exited ({self.proc.returncode}):\n{self.text()}")
            return next((m for x in list(lines) if (m := re.search(pattern, x))), None)

        wait_until(found, timeout=timeout, what=f"{pattern!r} from up")
        match = found()
        assert match is not None
        return match

    def interrupt(self) -> None:
        self.proc.send_signal(signal.SIGINT)

    def wait(self, timeout: float = 120) -> int:
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.close()
            raise AssertionError(f"up still running {timeout} s later:\n{self.text()}") from None
        self._finish()
        return code

    def _finish(self) -> None:
        for reader in self._readers:
            reader.join(10)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()

    def close(self) -> None:
        """Stop it at once, the way a person would (Ctrl-C twice): killed, it would leave
        its broker running (Mosquitto has a session of its own)."""
        for _ in range(2):
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGINT)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(30)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._finish()


@pytest.fixture
def up_env(tmp_path: Path) -> dict[str, str]:
    captures = tmp_path / "captures"
    captures.mkdir()
    return clean_env(
        FRAMEWIRE_DATA_DIR=str(tmp_path / "data"),
        FRAMEWIRE_WATCH_DIR=str(captures),
        FRAMEWIRE_SETTLE_SECONDS="0.2",
        FRAMEWIRE_METRICS_PORT="0",  # tests run next to each other
        FRAMEWIRE_STATUS_INTERVAL="1",
    )


@pytest.fixture
def up_processes() -> Iterator[list[UpProcess]]:
    started: list[UpProcess] = []
    yield started
    for p in started:
        p.close()


@pytest.fixture
def anonymous_broker(tmp_path: Path) -> Iterator[str]:
    """A plain Mosquitto anyone may use: an external broker framewire did not configure."""
    port = free_port()
    folder = tmp_path / "external-broker"
    folder.mkdir()
    conf = folder / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\n")
    with (folder / "log").open("wb") as log:
        proc = subprocess.Popen(
            [str(find_mosquitto()), "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT
        )
    try:
        wait_until(lambda: port_open("127.0.0.1", port), timeout=10, what="mosquitto listening")
        yield f"mqtt://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.mark.integration
def test_up_with_an_external_broker_on_a_fresh_data_dir_sends_only_once_all_are_online(
    anonymous_broker: str, up_env: dict[str, str], up_processes: list[UpProcess], tmp_path: Path
) -> None:
    """A backlog already in the folder goes out once inference and the ledger are online:
    nothing is published to a share group with no member yet (which would wait for the
    resend: ack_timeout is 600 s here, so a lost frame would fail the test)."""
    prefix = f"t{uuid.uuid4().hex[:10]}"
    t = TopicTree(prefix)
    captures = Path(up_env["FRAMEWIRE_WATCH_DIR"])
    for i in range(2):
        (captures / f"backlog-{i}.jpg").write_bytes(jpeg_bytes(i))
    data = Path(up_env["FRAMEWIRE_DATA_DIR"])
    assert not data.exists()
    env = {
        **up_env,
        "FRAMEWIRE_BROKER_URL": anonymous_broker,
        "FRAMEWIRE_TOPIC_PREFIX": prefix,
        "FRAMEWIRE_ACK_TIMEOUT": "600",
    }
    port = int(anonymous_broker.rsplit(":", 1)[1])
    with Recorder(port, t.all_availability(), t.all_frames()) as rec:
        up = UpProcess(env)
        up_processes.append(up)
        up.wait_for("all agents online")
        wait_until(lambda: len(ledger_rows(data / "ledger.sqlite3")) == 2, timeout=180)
        seen = list(rec.messages)
    up.interrupt()
    assert up.wait() == 0, up.text()
    assert "draining" in "".join(up.err)

    def first(topic: str, payload: bytes | None = b"online") -> int:
        return next(
            i
            for i, m in enumerate(seen)
            if m.topic == topic and (payload is None or m.payload == payload) and not m.retain
        )

    ledger = first(t.availability("ledger"))
    inference = first(t.availability("inference-station-1"))
    capture = first(t.availability("capture-station-1"))
    frame = first(t.frames("station-1"), payload=None)
    assert ledger < capture and inference < capture < frame
    info = json.loads((data / "up.json").read_text())
    assert info["broker_url"] == anonymous_broker
    assert info["agents"]["capture"] == "capture-station-1"


def _up_port(up: UpProcess) -> int:
    return int(up.wait_for(r"framewire up: broker mqtt://127\.0\.0\.1:(\d+)").group(1))


@pytest.mark.integration
def test_up_keeps_its_broker_port_across_restarts(
    up_env: dict[str, str], up_processes: list[UpProcess], tmp_path: Path
) -> None:
    ports = []
    with holding(1883) as taken:
        assert taken  # 1883 busy: `up` picks another port the first time, then keeps it
        for _ in range(2):
            up = UpProcess(up_env)
            up_processes.append(up)
            ports.append(_up_port(up))
            up.interrupt()  # while the agents start: stops cleanly too
            assert up.wait() == 0, up.text()
        remembered = tmp_path / "data" / "broker" / "port"
        assert ports[0] == ports[1] != 1883
        assert remembered.read_text().strip() == str(ports[0])
        busy = fw("up", "--port", "1883", env=up_env)
    assert busy.returncode == 3 and "port 1883 (--port) is in use" in busy.stderr, busy.stderr
    assert "Traceback" not in busy.stderr


@pytest.mark.integration
def test_commands_find_the_agents_up_runs(
    up_env: dict[str, str], up_processes: list[UpProcess], tmp_path: Path
) -> None:
    env = up_env  # no agent named anywhere: each command finds its agent from up.json
    up = UpProcess(env, "--port", str(free_port()))
    up_processes.append(up)
    up.wait_for("all agents online")
    captures = Path(env["FRAMEWIRE_WATCH_DIR"])
    data = Path(env["FRAMEWIRE_DATA_DIR"])

    paused = fw("capture", "pause", env=env)
    assert paused.returncode == 0, paused.stderr
    assert json.loads(paused.stdout)["agent_id"] == "capture-station-1"
    # a wrong name fails at once, naming the agents that are online (not after --wait)
    wrong = fw(
        "capture", "pause", "--agent", "capture-nobody", "--wait", "600", env=env, timeout=60
    )
    assert wrong.returncode == 1
    for agent in ("capture-station-1 (capture)", "inference-station-1", "ledger (ledger)"):
        assert agent in wrong.stderr, wrong.stderr
    assert fw("capture", "resume", env=env).returncode == 0

    (captures / "good.jpg").write_bytes(jpeg_bytes(5))
    (captures / "junk.jpg").write_bytes(b"no picture at all")
    wait_until(lambda: len(ledger_rows(data / "ledger.sqlite3")) == 1, timeout=180)
    frame_id = ledger_rows(data / "ledger.sqlite3")[0]["frame_id"]

    listed = fw("capture", "quarantine", "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    [junk] = json.loads(listed.stdout)
    assert junk["file"] == "junk.jpg" and "not an image" in junk["reason"]
    table = fw("capture", "quarantine", env=env).stdout
    assert "junk.jpg" in table and "not an image" in table

    shown = fw("ledger", "show", frame_id, env=env)
    assert shown.returncode == 0, shown.stderr
    assert not re.search(r"[A-Za-z0-9+/=]{200,}", shown.stdout)  # no base64 on the terminal
    assert "bytes omitted" in json.loads(shown.stdout)["thumbnail"]["data"]
    raw = json.loads(fw("ledger", "show", frame_id, "--raw", env=env).stdout)
    assert base64.b64decode(raw["thumbnail"]["data"]).startswith(b"\xff\xd8")

    replayed = fw("ledger", "replay", frame_id, env=env)
    assert replayed.returncode == 0, replayed.stderr
    retry = fw("capture", "retry", "junk.jpg", env=env)
    assert retry.returncode == 0, retry.stderr
    assert json.loads(retry.stdout)["data"] == {"resent": 0, "rescanned": 1}
    # looked at afresh, still not an image: quarantined again, with its reason
    wait_until(
        lambda: (
            [q["file"] for q in json.loads(fw("capture", "quarantine", "--json", env=env).stdout)]
            == ["junk.jpg"]
        ),
        timeout=60,
    )

    status = fw("status", "--json", env=env)
    online = {a for a, v in json.loads(status.stdout).items() if v["availability"] == "online"}
    assert online >= {"capture-station-1", "inference-station-1", "ledger"}

    # a one-shot import next to `up` leaves the agents' metrics ports alone, and its
    # progress bar is not interleaved with log lines
    backlog = tmp_path / "backlog"
    backlog.mkdir()
    for i in range(3):
        (backlog / f"old-{i}.jpg").write_bytes(jpeg_bytes(20 + i))
    import_env = {k: v for k, v in env.items() if k != "FRAMEWIRE_METRICS_PORT"}
    with holding(9741) as taken:
        assert taken  # the capture agent's default metrics port
        imported = fw("import", str(backlog), env=import_env, timeout=300)
    assert imported.returncode == 0, imported.stderr
    assert "3 ledgered, 0 quarantined" in imported.stdout
    assert "already in use" not in imported.stderr and "metrics" not in imported.stderr
    assert not re.search(r"\b(INFO|WARNING|ERROR)\b", imported.stderr), imported.stderr

    up.interrupt()
    assert up.wait() == 0, up.text()


@pytest.mark.integration
def test_ctrl_c_twice_stops_a_busy_up_at_once_and_nothing_is_lost(
    up_env: dict[str, str], up_processes: list[UpProcess], tmp_path: Path
) -> None:
    cards = 8
    staging = tmp_path / "staging"
    made = fw("samples", str(staging), "--cards", str(cards), "--seed", "3", env=up_env)
    assert made.returncode == 0, made.stderr
    env = {
        **up_env,
        "FRAMEWIRE_DRAIN_TIMEOUT": "600",  # a drain Ctrl-C must not wait out
        "FRAMEWIRE_QUEUE_SIZE": "64",  # every frame waits at inference: the drain is long
        "FRAMEWIRE_ACK_TIMEOUT": "5",  # after the restart, what was in flight goes again soon
    }
    captures = Path(env["FRAMEWIRE_WATCH_DIR"])
    ledger_db = Path(env["FRAMEWIRE_DATA_DIR"]) / "ledger.sqlite3"
    port = str(free_port())
    up = UpProcess(env, "--port", port)
    up_processes.append(up)
    up.wait_for("all agents online")
    for card in staging.iterdir():
        card.rename(captures / card.name)
    wait_until(lambda: len(ledger_rows(ledger_db)) >= 1, timeout=180, what="busy")
    up.interrupt()
    up.wait_for(r"draining .* at most 600 s .* Ctrl-C again", in_err=True, timeout=60)
    up.interrupt()
    assert up.wait(timeout=60) == 130, up.text()  # not the 600 s drain
    assert "stopping at once" in "".join(up.err)
    assert len(ledger_rows(ledger_db)) < cards

    again = UpProcess(env)  # the same data dir: the same port, and the rest is sent
    up_processes.append(again)
    assert _up_port(again) == int(port)
    wait_until(lambda: len(ledger_rows(ledger_db)) == cards, timeout=300, what="every card")
    again.interrupt()
    assert again.wait() == 0, again.text()
    names = [r["source_name"] for r in ledger_rows(ledger_db)]
    assert sorted(names) == sorted(p.name for p in captures.iterdir())  # once each
