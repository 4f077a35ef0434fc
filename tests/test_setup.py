"""`framewire setup`: the README's commands, run into temporary roots, give boxes whose
systemd units, started the way systemd starts them, carry a frame into the ledger; running
them again changes nothing; the units hold no per-box value."""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from framewire import setup_units
from framewire.box_setup import apply, capture_box, remote_box, remote_steps, unit_paths
from framewire.broker_config import free_port
from framewire.broker_config.embedded import port_open
from framewire.edge_agents.capture.settings import CaptureSettings
from framewire.edge_agents.ledger.settings import LedgerSettings
from framewire.edge_agents.runtime.settings import _host_id
from framewire.inference_agent.settings import InferenceSettings
from framewire.setup_files import SetupError, merge_toml, write_config
from tests.conftest import jpeg_bytes, wait_until
from tests.test_operations import REQUIRE_TOOLS
from tests.test_pipeline import ledger_rows

# The README's recipe, verbatim (the test runs every `framewire setup` line, with --root
# added, and checks that setup prints every `systemctl` line). One block per box.
README_COMMANDS = """\
# On the capture box (it runs the broker, the capture agent and the ledger):
sudo /opt/framewire/bin/framewire setup capture-box --station bench-1 --broker-host capture-box.lan
sudo systemctl daemon-reload
sudo systemctl disable --now mosquitto
sudo systemctl enable --now framewire-broker framewire-capture framewire-ledger framewire.target

# On each inference box, in a folder holding inference.password and ca.pem, copied from the
# capture box's /etc/framewire/broker/secrets/ and /etc/framewire/broker/tls/:
sudo /opt/framewire/bin/framewire setup inference-box --broker mqtts://capture-box.lan:8883 \\
     --password-file inference.password --ca-file ca.pem
sudo systemctl daemon-reload
sudo systemctl enable --now framewire-inference framewire.target
"""

INSTALLED = "/opt/framewire/bin/framewire"  # where the README installs framewire
SYSTEMD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
REPO_UNITS = Path(__file__).resolve().parent.parent / "systemd"


def readme_blocks() -> dict[str, list[list[str]]]:
    """Box ("capture-box", "inference-box") -> its commands, each as argv."""
    blocks = {}
    for block in README_COMMANDS.split("\n\n"):
        lines = block.replace("\\\n", " ").splitlines()
        commands = [shlex.split(line) for line in lines if line and not line.startswith("#")]
        assert commands[0][:3] == ["sudo", INSTALLED, "setup"]
        blocks[commands[0][3]] = commands
    return blocks


def framewire_command() -> Path:
    """The framewire of this virtualenv: the one an installer would run setup with."""
    exe = Path(sys.executable).with_name("framewire")
    assert exe.is_file(), f"{exe} is missing: install framewire into this venv (pip install -e .)"
    return exe


def run_setup(argv: list[str], exe: Path, root: Path, cwd: Path) -> str:
    """One README `sudo /opt/framewire/bin/framewire setup ...` line, run as this venv's
    framewire with --root; returns what it printed."""
    assert argv[:2] == ["sudo", INSTALLED]
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRAMEWIRE_")}
    env["COLUMNS"] = "400"  # one line per printed line
    done = subprocess.run(
        [str(exe), *argv[2:], "--root", str(root)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def printed_commands(output: str) -> list[str]:
    """The command lines setup printed, comments dropped, spaces collapsed."""
    out = []
    for line in output.splitlines():
        text = " ".join(line.split("#")[0].split())
        if text.startswith("sudo "):
            out.append(text)
    return out


def tree(root: Path) -> dict[str, tuple[int, int, int, int, str]]:
    """Every file and folder under `root`: mode, owner, group, mtime and content."""
    out = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if stat.S_ISREG(st.st_mode) else ""
        mode = stat.S_IMODE(st.st_mode)
        out[str(path.relative_to(root))] = (mode, st.st_uid, st.st_gid, st.st_mtime_ns, digest)
    return out


@dataclass
class Boxes:
    exe: Path
    capture: Path  # the capture box's root
    inference: Path
    handoff: Path  # the folder the inference box's files were copied into
    output: dict[str, str] = field(default_factory=dict)

    def toml(self, root: Path) -> dict[str, dict[str, object]]:
        with (root / "etc/framewire/framewire.toml").open("rb") as f:
            return tomllib.load(f)

    def units(self, root: Path) -> list[Path]:
        return sorted((root / "etc/systemd/system").iterdir())


@pytest.fixture(scope="module")
def boxes() -> Iterator[Boxes]:
    """Both boxes set up by the README's commands, in temporary roots.

    Not under pytest's tmp_path: its folders are private to this user, and run as root the
    broker drops to user mosquitto, which must reach its files through the root."""
    base = Path(tempfile.mkdtemp(prefix="framewire-setup-"))
    base.chmod(0o755)
    try:
        exe = framewire_command()
        b = Boxes(exe, base / "capture-box", base / "inference-box", base / "handoff")
        for folder in (b.capture, b.inference, b.handoff):
            folder.mkdir(mode=0o755)
        blocks = readme_blocks()
        b.output["capture-box"] = run_setup(blocks["capture-box"][0], exe, b.capture, base)
        broker = b.capture / "etc/framewire/broker"
        for copied in (broker / "secrets/inference.password", broker / "tls/ca.pem"):
            assert str(copied) in b.output["capture-box"]  # setup says what to copy
            shutil.copy(copied, b.handoff)
        b.output["inference-box"] = run_setup(
            blocks["inference-box"][0], exe, b.inference, b.handoff
        )
        yield b
    finally:
        shutil.rmtree(base, ignore_errors=True)


# --- what setup writes -------------------------------------------------------------------------
def test_setup_prints_the_readme_commands_and_a_second_run_changes_nothing(boxes: Boxes) -> None:
    blocks = readme_blocks()
    for box, commands in blocks.items():
        printed = printed_commands(boxes.output[box])
        for command in commands[1:]:  # the systemctl lines
            assert " ".join(command) in printed, (command, boxes.output[box])
    # the capture box tells the inference box exactly the README's command
    suggested = [c for c in printed_commands(boxes.output["capture-box"]) if "inference-box" in c]
    assert [c.replace(str(boxes.exe), INSTALLED) for c in suggested] == [
        " ".join(blocks["inference-box"][0])
    ]

    before = {box: tree(root) for box, root in (("c", boxes.capture), ("i", boxes.inference))}
    again = run_setup(blocks["capture-box"][0], boxes.exe, boxes.capture, boxes.capture.parent)
    assert "nothing changed" in again, again
    again = run_setup(blocks["inference-box"][0], boxes.exe, boxes.inference, boxes.handoff)
    assert "nothing changed" in again, again
    assert {"c": tree(boxes.capture), "i": tree(boxes.inference)} == before


def test_units_take_every_per_box_value_from_the_configuration(boxes: Boxes) -> None:
    for root in (boxes.capture, boxes.inference):
        creds = root / "etc/framewire/credentials"
        assert stat.S_IMODE(creds.stat().st_mode) == 0o700
        for secret in creds.iterdir():
            assert stat.S_IMODE(secret.stat().st_mode) == 0o600
        config = root / "etc/framewire/framewire.toml"
        assert stat.S_IMODE(config.stat().st_mode) == 0o644  # agents run as dynamic users
        for path in boxes.units(root):
            if path.suffix != ".service" or path.name == setup_units.BROKER_UNIT:
                continue
            unit = Unit.parse(path)
            assert unit.exec_start[0] == str(boxes.exe)
            assert unit.environment == {"FRAMEWIRE_CONFIG": str(config)}
            assert "MemoryMax=" in path.read_text()
    capture = boxes.toml(boxes.capture)
    assert capture["capture"]["station"] == "bench-1"
    assert (
        capture["capture"]["mqtt_username"] == capture["capture"]["agent_id"] == "capture-bench-1"
    )
    inference = boxes.toml(boxes.inference)["inference"]
    assert inference["agent_id"] == f"inference-{_host_id()}"
    assert inference["broker_url"] == "mqtts://capture-box.lan:8883"


def test_rendered_units_pass_systemd_analyze_verify(boxes: Boxes) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        if REQUIRE_TOOLS:
            pytest.fail("systemd-analyze is not installed")
        pytest.skip("systemd-analyze is not installed")
    for root in (boxes.capture, boxes.inference):
        units = boxes.units(root)
        out = subprocess.run(
            [analyze, "verify", "--man=false", *map(str, units)], capture_output=True, text=True
        )
        problems = [line for line in out.stderr.splitlines() if "framewire" in line]
        assert out.returncode == 0 and not problems, out.stderr


# --- the boxes running -------------------------------------------------------------------------
@dataclass
class Unit:
    """What systemd reads from a unit to start it (the lines these units use)."""

    path: Path
    exec_start: list[str]
    environment: dict[str, str]
    credentials: dict[str, Path]
    state_directory: str | None

    @classmethod
    def parse(cls, path: Path) -> Unit:
        exec_start: list[str] = []
        env: dict[str, str] = {}
        creds: dict[str, Path] = {}
        state = None
        for line in path.read_text().splitlines():
            key, sep, value = line.partition("=")
            if not sep or line.startswith("#"):
                continue
            if key == "ExecStart":
                exec_start = shlex.split(value)
                assert exec_start[0].startswith("/"), "no ExecStart= prefixes (-@+!) here"
            elif key == "Environment":
                env.update(item.partition("=")[::2] for item in shlex.split(value))
            elif key == "EnvironmentFile":
                raise AssertionError(f"{path.name}: per-box values belong in framewire.toml")
            elif key == "LoadCredential":
                name, _, source = value.partition(":")
                creds[name] = Path(source)
            elif key == "StateDirectory":
                state = value
        return cls(path, exec_start, env, creds, state)

    def start(self, root: Path, work: Path) -> subprocess.Popen[bytes]:
        """Run ExecStart= as systemd would: an environment of its own, the credentials in
        $CREDENTIALS_DIRECTORY, the state directory in $STATE_DIRECTORY (under `root`)."""
        name = self.path.stem
        creds = work / f"{name}.credentials"
        creds.mkdir(mode=0o700)
        for credential, source in self.credentials.items():
            shutil.copyfile(source, creds / credential)
            (creds / credential).chmod(0o400)
        env = {"PATH": SYSTEMD_PATH, "LANG": "C.UTF-8", "HOME": str(work)}
        env["CREDENTIALS_DIRECTORY"] = str(creds)
        if self.state_directory:
            state = root / "var/lib" / self.state_directory
            state.mkdir(parents=True, exist_ok=True)
            env["STATE_DIRECTORY"] = str(state)
        if "PYTHONPATH" in os.environ:  # the suite run against another source tree
            env["PYTHONPATH"] = os.environ["PYTHONPATH"]
        env.update(self.environment)
        with (work / f"{name}.log").open("ab") as log:
            return subprocess.Popen(
                self.exec_start, env=env, stdout=log, stderr=subprocess.STDOUT, cwd="/"
            )


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.mark.integration
def test_the_set_up_boxes_carry_a_frame_into_the_ledger(boxes: Boxes, tmp_path: Path) -> None:
    # Only the ports move (to free ones, so tests can run side by side) and the inference box
    # reaches the broker by 127.0.0.1, which its certificate names too, as capture-box.lan
    # does not resolve here. Metrics ports are switched off the same way: in framewire.toml.
    conf = boxes.capture / "etc/framewire/broker/mosquitto.conf"
    plain, tls = free_port(), free_port()
    text, n = re.subn(r"^listener 1883 ", f"listener {plain} ", conf.read_text(), flags=re.M)
    text, m = re.subn(r"^listener 8883 ", f"listener {tls} ", text, flags=re.M)
    assert n == m == 1, text
    conf.write_text(text)  # the same file: its owner and mode stay
    local = {"broker_url": f"mqtt://127.0.0.1:{plain}", "metrics_port": 0}
    write_config(
        boxes.capture / "etc/framewire/framewire.toml", {"capture": local, "ledger": local}
    )
    remote = {"broker_url": f"mqtts://127.0.0.1:{tls}", "metrics_port": 0}
    write_config(boxes.inference / "etc/framewire/framewire.toml", {"inference": remote})

    units = {p.stem: Unit.parse(p) for p in boxes.units(boxes.capture) if p.suffix == ".service"}
    inference_units = boxes.units(boxes.inference)
    units |= {p.stem: Unit.parse(p) for p in inference_units if p.suffix == ".service"}
    assert set(units) == {f"framewire-{x}" for x in ("broker", "capture", "ledger", "inference")}
    procs: dict[str, subprocess.Popen[bytes]] = {}

    def logs() -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')}" for p in tmp_path.glob("*.log")
        )

    try:
        procs["broker"] = units["framewire-broker"].start(boxes.capture, tmp_path)
        try:
            wait_until(lambda: port_open("127.0.0.1", plain), timeout=20, what="the broker")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{logs()}") from None
        for kind in ("ledger", "capture"):
            procs[kind] = units[f"framewire-{kind}"].start(boxes.capture, tmp_path)
        procs["inference"] = units["framewire-inference"].start(boxes.inference, tmp_path)

        capture = boxes.toml(boxes.capture)
        watch_dir = Path(str(capture["capture"]["watch_dir"]))
        (watch_dir / "card-0001.jpg").write_bytes(jpeg_bytes(7))
        ledger_db = Path(str(capture["ledger"]["data_dir"])) / "ledger.sqlite3"
        try:
            wait_until(lambda: ledger_rows(ledger_db), timeout=120, what="the frame in the ledger")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{logs()}") from None
        [row] = ledger_rows(ledger_db)
        assert row["station"] == "bench-1" and row["source_name"] == "card-0001.jpg"
        assert row["agent_id"] == boxes.toml(boxes.inference)["inference"]["agent_id"]
        for kind in ("capture", "ledger", "inference"):
            assert procs[kind].poll() is None, logs()
    finally:
        for proc in reversed(procs.values()):  # the agents first, then the broker
            stop(proc)
    assert all(procs[k].returncode == 0 for k in ("capture", "ledger", "inference")), logs()


# --- pieces ------------------------------------------------------------------------------------
def test_repository_units_are_the_rendered_defaults() -> None:
    """systemd/ holds the units setup writes, with the default paths; regenerate them with
    `python -m framewire.setup_units systemd`."""
    assert {p.name for p in REPO_UNITS.iterdir()} == set(setup_units.unit_names())
    for name in setup_units.unit_names():
        expected = setup_units.render_unit(name, setup_units.UnitPaths())
        assert (REPO_UNITS / name).read_text() == expected, f"systemd/{name} is stale"


@pytest.fixture
def no_framewire_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("FRAMEWIRE_") or key == "CREDENTIALS_DIRECTORY":
            monkeypatch.delenv(key)


@pytest.mark.usefixtures("no_framewire_env")
def test_agent_id_follows_the_broker_user() -> None:
    host = _host_id()
    assert CaptureSettings(mqtt_username="capture-bench-1").agent_id == "capture-bench-1"
    assert CaptureSettings(broker_url="mqtt://capture-bench-2@b:1883").agent_id == "capture-bench-2"
    assert LedgerSettings(mqtt_username="ledger").agent_id == "ledger"
    assert InferenceSettings(mqtt_username="inference").agent_id == f"inference-{host}"
    assert CaptureSettings().agent_id == f"capture-{host}"  # no user: as before
    chosen = CaptureSettings(mqtt_username="capture-bench-1", agent_id="capture-bench-1-a")
    assert chosen.agent_id == "capture-bench-1-a"
    assert "agent_id" not in CaptureSettings(mqtt_username="u").model_fields_set


def test_config_edits_keep_every_line_setup_does_not_own() -> None:
    text = (
        "# mine\n"
        'broker_url = "mqtt://x:1"\n\n'
        "[capture]\n"
        'station = "old"  # was bench-0\n'
        "max_in_flight = 5\n\n"
        "[inference]\n"
        'catalog = "/etc/framewire/catalog.csv"\n'
    )
    merged = merge_toml(text, {"capture": {"station": "bench-1", "agent_id": "capture-bench-1"}})
    assert merged.startswith("# mine\n") and 'catalog = "/etc/framewire/catalog.csv"' in merged
    data = tomllib.loads(merged)
    assert data["capture"] == {
        "agent_id": "capture-bench-1",
        "station": "bench-1",
        "max_in_flight": 5,
    }
    assert merge_toml(merged, {"capture": {"station": "bench-1"}}) == merged
    added = tomllib.loads(merge_toml(merged, {"ledger": {"agent_id": "ledger", "metrics_port": 0}}))
    assert added["ledger"] == {"agent_id": "ledger", "metrics_port": 0}
    with pytest.raises(ValueError, match="yourself"):
        merge_toml('capture.station = "x"\n', {"capture": {"agent_id": "capture-x"}})


def test_a_password_that_exists_is_never_overwritten(tmp_path: Path) -> None:
    paths = unit_paths(tmp_path / "root", framewire_command())
    given = tmp_path / "inference.password"
    given.write_text("new-password\n")
    existing = paths.etc / "credentials" / "inference.password"
    existing.parent.mkdir(parents=True)
    existing.write_text("old-password\n")
    box = remote_box("inference", paths=paths, broker_url="mqtt://b:1883", password_file=given)
    kept = [c for c in apply(box) if c.path == existing]
    assert [c.action for c in kept] == ["kept"] and "never overwritten" in kept[0].note
    assert existing.read_text() == "old-password\n"
    assert [c.action for c in apply(box) if c.action != "unchanged"] == ["kept"]


def test_setup_refuses_what_the_broker_would_refuse(tmp_path: Path) -> None:
    paths = unit_paths(tmp_path, framewire_command())
    pw = tmp_path / "pw"
    pw.write_text("x\n")
    with pytest.raises(SetupError, match="client id that is 'inference'") as caught:
        remote_box(
            "inference", paths=paths, broker_url="mqtt://b:1883", password_file=pw, agent_id="b-3"
        )
    assert caught.value.exit_code == 2
    with pytest.raises(SetupError, match="TLS broker"):
        remote_box(
            "inference", paths=paths, broker_url="mqtt://b:1883", password_file=pw, ca_file=pw
        )
    with pytest.raises(SetupError, match="over TLS only"):
        capture_box(station="bench-1", paths=paths, broker_host="h", tls=False)
    with pytest.raises(SetupError, match="station"):
        capture_box(station="bench/1", paths=paths, broker_host="h")
    with pytest.raises(SetupError, match="systemd unit"):
        unit_paths(tmp_path / "a b", framewire_command())


def test_the_ledger_can_have_a_box_of_its_own(tmp_path: Path) -> None:
    paths = unit_paths(tmp_path, framewire_command())
    box = capture_box(station="bench-1", paths=paths, broker_host="cap.lan", ledger=False)
    assert [a.kind for a in box.agents] == ["capture"]
    assert "framewire-ledger.service" not in box.unit_names
    commands = {s.box: s.command for s in remote_steps(box)}
    assert commands["ledger box"].endswith(
        "setup ledger-box --broker mqtts://cap.lan:8883 --password-file ledger.password "
        "--ca-file ca.pem"
    )


def test_the_readme_gives_these_commands_verbatim() -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    assert README_COMMANDS in readme
