"""Several sites: a station's own Mosquitto bridged to the central broker.

The site broker runs the station's capture agent; inference and the ledger are central.
Mosquitto's bridge carries, with the prefix unchanged on both sides:

    out  <prefix>/announce/<station>, frames/<station>  QoS 1
    out  the station's agents' availability, status,     QoS 0, retained: Mosquitto sends
         thumbnail, Home Assistant device                the current values on every reconnect
    out  the station's agents' dead letters, responses  QoS 1
    in   <prefix>/results/<station>, acks/<station>     QoS 1
    in   every agent's availability and status          QoS 0, retained (capture holds frames
                                                        while no inference agent is online)
    in   requests to the station's agents, HA's birth   QoS 1

The retained state goes at QoS 0 so that an outage does not queue a status heartbeat every
`status_interval` (5,760 a day per agent at 15 s) in front of the frames: when the link
comes back, Mosquitto sends the current value of each retained topic anyway.

While the link is down the site broker queues what goes out in the bridge's session, up to
its max_queued_messages / max_queued_bytes; the capture agent has at most `max_in_flight`
frames unacknowledged, so that is the station's in-flight window plus its resends, and every
other frame of the outage waits in the capture agent's state database. A message Mosquitto
drops past the limit is a resend of a frame already queued, or is resent after ack_timeout.

Mosquitto 2.0's MQTT 5 bridge asks the central broker for no session expiry, so the central
broker forgets the bridge's session when the link breaks: results and acknowledgements
published while it is down do not wait there; the capture agent resends those frames after
ack_timeout and the ledger acknowledges them again without writing a second row. MQTT 5 is
needed all the same: a frame's metadata travels in MQTT 5 user properties.
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from framewire.edge_agents.runtime.settings import BrokerAddress
from framewire.schemas import check_identifier
from framewire.schemas.topics import TopicTree, ha_status_topic

if TYPE_CHECKING:
    from framewire.broker_config.render import BrokerPlan

PASSWORD_MAX = 1024
_ID = "fw-agent-id"  # an identifier standing for %c while a pattern is built


def capture_user(station: str) -> str:
    return f"capture-{station}"


def bridge_user(station: str) -> str:
    """The central broker's user (and client id) for the bridge of `station`'s broker."""
    return f"bridge-{station}"


def carried_agents(station: str) -> list[str]:
    """The agents of a station whose topics its bridge carries: the capture agent (id =
    its user's name) and the import agent `framewire import` runs for the station."""
    return [capture_user(station), f"import-{station}"]


@dataclass(frozen=True)
class BridgeTopic:
    """One `topic` line of the bridge: a full topic or filter, its direction and QoS."""

    topic: str
    out: bool  # site -> central; else central -> site
    qos: int

    def line(self) -> str:
        return f"topic {self.topic} {'out' if self.out else 'in'} {self.qos}"


def station_topics(t: TopicTree, ha_prefix: str, station: str) -> list[BridgeTopic]:
    """The station's topics that are not its agents' own: the bridge's `topic` lines, and
    the bridge user's ACL on the central broker (out = write, in = read)."""
    return [
        BridgeTopic(t.announcements(station), out=True, qos=1),  # before each frame
        BridgeTopic(t.frames(station), out=True, qos=1),
        BridgeTopic(f"{t.prefix}/responses/+", out=True, qos=1),  # answers to requests
        BridgeTopic(t.results(station), out=False, qos=1),
        BridgeTopic(t.acks(station), out=False, qos=1),
        BridgeTopic(t.all_availability(), out=False, qos=0),
        BridgeTopic(t.all_status(), out=False, qos=0),
        BridgeTopic(ha_status_topic(ha_prefix), out=False, qos=1),  # re-announce on its birth
    ]


def carried_topics(
    station: str, own_write: Sequence[str], own_read: Sequence[str], dead_letters: str
) -> list[BridgeTopic]:
    """The own topics (`%c` patterns, see render.own_topics) of the station's agents: what
    they write goes out (QoS 0 for retained state, QoS 1 for dead letters), requests to
    them come in. The central broker's plugin grants these to the bridge user."""
    topics = []
    for agent in carried_agents(station):
        for pattern in own_write:
            qos = 1 if pattern == dead_letters else 0
            topics.append(BridgeTopic(pattern.replace("%c", agent), out=True, qos=qos))
        topics += [BridgeTopic(p.replace("%c", agent), out=False, qos=1) for p in own_read]
    return topics


def _trust_store() -> str:
    """Mosquitto's TLS option naming the system's CA certificates."""
    paths = ssl.get_default_verify_paths()
    if paths.cafile and Path(paths.cafile).is_file():
        return f"bridge_cafile {paths.cafile}"
    return f"bridge_capath {paths.capath or '/etc/ssl/certs'}"


@dataclass(frozen=True)
class BridgePlan:
    """The bridge from this (site) broker to the central one."""

    central_url: str  # mqtt://host:port or mqtts://host:port
    station: str
    password_file: Path  # the central broker's secrets/bridge-<station>.password
    user: str = ""  # default: the URL's user, else bridge-<station>
    ca_file: Path | None = None  # CA of the central broker's certificate (mqtts)
    restart_timeout: tuple[int, int] = (5, 60)  # reconnect backoff: first and longest wait, s
    keepalive: int = 30  # a silent link is noticed after 1.5 x this
    password: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        address = BrokerAddress(self.central_url)  # ValueError names what is wrong
        check_identifier(self.station, "station")
        user = self.user or address.username or bridge_user(self.station)
        object.__setattr__(self, "user", check_identifier(user, "bridge user"))
        if self.ca_file is not None and not address.tls:
            raise ValueError(f"a bridge CA file needs an mqtts:// URL, not {self.central_url}")
        base, cap = self.restart_timeout
        if not 1 <= base <= cap:
            raise ValueError(
                f"bridge restart_timeout {self.restart_timeout}: need 1 <= first <= cap"
            )
        if not 5 <= self.keepalive <= 3600:
            raise ValueError(f"bridge keepalive {self.keepalive} s: need 5 to 3600")
        object.__setattr__(self, "password_file", self.password_file.absolute())
        if self.ca_file is not None:
            object.__setattr__(self, "ca_file", self.ca_file.absolute())
        object.__setattr__(self, "password", self._read_password())

    def _read_password(self) -> str:
        try:
            with self.password_file.open("rb") as f:
                raw = f.read(PASSWORD_MAX + 2)
        except OSError as err:
            raise ValueError(
                f"cannot read the bridge password file {self.password_file}: {err.strerror or err}"
            ) from None
        try:
            password = raw.decode("utf-8").strip()
        except UnicodeDecodeError:
            password = ""
        # mosquitto.conf has no quoting: the password must be one word
        if not password or len(password) > PASSWORD_MAX or not password.isprintable():
            raise ValueError(
                f"the bridge password in {self.password_file} must be one line of up to "
                f"{PASSWORD_MAX} printable UTF-8 characters"
            )
        if any(c.isspace() for c in password) or password.startswith("#"):
            raise ValueError(
                f"the bridge password in {self.password_file} may not hold spaces or start "
                "with '#' (mosquitto.conf cannot carry them)"
            )
        return password

    @property
    def address(self) -> BrokerAddress:
        return BrokerAddress(self.central_url)

    @property
    def local_client_id(self) -> str:
        """The bridge's client id on this broker (its session holds the queued frames)."""
        return f"{self.user}-local"


def bridge_section(
    bridge: BridgePlan, plan: BrokerPlan, own_write: Sequence[str], own_read: Sequence[str]
) -> list[str]:
    """The `connection` section of the site broker's mosquitto.conf."""
    t = TopicTree(plan.prefix)
    central = bridge.address
    dead_letters = t.dead_letters(_ID).replace(_ID, "%c")
    base, cap = bridge.restart_timeout
    lines = [
        "# --- bridge to the central broker: this station's frames and agents out; its results,",
        "# acknowledgements and requests in (see broker_config/bridge.py). While the link is",
        "# down, what goes out is queued here (the capture agent's in-flight window and its",
        f"# resends), up to max_queued_messages {plan.max_queued_messages} and max_queued_bytes",
        f"# {plan.max_queued_bytes}; the outage's other frames wait in the capture state database.",
        f"connection {bridge.user}",
        f"address {central.host}:{central.port}",
        f"remote_clientid {bridge.user}",
        f"local_clientid {bridge.local_client_id}",
        f"remote_username {bridge.user}",
        f"remote_password {bridge.password}",
        "bridge_protocol_version mqttv50",  # frame metadata is in MQTT 5 user properties
        "cleansession false",
        "local_cleansession false",  # keep what is queued for the central broker
        # marks a bridge only over MQTT 3.1.1, should Mosquitto fall back to it; over MQTT 5
        # the bridge's subscriptions are no-local, so nothing it sends comes back live
        "try_private true",
        "start_type automatic",
        f"restart_timeout {base} {cap}",  # a single value is ignored before Mosquitto 2.0.15
        f"keepalive_interval {bridge.keepalive}",
        "notifications true",
        "notifications_local_only false",
        # retained "1" / "0" (Last Will on the central broker): is the station's link up
        f"notification_topic {t.bridge_state(bridge.station)}",
    ]
    if central.tls:
        lines.append(
            f"bridge_cafile {bridge.ca_file}" if bridge.ca_file is not None else _trust_store()
        )
        lines += ["bridge_insecure false", "bridge_tls_version tlsv1.2"]
    topics = station_topics(t, plan.ha_prefix, bridge.station)
    topics += carried_topics(bridge.station, own_write, own_read, dead_letters)
    lines += [b.line() for b in topics]
    return lines
