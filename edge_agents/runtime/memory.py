"""How much memory an agent holds, and the ceiling the kernel holds it to.

Resident memory is read from /proc/self/statm. The ceiling is the memory cgroup's: systemd's
`MemoryMax=` (hard: the kernel ends the agent there) and `MemoryHigh=` (soft: past it the
kernel reclaims and slows the agent down), the lowest value set on the agent's cgroup or any
cgroup above it. Off Linux, or with no ceiling set, there is nothing to report (None).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

PROC = Path("/proc")
CGROUPS = Path("/sys/fs/cgroup")
_READ_LIMIT = 4096  # /proc/self/cgroup and the cgroup files are a few lines
_V1_UNLIMITED = 2**62  # cgroup v1 writes "no limit" as a huge page-aligned number


@dataclass(frozen=True)
class MemoryCeiling:
    hard: int | None = None  # bytes; memory.max (cgroup v2) or memory.limit_in_bytes (v1)
    soft: int | None = None  # bytes; memory.high (cgroup v2 only)


def _read(path: Path) -> str | None:
    try:
        with path.open("rb") as f:
            return f.read(_READ_LIMIT).decode("ascii", "replace")
    except OSError:
        return None


def resident_bytes(proc: Path | None = None) -> int | None:
    """Resident memory of this process, or None where /proc does not tell."""
    text = _read((proc or PROC) / "self" / "statm")
    fields = text.split() if text else []
    if len(fields) < 2 or not fields[1].isdigit():
        return None
    return int(fields[1]) * os.sysconf("SC_PAGE_SIZE")


def _limit(text: str | None, *, unlimited: int | None = None) -> int | None:
    value = (text or "").strip()
    if not value.isdigit():  # "max" (none), an empty or a missing file
        return None
    number = int(value)
    return None if unlimited is not None and number >= unlimited else number


def _lowest(values: list[int | None]) -> int | None:
    found = [v for v in values if v is not None]
    return min(found) if found else None


def _up_from(mount: Path, cgroup: str) -> list[Path]:
    """The cgroup's directory under `mount` and each one above it, up to `mount` itself.

    In a container that does not see its own cgroup path, only `mount` exists, and it is the
    container's cgroup."""
    parts = [p for p in PurePosixPath(cgroup).parts if p not in ("/", "..", ".")]
    return [mount.joinpath(*parts[:n]) for n in range(len(parts), -1, -1)]


def memory_ceiling(proc: Path | None = None, cgroups: Path | None = None) -> MemoryCeiling:
    """The ceiling the memory cgroup of this process sets, read now (systemctl set-property
    changes it while the agent runs)."""
    proc, cgroups = proc or PROC, cgroups or CGROUPS
    hard: list[int | None] = []
    soft: list[int | None] = []
    for line in (_read(proc / "self" / "cgroup") or "").splitlines():
        _, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if controllers == "":  # cgroup v2, the unified hierarchy
            for cgroup in _up_from(cgroups, path):
                hard.append(_limit(_read(cgroup / "memory.max")))
                soft.append(_limit(_read(cgroup / "memory.high")))
        elif "memory" in controllers.split(","):  # cgroup v1
            for cgroup in _up_from(cgroups / "memory", path):
                limit = _read(cgroup / "memory.limit_in_bytes")
                hard.append(_limit(limit, unlimited=_V1_UNLIMITED))
    return MemoryCeiling(hard=_lowest(hard), soft=_lowest(soft))
