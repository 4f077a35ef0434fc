"""Operations: systemd units, sd_notify, Prometheus metrics, Home Assistant discovery,
commands over MQTT, scheduled jobs and the live views, against the real tools."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import jinja2
import pytest

from framewire.broker_config import free_port
from framewire.samples import sample_catalog_path, write_cards
from framewire.schemas import TopicTree
from tests.conftest import STATION, USERS, Pipeline, cli_env, jpeg_bytes, wait_until
from tests.recorder import Recorder
from tests.test_pipeline import capture_rows, ledger_rows, observer, wait_online
from tests.test_recognition import request

UNITS = Path(__file__).resolve().parent.parent / "systemd"
REQUIRE_TOOLS = os.environ.get("FRAMEWIRE_REQUIRE_TOOLS") == "1"  # set by .ci/run


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        if REQUIRE_TOOLS:
            pytest.fail(f"{name} is not installed")
        pytest.skip(f"{name} is not installed")
    return path


# --- systemd ---------------------------------------------------------------------------------
def installed_units(tmp_path: Path) -> list[Path]:
    """The unit files as an installer writes them: ExecStart pointing at this framewire."""
    exe = shutil.which("framewire") or str(Path(sys.executable).with_name("framewire"))
    out = []
    for unit in sorted(UNITS.iterdir()):
        text = unit.read_text().replace("/opt/framewire/bin/framewire", exe)
        (tmp_path / unit.name).write_text(text)
        out.append(tmp_path / unit.name)
    return out


def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = tool("systemd-analyze")
    units = installed_units(tmp_path)
    assert {u.name for u in units} == {
        "framewire-broker.service",
        "framewire-capture.service",
        "framewire-inference.service",
        "framewire-ledger.service",
        "framewire.target",
    }
    out = subprocess.run(
        [analyze, "verify", "--man=false", *map(str, units)], capture_output=True, text=True
    )
    problems = [line for line in out.stderr.splitlines() if "framewire" in line]
    assert out.returncode == 0 and not problems, out.stderr


@pytest.mark.parametrize("agent", ["capture", "inference", "ledger"])
def test_units_are_hardened_to_an_exposure_of_2_or_lower(tmp_path: Path, agent: str) -> None:
    analyze = tool("systemd-analyze")
    units = {u.name: u for u in installed_units(tmp_path)}
    unit = units[f"framewire-{agent}.service"]
    out = subprocess.run(
        [analyze, "security", "--offline=true", str(unit)], capture_output=True, text=True
    )
    found = re.search(r"Overall exposure level for \S+: ([0-9.]+)", out.stdout + out.stderr)
    assert found, out.stdout + out.stderr
    assert float(found.group(1)) <= 2.0, out.stdout
    text = unit.read_text()
    for needed in ("Type=notify", "WatchdogSec=", "Restart=on-failure", "LoadCredential="):
        assert needed in text
    assert "MemoryMax=" in text
    assert "PASSWORD=" not in text.upper().replace("MQTT_PASSWORD_FILE", "")
    # every per-box value comes from framewire.toml, never from the unit
    env = [line for line in text.splitlines() if line.startswith("Environment")]
    assert env == ["Environment=FRAMEWIRE_CONFIG=/etc/framewire/framewire.toml"]


def test_broker_unit_is_hardened_to_an_exposure_of_2_or_lower(tmp_path: Path) -> None:
    analyze = tool("systemd-analyze")
    unit = {u.name: u for u in installed_units(tmp_path)}["framewire-broker.service"]
    out = subprocess.run(
        [analyze, "security", "--offline=true", str(unit)], capture_output=True, text=True
    )
    found = re.search(r"Overall exposure level for \S+: ([0-9.]+)", out.stdout + out.stderr)
    assert found, out.stdout + out.stderr
    assert float(found.group(1)) <= 2.0, out.stdout


def test_agent_tells_systemd_ready_watchdog_and_stopping(pipeline: Pipeline) -> None:
    p = pipeline
    sock_path = p.root / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(0.2)
    messages: list[str] = []

    def drain() -> None:
        while True:
            try:
                messages.append(sock.recv(4096).decode())
            except TimeoutError:
                return

    ledger = p.agents["ledger"]
    ledger.env.update(NOTIFY_SOCKET=str(sock_path), WATCHDOG_USEC="1000000")
    ledger.start()

    def seen(what: str, n: int = 1) -> bool:
        drain()
        return sum(m == what for m in messages) >= n

    wait_until(lambda: seen("READY=1"), what="READY=1")
    wait_until(lambda: seen("WATCHDOG=1", 3), what="watchdog pings")
    assert ledger.terminate() == 0
    wait_until(lambda: seen("STOPPING=1"), what="STOPPING=1")
    assert messages.index("READY=1") < messages.index("STOPPING=1")
    sock.close()


# --- metrics ---------------------------------------------------------------------------------
def test_each_agent_serves_prometheus_metrics_that_promtool_accepts(pipeline: Pipeline) -> None:
    promtool = tool("promtool")
    p = pipeline
    ports = {}
    for kind, agent in p.agents.items():
        ports[kind] = free_port()
        agent.env["FRAMEWIRE_METRICS_PORT"] = str(ports[kind])
    p.agents["inference"].env["FRAMEWIRE_CATALOG"] = str(sample_catalog_path())
    with observer(p) as rec:
        p.start()
        wait_online(rec, p, *USERS.values())
        write_cards(p.captures, 3)
        (p.captures / "junk.jpg").write_bytes(b"junk")
        wait_until(lambda: len(ledger_rows(p.ledger_db)) == 3, timeout=60, what="3 rows")
    texts = {}
    for kind, port in ports.items():
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
            texts[kind] = r.read().decode()
        check = subprocess.run(
            [promtool, "check", "metrics"], input=texts[kind], capture_output=True, text=True
        )
        assert check.returncode == 0, check.stdout + check.stderr
    cap, inf, led = texts["capture"], texts["inference"], texts["ledger"]
    assert 'framewire_events_total{agent="capture-station-1",event="frames.published"} 3.0' in cap
    assert 'framewire_dead_letters_total{agent="capture-station-1",kind="not_image"} 1.0' in cap
    assert 'framewire_queue_depth{agent="capture-station-1",queue="in_flight"}' in cap
    assert 'framewire_inference_seconds_count{agent="inference"} 3.0' in inf
    assert 'framewire_stage_seconds_count{agent="inference",stage="recognize_card"} 3.0' in inf
    assert 'framewire_model_load_seconds{agent="inference",model="ocr-rec"}' in inf
    assert 'framewire_capture_to_ledger_seconds_count{agent="ledger"} 3.0' in led
    assert 'framewire_connected{agent="ledger"} 1.0' in led


# --- Home Assistant --------------------------------------------------------------------------
def ha_recorder(p: Pipeline) -> Recorder:
    """What Home Assistant would see under its discovery prefix."""
    return Recorder(
        p.broker.port,
        "homeassistant/#",
        username="observer",
        password=p.broker.password("observer"),
    )


def discovery(rec: Recorder, agent: str) -> list[dict[str, object]]:
    return [json.loads(m.payload) for m in rec.on(f"homeassistant/device/framewire_{agent}/config")]


def test_home_assistant_discovery_describes_every_agent_and_answers_its_birth(
    pipeline: Pipeline,
) -> None:
    p = pipeline
    t = TopicTree(p.broker.prefix)
    for agent in p.agents.values():
        agent.env.update(FRAMEWIRE_HA_BIRTH_DELAY="0.5")
    p.agents["inference"].env["FRAMEWIRE_CATALOG"] = str(sample_catalog_path())
    with (
        observer(p) as rec,
        ha_recorder(p) as ha_view,
    ):
        p.start()
        wait_online(rec, p, *USERS.values())
        for agent in USERS.values():
            wait_until(lambda a=agent: discovery(ha_view, a), what=f"{agent} discovery")
        write_cards(p.captures, 2)
        wait_until(lambda: len(ledger_rows(p.ledger_db)) == 2, timeout=60, what="2 rows")
        code, answer = request(p, "ledger", "backup")  # so "Last backup" has a time
        assert code == 0, answer
        time.sleep(1.5)  # a status heartbeat with the results and the backup in it
        env = jinja2.Environment(autoescape=False)
        for agent in USERS.values():
            doc = discovery(ha_view, agent)[-1]
            assert doc["device"]["identifiers"] == [f"framewire_{agent}"]  # type: ignore[index]
            assert doc["origin"]["name"] == "framewire"  # type: ignore[index]
            assert doc["availability"][0]["topic"] == t.availability(agent)  # type: ignore[index]
            components = doc["components"]
            assert isinstance(components, dict)
            status = json.loads(rec.on(t.status(agent))[-1].payload)
            for comp in components.values():
                assert comp["platform"] in {"sensor", "binary_sensor", "image"}
                assert comp["unique_id"].startswith(f"framewire_{agent}")
                if "value_template" in comp:  # every template renders from a real status
                    value = env.from_string(comp["value_template"]).render(value_json=status)
                    assert value not in ("", "None"), (agent, comp["name"], value)
        inference = discovery(ha_view, "inference")[-1]["components"]
        names = {c["name"] for c in inference.values()}  # type: ignore[union-attr]
        assert {
            "Online",
            "Frames per minute",
            "Last card",
            "Last confidence",
            "Model in use",
            "Last frame",
        } <= names
        image = next(c for c in inference.values() if c["platform"] == "image")  # type: ignore[union-attr]
        with Recorder(
            p.broker.port,
            image["image_topic"],
            username="homeassistant",
            password=p.broker.password("homeassistant"),
        ) as late:  # a dashboard opened later still gets the last frame: it is retained
            wait_until(lambda: late.on(image["image_topic"]), what="retained thumbnail")
            thumb = late.on(image["image_topic"])[-1]
            assert thumb.retain and thumb.payload[:3] == b"\xff\xd8\xff"

        before = {a: len(discovery(ha_view, a)) for a in USERS.values()}
        with Recorder(
            p.broker.port, username="homeassistant", password=p.broker.password("homeassistant")
        ) as ha:
            ha.publish("homeassistant/status", b"online")
        for agent in USERS.values():
            wait_until(
                lambda a=agent: len(discovery(ha_view, a)) > before[a], what=f"{agent} again"
            )


def test_home_assistant_discovery_can_be_switched_off(pipeline: Pipeline) -> None:
    p = pipeline
    p.agents["ledger"].env["FRAMEWIRE_HA_DISCOVERY"] = "false"
    with (
        observer(p) as rec,
        ha_recorder(p) as ha_view,
    ):
        p.start("ledger")
        wait_online(rec, p, USERS["ledger"])
        time.sleep(1)
        assert discovery(ha_view, "ledger") == []


# --- commands, jobs, views -------------------------------------------------------------------
def test_pause_resume_replay_backup_and_prune_over_mqtt(pipeline: Pipeline) -> None:
    p = pipeline
    t = TopicTree(p.broker.prefix)
    with observer(p) as rec:
        p.start()
        wait_online(rec, p, *USERS.values())
        code, answer = request(p, USERS["capture"], "pause")
        assert code == 0 and answer["ok"]
        (p.captures / "held.jpg").write_bytes(jpeg_bytes(1))
        wait_until(lambda: any(r["relpath"] == "held.jpg" for r in capture_rows(p.state_db)))
        time.sleep(1)
        assert [r["state"] for r in capture_rows(p.state_db)] == ["seen"]  # recorded, held
        code, answer = request(p, USERS["capture"], "resume")
        assert code == 0
        wait_until(lambda: len(ledger_rows(p.ledger_db)) == 1, what="sent after resume")

        frame_id = ledger_rows(p.ledger_db)[0]["frame_id"]
        results_before = len(rec.on(t.results(STATION)))
        code, answer = request(p, "ledger", "replay", f"frame_id={frame_id}")
        assert code == 0, answer
        wait_until(lambda: len(rec.on(t.results(STATION))) == results_before + 1, what="replay")
        assert len(ledger_rows(p.ledger_db)) == 1  # replaying never adds a row
        code, answer = request(p, "ledger", "replay", "frame_id=01M7Y9QJ12YRKPA99JDVS47ZZA")
        assert code == 1 and "not in the ledger" in str(answer["message"])

        code, answer = request(p, "ledger", "backup")
        assert code == 0
        backup = Path(str(answer["data"]["path"]))  # type: ignore[index]
        assert backup.exists()
        import contextlib
        import sqlite3

        # closing(): a Connection's own `with` commits but does not close
        with contextlib.closing(sqlite3.connect(backup)) as conn:
            assert conn.execute("SELECT count(*) FROM results").fetchone()[0] == 1

        (p.captures / "held.jpg").unlink()  # the operator archived the file
        code, answer = request(p, USERS["capture"], "prune")
        assert code == 0 and answer["message"] == "pruned 0 row(s)"  # younger than 30 days

        code, answer = request(p, "ledger", "status")
        print(answer)
        assert (
            str(answer["data"]["job.backup.next"]).endswith(("+00:00", "Z"))
            or answer["data"]["job.backup.next"]
        )


def test_tail_prints_results_as_they_arrive(pipeline: Pipeline) -> None:
    p = pipeline
    env = cli_env(p.broker, "observer", COLUMNS="200")
    with observer(p) as rec:
        p.start()
        wait_online(rec, p, *USERS.values())
        tail = subprocess.Popen(
            [sys.executable, "-m", "framewire", "tail", "--count", "2"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert tail.stderr is not None
        assert "following results" in tail.stderr.readline()  # subscribed: nothing is missed
        for i in range(2):
            (p.captures / f"t{i}.jpg").write_bytes(jpeg_bytes(i))
        out, _ = tail.communicate(timeout=120)
    lines = out.strip().splitlines()
    assert len(lines) == 2 and all(STATION in line for line in lines)
    assert {"t0.jpg", "t1.jpg"} == {
        next(w for w in line.split() if w.endswith(".jpg")) for line in lines
    }
    status = subprocess.run(
        [sys.executable, "-m", "framewire", "status", "--json"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    agents = json.loads(status.stdout)
    assert {a for a, v in agents.items() if v["availability"] == "online"} >= set(USERS.values())


def test_config_show_masks_secrets(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("hunter2-very-secret")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRAMEWIRE_")}
    env["FRAMEWIRE_MQTT_PASSWORD_FILE"] = str(secret)
    out = subprocess.run(
        [sys.executable, "-m", "framewire", "config", "show", "--agent", "ledger"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    shown = json.loads(out.stdout)["ledger"]
    assert shown["mqtt_password"] == "********" and "hunter2" not in out.stdout
    assert shown["metrics_port"] == 9742
    check = subprocess.run(
        [sys.executable, "-m", "framewire", "config", "check"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0 and check.stdout.count(": ok") == 3
