"""Settings, broker configuration rendering and the CLI's handling of bad configuration."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from framewire.broker_config import BrokerPlan, default_accounts
from framewire.broker_config.passwords import hash_password, verify_password
from framewire.broker_config.render import render_acl, render_conf
from framewire.edge_agents.capture.settings import CaptureSettings
from framewire.edge_agents.ledger.settings import LedgerSettings
from framewire.inference_agent.settings import InferenceSettings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("FRAMEWIRE_") or key == "CREDENTIALS_DIRECTORY":
            monkeypatch.delenv(key)


def test_defaults_work_on_a_laptop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    s = CaptureSettings()
    assert s.broker.host == "localhost" and s.broker.port == 1883 and not s.broker.tls
    assert s.agent_id is not None and s.agent_id.startswith("capture-")
    assert s.state_path == tmp_path / "framewire" / "capture.sqlite3"
    assert LedgerSettings().ledger_path == tmp_path / "framewire" / "ledger.sqlite3"


def test_toml_file_has_shared_keys_and_one_table_per_agent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = tmp_path / "framewire.toml"
    cfg.write_text(
        'broker_url = "mqtts://broker.lan"\ntopic_prefix = "shop"\n'
        '[capture]\nstation = "bench-2"\nmax_in_flight = 5\n'
        '[inference]\nqueue_size = 3\nshare_group = ""\n'
    )
    monkeypatch.setenv("FRAMEWIRE_CONFIG", str(cfg))
    cap = CaptureSettings()
    assert (cap.station, cap.max_in_flight, cap.topic_prefix) == ("bench-2", 5, "shop")
    assert cap.broker.tls and cap.broker.port == 8883
    inf = InferenceSettings()
    assert inf.queue_size == 3 and inf.share_group is None
    monkeypatch.setenv("FRAMEWIRE_MAX_IN_FLIGHT", "7")  # the environment wins over the file
    assert CaptureSettings().max_in_flight == 7


def test_unknown_keys_in_an_agents_table_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = tmp_path / "framewire.toml"
    cfg.write_text('[capture]\nstaton = "typo"\n')
    monkeypatch.setenv("FRAMEWIRE_CONFIG", str(cfg))
    with pytest.raises(ValueError, match="staton"):
        CaptureSettings()


def test_password_comes_from_a_file_or_systemd_credentials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "mqtt-password").write_text("s3cret\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    s = LedgerSettings()
    assert s.mqtt_password() is not None
    assert s.mqtt_password().get_secret_value() == "s3cret"  # type: ignore[union-attr]
    assert "s3cret" not in repr(s)
    other = tmp_path / "other"
    other.write_text("x")
    assert LedgerSettings(mqtt_password_file=other).mqtt_password().get_secret_value() == "x"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("env", "field"),
    [
        ({"FRAMEWIRE_STATION": "bad/station"}, "station"),
        ({"FRAMEWIRE_BROKER_URL": "http://x"}, "broker_url"),
        ({"FRAMEWIRE_MAX_IN_FLIGHT": "zero"}, "max_in_flight"),
        ({"FRAMEWIRE_TOPIC_PREFIX": "a/#"}, "topic_prefix"),
    ],
)
def test_cli_names_the_bad_field_and_exits_2(env: dict[str, str], field: str) -> None:
    import os

    run_env = {k: v for k, v in os.environ.items() if not k.startswith("FRAMEWIRE_")}
    out = subprocess.run(
        [sys.executable, "-m", "framewire", "capture", "status"],
        env={**run_env, **env},
        capture_output=True,
        text=True,
    )
    assert out.returncode == 2, out.stderr
    assert field in out.stderr and "Traceback" not in out.stderr


def test_password_hashes_match_mosquittos_own_format(tmp_path: Path) -> None:
    encoded = hash_password("hunter2")
    assert encoded.startswith("$7$1000$") and verify_password("hunter2", encoded)
    assert not verify_password("hunter3", encoded)
    tool = shutil.which("mosquitto_passwd")
    if tool is None:
        pytest.skip("mosquitto_passwd not installed")
    passwd = tmp_path / "pw"
    subprocess.run([tool, "-c", "-b", str(passwd), "u", "hunter2"], check=True)
    assert verify_password("hunter2", passwd.read_text().strip().split(":", 1)[1])


def test_production_profile_has_no_anonymous_access_and_can_add_tls(tmp_path: Path) -> None:
    plan = BrokerPlan(
        tmp_path,
        profile="production",
        bind="0.0.0.0",
        tls_cert=tmp_path / "c.pem",
        tls_key=tmp_path / "k.pem",
        accounts=default_accounts(["a", "b"]),
    )
    conf, acl = render_conf(plan), render_acl(plan)
    assert "allow_anonymous false" in conf and "listener 8883" in conf
    assert "persistence true" in conf and "max_packet_size" in conf
    assert acl.splitlines()[2].startswith("user ")  # no anonymous section
    assert "topic write framewire/frames/a" in acl and "topic write framewire/frames/b" in acl
    dev = render_acl(BrokerPlan(tmp_path))
    assert "topic read framewire/#" in dev.split("user ")[0]
    with pytest.raises(ValueError, match="both"):
        BrokerPlan(tmp_path, tls_cert=tmp_path / "c.pem")


def test_missing_mosquitto_explains_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from framewire.broker_config import BrokerError, embedded

    monkeypatch.setattr(embedded.shutil, "which", lambda name: None)
    monkeypatch.setattr(embedded, "_SEARCH", ())
    with pytest.raises(BrokerError) as exc:
        embedded.find_mosquitto()
    text = str(exc.value)
    assert "apt-get install -y mosquitto" in text
    assert "dnf install" in text and "brew install mosquitto" in text


BAD_CAPTURE_TABLE = '[capture]\nmax_in_flight = "lots"\n'
EVERY_COMMAND = [
    ["run", "capture"],
    ["run", "inference"],
    ["up"],
    ["demo", "--cards", "1"],
    ["import", "{dir}"],
    ["identify", "{dir}/card.jpg"],
    ["status"],
    ["tail"],
    ["request", "ledger", "status"],
    ["capture", "status"],
    ["capture", "quarantine"],
    ["capture", "pause"],
    ["capture", "resume"],
    ["capture", "retry", "--all"],
    ["ledger", "show", "01M7Y9QJ12YRKPA99JDVS47ZZA"],
    ["ledger", "export"],
    ["ledger", "replay", "01M7Y9QJ12YRKPA99JDVS47ZZA"],
    ["config", "check"],
    ["config", "show"],
    ["broker", "--render-only"],
]


@pytest.mark.parametrize("command", EVERY_COMMAND, ids=lambda c: " ".join(c[:2]))
def test_every_command_refuses_a_bad_configuration_file_naming_the_field(
    command: list[str], tmp_path: Path
) -> None:
    """Every command that reads the configuration: exit 2, the field and where it was set
    named, no traceback (`up` used to print 63 lines of one and exit 1)."""
    import os

    cfg = tmp_path / "framewire.toml"
    cfg.write_text(BAD_CAPTURE_TABLE)
    (tmp_path / "card.jpg").write_bytes(b"")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRAMEWIRE_")}
    env.update(FRAMEWIRE_CONFIG=str(cfg), FRAMEWIRE_DATA_DIR=str(tmp_path / "data"))
    args = [a.format(dir=tmp_path) for a in command]
    out = subprocess.run(
        [sys.executable, "-m", "framewire", *args],
        env={**env, "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2, out.stdout + out.stderr
    assert "max_in_flight = 'lots'" in out.stderr and f"[capture] in {cfg}" in out.stderr
    assert "Traceback" not in out.stderr + out.stdout
    assert not (tmp_path / "data").exists()  # refused before doing anything


def test_the_config_option_a_broken_file_and_unknown_keys_are_named(tmp_path: Path) -> None:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("FRAMEWIRE_")}
    env["COLUMNS"] = "200"

    def check(text: str, *args: str) -> str:
        cfg = tmp_path / "framewire.toml"
        cfg.write_text(text)
        out = subprocess.run(
            [sys.executable, "-m", "framewire", *args, "--config", str(cfg)],
            env=env,
            capture_output=True,
            text=True,
        )
        assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
        return out.stderr

    assert "not valid TOML" in check("broker_url = \n", "config", "check")
    said = check('staton = "x"\n[ledger]\nbackup_hour = 99\n', "status")
    assert said.count("staton") == 1 and "not a framewire setting" in said  # said once
    assert "backup_hour = 99 ([ledger] in" in said
    said = check('[capture]\nstaton = "x"\n', "up")
    assert "not a setting of [capture]" in said
    env["FRAMEWIRE_CONFIG"] = str(tmp_path / "missing.toml")
    out = subprocess.run(
        [sys.executable, "-m", "framewire", "status"], env=env, capture_output=True, text=True
    )
    assert out.returncode == 2 and "cannot read the configuration file" in out.stderr
