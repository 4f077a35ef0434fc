"""The files `framewire setup` writes, each only when it would change: folders, secrets
(never overwritten), certificates, units, and framewire.toml edited line by line so that
every line setup does not own stays as the user left it."""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from framewire.broker_config.passwords import write_private

Action = Literal["created", "updated", "unchanged", "kept"]
TomlValue = str | int | bool
SECRET_MAX = 1024  # bytes: a password file is one line; anything longer is not one
TOML_HEADER = """\
# framewire configuration: `framewire config reference` lists every setting.
# `framewire setup` wrote this box's values. Edit freely: running setup again sets only the
# keys it writes (broker_url, mqtt_username, agent_id, station, watch_dir, data_dir) from its
# options, and leaves every other line as it is.
"""


class SetupError(Exception):
    """What stops setup, said so a person can fix it; `exit_code` as the CLI returns it."""

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True)
class Change:
    """One file or folder and what this run did to it."""

    action: Action
    path: Path
    what: str
    note: str = ""


class Snapshot:
    """Content, mode and owner of files before a step, to say afterwards what it changed
    (broker_config rewrites and re-chmods some files that end up as they were)."""

    def __init__(self, paths: Iterable[Path]) -> None:
        self.before = {p: _state(p) for p in paths}

    def changes(self, what: Mapping[Path, str]) -> list[Change]:
        out = []
        for path, label in what.items():
            before, after = self.before.get(path), _state(path)
            if after is None:
                continue
            action: Action = "created" if before is None else "updated"
            out.append(Change("unchanged" if before == after else action, path, label))
        return out


def _state(path: Path) -> tuple[str, int, int, int] | None:
    try:
        st = path.lstat()
    except FileNotFoundError:
        return None
    digest = hashlib.sha256(path.read_bytes()).hexdigest() if stat.S_ISREG(st.st_mode) else ""
    return digest, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid


def ensure_dir(path: Path, mode: int, what: str, *, fix_mode: bool = True) -> Change:
    if path.is_dir():
        if fix_mode and stat.S_IMODE(path.stat().st_mode) != mode:
            path.chmod(mode)
            return Change("updated", path, what, f"mode {mode:o}")
        return Change("unchanged", path, what)
    if path.exists():
        raise SetupError(f"{path} ({what}) exists and is not a folder")
    path.mkdir(parents=True)
    path.chmod(mode)
    return Change("created", path, what)


def read_secret(path: Path, what: str) -> str:
    """A password from a file, checked before it is read: a regular file, one short line."""
    try:
        st = path.stat()
        if not stat.S_ISREG(st.st_mode):
            raise SetupError(f"{what} {path} is not a regular file")
        if st.st_size > SECRET_MAX:
            raise SetupError(
                f"{what} {path} is {st.st_size} bytes, over {SECRET_MAX}: not a password"
            )
        text = path.read_bytes().decode("utf-8").strip()
    except OSError as exc:
        raise SetupError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise SetupError(f"{what} {path} is not UTF-8 text") from None
    if not text or not text.isprintable():
        raise SetupError(f"{what} {path} must hold one line: the password")
    return text


def copy_secret(source: Path, target: Path, what: str) -> Change:
    secret = read_secret(source, f"the {what} file")
    if target.exists():
        if read_secret(target, what) != secret:
            return Change(
                "kept",
                target,
                what,
                f"differs from {source}; passwords are never overwritten: remove it and run "
                "setup again to take the new one",
            )
        if stat.S_IMODE(target.stat().st_mode) != 0o600:
            target.chmod(0o600)
            return Change("updated", target, what, "mode 600")
        return Change("unchanged", target, what)
    write_private(target, secret + "\n")
    return Change("created", target, what)


def copy_public(source: Path, target: Path, what: str) -> Change:
    try:
        if not source.is_file() or source.stat().st_size > 1024 * 1024:
            raise SetupError(f"{source} ({what}) is not a certificate file")
        text = source.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SetupError(f"cannot read {what} {source}: {exc}") from None
    if "-----BEGIN CERTIFICATE-----" not in text:
        raise SetupError(f"{source} ({what}) holds no PEM certificate")
    return write_file(target, text, 0o644, what)


def write_file(path: Path, text: str, mode: int, what: str) -> Change:
    """Write `text` atomically with `mode` unless the file already is exactly that."""
    try:
        current = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        current = None
    except (OSError, UnicodeDecodeError):
        current = ""
    if current == text and stat.S_IMODE(path.stat().st_mode) == mode:
        return Change("unchanged", path, what)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    tmp.chmod(mode)  # the umask may have taken bits away
    tmp.replace(path)
    return Change("created" if current is None else "updated", path, what)


# --- framewire.toml ----------------------------------------------------------------------------
_TABLE = re.compile(r"^\s*\[\s*([A-Za-z0-9_-]+)\s*\]\s*(#.*)?$")
_ANY_TABLE = re.compile(r"^\s*\[")
_KEY = re.compile(r"^\s*([A-Za-z0-9_-]+)\s*=")


def write_config(path: Path, tables: Mapping[str, Mapping[str, TomlValue]]) -> Change:
    """Set `tables`' keys in the TOML file at `path`, keeping every other line as it is."""
    what = f"configuration ({', '.join(tables)})"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        text = TOML_HEADER
    except (OSError, UnicodeDecodeError) as exc:
        raise SetupError(f"cannot read {path}: {exc}") from None
    try:
        merged = merge_toml(text, tables)
    except tomllib.TOMLDecodeError as exc:
        raise SetupError(f"{path} is not valid TOML ({exc}): fix it, or remove it") from None
    except ValueError as exc:
        raise SetupError(f"{path}: {exc}") from None
    return write_file(path, merged, 0o644, what)  # the agents run as other users


def merge_toml(text: str, tables: Mapping[str, Mapping[str, TomlValue]]) -> str:
    """`text` with each table's keys set to the values given; lines that already hold the
    value, and every other line, comment and table, are left as they are."""
    current = tomllib.loads(text)
    lines = text.splitlines()
    for table, values in tables.items():
        have = current.get(table, {})
        if not isinstance(have, dict):
            raise ValueError(f"{table} is a value, not a table: remove it or make it [{table}]")
        wanted = {k: f"{k} = {_toml_value(v)}" for k, v in values.items() if have.get(k) != v}
        start, end = _table_span(lines, table)
        if start is None:
            if wanted:
                lines += ["", f"[{table}]"] if lines and lines[-1].strip() else [f"[{table}]"]
                lines += wanted.values()
            continue
        at = start + 1  # new keys go first in the table, in the order given
        for key, line in wanted.items():
            found = next((i for i in range(start + 1, end) if _key_of(lines[i]) == key), None)
            if found is None:
                lines.insert(at, line)
                at, end = at + 1, end + 1
            else:
                lines[found] = line
    merged = "\n".join(lines) + "\n"
    expected = {**current, **{t: {**current.get(t, {}), **v} for t, v in tables.items()}}
    try:
        done = tomllib.loads(merged)
    except tomllib.TOMLDecodeError:
        done = None
    if done != expected:  # a layout the line edit cannot handle (dotted keys, say)
        todo = "; ".join(
            f"[{t}] {k} = {_toml_value(v)}" for t, kv in tables.items() for k, v in kv.items()
        )
        raise ValueError(f"cannot edit it line by line; write these in yourself: {todo}")
    return merged


def _table_span(lines: list[str], table: str) -> tuple[int | None, int]:
    start = next((i for i, line in enumerate(lines) if _table_of(line) == table), None)
    if start is None:
        return None, len(lines)
    end = next((i for i in range(start + 1, len(lines)) if _ANY_TABLE.match(lines[i])), None)
    return start, len(lines) if end is None else end


def _table_of(line: str) -> str | None:
    m = _TABLE.match(line)
    return m.group(1) if m else None


def _key_of(line: str) -> str | None:
    m = _KEY.match(line)
    return m.group(1) if m else None


def _toml_value(value: TomlValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    # A JSON string is a TOML basic string for all that json.dumps escapes; DEL is not.
    return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
