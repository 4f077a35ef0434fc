"""Mosquitto password files and generated agent secrets.

Hashes use Mosquitto 2's PBKDF2-SHA512 format (`$7$<iterations>$<salt>$<hash>`), so the
file can be written without `mosquitto_passwd` on the machine.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
from collections.abc import Mapping
from pathlib import Path

ITERATIONS = 1000


def hash_password(password: str, *, salt: bytes | None = None, iterations: int = ITERATIONS) -> str:
    salt = salt if salt is not None else os.urandom(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    b64 = base64.b64encode
    return f"$7${iterations}${b64(salt).decode()}${b64(digest).decode()}"


def verify_password(password: str, encoded: str) -> bool:
    _, kind, iterations, salt, _ = encoded.split("$")
    if kind != "7":
        raise ValueError(f"unsupported password hash type ${kind}$")
    found = hash_password(password, salt=base64.b64decode(salt), iterations=int(iterations))
    return secrets.compare_digest(found, encoded)


def write_private(path: Path, text: str) -> None:
    """Write a file readable by its owner only, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    tmp.replace(path)


def ensure_secrets(directory: Path, users: list[str]) -> dict[str, Path]:
    """One random password file per user, created once and kept; returns their paths."""
    paths = {}
    for user in users:
        path = directory / f"{user}.password"
        if not path.exists():
            write_private(path, secrets.token_urlsafe(24) + "\n")
        path.chmod(0o600)  # also one made by hand, or by an older framewire
        paths[user] = path
    return paths


def render_password_file(passwords: Mapping[str, str]) -> str:
    return "".join(f"{user}:{hash_password(pw)}\n" for user, pw in sorted(passwords.items()))
