"""Home Assistant discovery, checked against Home Assistant's own rules (tests/ha_rules.py).

The tests take each agent's retained discovery message off a real broker, as the
`homeassistant` user, check every component against the rules of its platform, then render
every value from the retained message on its state topic the way Home Assistant would, and
watch what Home Assistant would show when an agent dies or restarts.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any, cast

from framewire.edge_agents.runtime.homeassistant import Fact, StoredFacts, discovery_topic
from framewire.samples import sample_catalog_path, write_cards
from framewire.schemas import TopicTree
from tests.conftest import USERS, Pipeline, wait_until
from tests.ha_rules import (
    DEFAULT_QOS,
    Config,
    availability_topics,
    component_problems,
    components,
    device_problems,
    ha_state,
    numeric_expected,
    render,
    value_problem,
)
from tests.recorder import Recorder
from tests.test_pipeline import ledger_rows, observer, wait_online
from tests.test_recognition import request

HA_PREFIX = "homeassistant"  # the agents' default ha_prefix


# --- the rules, checked on themselves (pure logic) ------------------------------------------
def device_doc(**component: Any) -> dict[str, Any]:
    return {
        "dev": {"ids": ["x"], "name": "x"},
        "o": {"name": "framewire"},
        "avty": [{"t": "fw/agents/x/availability"}],
        "qos": 1,
        "cmps": {"c": {"p": "sensor", "stat_t": "fw/agents/x/status", "uniq_id": "u", **component}},
    }


def test_the_rules_find_what_home_assistant_refuses_or_ignores() -> None:
    def problems(**component: Any) -> list[str]:
        doc = device_doc(**component)
        return device_problems("homeassistant/device/x/config", "homeassistant", doc) + [
            p for cid, c in components(doc).items() for p in component_problems(cid, c)
        ]

    assert problems(val_tpl="{{ value_json.n }}", stat_cla="measurement") == []
    assert components(device_doc())["c"].get("qos", DEFAULT_QOS) == 0  # not inherited
    inherited = components(device_doc())["c"]
    assert availability_topics(inherited) == {"fw/agents/x/availability": ("online", "offline")}
    assert availability_topics(components(device_doc(avty=[]))["c"]) == {}
    assert "impossible" in " ".join(problems(dev_cla="timestamp", stat_cla="measurement"))
    assert "unknown" in " ".join(problems(unit="s"))  # misspelt: dropped
    assert "exclude" in " ".join(problems(avty_t="fw/a"))  # with the inherited list
    assert "not a number" in " ".join(problems(dev_cla="timestamp", unit_of_meas="s"))
    assert problems(dev_cla="duration", unit_of_meas="frames")
    assert problems(ops=["a"], dev_cla="enum", stat_cla="measurement")
    assert problems(ent_cat="config")
    assert problems(stat_t="fw/+x/status")
    assert problems(val_tpl="{{ value_json.n ")

    def value(payload: str, **component: Any) -> str | None:
        return value_problem(components(device_doc(**component))["c"], payload.encode())

    assert value("never", stat_cla="total_increasing") is not None
    assert value("None", stat_cla="total_increasing") is None  # unknown
    assert value("12", stat_cla="total_increasing") is None
    assert value("2026-01-02T03:04:05", dev_cla="timestamp") is not None  # no zone
    assert value("2026-01-02T03:04:05+00:00", dev_cla="timestamp") is None
    assert value("paused", dev_cla="enum", ops=["running"]) is not None
    offline = {"fw/agents/x/availability": b"offline", "fw/agents/x/status": b"offline"}
    online_sensor = {"p": "binary_sensor", "pl_on": "online", "pl_off": "offline"}
    assert ha_state(components(device_doc(**online_sensor))["c"], offline) == "unavailable"
    assert ha_state(components(device_doc(**online_sensor, avty=[]))["c"], offline) == "off"


def test_stored_facts_are_what_was_read_plus_what_was_added_since() -> None:
    runtime = SimpleNamespace(agent_id="ledger", details={}, entities=[])
    rows = [5]

    async def counts() -> dict[str, Fact]:
        return {"ledgered": rows[0]}

    async def backups() -> dict[str, Fact]:
        raise PermissionError("backups: permission denied")

    stored = StoredFacts(cast(Any, runtime), backups, counts)
    stored.count("ledgered", "Results ledgered", state_class="total_increasing")
    stored.add("ledgered")  # not read yet: unknown stays unknown, never becomes 1
    assert runtime.details == {}
    asyncio.run(stored.refresh())  # the folder that cannot be read spoils nothing else
    assert runtime.details == {"stored.ledgered": 5}
    stored.add("ledgered")
    assert runtime.details == {"stored.ledgered": 6}
    (entity,) = runtime.entities
    unknown = render({"value_template": entity.config["value_template"]}, b'{"details": {}}')
    assert unknown == "None"  # Home Assistant's unknown


# --- the agents' discovery, off a real broker ----------------------------------------------
def home_assistant(p: Pipeline, *topics: str) -> Recorder:
    """A client logged in as Home Assistant is, subscribed late (so it gets what is
    retained, as Home Assistant does after a restart)."""
    return Recorder(
        p.broker.port,
        *topics,
        username="homeassistant",
        password=p.broker.password("homeassistant"),
    )


def discovered(p: Pipeline) -> dict[str, dict[str, Any]]:
    """Each agent's retained discovery message, as Home Assistant receives it."""
    topics = {agent: discovery_topic(HA_PREFIX, agent) for agent in USERS.values()}
    with home_assistant(p, f"{HA_PREFIX}/device/+/config") as ha:
        wait_until(lambda: all(ha.on(t) for t in topics.values()), what="discovery")
        docs = {}
        for agent, topic in topics.items():
            message = ha.on(topic)[-1]
            assert message.retain, f"{topic} is not retained"
            docs[agent] = json.loads(message.payload)
    return docs


def last_messages(p: Pipeline, topics: set[str]) -> dict[str, bytes]:
    with home_assistant(p, *sorted(topics)) as ha:
        wait_until(lambda: all(ha.on(t) for t in topics), what=f"retained {sorted(topics)}")
        return {t: ha.on(t)[-1].payload for t in topics}


def state_topics(configs: Iterable[Config]) -> set[str]:
    topics: set[str] = set()
    for config in configs:
        topics |= set(availability_topics(config))
        topics |= {config[k] for k in ("state_topic", "image_topic") if k in config}
    return topics


def is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def by_name(doc: Mapping[str, Any]) -> dict[str, Config]:
    return {str(c["name"]): c for c in components(doc).values()}


def test_every_component_of_every_agent_meets_home_assistants_rules(pipeline: Pipeline) -> None:
    p = pipeline
    t = TopicTree(p.broker.prefix)
    p.agents["inference"].env["FRAMEWIRE_CATALOG"] = str(sample_catalog_path())
    with observer(p) as rec:
        p.start()
        wait_online(rec, p, *USERS.values())
        write_cards(p.captures, 2)
        wait_until(lambda: len(ledger_rows(p.ledger_db)) == 2, timeout=60, what="2 rows")
        code, answer = request(p, "ledger", "backup")
        assert code == 0, answer

        def details(agent: str) -> dict[str, Any]:
            return dict(json.loads(rec.on(t.status(USERS[agent]))[-1].payload)["details"])

        backup = StoredFacts.PREFIX + "last_backup"
        wait_until(lambda: details("ledger").get(backup), what="the backup")
        wait_until(lambda: details("inference").get("last_confidence") is not None)

    docs = discovered(p)
    everything = {f"{a}/{cid}": c for a, doc in docs.items() for cid, c in components(doc).items()}
    problems = []
    for agent, doc in docs.items():
        problems += device_problems(discovery_topic(HA_PREFIX, agent), HA_PREFIX, doc)
        for component_id, config in components(doc).items():
            problems += component_problems(component_id, config)
    assert problems == []

    # what framewire asks of its own components, beyond Home Assistant's rules
    unique_ids = [c["unique_id"] for c in everything.values()]
    assert len(unique_ids) == len(set(unique_ids))
    for name, config in everything.items():
        assert config.get("qos", DEFAULT_QOS) == 1, f"{name} would subscribe at QoS 0"
        assert config.get("name"), name
        if config["platform"] == "sensor" and numeric_expected(config):
            assert config.get("state_class"), f"{name}: a number without statistics"
    for agent, doc in docs.items():
        online = by_name(doc)["Online"]
        assert online["state_topic"] == t.availability(agent)
        assert availability_topics(online) == {}, "Online would go unavailable, never off"
        others = [c for n, c in by_name(doc).items() if n != "Online"]
        assert all(t.availability(agent) in availability_topics(c) for c in others)

    messages = last_messages(p, state_topics(everything.values()))
    for name, config in everything.items():
        if config["platform"] == "image":
            assert messages[config["image_topic"]][:3] == b"\xff\xd8\xff", name
            continue
        problem = value_problem(config, messages[config["state_topic"]])
        assert problem is None, (name, config.get("value_template"), problem)
        # every value is there: a name typed twice would read as unknown here
        shown = ha_state(config, messages)
        assert shown not in ("unknown", "unavailable", ""), name
        if config["platform"] == "sensor" and "device_class" not in config and is_number(shown):
            assert "state_class" in config, f"{name}: {shown}, a number without statistics"
    ledger = by_name(docs[USERS["ledger"]])
    backed_up = datetime.fromisoformat(ha_state(ledger["Last backup"], messages))
    assert abs(datetime.now(UTC) - backed_up) < timedelta(minutes=5)
    assert ha_state(ledger["Results ledgered"], messages) == "2"


def test_online_goes_off_on_a_last_will_and_totals_outlive_a_restart(pipeline: Pipeline) -> None:
    p = pipeline
    t = TopicTree(p.broker.prefix)
    capture, ledger = USERS["capture"], USERS["ledger"]
    with observer(p) as rec:
        p.start()
        wait_online(rec, p, *USERS.values())
        write_cards(p.captures, 3)
        wait_until(lambda: len(ledger_rows(p.ledger_db)) == 3, timeout=60, what="3 rows")
        docs = discovered(p)
        cap, led = by_name(docs[capture]), by_name(docs[ledger])
        topics = state_topics([*cap.values(), *led.values()])

        def shown(config: Config) -> str:
            return ha_state(config, last_messages(p, topics))

        wait_until(lambda: shown(cap["Frames ledgered"]) == "3", what="capture's total")
        wait_until(lambda: shown(led["Results ledgered"]) == "3", what="the ledger's total")
        assert shown(led["Last backup"]) == "unknown"  # never backed up
        assert shown(cap["Online"]) == "on"

        p.agents["capture"].kill()  # kill -9: the broker sends the Last Will
        wait_until(lambda: rec.on(t.availability(capture))[-1].payload == b"offline")
        assert shown(cap["Online"]) == "off"  # not "unavailable": "turned off" fires
        assert shown(cap["Frames ledgered"]) == "unavailable"

        code, answer = request(p, "ledger", "backup")
        assert code == 0, answer
        assert p.agents["ledger"].terminate() == 0
        restarted = time.time()
        p.start("ledger", "capture")

        def started(agent: str) -> float:
            status = json.loads(rec.on(t.status(agent))[-1].payload)
            return datetime.fromisoformat(status["started_at"]).timestamp()

        wait_until(lambda: min(started(capture), started(ledger)) >= restarted - 1)
        status = json.loads(rec.on(t.status(ledger))[-1].payload)
        assert status["counters"].get("results.ledgered", 0) == 0  # a new process...
        assert shown(led["Results ledgered"]) == "3"  # ...and the ledger's own count
        assert shown(cap["Frames ledgered"]) == "3"
        assert shown(cap["Online"]) == "on"
        backed_up = datetime.fromisoformat(shown(led["Last backup"]))  # from the backup file
        assert abs(datetime.now(UTC) - backed_up) < timedelta(minutes=5)
