"""Hostile clients against the rendered broker: a real Mosquitto with framewire's plugin.

Mosquitto refuses an unauthorised QoS 1 publish only in the PUBACK reason code, and a
subscription only in the SUBACK, so outcomes are checked where they matter: on the
receiving side (a recorder allowed to read the topic sees nothing arrive) and in what is
left retained.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from framewire.broker_config import BrokerPlan, default_accounts, write_broker_files
from framewire.broker_config.render import render_acl, render_conf
from framewire.edge_agents.runtime.homeassistant import discovery_topic
from framewire.schemas import (
    AgentStatus,
    CommandRequest,
    CommandResponse,
    DeadLetter,
    ErrorKind,
    TopicTree,
    decode_json,
    encode_json,
)
from tests.conftest import STATION, USERS, Broker, Pipeline, jpeg_bytes, wait_until
from tests.recorder import Recorder
from tests.test_pipeline import observer, wait_online

pytestmark = pytest.mark.integration

HA = "homeassistant"


class Client:
    """A plain MQTT 5 client that picks its own client id (the Recorder lets the broker
    assign one), connected or refused."""

    def __init__(
        self, port: int, client_id: str, user: str | None = None, password: str | None = None
    ) -> None:
        self.mqtt = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5
        )
        if user is not None:
            self.mqtt.username_pw_set(user, password)
        self.reason: Any = None
        done = threading.Event()

        def on_connect(client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
            self.reason = reason
            done.set()

        self.mqtt.on_connect = on_connect
        self.mqtt.connect("127.0.0.1", port)
        self.mqtt.loop_start()
        assert done.wait(10), f"no CONNACK for {client_id}"

    @property
    def refused(self) -> bool:
        return bool(self.reason.is_failure)

    def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        retain: bool = False,
        properties: Properties | None = None,
    ) -> None:
        self.mqtt.publish(
            topic, payload, qos=1, retain=retain, properties=properties
        ).wait_for_publish(10)

    def close(self) -> None:
        self.mqtt.loop_stop()
        self.mqtt.disconnect()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def login(broker: Broker, user: str, *topics: str) -> Recorder:
    return Recorder(broker.port, *topics, username=user, password=broker.password(user))


def test_anonymous_clients_write_nothing_in_development(broker: Broker) -> None:
    t = TopicTree(broker.prefix)
    hostile = [
        # what `pattern write ...%c...` let any anonymous client write for the id it chose
        t.availability("intruder"),
        t.status("intruder"),
        t.dead_letters("intruder"),
        discovery_topic(HA, "intruder"),
        t.responses("intruder"),
        # and what belongs to a real agent
        t.availability("ledger"),
        t.dead_letters("ledger"),
        discovery_topic(HA, "ledger"),
        t.frames(STATION),
        t.acks(STATION),
    ]
    with login(broker, "observer", t.everything(), f"{HA}/#") as live:
        with Client(broker.port, "intruder") as intruder:
            assert not intruder.refused  # anonymous may connect in development, and read
            for topic in hostile:
                intruder.publish(topic, b"forged", retain=True)
        # the control: the ledger, under its own client id, may set its availability
        with Client(broker.port, "ledger", "ledger", broker.password("ledger")) as ledger:
            ledger.publish(t.availability("ledger"), b"control", retain=True)
        wait_until(lambda: live.on(t.availability("ledger")), what="the permitted publish")
        time.sleep(0.3)
        assert [m.payload for m in live.messages] == [b"control"]
    with login(broker, "observer", t.everything(), f"{HA}/#") as late:  # what stayed retained
        wait_until(lambda: late.on(t.availability("ledger")), what="the retained control")
        time.sleep(0.3)
        assert [(m.topic, m.payload) for m in late.messages] == [
            (t.availability("ledger"), b"control")
        ]


def test_a_client_id_can_only_be_used_by_its_own_user(pipeline: Pipeline) -> None:
    p = pipeline
    t = TopicTree(p.broker.prefix)
    password = p.broker.password
    with observer(p) as rec:
        p.start("ledger")
        wait_online(rec, p, "ledger")
        hostile = [
            ("observer", "ledger"),  # the read-only user taking over the ledger's session
            ("observer", "ledger-bb"),
            (None, "ledger"),
            (None, "ledger-bb"),
            ("inference", "ledger"),
            ("ledger", "inference-1"),  # an agent may not borrow another agent's id either
            ("ledger", "somebody"),  # nor one that is nobody's
        ]
        for user, client_id in hostile:
            with Client(p.broker.port, client_id, user, password(user) if user else None) as c:
                assert c.refused, (user, client_id)
        for user, client_id in [("ledger", "ledger-2"), ("observer", "observer-cli")]:
            with Client(p.broker.port, client_id, user, password(user)) as c:
                assert not c.refused, (user, client_id)
        time.sleep(1.0)
        # the real ledger never lost its session
        assert [m.payload for m in rec.on(t.availability("ledger"))] == [b"online"]
    out = p.agents["ledger"].output()
    assert out.count("connected to") == 1 and "connection lost" not in out, out


@pytest.mark.parametrize(
    ("group", "channel"),
    [("inference", "frames"), ("shadow", "frames"), ("escalation", "escalate")],
)
def test_only_inference_users_join_the_inference_share_groups(
    broker: Broker, group: str, channel: str
) -> None:
    """The primary and fallback agents' group, the shadow agents' and the escalation
    agents' (which read the frames primaries send them for a second reading)."""
    t = TopicTree(broker.prefix)
    topic = t.frames(STATION) if channel == "frames" else t.escalations(STATION)
    shared = f"$share/{group}/{topic.rsplit('/', 1)[0]}/+"
    with (
        login(broker, "inference", shared) as member,
        login(broker, USERS["capture"], shared) as capture,
        login(broker, "observer", shared) as reader,
        Recorder(broker.port, shared) as anonymous,
        login(broker, USERS["capture"] if channel == "frames" else "inference") as sender,
    ):
        for i in range(12):
            sender.publish(topic, jpeg_bytes(i))
        # without the plugin the group had four members, each dealt every fourth frame
        wait_until(lambda: len(member.on(topic)) == 12, what="all 12 frames")
        time.sleep(0.3)
        assert capture.messages == [] and reader.messages == [] and anonymous.messages == []


def test_only_the_ledger_user_acknowledges(broker: Broker) -> None:
    t = TopicTree(broker.prefix)
    with login(broker, USERS["capture"], t.acks(STATION)) as capture:
        others = ["inference", "observer", "operator", "homeassistant", USERS["capture"]]
        for user in others:
            with login(broker, user) as forger:
                forger.publish(t.acks(STATION), f"forged by {user}".encode())
        with Recorder(broker.port) as anonymous:
            anonymous.publish(t.acks(STATION), b"forged anonymously")
        with login(broker, "ledger") as ledger:
            ledger.publish(t.acks(STATION), b"real")
        wait_until(lambda: capture.on(t.acks(STATION)), what="the ledger's ack")
        time.sleep(0.3)
        assert [m.payload for m in capture.on(t.acks(STATION))] == [b"real"]


def test_only_a_station_s_own_user_announces_its_frames(broker: Broker) -> None:
    """An announcement is what makes a result inventory: no other station, no inference
    agent, no watcher may forge one; only the ledger (and the observer) read them."""
    t = TopicTree(broker.prefix)
    topic = t.announcements(STATION)
    with (
        login(broker, "ledger", t.all_announcements()) as ledger,
        login(broker, "inference", t.all_announcements()) as inference_reader,
    ):
        others = ["capture-import", "inference", "observer", "operator", "homeassistant"]
        for user in others:
            with login(broker, user) as forger:
                forger.publish(topic, f"forged by {user}".encode())
        with Recorder(broker.port) as anonymous:
            anonymous.publish(topic, b"forged anonymously")
        with login(broker, USERS["capture"]) as station:
            station.publish(topic, b"real")
        wait_until(lambda: ledger.on(topic), what="the station's announcement")
        time.sleep(0.3)
        assert [m.payload for m in ledger.on(topic)] == [b"real"]
        assert inference_reader.on(topic) == []


def request_props(reply_to: str, correlation: bytes) -> Properties:
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    props.ResponseTopic = reply_to
    props.CorrelationData = correlation
    return props


def test_an_agent_replies_only_under_the_response_topics(pipeline: Pipeline) -> None:
    p = pipeline
    t = TopicTree(p.broker.prefix)
    request = encode_json(CommandRequest(command="status"))
    hostile = [
        t.acks(STATION),  # the ledger may write acks: a forged ack would end a frame's retries
        t.availability("ledger"),
        f"{t.responses('operator-cli')}/deeper",
        f"elsewhere/responses/{'x'}",
    ]
    with observer(p) as rec:
        p.start("ledger")
        wait_online(rec, p, "ledger")
        with Client(p.broker.port, "operator-cli", "operator", p.broker.password("operator")) as op:
            for i, reply_to in enumerate(hostile):
                op.publish(
                    t.requests("ledger"), request, properties=request_props(reply_to, b"%d" % i)
                )

            def letters() -> list[DeadLetter]:
                return [
                    decode_json(DeadLetter, m.payload) for m in rec.on(t.dead_letters("ledger"))
                ]

            wait_until(lambda: len(letters()) == len(hostile), what="a dead letter per request")
            assert {d.kind for d in letters()} == {ErrorKind.UNDELIVERABLE}
            assert all("request not carried out" in d.reason for d in letters())
            # a well-formed request is still answered, where it asked
            reply_to = t.responses("operator-cli")
            op.publish(t.requests("ledger"), request, properties=request_props(reply_to, b"ok"))
            wait_until(lambda: rec.on(reply_to), what="the answer")
        time.sleep(0.3)
    answer = decode_json(CommandResponse, rec.on(reply_to)[0].payload)
    assert answer.ok and answer.agent_id == "ledger"
    assert rec.on(t.acks(STATION)) == []
    assert [m.payload for m in rec.on(t.availability("ledger"))] == [b"online"]
    assert [m.topic for m in rec.on(f"{t.prefix}/responses/#")] == [reply_to]


def test_a_home_assistant_birth_storm_is_answered_once(pipeline: Pipeline) -> None:
    """2,000 birth messages once made each agent re-announce 2,000 times."""
    p = pipeline
    t = TopicTree(p.broker.prefix)
    p.agents["ledger"].env["FRAMEWIRE_HA_BIRTH_DELAY"] = "0.2"
    discovery = discovery_topic(HA, "ledger")
    with observer(p) as rec, login(p.broker, "observer", f"{HA}/#") as ha_view:
        p.start("ledger")
        wait_online(rec, p, "ledger")
        wait_until(lambda: ha_view.on(discovery), what="the announcement on connect")
        with login(p.broker, "homeassistant") as ha:
            for _ in range(2000):
                ha.publish(f"{HA}/status", b"online")

        def coalesced() -> int:
            last = rec.on(t.status("ledger"))[-1].payload
            return decode_json(AgentStatus, last).counters.get("ha_births_coalesced", 0)

        wait_until(lambda: coalesced() >= 1998, what="every birth seen")
        time.sleep(1.0)
        announcements = ha_view.on(discovery)
    # one on connect, one for the storm (a later birth would wait out BIRTH_INTERVAL)
    assert len(announcements) == 2
    assert json.loads(announcements[-1].payload)["device"]["identifiers"] == ["framewire_ledger"]


# --- the rendered files -----------------------------------------------------------------------
def test_production_sends_no_password_over_the_network_in_clear_text(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ValueError, match="over TLS only"):
        BrokerPlan(tmp_path, profile="production", bind="0.0.0.0")
    monkeypatch.chdir(tmp_path)
    plan = BrokerPlan(
        Path("broker"),
        profile="production",
        bind="0.0.0.0",
        tls_cert=Path("tls/broker.pem"),
        tls_key=Path("tls/broker.key"),
        tls_port=8883,
    )
    conf = render_conf(plan)
    assert "listener 1883 127.0.0.1\n" in conf  # plain text: this box only
    assert "listener 8883 0.0.0.0\n" in conf  # everyone else: TLS, on the address asked for
    assert f"certfile {tmp_path}/tls/broker.pem\n" in conf
    assert f"keyfile {tmp_path}/tls/broker.key\n" in conf
    assert f"password_file {tmp_path}/broker/passwd\n" in conf
    assert "allow_anonymous false" in conf
    local = render_conf(BrokerPlan(tmp_path / "b", profile="production"))
    assert "listener 1883 127.0.0.1\n" in local and "certfile" not in local
    dev = render_conf(
        BrokerPlan(tmp_path / "d", bind="10.1.2.3", tls_cert=tmp_path / "c", tls_key=tmp_path / "k")
    )
    assert "listener 1883 10.1.2.3\n" in dev and "listener 8883 10.1.2.3\n" in dev


def test_no_acl_line_depends_on_a_client_id_the_client_chose(tmp_path: Path) -> None:
    for profile in ("development", "production"):
        plan = BrokerPlan(tmp_path, profile=profile, accounts=default_accounts(["a", "b"]))
        acl = render_acl(plan)
        assert "%c" not in acl and "pattern" not in acl
        assert "responses/#" not in acl
        conf = render_conf(plan)
        assert "plugin_opt_share_inference inference\n" in conf
        assert "plugin_opt_owner_capture-a capture-a,import-a\n" in conf


def test_broker_files_and_folders_are_private(tmp_path: Path) -> None:
    data = tmp_path / "broker"
    (data / "secrets").mkdir(parents=True, mode=0o755)
    data.chmod(0o755)
    loose = data / "secrets" / "ledger.password"
    loose.write_text("made by hand\n")
    loose.chmod(0o644)
    plan = BrokerPlan(data)
    write_broker_files(plan)
    for folder in (data, data / "persistence", data / "secrets", data / "plugin"):
        assert folder.stat().st_mode & 0o777 == 0o700, folder
    files = [plan.passwd_path, plan.acl_path, plan.conf_path, *data.glob("secrets/*")]
    for path in files:
        assert path.stat().st_mode & 0o777 == 0o600, path
    assert loose.read_text() == "made by hand\n"  # kept, only its mode changed
