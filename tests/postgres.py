"""A real PostgreSQL server for the tests: a new cluster (initdb) on a free port, its data
and socket in a temporary folder, started once per session and stopped at the end.

The binaries are the distribution's (Debian/Ubuntu: /usr/lib/postgresql/<N>/bin, from the
`postgresql` package; elsewhere on PATH). Without them the tests that need a server skip,
or fail when FRAMEWIRE_REQUIRE_TOOLS=1 (CI). PostgreSQL refuses to run as root: as root the
server runs as the `postgres` user, which owns the temporary folder.

    from tests.postgres import postgres_server  # noqa: F401 - the fixture `postgres`
    def test_x(postgres: PostgresServer) -> None:
        url = postgres.new_database()
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from framewire.broker_config import free_port

REQUIRE_TOOLS = os.environ.get("FRAMEWIRE_REQUIRE_TOOLS") == "1"  # set by .ci/run
SUPERUSER = "framewire"


def find_bindir() -> Path | None:
    """The folder of initdb and pg_ctl: on PATH, else the newest Debian-style install."""
    initdb = shutil.which("initdb")
    if initdb is not None and shutil.which("pg_ctl") is not None:
        return Path(initdb).parent

    def version(path: Path) -> tuple[int, ...]:
        return tuple(int(x) for x in re.findall(r"\d+", path.parent.parent.name))

    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=version)
    return found[-1].parent if found else None


@dataclass
class PostgresServer:
    root: Path
    port: int

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{dbname}"

    def new_database(self) -> str:
        """A new, empty database of its own for one test; its URL."""
        import psycopg

        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


def _as_server_user(argv: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return argv
    return ["runuser", "-u", "postgres", "--", *argv]


def _server_user_owns(path: Path) -> None:
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        os.chown(path, user.pw_uid, user.pw_gid)


@pytest.fixture(scope="session", name="postgres")
def postgres_server() -> Iterator[PostgresServer]:
    bindir = find_bindir()
    if bindir is None:
        if REQUIRE_TOOLS:
            pytest.fail("PostgreSQL is not installed (initdb, pg_ctl)")
        pytest.skip("PostgreSQL is not installed (initdb, pg_ctl)")
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            pytest.fail("running as root, PostgreSQL needs a 'postgres' user to run as")
    with running_server(bindir) as server:
        yield server


@contextlib.contextmanager
def running_server(bindir: Path) -> Iterator[PostgresServer]:
    """A new cluster, started, and stopped (-m immediate) and removed at the end."""
    root = Path(tempfile.mkdtemp(prefix="framewire-pg-"))
    _server_user_owns(root)
    data, log = root / "data", root / "server.log"
    port = free_port()
    try:
        subprocess.run(
            _as_server_user(
                [
                    str(bindir / "initdb"),
                    "--pgdata",
                    str(data),
                    "--username",
                    SUPERUSER,
                    "--auth",
                    "trust",
                    "--encoding",
                    "UTF8",
                    "--locale",
                    "C",
                    "--no-instructions",
                ]
            ),
            check=True,
            capture_output=True,
        )
        # fsync off: this cluster is thrown away; the ledger's own commits still wait for it
        options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
        pg_ctl = str(bindir / "pg_ctl")
        subprocess.run(
            _as_server_user(
                [pg_ctl, "start", "-D", str(data), "-l", str(log), "-w", "-o", options]
            ),
            check=True,
            capture_output=True,
        )
        try:
            yield PostgresServer(root, port)
        finally:
            subprocess.run(
                _as_server_user([pg_ctl, "stop", "-D", str(data), "-m", "immediate"]),
                check=False,
                capture_output=True,
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)
