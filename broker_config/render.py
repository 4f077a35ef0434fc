"""Rendering a Mosquitto configuration: listeners, persistence, limits, users and ACLs.

Two profiles. `development`: listeners on `bind` (localhost by default); anonymous clients
may only read (so `mosquitto_sub -t 'framewire/#'` works with no password), agents log in.
`production`: no anonymous access, and no password crosses the network in clear text: the
plain listener stays on localhost (for the agents and the CLI on the broker's own box) and
every other address is served by the TLS listener only.

In both, framewire's Mosquitto plugin (identity_plugin.c) binds each client id to the user
that owns it, lets only inference users join the inference share group, and grants each
agent its own topics (availability, status, dead letters, requests...) under its own client
id. The ACL file holds no `%c` pattern: Mosquitto applies those to every client, anonymous
ones included, with whatever client id they pick.

Several sites: a station's own broker bridges to the central one (bridge.py renders the
`connection` section); the central broker has a `bridge-<station>` user with that station's
rights.
"""

from __future__ import annotations

import getpass
import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from framewire.broker_config.bridge import (
    BridgePlan,
    bridge_section,
    bridge_user,
    capture_user,
    carried_agents,
    station_topics,
)
from framewire.broker_config.identity_plugin import plugin_path
from framewire.edge_agents.runtime.homeassistant import discovery_topic
from framewire.schemas import check_identifier
from framewire.schemas.channels import (
    ACKS,
    ANNOUNCEMENTS,
    ESCALATED,
    ESCALATIONS,
    REQUESTS,
    RESPONSES,
    SHADOW,
)
from framewire.schemas.topics import TopicTree, check_prefix, ha_status_topic

AGENT_ROLES = ("capture", "inference", "ledger")
Role = Literal["capture", "inference", "ledger", "observer", "operator", "homeassistant", "bridge"]
ASSIGNED_ID_PREFIX = "auto"  # Mosquitto names clients that send no id "auto-<uuid>"
_CLIENT = "fw-own-client-id"  # an identifier standing for %c while topics are built

Profile = Literal["development", "production"]
FRAME_HEADROOM = 64 * 1024  # MQTT header and user properties on top of the image bytes


@dataclass(frozen=True)
class AgentAccount:
    """One broker user, the topics it may use and the client ids it owns."""

    user: str
    role: Role
    station: str | None = None  # capture and bridge accounts are bound to one station

    def __post_init__(self) -> None:
        check_identifier(self.user, "broker user")
        if self.user.split("-")[0] == ASSIGNED_ID_PREFIX:
            raise ValueError(
                f"broker user {self.user!r} would own the client ids Mosquitto assigns "
                f"({ASSIGNED_ID_PREFIX}-...); choose another name"
            )
        if self.station is not None:
            check_identifier(self.station, "station")
        if self.role in ("capture", "bridge") and self.station is None:
            raise ValueError(f"{self.role} user {self.user!r} needs its station")

    @property
    def is_agent(self) -> bool:
        return self.role in AGENT_ROLES

    @property
    def client_id_prefixes(self) -> list[str]:
        """Client ids this user owns: each prefix itself and `<prefix>-...`. A capture user
        also owns its station's import agent, which `framewire import` names
        `import-<station>` (edge_agents/capture/backlog.py)."""
        if self.role == "capture":
            return [self.user, f"import-{self.station}"]
        return [self.user]


def default_accounts(
    stations: list[str] | None = None, bridges: list[str] | None = None
) -> list[AgentAccount]:
    """The users of a broker: a capture user per station that connects to it directly, a
    bridge user per station whose own broker bridges in (`bridges`), and the rest. With
    neither, one station, `station-1`."""
    bridges = bridges or []
    stations = stations or ([] if bridges else ["station-1"])
    accounts = [AgentAccount(capture_user(s), "capture", s) for s in stations]
    accounts += [AgentAccount(bridge_user(s), "bridge", s) for s in bridges]
    accounts += [
        AgentAccount("inference", "inference"),
        AgentAccount("ledger", "ledger"),
        AgentAccount("observer", "observer"),
        AgentAccount("operator", "operator"),
        AgentAccount("homeassistant", "homeassistant"),
    ]
    return accounts


@dataclass
class BrokerPlan:
    """Everything that decides the rendered files."""

    data_dir: Path
    port: int = 1883
    bind: str = "127.0.0.1"
    profile: Profile = "development"
    prefix: str = "framewire"
    ha_prefix: str = "homeassistant"
    max_frame_bytes: int = 20 * 1024 * 1024
    # The capture agents' in-flight windows keep queues short; these limits are headroom.
    max_queued_messages: int = 10_000
    max_queued_bytes: int = 2 * 1024**3
    autosave_interval: int = 30
    tls_port: int | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_ca: Path | None = None
    share_group: str = "inference"  # the inference agents' share_group
    # the share groups of shadow and escalation agents (inference users only, as above)
    role_groups: tuple[str, ...] = ("shadow", "escalation")
    accounts: list[AgentAccount] = field(default_factory=default_accounts)
    bridge: BridgePlan | None = None  # this is a site's broker, bridged to the central one

    def __post_init__(self) -> None:
        check_prefix(self.prefix)
        check_prefix(self.ha_prefix)
        check_identifier(self.share_group, "share group")
        for group in self.role_groups:
            check_identifier(group, "share group")
        if _CLIENT in self.prefix or _CLIENT in self.ha_prefix:
            raise ValueError(f"topic prefixes may not contain {_CLIENT!r}")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("TLS needs both tls_cert and tls_key")
        if self.tls_ca is not None and self.tls_cert is None:
            raise ValueError("tls_ca (client certificates) needs tls_cert and tls_key")
        if self.profile == "production" and self.tls_cert is None and not _loopback(self.bind):
            raise ValueError(
                f"the production profile serves {self.bind} over TLS only, so that no "
                "password crosses the network in clear text: give tls_cert and tls_key "
                "(`framewire broker certs` makes them), or bind 127.0.0.1"
            )
        users = [a.user for a in self.accounts]
        if len(set(users)) != len(users):
            raise ValueError(f"broker users must be unique: {sorted(users)}")
        if self.bridge is not None and self.bridge.user in users:
            raise ValueError(
                f"user {self.bridge.user!r} is the bridge's user on the central broker; this "
                "broker reserves the bridge's client ids for it and cannot have that user too"
            )
        # Mosquitto resolves relative paths against its own working directory.
        self.data_dir = self.data_dir.absolute()
        self.tls_cert = self.tls_cert.absolute() if self.tls_cert else None
        self.tls_key = self.tls_key.absolute() if self.tls_key else None
        self.tls_ca = self.tls_ca.absolute() if self.tls_ca else None

    @property
    def plain_bind(self) -> str:
        """Where the plain-text listener listens: localhost only in production."""
        if self.profile == "production" and not _loopback(self.bind):
            return "127.0.0.1"
        return self.bind

    @property
    def conf_path(self) -> Path:
        return self.data_dir / "mosquitto.conf"

    @property
    def passwd_path(self) -> Path:
        return self.data_dir / "passwd"

    @property
    def acl_path(self) -> Path:
        return self.data_dir / "acl"

    @property
    def secrets_dir(self) -> Path:
        return self.data_dir / "secrets"

    @property
    def persistence_dir(self) -> Path:
        return self.data_dir / "persistence"

    @property
    def plugin_dir(self) -> Path:
        return self.data_dir / "plugin"


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def render_acl(plan: BrokerPlan) -> str:
    t = TopicTree(plan.prefix)
    ha_status = ha_status_topic(plan.ha_prefix)
    lines = ["# Generated by framewire; each agent may use only the topics it needs."]
    if plan.profile == "development":
        lines += ["", "# anonymous clients (development only): read everything, write nothing"]
        lines += [f"topic read {t.everything()}", f"topic read {plan.ha_prefix}/#"]
        lines += ["topic read $SYS/#"]
    for acc in plan.accounts:
        lines += ["", f"user {acc.user}"]
        if acc.role == "capture":
            assert acc.station is not None
            lines += [
                # its frames, each announced first: only this user vouches for the station's
                # frames (its import agent, `import-<station>`, logs in as this user too)
                f"topic write {t.announcements(acc.station)}",
                f"topic write {t.frames(acc.station)}",
                f"topic read {t.acks(acc.station)}",
                f"topic read {t.results(acc.station)}",
                # who is online: frames wait while no inference agent is
                f"topic read {t.all_availability()}",
                f"topic read {t.all_status()}",
            ]
        elif acc.role == "inference":
            lines += [
                f"topic read {t.all_frames()}",
                f"topic write {t.all_results()}",
                # shadow readings; frames for a second reading (escalation agents read them
                # in their share group) and the readings back, each to the agent that asked
                # (its own escalated/ topic, granted by the plugin under its id)
                f"topic write {SHADOW.filter(t)}",
                f"topic readwrite {ESCALATIONS.filter(t)}",
                f"topic write {ESCALATED.filter(t)}",
                # who is online: a fallback stands in while no primary is, and a primary
                # escalates only while an escalation agent is
                f"topic read {t.all_availability()}",
                f"topic read {t.all_status()}",
            ]
        elif acc.role == "ledger":
            # results: it stores every one, and may publish one again (the replay command);
            # acknowledgements: no other user may write one; announcements: what makes a
            # result inventory
            lines += [
                f"topic readwrite {t.all_results()}",
                f"topic write {ACKS.filter(t)}",
                f"topic read {ANNOUNCEMENTS.filter(t)}",
                # shadow agents' readings, compared with the results
                f"topic read {SHADOW.filter(t)}",
            ]
        elif acc.role == "bridge":  # a site broker: its station's traffic (bridge.py)
            assert acc.station is not None
            topics = station_topics(t, plan.ha_prefix, acc.station)
            lines += [f"topic {'write' if b.out else 'read'} {b.topic}" for b in topics]
            lines.append(f"topic write {t.bridge_state(acc.station)}")  # its notifications
        elif acc.role == "operator":  # the CLI's requests to agents
            lines += [
                f"topic read {t.everything()}",
                f"topic write {REQUESTS.filter(t)}",
            ]
        elif acc.role == "homeassistant":  # discovery, states, images; its birth message
            lines += [
                f"topic read {t.everything()}",
                f"topic read {plan.ha_prefix}/#",
                f"topic write {ha_status}",
            ]
        else:
            lines += [f"topic read {t.everything()}", f"topic read {plan.ha_prefix}/#"]
            lines += ["topic read $SYS/#"]
        if acc.is_agent:
            # Home Assistant's birth message, and replies to requests: one level under
            # responses/, never anywhere else (the agent refuses other response topics too)
            lines += [f"topic read {ha_status}", f"topic write {RESPONSES.filter(t)}"]
    lines += [
        "",
        "# Each agent's own availability, status, thumbnail, dead letters, Home Assistant",
        "# device and requests are granted by framewire's plugin (see mosquitto.conf), and only",
        "# under a client id its user owns; a bridge's, for the agents of its station.",
        "",
    ]
    return "\n".join(lines)


def own_topics(plan: BrokerPlan) -> tuple[list[str], list[str]]:
    """The topics an agent writes and reads under its own id, `%c` standing for the id."""
    t, c = TopicTree(plan.prefix), _CLIENT
    write = [
        t.availability(c),
        t.status(c),
        t.thumbnail(c),
        t.dead_letters(c),
        discovery_topic(plan.ha_prefix, c),
    ]
    read = [t.requests(c), t.escalated(c)]
    return [w.replace(c, "%c") for w in write], [r.replace(c, "%c") for r in read]


def render_plugin(plan: BrokerPlan) -> list[str]:
    """mosquitto.conf lines loading framewire's plugin with this plan's users and roles."""
    write, read = own_topics(plan)
    agents = [a.user for a in plan.accounts if a.is_agent]
    sharers = [a.user for a in plan.accounts if a.role == "inference"]
    lines = [f"plugin {plugin_path(plan.plugin_dir)}"]
    lines += [f"plugin_opt_owner_{a.user} {','.join(a.client_id_prefixes)}" for a in plan.accounts]
    if agents:
        lines.append(f"plugin_opt_agents {','.join(agents)}")
    lines += [f"plugin_opt_own_write {','.join(write)}", f"plugin_opt_own_read {','.join(read)}"]
    if sharers:  # no inference user: nobody may join the groups
        for group in dict.fromkeys((plan.share_group, *plan.role_groups)):
            lines.append(f"plugin_opt_share_{group} {','.join(sharers)}")
    for acc in plan.accounts:
        if acc.role == "bridge":
            assert acc.station is not None
            lines.append(f"plugin_opt_bridge_{acc.user} {','.join(carried_agents(acc.station))}")
    if plan.bridge is not None:
        # the bridge's session on this broker, with the frames queued while the link is
        # down: owned by a user this broker does not have, so no client can take it over
        lines.append(f"plugin_opt_owner_{plan.bridge.user} {plan.bridge.local_client_id}")
    return lines


def render_conf(plan: BrokerPlan) -> str:
    persistence = plan.persistence_dir
    lines = [
        "# Generated by framewire (`framewire broker render`); edits are overwritten.",
        f"# profile: {plan.profile}",
        "per_listener_settings false",
        "",
        "# --- persistence: queued QoS 1 messages and persistent sessions survive restarts",
        "persistence true",
        f"persistence_location {persistence}/",
        f"autosave_interval {plan.autosave_interval}",
        "",
        "# --- limits, sized for image frames",
        f"max_packet_size {plan.max_frame_bytes + FRAME_HEADROOM}",
        f"max_queued_messages {plan.max_queued_messages}",
        f"max_queued_bytes {plan.max_queued_bytes}",
        "max_inflight_messages 20",
        "queue_qos0_messages false",
        "persistent_client_expiration 14d",
        "",
        "# --- who may connect, and to what",
        f"allow_anonymous {'true' if plan.profile == 'development' else 'false'}",
        f"password_file {plan.passwd_path}",
        f"acl_file {plan.acl_path}",
        "",
        "# --- client ids bound to users, the share group to inference, agents' own topics",
        *render_plugin(plan),
        "",
        "# --- listeners",
        f"listener {plan.port} {plan.plain_bind}",
        "protocol mqtt",
    ]
    if plan.tls_cert is not None and plan.tls_key is not None:
        lines += [
            "",
            f"listener {plan.tls_port or 8883} {plan.bind}",
            "protocol mqtt",
            f"certfile {plan.tls_cert}",
            f"keyfile {plan.tls_key}",
        ]
        if plan.tls_ca is not None:  # mutual TLS: every client shows a certificate too
            lines += [f"cafile {plan.tls_ca}", "require_certificate true"]
        lines.append("tls_version tlsv1.2")
    lines += [
        "",
        "# --- logging (to stdout: journald or framewire captures it)",
        "log_dest stdout",
        "log_type error",
        "log_type warning",
        "log_type notice",
        "log_type information",
        "connection_messages true",
        "log_timestamp_format %Y-%m-%dT%H:%M:%S",
    ]
    if os.geteuid() == 0 and plan.profile == "development":
        # Mosquitto started as root switches to user `mosquitto`, which could not read
        # this data directory; for a development broker stay as the current user.
        lines.append(f"user {getpass.getuser()}")
    if plan.bridge is not None:  # last: every line after `connection` belongs to the bridge
        write, read = own_topics(plan)
        lines += ["", *bridge_section(plan.bridge, plan, write, read)]
    return "\n".join(lines) + "\n"


def write_broker_files(plan: BrokerPlan) -> dict[str, Path]:
    """Write config, ACL, password file and per-user secrets; returns user -> secret path.

    Secrets are generated once and kept, so agents configured with them keep working
    across re-renders. Folders are 0700 and files 0600: they hold password hashes, the
    agents' passwords and the broker's persisted messages.
    """
    from framewire.broker_config.identity_plugin import build_plugin
    from framewire.broker_config.passwords import (
        ensure_secrets,
        render_password_file,
        write_private,
    )

    for folder in (plan.data_dir, plan.persistence_dir, plan.secrets_dir, plan.plugin_dir):
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o700)
    build_plugin(plan.plugin_dir)
    secret_paths = ensure_secrets(plan.secrets_dir, [a.user for a in plan.accounts])
    passwords = {u: p.read_text(encoding="utf-8").strip() for u, p in secret_paths.items()}
    write_private(plan.passwd_path, render_password_file(passwords))
    write_private(plan.acl_path, render_acl(plan))
    write_private(plan.conf_path, render_conf(plan))
    return secret_paths
