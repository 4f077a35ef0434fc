"""Several sites: a station's own Mosquitto bridged to the central broker.

Two real Mosquitto processes, each rendered by framewire's own code, with a TCP relay between
the site's bridge and the central broker: cutting the relay cuts the link without stopping
either broker. The capture agent runs on the site broker; inference and the ledger on the
central one.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from framewire.broker_config import BrokerPlan, EmbeddedBroker, default_accounts, free_port
from framewire.broker_config.bridge import BridgePlan, bridge_user, capture_user
from framewire.broker_config.certs import CertFolder, write_certificates
from framewire.broker_config.render import render_acl, render_conf
from framewire.schemas import (
    FrameMeta,
    TopicTree,
    frame_meta_from_properties,
    frame_properties,
    new_frame_id,
    utc_now,
)
from tests.conftest import STATION, AgentProcess, Broker, jpeg_bytes, wait_until
from tests.recorder import Recorder
from tests.test_broker_security import Client
from tests.test_pipeline import capture_rows, ledger_rows

pytestmark = pytest.mark.integration

BRIDGE = bridge_user(STATION)
CAPTURE = capture_user(STATION)


class LinkRelay:
    """A TCP relay standing for the network between the two sites: `cut()` closes every
    connection through it and refuses new ones until `restore()`."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self._server = socket.create_server(("127.0.0.1", self.port))
        self._up = threading.Event()
        self._up.set()
        self._lock = threading.Lock()
        self._open: list[socket.socket] = []
        threading.Thread(target=self._accept, name="link-accept", daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                near, _ = self._server.accept()
            except OSError:  # closed
                return
            if not self._up.is_set():
                near.close()
                continue
            try:
                far = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            except OSError:
                near.close()
                continue
            far.settimeout(None)
            with self._lock:
                self._open += [near, far]
            for src, dst in ((near, far), (far, near)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        self._up.clear()
        with self._lock:
            doomed, self._open = self._open, []
        for sock in doomed:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def restore(self) -> None:
        self._up.set()

    def close(self) -> None:
        self.cut()
        self._server.close()


@dataclass
class Sites:
    central: Broker
    site: Broker
    link: LinkRelay

    def link_states(self, rec: Recorder) -> list[bytes]:
        """The bridge's notifications seen on the central broker: b"1" up, b"0" down."""
        return [m.payload for m in rec.on(TopicTree(self.central.prefix).bridge_state(STATION))]


def site_plan(folder: Path, port: int, prefix: str, bridge: BridgePlan) -> BrokerPlan:
    return BrokerPlan(
        folder, port=port, prefix=prefix, accounts=default_accounts([STATION]), bridge=bridge
    )


@pytest.fixture
def sites(tmp_path: Path) -> Iterator[Sites]:
    prefix = f"t{uuid.uuid4().hex[:10]}"
    central = EmbeddedBroker(
        BrokerPlan(
            tmp_path / "central",
            port=free_port(),
            prefix=prefix,
            accounts=default_accounts(bridges=[STATION, "station-2"]),
        )
    )
    central.start()
    link = LinkRelay(central.plan.port)
    bridge = BridgePlan(
        f"mqtt://127.0.0.1:{link.port}",
        STATION,
        central.secrets[BRIDGE],
        restart_timeout=(1, 2),  # reconnect within 2 s of the link coming back
    )
    site = EmbeddedBroker(site_plan(tmp_path / "site", free_port(), prefix, bridge))
    try:
        site.start()
        yield Sites(Broker(central, prefix), Broker(site, prefix), link)
    finally:
        site.stop()
        link.close()
        central.stop()


def login(broker: Broker, user: str, *topics: str) -> Recorder:
    return Recorder(broker.port, *topics, username=user, password=broker.password(user))


def agent(kind: str, broker: Broker, user: str, root: Path, **extra: str) -> AgentProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRAMEWIRE_")}
    env.update(
        FRAMEWIRE_BROKER_URL=broker.url,
        FRAMEWIRE_MQTT_USERNAME=user,
        FRAMEWIRE_MQTT_PASSWORD_FILE=str(broker.password_file(user)),
        FRAMEWIRE_AGENT_ID=user,
        FRAMEWIRE_TOPIC_PREFIX=broker.prefix,
        FRAMEWIRE_DATA_DIR=str(root / kind),
        FRAMEWIRE_STATUS_INTERVAL="1",
        FRAMEWIRE_STATION=STATION,
        FRAMEWIRE_SETTLE_SECONDS="0.2",
        FRAMEWIRE_METRICS_PORT="0",
        PYTHONUNBUFFERED="1",
        **extra,
    )
    return AgentProcess(kind, env, root / f"{kind}.log")


def seen_online(rec: Recorder, t: TopicTree, agent_id: str) -> bool:
    return any(m.payload == b"online" for m in rec.on(t.availability(agent_id)))


def test_a_station_keeps_capturing_while_its_link_is_down_and_catches_up(
    sites: Sites, tmp_path: Path
) -> None:
    s = sites
    t = TopicTree(s.central.prefix)
    captures = tmp_path / "captures"
    captures.mkdir()
    ledger = agent("ledger", s.central, "ledger", tmp_path)
    inference = agent("inference", s.central, "inference", tmp_path)
    capture = agent(
        "capture",
        s.site,
        CAPTURE,
        tmp_path,
        FRAMEWIRE_WATCH_DIR=str(captures),
        # the central broker forgets the bridge's session while the link is down, and the
        # acknowledgements published meanwhile with it: those frames are resent
        FRAMEWIRE_ACK_TIMEOUT="3",
        FRAMEWIRE_RESEND_BACKOFF_MAX="6",
    )
    ledger_db = tmp_path / "ledger" / "ledger.sqlite3"
    state_db = tmp_path / "capture" / "capture.sqlite3"

    def states() -> list[str]:
        return [r["state"] for r in capture_rows(state_db)] if state_db.exists() else []

    def attempts() -> list[int]:
        return [r["attempts"] for r in capture_rows(state_db)] if state_db.exists() else []

    def drop(first: int, last: int) -> None:
        for i in range(first, last):
            (captures / f"f{i:02d}.jpg").write_bytes(jpeg_bytes(i))

    agents = [ledger, inference, capture]
    try:
        with (
            login(s.central, "observer", t.everything()) as central_view,
            login(s.site, "observer", t.everything()) as site_view,
        ):
            wait_until(lambda: s.link_states(central_view)[-1:] == [b"1"], what="the bridge up")
            ledger.start()
            inference.start()
            wait_until(lambda: seen_online(central_view, t, "ledger"), what="ledger online")
            # inference's availability came over the bridge: capture will not hold frames
            wait_until(lambda: seen_online(site_view, t, "inference"), what="inference at site")
            capture.start()
            wait_until(lambda: seen_online(central_view, t, CAPTURE), what="capture, centrally")

            drop(0, 10)
            wait_until(lambda: len(ledger_rows(ledger_db)) == 10, timeout=60, what="10 rows")
            wait_until(lambda: states() == ["ledgered"] * 10, what="10 acknowledgements")

            # five frames cross and are answered while the link is down: the ledger, paused,
            # writes them only after the cut, so their acknowledgements meet no bridge
            assert ledger.proc is not None
            ledger.proc.send_signal(signal.SIGSTOP)
            drop(10, 15)
            wait_until(lambda: len(central_view.on(t.results(STATION))) >= 15, what="results")
            s.link.cut()
            wait_until(lambda: s.link_states(central_view)[-1:] == [b"0"], what="link down")
            ledger.proc.send_signal(signal.SIGCONT)
            wait_until(lambda: len(ledger_rows(ledger_db)) == 15, what="rows written meanwhile")

            drop(15, 30)
            # the station took every file while cut off, sent its in-flight window into the
            # outage and sent some again (their acknowledgements did not come)
            wait_until(lambda: len(states()) == 30, what="the outage's files taken")
            wait_until(lambda: max(attempts()) >= 2, what="a resend into the outage")
            assert len(ledger_rows(ledger_db)) == 15  # nothing crossed the cut link
            assert capture.proc is not None and capture.proc.poll() is None

            s.link.restore()
            wait_until(lambda: s.link_states(central_view)[-1:] == [b"1"], what="link back")
            wait_until(lambda: len(ledger_rows(ledger_db)) >= 30, timeout=120, what="30 rows")
            wait_until(lambda: states() == ["ledgered"] * 30, timeout=120, what="30 acks")
            time.sleep(1.0)  # a doubled row would land now
            assert capture.proc is not None and capture.proc.poll() is None
            dead = site_view.on(t.dead_letters(CAPTURE))
    finally:
        for a in agents:
            if a.proc is not None and a.proc.poll() is None:
                a.proc.send_signal(signal.SIGCONT)
                a.kill()
    rows = ledger_rows(ledger_db)
    assert sorted(r["source_name"] for r in rows) == [f"f{i:02d}.jpg" for i in range(30)]
    assert len({r["frame_id"] for r in rows}) == 30
    assert {r["station"] for r in rows} == {STATION}
    assert dead == []
    out = capture.output()
    assert capture.starts == 1 and out.count("connected to") == 1, out  # never restarted


def test_what_waits_for_the_link_survives_a_site_broker_restart(sites: Sites) -> None:
    s = sites
    t = TopicTree(s.central.prefix)
    with login(s.central, "observer", t.bridge_state(STATION), t.frames(STATION)) as central_view:
        wait_until(lambda: s.link_states(central_view)[-1:] == [b"1"], what="the bridge up")
        s.link.cut()
        wait_until(lambda: s.link_states(central_view)[-1:] == [b"0"], what="link down")
        with login(s.site, CAPTURE) as capture:
            for i in range(3):
                capture.publish(t.frames(STATION), b"frame %d" % i)
        s.site.embedded.stop()  # SIGTERM: Mosquitto saves its persistence on the way out
        s.site.embedded.start()
        s.link.restore()
        wait_until(lambda: len(central_view.on(t.frames(STATION))) == 3, what="queued frames")
        time.sleep(0.5)
    assert [m.payload for m in central_view.on(t.frames(STATION))] == [
        b"frame 0",
        b"frame 1",
        b"frame 2",
    ]


def test_the_site_does_not_take_its_own_old_state_back(sites: Sites) -> None:
    """On each reconnect the central broker sends the bridge every retained message its
    subscriptions match, the station's own ones included: the plugin keeps those back, or
    an agent that stopped during the outage would read as online again at its own site."""
    s = sites
    t = TopicTree(s.central.prefix)
    availability = t.availability(CAPTURE)
    with (
        login(s.central, "observer", t.everything()) as central_view,
        login(s.site, "observer", t.all_availability()) as site_view,
        Client(s.central.port, "ledger", "ledger", s.central.password("ledger")) as ledger,
        Client(s.site.port, CAPTURE, CAPTURE, s.site.password(CAPTURE)) as capture,
    ):
        wait_until(lambda: s.link_states(central_view)[-1:] == [b"1"], what="the bridge up")
        ledger.publish(t.availability("ledger"), b"online", retain=True)
        capture.publish(availability, b"online", retain=True)
        wait_until(lambda: central_view.on(availability), what="the station's state, centrally")
        wait_until(lambda: len(site_view.on(t.availability("ledger"))) == 1, what="ledger")

        s.link.cut()
        wait_until(lambda: s.link_states(central_view)[-1:] == [b"0"], what="link down")
        capture.publish(availability, b"offline", retain=True)  # it stopped meanwhile
        s.link.restore()
        wait_until(lambda: s.link_states(central_view)[-1:] == [b"1"], what="link back")
        # the retained messages of the bridge's subscription came again (ledger's among
        # them): the station's own old "online" would have come with them
        wait_until(lambda: len(site_view.on(t.availability("ledger"))) == 2, what="resent")
        wait_until(
            lambda: [m.payload for m in central_view.on(availability)][-1:] == [b"offline"],
            what="the station's new state, centrally",
        )
        time.sleep(0.5)
        assert [m.payload for m in site_view.on(availability)] == [b"online", b"offline"]
    with login(s.site, "observer", availability) as late:
        wait_until(lambda: late.on(availability), what="the retained value at the site")
        assert [m.payload for m in late.on(availability)] == [b"offline"]


def test_a_bridge_carries_its_own_station_only(sites: Sites) -> None:
    s = sites
    t = TopicTree(s.central.prefix)
    password = s.central.password
    with (
        login(s.central, "observer", t.everything()) as central_view,
        login(s.site, "observer", t.everything()) as site_view,
    ):
        wait_until(lambda: s.link_states(central_view)[-1:] == [b"1"], what="the bridge up")
        # the central broker's answers: only station-1's reach station-1's broker
        with login(s.central, "ledger") as ledger:
            for station in (STATION, "station-2"):
                ledger.publish(t.acks(station), f"ack for {station}".encode())
                ledger.publish(t.results(station), f"result for {station}".encode())
        wait_until(lambda: len(site_view.on(t.acks(STATION))) == 1, what="station-1's ack")
        wait_until(lambda: site_view.on(t.results(STATION)), what="station-1's result")

        # the bridge user (a stolen password, say) has its station's rights and no more
        forged = [
            t.frames("station-2"),
            t.acks(STATION),
            t.results(STATION),
            t.availability("ledger"),
            t.availability("capture-station-2"),
            t.bridge_state("station-2"),
        ]
        with Client(s.central.port, f"{BRIDGE}-x", BRIDGE, password(BRIDGE)) as thief:
            for topic in forged:
                thief.publish(topic, b"forged", retain=True)
            thief.publish(t.frames(STATION), b"control")
        wait_until(lambda: central_view.on(t.frames(STATION)), what="the permitted frame")
        time.sleep(0.5)
    assert [m.payload for m in site_view.on(f"{t.prefix}/acks/+")] == [b"ack for station-1"]
    assert [m.payload for m in site_view.on(t.all_results())] == [b"result for station-1"]
    assert not [m for m in central_view.messages if m.payload == b"forged"]


def test_the_bridges_client_ids_belong_to_it(sites: Sites) -> None:
    s = sites
    t = TopicTree(s.central.prefix)
    central_pw, site_pw = s.central.password, s.site.password
    with login(s.central, "observer", t.bridge_state(STATION)) as central_view:
        wait_until(lambda: s.link_states(central_view)[-1:] == [b"1"], what="the bridge up")
        hostile = [
            (s.central.port, "observer", BRIDGE),  # taking over the bridge's session
            (s.central.port, None, BRIDGE),
            (s.central.port, "ledger", BRIDGE),
            (s.central.port, "bridge-station-2", BRIDGE),  # another site's bridge
            (s.central.port, BRIDGE, "bridge-station-2"),
            (s.central.port, BRIDGE, "somebody"),  # a bridge uses an id of its own
            (s.central.port, BRIDGE, "auto-0123"),
        ]
        for port, user, client_id in hostile:
            pw = central_pw(user) if user else None
            with Client(port, client_id, user, pw) as c:
                assert c.refused, (user, client_id)
        # the bridge's session on the site broker, which holds the frames of an outage
        for user in (None, CAPTURE, "observer"):
            pw = site_pw(user) if user else None
            with Client(s.site.port, f"{BRIDGE}-local", user, pw) as c:
                assert c.refused, (user, "site")
        time.sleep(0.5)
        assert s.link_states(central_view) == [b"1"]  # the real bridge stayed connected


def test_a_bridge_over_tls_keeps_the_frames_metadata(tmp_path: Path) -> None:
    """The central broker's certificate from `framewire broker certs` (strict X.509, as
    Python 3.13 wants), verified by Mosquitto's bridge against the central CA, host name
    included; the frame's MQTT 5 user properties survive the bridge."""
    folder = CertFolder(tmp_path / "tls")
    write_certificates(folder.root, ["localhost", "127.0.0.1"], [])
    prefix = f"t{uuid.uuid4().hex[:10]}"
    central_plan = BrokerPlan(
        tmp_path / "central",
        port=free_port(),
        prefix=prefix,
        tls_cert=folder.broker_cert,
        tls_key=folder.broker_key,
        tls_port=free_port(),
        accounts=default_accounts(bridges=[STATION]),
    )
    t = TopicTree(prefix)
    with EmbeddedBroker(central_plan) as central:
        bridge = BridgePlan(
            f"mqtts://localhost:{central_plan.tls_port}",
            STATION,
            central.secrets[BRIDGE],
            ca_file=folder.ca_cert,
            restart_timeout=(1, 2),
        )
        site_broker = EmbeddedBroker(site_plan(tmp_path / "site", free_port(), prefix, bridge))
        with site_broker as site:
            c, s = Broker(central, prefix), Broker(site, prefix)
            with login(c, "observer", t.everything()) as central_view:
                wait_until(lambda: central_view.on(t.bridge_state(STATION)), what="bridge up")
                data = jpeg_bytes(3)
                meta = FrameMeta(
                    frame_id=new_frame_id(),
                    station=STATION,
                    seq=1,
                    captured_at=utc_now(),
                    sha256=hashlib.sha256(data).hexdigest(),
                    content_type="image/jpeg",
                    size=len(data),
                    source_name="tls.jpg",
                    attempt=1,
                )
                props = frame_properties(meta)
                with Client(s.port, CAPTURE, CAPTURE, s.password(CAPTURE)) as capture:
                    capture.publish(t.frames(STATION), data, properties=props)
                wait_until(lambda: central_view.on(t.frames(STATION)), what="the frame")
    [frame] = central_view.on(t.frames(STATION))
    assert frame.payload == data
    assert frame_meta_from_properties(frame.user_properties) == meta
    assert "bridge_cafile" in site_broker.plan.conf_path.read_text()


# --- the rendered files -----------------------------------------------------------------------
def test_the_rendered_bridge(tmp_path: Path) -> None:
    secret = tmp_path / "bridge.password"
    secret.write_text("s3cret-word\n")
    bridge = BridgePlan("mqtts://central.lan:8883", STATION, secret, ca_file=tmp_path / "ca.pem")
    assert "s3cret" not in repr(bridge)
    conf = render_conf(site_plan(tmp_path / "site", 1883, "framewire", bridge))
    section = conf[conf.index("connection ") :]
    for line in [
        f"connection {BRIDGE}",
        "address central.lan:8883",
        f"remote_clientid {BRIDGE}",
        f"remote_username {BRIDGE}",
        "remote_password s3cret-word",
        "bridge_protocol_version mqttv50",
        "cleansession false",
        "local_cleansession false",
        f"bridge_cafile {tmp_path}/ca.pem",
        "bridge_insecure false",
        "notification_topic framewire/bridges/station-1/state",
        "topic framewire/frames/station-1 out 1",
        "topic framewire/acks/station-1 in 1",
        "topic framewire/results/station-1 in 1",
        "topic framewire/agents/+/availability in 0",
        "topic framewire/agents/capture-station-1/availability out 0",
        "topic framewire/deadletter/capture-station-1 out 1",
        "topic framewire/agents/capture-station-1/request in 1",
    ]:
        assert f"\n{line}\n" in f"\n{section}", line
    assert "+" not in "".join(x for x in section.splitlines() if " in " in x and "acks" in x)
    assert f"plugin_opt_owner_{BRIDGE} {BRIDGE}-local\n" in conf
    central = BrokerPlan(tmp_path / "central", accounts=default_accounts(bridges=[STATION]))
    acl = render_acl(central)
    assert f"user {BRIDGE}\n" in acl and "capture-station-1" not in acl  # no direct capture
    assert "%c" not in acl
    assert f"plugin_opt_bridge_{BRIDGE} capture-station-1,import-station-1\n" in render_conf(
        central
    )


@pytest.mark.parametrize(
    ("content", "problem"),
    [(None, "cannot read"), ("two words\n", "spaces"), ("", "one line"), ("#x\n", "'#'")],
)
def test_a_bridge_password_mosquitto_cannot_carry_is_refused(
    tmp_path: Path, content: str | None, problem: str
) -> None:
    secret = tmp_path / "pw"
    if content is not None:
        secret.write_text(content)
    with pytest.raises(ValueError, match=problem):
        BridgePlan("mqtt://central:1883", STATION, secret)


def test_framewire_broker_renders_a_site_and_a_central_broker(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRAMEWIRE_")}
    env["FRAMEWIRE_DATA_DIR"] = str(tmp_path / "data")

    def broker(*args: str) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "framewire", "broker", "--render-only", *args]
        return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)

    central = broker("--data-dir", str(tmp_path / "central"), "--bridge-from", STATION)
    assert central.returncode == 0, central.stderr
    secret = tmp_path / "central" / "secrets" / f"{BRIDGE}.password"
    assert secret.is_file()
    site = broker(
        *("--data-dir", str(tmp_path / "site"), "--station", STATION),
        *("--bridge-to", "mqtt://central.lan:1883", "--bridge-password-file", str(secret)),
    )
    assert site.returncode == 0, site.stderr
    conf = (tmp_path / "site" / "mosquitto.conf").read_text()
    assert f"connection {BRIDGE}\n" in conf and "address central.lan:1883\n" in conf
    no_station = broker("--bridge-to", "mqtt://central:1883", "--bridge-password-file", str(secret))
    assert no_station.returncode == 2 and "--station" in no_station.stderr
