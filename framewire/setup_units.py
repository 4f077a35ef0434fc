"""framewire's systemd units, declared once: `framewire setup` writes them onto a box, and
the copies in the repository's `systemd/` folder are these rendered with the default paths
(a test fails when they drift; `python -m framewire.setup_units systemd` rewrites them).

A unit holds no per-box value. Station, capture folder, broker, user and agent id live in
`framewire.toml`, which `framewire setup` writes and the user may edit; the only paths here
are the configuration file, the credential file and the framewire command itself.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

DEFAULT_EXE = Path("/opt/framewire/bin/framewire")
DEFAULT_MOSQUITTO = Path("/usr/sbin/mosquitto")
ETC = Path("/etc/framewire")
TARGET = "framewire.target"
BROKER_UNIT = "framewire-broker.service"
AGENTS = ("capture", "inference", "ledger")
# A value systemd would read as a specifier (%), a variable ($), a quote, an escape or a
# separator cannot appear in a path written into a unit unquoted.
_UNSAFE = set(" \t\n\r\"'\\%$;")


class UnitPathError(ValueError):
    """A path that cannot be written into a unit file as it is."""


@dataclass(frozen=True)
class UnitPaths:
    """Where the rendered units point: the framewire command, the broker, the root."""

    exe: Path = DEFAULT_EXE
    mosquitto: Path = DEFAULT_MOSQUITTO
    root: Path = Path("/")

    def __post_init__(self) -> None:
        for what, path in (("framewire", self.exe), ("mosquitto", self.mosquitto)):
            unit_safe(path, what)
        unit_safe(self.root, "--root")

    def under_root(self, path: Path) -> Path:
        return self.root / path.relative_to("/")

    @property
    def etc(self) -> Path:
        return self.under_root(ETC)


def unit_safe(path: Path, what: str) -> Path:
    bad = sorted(set(str(path)) & _UNSAFE)
    if bad or not path.is_absolute():
        raise UnitPathError(
            f"{what} path {str(path)!r} cannot go into a systemd unit as it is "
            f"({'it holds ' + ' '.join(map(repr, bad)) if bad else 'it is not absolute'}); "
            "use a path of letters, digits and / . _ - only"
        )
    return path


# The agent needs the network, its state directory and nothing else.
_HARDENING = """\
# --- hardening: the agent needs the network, its state directory, and nothing else
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
ProtectProc=invisible
ProcSubset=pid
RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
{mdwe}RemoveIPC=yes
CapabilityBoundingSet=
AmbientCapabilities=
SystemCallArchitectures=native
SystemCallFilter=@system-service
{syscalls}SystemCallErrorNumber=EPERM
UMask=0077
DevicePolicy=closed
PrivateUsers=yes
KeyringMode=private
"""

_MDWE_ON = "MemoryDenyWriteExecute=yes\n"
_MDWE_OFF = (
    "# MemoryDenyWriteExecute is off here: model runtimes (onnxruntime, MLX) map executable "
    "memory.\nMemoryDenyWriteExecute=no\n"
)
_SYSCALLS_STRICT = "SystemCallFilter=~@privileged @resources\n"
_SYSCALLS_INFERENCE = (
    "# onnxruntime pins its threads (sched_setaffinity, in @resources), so that group stays "
    "open.\nSystemCallFilter=~@privileged\n"
)


@dataclass(frozen=True)
class AgentUnit:
    kind: str
    what: str  # the Description, after "framewire <kind> agent: "
    box: str  # where it runs, for the header comment
    memory: str  # resource lines, with why
    values: str = "broker, user, agent id"  # what framewire.toml holds for it
    inference: bool = False

    @property
    def name(self) -> str:
        return f"framewire-{self.kind}.service"


_MEMORY_SMALL = """\
# Measured at about 75 MB resident; the ceiling leaves room for 20 MiB frames
# (max_frame_bytes) and SQLite's cache, and stops a leak before it starves the box.
MemoryMax=512M
"""
_MEMORY_INFERENCE = """\
# Measured at about 540 MB resident with the OCR models loaded (one worker); a 50 Mpx frame
# (max_pixels) decodes to 150 MB more. Past MemoryHigh the kernel reclaims and slows the
# agent down; MemoryMax is the hard ceiling. Raise both for more `workers`.
MemoryHigh=1G
MemoryMax=1536M
"""

UNITS = {
    u.kind: u
    for u in (
        AgentUnit(
            "capture",
            "publishes every image in the capture folder",
            "the capture box",
            _MEMORY_SMALL,
            values="station, capture folder, broker, user, agent id",
        ),
        AgentUnit(
            "inference",
            "runs the frame pipeline, publishes results",
            "an inference box",
            _MEMORY_INFERENCE,
            inference=True,
        ),
        AgentUnit(
            "ledger",
            "stores every result once, acknowledges it",
            "the capture box, or a ledger box",
            _MEMORY_SMALL,
        ),
    )
}


def credential_path(paths: UnitPaths, kind: str) -> Path:
    return paths.etc / "credentials" / f"{kind}.password"


def config_path(paths: UnitPaths) -> Path:
    return paths.etc / "framewire.toml"


def broker_data_dir(paths: UnitPaths) -> Path:
    return paths.etc / "broker"


def render_agent_unit(kind: str, paths: UnitPaths) -> str:
    u = UNITS[kind]
    capture_note = (
        "# The capture folder (watch_dir) is read, never written: ProtectSystem=strict leaves\n"
        "# every path but the state directory read-only. ProtectHome=yes hides /home, so keep\n"
        "# the folder elsewhere (/srv/framewire/captures by default).\n"
        if kind == "capture"
        else ""
    )
    hardening = _HARDENING.format(
        mdwe=_MDWE_OFF if u.inference else _MDWE_ON,
        syscalls=_SYSCALLS_INFERENCE if u.inference else _SYSCALLS_STRICT,
    )
    return f"""\
# framewire {kind} agent: {u.what} (runs on {u.box}).
# Written by `framewire setup`; every per-box value ({u.values})
# is in {config_path(paths)}.
# Local changes go in a drop-in: systemctl edit {u.name}
[Unit]
Description=framewire {kind} agent: {u.what}
Wants=network-online.target
After=network-online.target {BROKER_UNIT} mosquitto.service
PartOf={TARGET}

[Service]
Type=notify
NotifyAccess=main
ExecStart={paths.exe} run {kind}
Environment=FRAMEWIRE_CONFIG={config_path(paths)}
# The broker password never sits in the unit or the environment: systemd hands it over as
# a credential ($CREDENTIALS_DIRECTORY/mqtt-password), readable by this service only.
LoadCredential=mqtt-password:{credential_path(paths, kind)}
DynamicUser=yes
StateDirectory=framewire/{kind}
StateDirectoryMode=0750
{capture_note}Restart=on-failure
RestartSec=2s
# Exit 2 is a configuration error: restarting does not fix it, the status shows it.
RestartPreventExitStatus=2
WatchdogSec=30s
TimeoutStopSec=30s
KillSignal=SIGTERM
{u.memory}
{hardening}
[Install]
WantedBy={TARGET}
"""


def render_broker_unit(paths: UnitPaths) -> str:
    data = broker_data_dir(paths)
    return f"""\
# Mosquitto for framewire (runs on the capture box), with the configuration, users, ACL and
# certificates `framewire setup capture-box` rendered into {data}.
# Local changes go in a drop-in: systemctl edit {BROKER_UNIT}
[Unit]
Description=Mosquitto MQTT broker for framewire
Wants=network-online.target
After=network-online.target
# The distribution's broker would listen on the same port: disable it (systemctl disable
# --now mosquitto); this stops it whenever framewire's starts.
Conflicts=mosquitto.service
PartOf={TARGET}

[Service]
Type=exec
ExecStart={paths.mosquitto} -c {data / "mosquitto.conf"}
ExecReload=/bin/kill -HUP $MAINPID
# The user the mosquitto package creates. Setup lets its group read the broker's files and
# its user write persistence/; the agents' passwords (secrets/) and the CA key stay root's.
User=mosquitto
Restart=on-failure
RestartSec=2s
# No MemoryMax: the broker's memory is bounded by its queue limits (max_queued_bytes in
# mosquitto.conf), and killing it would drop every message it holds for a restarting agent.

# --- hardening: the broker needs the network, its persistence folder, and nothing else
ReadWritePaths={data / "persistence"}
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
ProtectProc=invisible
ProcSubset=pid
RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
MemoryDenyWriteExecute=yes
RemoveIPC=yes
CapabilityBoundingSet=
AmbientCapabilities=
SystemCallArchitectures=native
SystemCallFilter=@system-service
SystemCallFilter=~@privileged @resources
SystemCallErrorNumber=EPERM
UMask=0077
DevicePolicy=closed

[Install]
WantedBy={TARGET}
"""


def render_target() -> str:
    return f"""\
# All framewire units on this machine. `framewire setup` prints the units to enable with it
# (capture box: {BROKER_UNIT}, framewire-capture and framewire-ledger; inference box:
# framewire-inference); then `systemctl start {TARGET}` starts them all.
[Unit]
Description=framewire agents
Wants=network-online.target
After=network-online.target

[Install]
WantedBy=multi-user.target
"""


def render_unit(name: str, paths: UnitPaths) -> str:
    if name == TARGET:
        return render_target()
    if name == BROKER_UNIT:
        return render_broker_unit(paths)
    kind = name.removeprefix("framewire-").removesuffix(".service")
    if name != f"framewire-{kind}.service" or kind not in UNITS:
        raise KeyError(f"no framewire unit named {name!r}")
    return render_agent_unit(kind, paths)


def unit_names() -> list[str]:
    return [BROKER_UNIT, *(UNITS[k].name for k in AGENTS), TARGET]


def write_repository_copies(folder: Path) -> list[Path]:
    """The units with the default paths, as the repository's `systemd/` folder keeps them."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for name in unit_names():
        path = folder / name
        path.write_text(render_unit(name, UnitPaths()), encoding="utf-8")
        out.append(path)
    return out


if __name__ == "__main__":  # pragma: no cover - a maintainer's tool
    for written in write_repository_copies(Path(sys.argv[1] if len(sys.argv) > 1 else "systemd")):
        print(f"wrote {written}")
