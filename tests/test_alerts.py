"""The Prometheus alerting rules: the file `framewire metrics rules` writes passes
`promtool check rules`, `promtool test rules` makes every alert fire when it should and
stay silent when it should not, and every metric the rules ask for is one the real agents
export. The memory ceiling is read from cgroup files laid out as the kernel does."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from framewire.broker_config import free_port
from framewire.edge_agents.runtime import memory
from framewire.edge_agents.runtime.alerts import (
    NOT_PENDING,
    PENDING_QUEUES,
    WORK_EVENTS,
    Alert,
    alerts,
    render,
    rules,
)
from framewire.edge_agents.runtime.memory import MemoryCeiling, memory_ceiling, resident_bytes
from framewire.edge_agents.runtime.metrics import MemoryCollector
from tests.conftest import STATION, USERS, Pipeline, jpeg_bytes, wait_until
from tests.test_pipeline import ledger_rows, observer, wait_online

REQUIRE_TOOLS = os.environ.get("FRAMEWIRE_REQUIRE_TOOLS") == "1"  # set by .ci/run
FRAMEWIRE = [sys.executable, "-m", "framewire"]
ALERTS = {a.name: a for a in alerts()}


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        if REQUIRE_TOOLS:
            pytest.fail("promtool is not installed")
        pytest.skip("promtool is not installed")
    return path


def written_rules(tmp_path: Path) -> Path:
    """The rule file as the command writes it."""
    path = tmp_path / "framewire.rules.yml"
    out = subprocess.run(
        [*FRAMEWIRE, "metrics", "rules", "--output", str(path)], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert f"wrote {len(ALERTS)} alerting rules to {path}" in out.stderr
    return path


# --- the rule file ---------------------------------------------------------------------------
def test_the_command_writes_rules_that_promtool_accepts(tmp_path: Path) -> None:
    tool = promtool()
    path = written_rules(tmp_path)
    check = subprocess.run([tool, "check", "rules", str(path)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in check.stdout
    stdout = subprocess.run([*FRAMEWIRE, "metrics", "rules"], capture_output=True, text=True)
    assert stdout.returncode == 0
    assert stdout.stdout == path.read_text() == render()


def test_the_command_says_when_it_cannot_write(tmp_path: Path) -> None:
    target = tmp_path / "no such folder" / "framewire.rules.yml"
    out = subprocess.run(
        [*FRAMEWIRE, "metrics", "rules", "-o", str(target)], capture_output=True, text=True
    )
    assert out.returncode == 1
    assert "cannot write" in out.stderr and "No such file or directory" in out.stderr
    assert not target.parent.exists()


def test_the_rule_file_reads_back_as_the_rules_it_was_written_from() -> None:
    yaml = pytest.importorskip("yaml")
    assert yaml.safe_load(render()) == rules()


def test_every_alert_has_a_severity_and_tells_the_operator_which_agent() -> None:
    assert len(ALERTS) == 9
    for alert in ALERTS.values():
        rule = alert.rule()
        assert rule["for"] and alert.severity in ("warning", "critical")
        assert "{{ $labels.agent }}" in alert.description, alert.name
        assert "$value" not in alert.description  # rendered by label only (see below)


# --- promtool test rules ---------------------------------------------------------------------
SCRAPE = {"job": "framewire"}
CAPTURE_A = {"agent": "capture-a", "instance": "capture-a:9741", **SCRAPE}
CAPTURE_B = {"agent": "capture-b", "instance": "capture-b:9741", **SCRAPE}
CAPTURE_C = {"agent": "capture-c", "instance": "capture-c:9741", **SCRAPE}
INFERENCE_A = {"agent": "inference-a", "instance": "inference-a:9743", **SCRAPE}
INFERENCE_B = {"agent": "inference-b", "instance": "inference-b:9743", **SCRAPE}
INFERENCE_C = {"agent": "inference-c", "instance": "inference-c:9743", **SCRAPE}
LEDGER = {"agent": "ledger", "instance": "ledger:9742", **SCRAPE}
LEDGER_B = {"agent": "ledger-b", "instance": "ledger-b:9742", **SCRAPE}


def series(name: str, labels: dict[str, str], values: str) -> dict[str, str]:
    inner = ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return {"series": f"{name}{{{inner}}}", "values": values}


@dataclass
class Case:
    """One alert's input series; at `at`, exactly the alerts `fires` (labels, summary) fire,
    and at `early` (its condition true, its `for` not yet elapsed) none does."""

    alert: str
    input_series: list[dict[str, str]]
    fires: list[tuple[dict[str, str], str]]
    at: str = "15m"
    early: str = "3m"
    silent: list[str] = field(default_factory=list)  # agents in the input that must not fire


def describe(alert: Alert, labels: dict[str, str]) -> str:
    return re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels[m.group(1)], alert.description)


CASES = [
    Case(
        "FramewireSlowInference",
        [
            # 20.5 s per frame, one frame a minute
            series("framewire_inference_seconds_sum", INFERENCE_A, "0+20.5x20"),
            series("framewire_inference_seconds_count", INFERENCE_A, "0+1x20"),
            # 5 s per frame
            series("framewire_inference_seconds_sum", INFERENCE_B, "0+5x20"),
            series("framewire_inference_seconds_count", INFERENCE_B, "0+1x20"),
            # no frames at all
            series("framewire_inference_seconds_sum", INFERENCE_C, "0x20"),
            series("framewire_inference_seconds_count", INFERENCE_C, "0x20"),
        ],
        [(INFERENCE_A, "inference-a takes 20.5s per frame")],
        silent=["inference-b", "inference-c"],
    ),
    Case(
        "FramewireFramesLedgeredLate",
        [
            series("framewire_capture_to_ledger_seconds_sum", LEDGER, "0+30.5x30"),
            series("framewire_capture_to_ledger_seconds_count", LEDGER, "0+1x30"),
            series("framewire_capture_to_ledger_seconds_sum", LEDGER_B, "0+2x30"),
            series("framewire_capture_to_ledger_seconds_count", LEDGER_B, "0+1x30"),
        ],
        [(LEDGER, "frames reach ledger 30.5s after capture")],
        at="20m",
        early="8m",
        silent=["ledger-b"],
    ),
    Case(
        "FramewireDeadLetters",
        [
            # 1 refused in 10 handled
            series("framewire_dead_letters_total", {**CAPTURE_A, "kind": "not_image"}, "0+1x20"),
            series("framewire_events_total", {**CAPTURE_A, "event": "frames.published"}, "0+9x20"),
            # 1 in 100
            series("framewire_dead_letters_total", {**CAPTURE_B, "kind": "not_image"}, "0+1x20"),
            series("framewire_events_total", {**CAPTURE_B, "event": "frames.published"}, "0+99x20"),
            # everything refused: there is no work counter at all; requests are not work
            series("framewire_dead_letters_total", {**CAPTURE_C, "kind": "truncated"}, "0+2x20"),
            series("framewire_events_total", {**CAPTURE_C, "event": "requests"}, "0+50x20"),
            # the ledger: 1 in 25, over two kinds
            series("framewire_dead_letters_total", {**LEDGER, "kind": "schema_invalid"}, "0+1x20"),
            series("framewire_events_total", {**LEDGER, "event": "results.ledgered"}, "0+24x20"),
            # inference with no dead letter at all
            series("framewire_events_total", {**INFERENCE_A, "event": "frames.received"}, "0+9x20"),
        ],
        [
            (CAPTURE_A, "capture-a refuses 10% of its input"),
            (CAPTURE_C, "capture-c refuses 100% of its input"),
        ],
        silent=["capture-b", "ledger", "inference-a"],
    ),
    Case(
        "FramewireQueueDeep",
        [
            series("framewire_queue_depth", {**CAPTURE_A, "queue": "watcher_pending"}, "150x20"),
            series("framewire_queue_depth", {**CAPTURE_A, "queue": "in_flight"}, "32x20"),
            series("framewire_queue_depth", {**INFERENCE_A, "queue": "frames_waiting"}, "8x20"),
            # a cache's size is not work waiting
            series("framewire_queue_depth", {**INFERENCE_B, "queue": "cache_entries"}, "5000x20"),
        ],
        [
            (
                {**CAPTURE_A, "queue": "watcher_pending"},
                "watcher_pending of capture-a holds 150 items",
            )
        ],
        silent=["inference-a", "inference-b"],
    ),
    Case(
        "FramewireAgentDown",
        [
            # scraped for 10 minutes, then not any more (the scrape fails: stale)
            series("framewire_uptime_seconds", LEDGER, "0+60x10 stale"),
            series("framewire_uptime_seconds", CAPTURE_A, "0+60x30"),
        ],
        [(LEDGER, "ledger is down")],
        at="20m",
        early="12m",
        silent=["capture-a"],
    ),
    Case(
        "FramewireAgentOffline",
        [
            series("framewire_connected", CAPTURE_A, "0x10"),
            series("framewire_connected", CAPTURE_B, "1 1 0 1 1 1 1 1 1 1 1"),  # one blip
            series("framewire_connected", LEDGER, "1x10"),
        ],
        [(CAPTURE_A, "capture-a is not connected to the broker")],
        at="10m",
        early="1m",
        silent=["capture-b", "ledger"],
    ),
    Case(
        "FramewireAgentDegraded",
        [
            series("framewire_degraded", LEDGER, "1x10"),
            series("framewire_degraded", CAPTURE_A, "0 0 1 0 0 0 0 0 0 0 0"),
        ],
        [(LEDGER, "ledger is degraded")],
        at="10m",
        early="1m",
        silent=["capture-a"],
    ),
    Case(
        "FramewireNoInferenceOnline",
        [
            series(
                "framewire_inference_agents_online", {**CAPTURE_A, "station": "station-1"}, "0x10"
            ),
            series("framewire_connected", CAPTURE_A, "1x10"),
            series(
                "framewire_inference_agents_online", {**CAPTURE_B, "station": "station-2"}, "2x10"
            ),
            series("framewire_connected", CAPTURE_B, "1x10"),
            # off the broker itself: FramewireAgentOffline says so, this one does not
            series(
                "framewire_inference_agents_online", {**CAPTURE_C, "station": "station-3"}, "0x10"
            ),
            series("framewire_connected", CAPTURE_C, "0x10"),
        ],
        [
            (
                {**CAPTURE_A, "station": "station-1"},
                "no inference agent is online for station station-1",
            )
        ],
        at="10m",
        early="1m",
        silent=["capture-b", "capture-c"],
    ),
    Case(
        "FramewireMemoryCeiling",
        [
            # past the soft ceiling (MemoryHigh=1G)
            series("framewire_memory_bytes", INFERENCE_A, "1200000000x10"),
            series(
                "framewire_memory_ceiling_bytes", {**INFERENCE_A, "limit": "soft"}, "1073741824x10"
            ),
            series(
                "framewire_memory_ceiling_bytes", {**INFERENCE_A, "limit": "hard"}, "1610612736x10"
            ),
            # over 90 % of the hard one (MemoryMax=512M)
            series("framewire_memory_bytes", CAPTURE_A, "500000000x10"),
            series(
                "framewire_memory_ceiling_bytes", {**CAPTURE_A, "limit": "hard"}, "536870912x10"
            ),
            # well under it
            series("framewire_memory_bytes", LEDGER, "100000000x10"),
            series("framewire_memory_ceiling_bytes", {**LEDGER, "limit": "hard"}, "536870912x10"),
            # no ceiling at all
            series("framewire_memory_bytes", CAPTURE_B, "900000000x10"),
        ],
        [
            (INFERENCE_A, "inference-a holds 1.118GiB, at its memory ceiling"),
            (CAPTURE_A, "capture-a holds 476.8MiB, at its memory ceiling"),
        ],
        at="10m",
        early="4m",
        silent=["ledger", "capture-b"],
    ),
]


def expected_alert(alert: Alert, labels: dict[str, str], summary: str) -> dict[str, object]:
    return {
        "exp_labels": {**labels, "severity": alert.severity},
        "exp_annotations": {"summary": summary, "description": describe(alert, labels)},
    }


def unit_tests(rule_file: Path) -> dict[str, Any]:
    tests = []
    for case in CASES:
        alert = ALERTS[case.alert]
        expected = [expected_alert(alert, labels, summary) for labels, summary in case.fires]
        tests.append(
            {
                "name": case.alert,
                "interval": "1m",
                "input_series": case.input_series,
                "alert_rule_test": [
                    {"eval_time": case.early, "alertname": case.alert, "exp_alerts": []},
                    {"eval_time": case.at, "alertname": case.alert, "exp_alerts": expected},
                ],
            }
        )
    return {"rule_files": [str(rule_file)], "evaluation_interval": "1m", "tests": tests}


def agent_of(selector: str) -> str:
    found = re.search(r'agent="([^"]+)"', selector)
    assert found, selector
    return found.group(1)


def test_every_alert_has_a_case_that_fires_and_one_that_stays_silent() -> None:
    assert [c.alert for c in CASES] == list(ALERTS)
    for case in CASES:
        firing = {labels["agent"] for labels, _ in case.fires}
        seen = {agent_of(s["series"]) for s in case.input_series}
        assert firing and case.silent, case.alert
        assert set(case.silent) == seen - firing, case.alert


def test_promtool_unit_tests_fire_each_alert_and_only_when_they_should(tmp_path: Path) -> None:
    tool = promtool()
    tests = tmp_path / "framewire.rules.test.yml"
    tests.write_text(json.dumps(unit_tests(written_rules(tmp_path)), indent=2))  # JSON is YAML
    out = subprocess.run([tool, "test", "rules", str(tests)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout


def test_promtool_unit_tests_fail_when_an_alert_stays_silent(tmp_path: Path) -> None:
    """The tests above can fail: here one expects an alert for a queue under the limit."""
    tool = promtool()
    doc = unit_tests(written_rules(tmp_path))
    queue = next(t for t in doc["tests"] if t["name"] == "FramewireQueueDeep")
    labels = {**INFERENCE_A, "queue": "frames_waiting"}
    wrong = expected_alert(
        ALERTS["FramewireQueueDeep"], labels, "frames_waiting of inference-a holds 8 items"
    )
    queue["alert_rule_test"][1]["exp_alerts"].append(wrong)
    tests = tmp_path / "wrong.test.yml"
    tests.write_text(json.dumps(doc))
    out = subprocess.run([tool, "test", "rules", str(tests)], capture_output=True, text=True)
    assert out.returncode == 1
    assert "FramewireQueueDeep" in out.stdout + out.stderr


# --- what the agents export ------------------------------------------------------------------
CGROUP = "/system.slice/framewire.slice/framewire-agent.service"


def fake_cgroups(root: Path, *, hard: str = "max", soft: str = "max", v1: bool = False) -> None:
    """/proc/self and /sys/fs/cgroup as the kernel lays them out, under `root`."""
    proc = root / "proc" / "self"
    proc.mkdir(parents=True)
    (proc / "statm").write_text("250000 12345 3000 500 0 40000 0\n")
    cgroups = root / "cgroup"
    if v1:
        (proc / "cgroup").write_text(f"5:memory:{CGROUP}\n1:cpu,cpuacct:{CGROUP}\n0::{CGROUP}\n")
        leaf = cgroups / "memory" / CGROUP.lstrip("/")
        leaf.mkdir(parents=True)
        (leaf / "memory.limit_in_bytes").write_text(f"{hard}\n")
        (cgroups / "memory" / "memory.limit_in_bytes").write_text("9223372036854771712\n")
        return
    (proc / "cgroup").write_text(f"0::{CGROUP}\n")
    leaf = cgroups / CGROUP.lstrip("/")
    leaf.mkdir(parents=True)
    for name, value in (("memory.max", hard), ("memory.high", soft)):
        (leaf / name).write_text(f"{value}\n")
    # the slice above sets a lower hard ceiling than the service's own
    (leaf.parent / "memory.max").write_text("805306368\n")
    (leaf.parent / "memory.high").write_text("max\n")


def test_the_memory_ceiling_is_the_lowest_one_the_cgroups_set(tmp_path: Path) -> None:
    fake_cgroups(tmp_path, hard="1610612736", soft="1073741824")
    read = memory_ceiling(tmp_path / "proc", tmp_path / "cgroup")
    assert read == MemoryCeiling(hard=805306368, soft=1073741824)
    assert resident_bytes(tmp_path / "proc") == 12345 * os.sysconf("SC_PAGE_SIZE")


def test_max_is_no_memory_ceiling(tmp_path: Path) -> None:
    fake_cgroups(tmp_path)
    (tmp_path / "cgroup" / CGROUP.lstrip("/")).parent.joinpath("memory.max").write_text("max\n")
    assert memory_ceiling(tmp_path / "proc", tmp_path / "cgroup") == MemoryCeiling()


def test_cgroup_v1_limits_count_and_its_unlimited_does_not(tmp_path: Path) -> None:
    fake_cgroups(tmp_path, hard="536870912", v1=True)
    assert memory_ceiling(tmp_path / "proc", tmp_path / "cgroup") == MemoryCeiling(hard=536870912)
    # a container that sees only its own cgroup, at the mount, with no limit
    shutil.rmtree(tmp_path / "cgroup" / "memory" / "system.slice")
    assert memory_ceiling(tmp_path / "proc", tmp_path / "cgroup") == MemoryCeiling()


def test_no_proc_no_memory_figures(tmp_path: Path) -> None:
    assert resident_bytes(tmp_path) is None
    assert memory_ceiling(tmp_path, tmp_path) == MemoryCeiling()


def exposition(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    found: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, []).append((sample.labels, sample.value))
    return found


def test_memory_and_its_ceiling_are_exported_as_the_cgroup_sets_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_cgroups(tmp_path, hard="1610612736", soft="1073741824")
    monkeypatch.setattr(memory, "PROC", tmp_path / "proc")
    monkeypatch.setattr(memory, "CGROUPS", tmp_path / "cgroup")
    registry = CollectorRegistry()
    registry.register(MemoryCollector("inference-a"))
    found = exposition(generate_latest(registry).decode())
    assert found["framewire_memory_bytes"] == [
        ({"agent": "inference-a"}, 12345.0 * os.sysconf("SC_PAGE_SIZE"))
    ]
    assert sorted(found["framewire_memory_ceiling_bytes"], key=str) == [
        ({"agent": "inference-a", "limit": "hard"}, 805306368.0),
        ({"agent": "inference-a", "limit": "soft"}, 1073741824.0),
    ]
    # no ceiling: nothing about one, not a ceiling of 0
    (tmp_path / "cgroup" / "system.slice" / "framewire.slice" / "memory.max").write_text("max")
    (tmp_path / "cgroup" / CGROUP.lstrip("/") / "memory.max").write_text("max")
    (tmp_path / "cgroup" / CGROUP.lstrip("/") / "memory.high").write_text("max")
    found = exposition(generate_latest(registry).decode())
    assert "framewire_memory_ceiling_bytes" not in found
    assert "framewire_memory_bytes" in found


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        return str(r.read().decode())


@pytest.mark.integration
def test_every_metric_the_rules_use_is_one_the_running_agents_export(pipeline: Pipeline) -> None:
    """Real agent processes on a real broker, scraped over HTTP while frames go through."""
    tool = promtool()
    p = pipeline
    ports = {}
    for kind, agent in p.agents.items():
        ports[kind] = free_port()
        agent.env["FRAMEWIRE_METRICS_PORT"] = str(ports[kind])
    with observer(p) as rec:
        p.start()
        wait_online(rec, p, *USERS.values())
        for i in range(2):
            (p.captures / f"frame-{i}.jpg").write_bytes(jpeg_bytes(i))
        (p.captures / "junk.jpg").write_bytes(b"junk")
        wait_until(lambda: len(ledger_rows(p.ledger_db)) == 2, timeout=60, what="2 rows")

        def inference_online() -> float:
            found = exposition(scrape(ports["capture"]))["framewire_inference_agents_online"]
            assert [labels for labels, _ in found] == [
                {"agent": USERS["capture"], "station": STATION}
            ]
            return found[0][1]

        wait_until(lambda: inference_online() == 1, what="capture to see inference online")
        texts = {kind: scrape(port) for kind, port in ports.items()}
        assert p.agents["inference"].terminate() == 0
        wait_until(lambda: inference_online() == 0, what="capture to see inference gone")
    scraped = {kind: exposition(text) for kind, text in texts.items()}
    for kind, text in texts.items():
        check = subprocess.run(
            [tool, "check", "metrics"], input=text, capture_output=True, text=True
        )
        assert check.returncode == 0, (kind, check.stdout + check.stderr)
    exported_names = {name for names in scraped.values() for name in names}
    used = {m for a in ALERTS.values() for m in re.findall(r"\bframewire_\w+", a.expr)}
    if memory_ceiling() == MemoryCeiling():  # this box's cgroup sets none; nor do the agents'
        used.discard("framewire_memory_ceiling_bytes")
    assert len(used) >= 10
    assert used <= exported_names, sorted(used - exported_names)
    for kind, names in scraped.items():  # every alert groups by agent
        for name in used & set(names):
            assert all(labels.get("agent") == USERS[kind] for labels, _ in names[name])
    # the dead-letter ratio is over each agent's own work counter
    for kind, names in scraped.items():
        events = {labels["event"] for labels, _ in names["framewire_events_total"]}
        assert len(events & set(WORK_EVENTS)) == 1, (kind, sorted(events))
    # every gauge is a queue of work waiting or is named as not one
    queues = {
        labels["queue"]
        for names in scraped.values()
        for labels, _ in names.get("framewire_queue_depth", [])
    }
    assert queues == set(PENDING_QUEUES) | set(NOT_PENDING)
    assert not set(PENDING_QUEUES) & set(NOT_PENDING)
