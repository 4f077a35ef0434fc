"""Building framewire's Mosquitto plugin (identity_plugin.c) with the machine's C compiler.

The plugin binds client ids to users, shared-subscription groups to roles and each agent's
own topics to the client id it owns; why a plugin is needed is said at the top of the C file.
It is built once per source version into the broker's data folder (a fraction of a second)
and loaded by the rendered mosquitto.conf.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

from framewire.broker_config.errors import BrokerError

SOURCE = Path(__file__).with_name("identity_plugin.c")
NAME = "framewire_identity"

COMPILER_HINT = """framewire's Mosquitto plugin (it binds client ids to users) is built with a C
compiler, and none was found (set CC, or install one):
  Debian/Ubuntu:  sudo apt-get install -y gcc
  Fedora/RHEL:    sudo dnf install -y gcc
  macOS:          xcode-select --install"""


class PluginBuildError(BrokerError):
    """The plugin could not be compiled; the message says why and what to install."""


def plugin_path(folder: Path) -> Path:
    """Where the plugin built from the current source lives in `folder`."""
    try:
        source = SOURCE.read_bytes()
    except OSError as err:
        raise PluginBuildError(
            f"{SOURCE} is missing from this installation ({err.strerror}); reinstall framewire"
        ) from None
    digest = hashlib.sha256(source).hexdigest()[:12]
    return folder.absolute() / f"{NAME}-{digest}.so"


def find_compiler() -> str:
    chosen = os.environ.get("CC")
    found = shutil.which(chosen) if chosen else None
    found = found or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if found is None:
        raise PluginBuildError(COMPILER_HINT)
    return found


def build_plugin(folder: Path) -> Path:
    """Compile the plugin into `folder` unless this version is already there."""
    target = plugin_path(folder)
    if target.is_file():
        return target
    compiler = find_compiler()
    folder.mkdir(parents=True, exist_ok=True)
    # Mosquitto resolves the plugin's calls into the broker itself when it loads it.
    link = ["-bundle", "-undefined", "dynamic_lookup"] if sys.platform == "darwin" else ["-shared"]
    tmp = target.with_name(f".{target.name}.tmp")
    cmd = [compiler, *link, "-fPIC", "-O2", "-Wall", "-Wextra", "-o", str(tmp), str(SOURCE)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise PluginBuildError(f"could not run {compiler} to build {SOURCE.name}: {err}") from None
    if done.returncode != 0:
        raise PluginBuildError(
            f"building {SOURCE.name} with {compiler} failed (exit {done.returncode}):\n"
            f"{done.stderr.strip()}"
        )
    tmp.replace(target)
    for old in folder.glob(f"{NAME}-*.so"):  # earlier versions of the source
        if old != target:
            old.unlink(missing_ok=True)
    return target
