"""Setting up a box with one command: `framewire setup capture-box|inference-box|ledger-box`.

Each writes, under a root (`/` on the box itself; another folder to prepare a box's files):

- `/etc/framewire/framewire.toml`, one table per agent with this box's values (broker_url,
  mqtt_username, agent_id, station, watch_dir, data_dir). Lines setup does not own are kept,
  so a user's edits survive a second run;
- `/etc/framewire/credentials/<agent>.password` (0600), which the units hand to the agents
  with LoadCredential=: from the broker's generated secrets on the box that runs the broker,
  else copied from `--password-file`. A password file that exists is never overwritten;
- the systemd units in `/etc/systemd/system`, running the framewire that runs setup;
- on the capture box, which runs the broker: Mosquitto's files (broker_config) and, for the
  TLS listener, a private CA and the broker's certificate (broker_config.certs).

Every path written into a file is under the root too, so a box prepared in a folder runs
from that folder. Running setup again with the same options changes nothing, and says so.
"""

from __future__ import annotations

import os
import pwd
import shutil
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from framewire import setup_units as units
from framewire.broker_config import BrokerError, BrokerPlan, default_accounts, write_broker_files
from framewire.broker_config.certs import (
    CertFolder,
    CertificateError,
    host_name,
    write_certificates,
)
from framewire.broker_config.identity_plugin import plugin_path
from framewire.broker_config.passwords import verify_password
from framewire.broker_config.render import Profile, render_acl, render_conf
from framewire.edge_agents.runtime.settings import SHARED_USER_KINDS, BrokerAddress, _host_id
from framewire.schemas import check_identifier
from framewire.setup_files import (
    Change,
    SetupError,
    Snapshot,
    copy_public,
    copy_secret,
    ensure_dir,
    write_config,
    write_file,
)
from framewire.setup_units import UnitPathError, UnitPaths

__all__ = ["BoxSetup", "Change", "SetupError", "apply", "capture_box", "remote_box"]

BROKER_USER = "mosquitto"  # the user the distribution's mosquitto package creates
DEFAULT_WATCH_DIR = Path("/srv/framewire/captures")
STATE_DIR = Path("/var/lib/framewire")  # systemd's StateDirectory=framewire/<agent>


@dataclass(frozen=True)
class AgentConfig:
    """One agent on this box: its table of framewire.toml and where its password comes from."""

    kind: str
    user: str
    agent_id: str
    broker_url: str
    password_source: Path
    extra: Mapping[str, str] = field(default_factory=dict)

    def table(self, paths: UnitPaths) -> dict[str, str]:
        return {
            "broker_url": self.broker_url,
            "mqtt_username": self.user,
            "agent_id": self.agent_id,
            **self.extra,
            "data_dir": str(paths.under_root(STATE_DIR / self.kind)),
        }


@dataclass(frozen=True)
class BrokerSetup:
    plan: BrokerPlan
    make_certs_for: list[str] | None  # a private CA and the broker certificate for these hosts
    owner: str | None  # the broker's files go to this user (when setup runs as root)


@dataclass(frozen=True)
class BoxSetup:
    box: str
    paths: UnitPaths
    agents: list[AgentConfig]
    broker: BrokerSetup | None = None
    watch_dir: Path | None = None
    ca_file: Path | None = None  # copied to /etc/framewire/ca.pem (the agents' mqtt_ca_file)
    broker_host: str | None = None  # the name other boxes reach this box's broker by

    @property
    def unit_names(self) -> list[str]:
        names = [units.BROKER_UNIT] if self.broker else []
        return [*names, *(units.UNITS[a.kind].name for a in self.agents), units.TARGET]


# --- where things are --------------------------------------------------------------------------
def framewire_executable() -> Path:
    """The framewire command running now, for the units' ExecStart=: sys.argv[0] when it is
    the framewire script, else the one next to this Python (a venv's bin), else on PATH."""
    argv0 = sys.argv[0]
    if Path(argv0).name == "framewire":
        found = argv0 if os.sep in argv0 else shutil.which(argv0)
        if found and os.access(found, os.X_OK):
            return Path(found).resolve()
    beside = Path(sys.executable).parent / "framewire"  # not resolved: a venv's python is a link
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside.absolute()
    on_path = shutil.which("framewire")
    if on_path:
        return Path(on_path).resolve()
    raise SetupError(
        "cannot find the framewire command the units should run: run setup as "
        "/path/to/venv/bin/framewire setup ..."
    )


def unit_paths(root: Path, exe: Path, mosquitto: Path | None = None) -> UnitPaths:
    try:
        return UnitPaths(exe=exe, mosquitto=mosquitto or units.DEFAULT_MOSQUITTO, root=root)
    except UnitPathError as exc:
        raise SetupError(str(exc)) from None


def _id(value: str, what: str) -> str:
    try:
        return check_identifier(value, what)
    except ValueError as exc:
        raise SetupError(str(exc)) from None


def _local_url(plan: BrokerPlan) -> str:
    host = plan.plain_bind
    host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host  # noqa: S104 - a comparison
    return f"mqtt://{'[' + host + ']' if ':' in host else host}:{plan.port}"


# --- the boxes ---------------------------------------------------------------------------------
def capture_box(
    *,
    station: str,
    paths: UnitPaths,
    broker_host: str,
    profile: Profile = "production",
    tls: bool | None = None,
    tls_cert: Path | None = None,
    tls_key: Path | None = None,
    port: int = 1883,
    tls_port: int = 8883,
    bind: str = "0.0.0.0",  # noqa: S104 - inference boxes connect from elsewhere
    watch_dir: Path = DEFAULT_WATCH_DIR,
    ledger: bool = True,
) -> BoxSetup:
    """The box that runs the broker and the capture agent, and the ledger unless told not to."""
    station = _id(station, "--station")
    if tls is None:
        tls = profile == "production" or tls_cert is not None
    if (tls_cert is None) != (tls_key is None):
        raise SetupError("--tls-cert and --tls-key go together")
    if not tls and tls_cert is not None:
        raise SetupError("--no-tls with --tls-cert: choose one")
    if profile == "production" and not tls and bind not in ("127.0.0.1", "localhost", "::1"):
        raise SetupError(
            "--profile production serves other machines over TLS only, so that no password "
            "crosses the network in clear text: drop --no-tls (setup then makes a private CA "
            "and the broker's certificate), or --bind 127.0.0.1 (no inference box elsewhere)"
        )
    broker_dir = units.broker_data_dir(paths)
    certs = CertFolder(broker_dir / "tls")
    make_certs_for = None
    if tls and tls_cert is None:
        make_certs_for = _cert_hosts(broker_host)
        tls_cert, tls_key = certs.broker_cert, certs.broker_key
    try:
        plan = BrokerPlan(
            broker_dir,
            port=port,
            bind=bind,
            profile=profile,
            accounts=default_accounts([station]),
            tls_cert=tls_cert,
            tls_key=tls_key,
            tls_port=tls_port if tls else None,
        )
    except ValueError as exc:
        raise SetupError(str(exc)) from None
    secrets = plan.secrets_dir
    capture_user = f"capture-{station}"
    url = _local_url(plan)
    agents = [
        AgentConfig(
            "capture",
            capture_user,
            capture_user,
            url,
            secrets / f"{capture_user}.password",
            {"station": station, "watch_dir": str(paths.under_root(watch_dir))},
        )
    ]
    if ledger:
        agents.append(AgentConfig("ledger", "ledger", "ledger", url, secrets / "ledger.password"))
    return BoxSetup(
        "capture box",
        paths,
        agents,
        broker=BrokerSetup(plan, make_certs_for, _broker_owner()),
        watch_dir=paths.under_root(watch_dir),
        broker_host=broker_host,
    )


def remote_box(
    kind: Literal["inference", "ledger"],
    *,
    paths: UnitPaths,
    broker_url: str,
    password_file: Path,
    ca_file: Path | None = None,
    agent_id: str | None = None,
) -> BoxSetup:
    """A box whose agent connects to the broker on the capture box."""
    try:
        address = BrokerAddress(broker_url)
    except ValueError as exc:
        raise SetupError(f"--broker: {exc}") from None
    if ca_file is not None and not address.tls:
        raise SetupError(f"--ca-file is for a TLS broker (mqtts://...), not {broker_url}")
    user = kind
    default_id = f"{user}-{_host_id()}" if kind in SHARED_USER_KINDS else user
    agent_id = _id(agent_id or default_id, "--agent-id")
    if agent_id != user and not agent_id.startswith(f"{user}-"):
        raise SetupError(
            f"--agent-id {agent_id!r}: framewire's broker accepts the {kind} user only with a "
            f"client id that is {user!r} or starts with '{user}-'"
        )
    extra = {"mqtt_ca_file": str(paths.etc / "ca.pem")} if ca_file else {}
    agent = AgentConfig(kind, user, agent_id, broker_url, password_file.absolute(), extra)
    return BoxSetup(f"{kind} box", paths, [agent], ca_file=ca_file)


def _cert_hosts(broker_host: str) -> list[str]:
    """The broker certificate names the host other boxes use first, then local names."""
    import socket

    hosts = [broker_host, "localhost", "127.0.0.1", "::1", socket.gethostname()]
    good = []
    for host in dict.fromkeys(hosts):
        try:
            host_name(host)
        except CertificateError as exc:
            if host == broker_host:
                raise SetupError(f"--broker-host: {exc}") from None
            continue  # a local host name DNS cannot carry is left out
        good.append(host)
    return good


def _broker_owner() -> str | None:
    """Mosquitto runs as its own user; as root, setup gives it the broker's files."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(BROKER_USER)
    except KeyError:
        raise SetupError(
            f"the broker runs as user {BROKER_USER!r}, which does not exist: install "
            "Mosquitto first (Debian/Ubuntu: sudo apt-get install -y mosquitto)",
            exit_code=3,
        ) from None
    return BROKER_USER


@dataclass(frozen=True)
class RemoteStep:
    """What another box needs from this one: files to copy over, the command to run there."""

    box: str
    files: list[Path]
    command: str


def remote_steps(box: BoxSetup) -> list[RemoteStep]:
    """For the box running the broker: how to set up the boxes that connect to it."""
    if box.broker is None or box.broker_host is None:
        return []
    plan = box.broker.plan
    host = f"[{box.broker_host}]" if ":" in box.broker_host else box.broker_host
    tls = plan.tls_cert is not None
    if tls:
        url, ca = f"mqtts://{host}:{plan.tls_port or 8883}", CertFolder(plan.data_dir / "tls")
    elif plan.plain_bind in ("127.0.0.1", "localhost", "::1"):
        return []  # nothing outside this box can reach the broker
    else:
        url, ca = f"mqtt://{host}:{plan.port}", None
    kinds = ["inference"] + ([] if any(a.kind == "ledger" for a in box.agents) else ["ledger"])
    steps = []
    for kind in kinds:
        files = [plan.secrets_dir / f"{kind}.password"]
        command = f"sudo {box.paths.exe} setup {kind}-box --broker {url} "
        command += f"--password-file {kind}.password"
        if ca is not None and box.broker.make_certs_for is not None:
            files.append(ca.ca_cert)
            command += f" --ca-file {ca.ca_cert.name}"
        steps.append(RemoteStep(f"{kind} box", files, command))
    return steps


def local_steps(box: BoxSetup) -> list[str]:
    """The commands that start what setup wrote."""
    steps = ["sudo systemctl daemon-reload"]
    if box.broker is not None:
        steps.append(
            "sudo systemctl disable --now mosquitto   # the distribution's broker: "
            f"{units.BROKER_UNIT} replaces it"
        )
    enable = " ".join(name.removesuffix(".service") for name in box.unit_names)
    steps.append(f"sudo systemctl enable --now {enable}")
    return steps


# --- doing it ----------------------------------------------------------------------------------
def apply(box: BoxSetup) -> list[Change]:
    """Write everything `box` needs; each file once, and only when it would change."""
    paths = box.paths
    changes = [ensure_dir(paths.etc, 0o755, "configuration folder")]
    if box.broker is not None:
        changes += _setup_broker(box.broker)
    creds = paths.etc / "credentials"
    changes.append(ensure_dir(creds, 0o700, "credentials folder"))
    for agent in box.agents:
        target = units.credential_path(paths, agent.kind)
        changes.append(copy_secret(agent.password_source, target, f"{agent.kind} password"))
    if box.ca_file is not None:
        changes.append(copy_public(box.ca_file, paths.etc / "ca.pem", "broker CA certificate"))
    if box.watch_dir is not None:
        changes.append(ensure_dir(box.watch_dir, 0o755, "capture folder", fix_mode=False))
    tables = {a.kind: a.table(paths) for a in box.agents}
    changes.append(write_config(units.config_path(paths), tables))
    unit_dir = paths.under_root(Path("/etc/systemd/system"))
    for name in box.unit_names:
        text = units.render_unit(name, paths)
        changes.append(write_file(unit_dir / name, text, 0o644, "systemd unit"))
    return changes


def _setup_broker(b: BrokerSetup) -> list[Change]:
    plan = b.plan
    certs = CertFolder(plan.data_dir / "tls")
    owned = {
        plan.data_dir: "broker folder",
        plan.conf_path: "broker configuration",
        plan.passwd_path: "broker password hashes",
        plan.acl_path: "broker ACL",
        plan.persistence_dir: "broker persistence folder",
        plan.plugin_dir: "broker plugin folder",
        plugin_path(plan.plugin_dir): "broker plugin",
    }
    if b.make_certs_for is not None:
        owned |= {
            certs.root: "TLS folder",
            certs.ca_cert: "CA certificate",
            certs.ca_key: "CA key",
            certs.broker_cert: "broker certificate",
            certs.broker_key: "broker key",
        }
    secrets = {
        plan.secrets_dir / f"{a.user}.password": f"password of {a.user}" for a in plan.accounts
    }
    snap = Snapshot([*owned, *secrets])
    try:
        if b.make_certs_for is not None:
            write_certificates(certs.root, b.make_certs_for)
        if not broker_files_current(plan):
            write_broker_files(plan)
    except CertificateError as exc:
        raise SetupError(str(exc)) from None
    except BrokerError as exc:  # no C compiler for the plugin, say
        raise SetupError(str(exc), exit_code=3) from None
    if b.owner is not None:
        _give_to_broker(plan, certs if b.make_certs_for is not None else None, b.owner)
    return snap.changes(owned | secrets)


def _give_to_broker(plan: BrokerPlan, certs: CertFolder | None, user: str) -> None:
    """Let Mosquitto (running as `user`) read its files and write its persistence folder,
    while root keeps owning them: the broker cannot rewrite its own configuration, and the
    agents' passwords (secrets/) and the CA key stay root's alone."""
    entry = pwd.getpwnam(user)
    readable = [(plan.data_dir, 0o750), (plan.plugin_dir, 0o750)]
    readable += [(p, 0o640) for p in (plan.conf_path, plan.passwd_path, plan.acl_path)]
    readable.append((plugin_path(plan.plugin_dir), 0o750))
    if certs is not None:
        readable += [(certs.root, 0o750), (certs.broker_key, 0o640), (certs.broker_cert, 0o644)]
    for path, mode in readable:
        os.chown(path, 0, entry.pw_gid)
        path.chmod(mode)
    for path in [plan.persistence_dir, *plan.persistence_dir.rglob("*")]:
        os.chown(path, entry.pw_uid, entry.pw_gid)


def broker_files_current(plan: BrokerPlan) -> bool:
    """True when writing the broker's files would change nothing but the password hashes'
    salts (broker_config rewrites them with new salts on every render)."""
    try:
        if plan.conf_path.read_text(encoding="utf-8") != render_conf(plan):
            return False
        if plan.acl_path.read_text(encoding="utf-8") != render_acl(plan):
            return False
        if not plugin_path(plan.plugin_dir).is_file():
            return False
        lines = plan.passwd_path.read_text(encoding="utf-8").splitlines()
        hashes = dict(line.split(":", 1) for line in lines if line)
        users = {a.user for a in plan.accounts}
        if set(hashes) != users:
            return False
        for user in users:
            secret = (plan.secrets_dir / f"{user}.password").read_text(encoding="utf-8").strip()
            if not verify_password(secret, hashes[user]):
                return False
    except (OSError, ValueError):
        return False
    return True
