"""TLS with certificates from `framewire broker certs` (strict verification on every
Python), the whole pipeline over mutual TLS, the message an agent gives when it does not
trust the broker, and `framewire identify` as a user runs it."""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from framewire.broker_config import BrokerPlan, EmbeddedBroker, default_accounts, free_port
from framewire.broker_config.certs import CertFolder, write_certificates
from framewire.samples import card_jpeg, load_specs, sample_catalog_path
from framewire.schemas import TopicTree
from tests.conftest import STATION, USERS, Broker, Pipeline, jpeg_bytes, wait_until
from tests.recorder import Recorder
from tests.test_pipeline import ledger_rows, observer, wait_online

HOSTS = ["localhost", "127.0.0.1"]


def tls_plan(tmp_path: Path, certs: CertFolder, prefix: str, **extra: object) -> BrokerPlan:
    return BrokerPlan(
        tmp_path / "broker",
        port=free_port(),
        prefix=prefix,
        tls_cert=certs.broker_cert,
        tls_key=certs.broker_key,
        tls_port=free_port(),
        accounts=default_accounts([STATION, "import"]),
        **extra,  # type: ignore[arg-type]
    )


def strict_context(ca: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca))
    ctx.verify_flags |= ssl.VERIFY_X509_STRICT  # Python 3.13's default, asked for explicitly
    return ctx


def handshake(ctx: ssl.SSLContext, port: int, host: str) -> Mapping[str, object]:
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        ctx.wrap_socket(raw, server_hostname=host) as tls,
    ):
        return tls.getpeercert() or {}


def ledger_env(tmp_path: Path, broker: EmbeddedBroker, prefix: str, **extra: str) -> dict[str, str]:
    assert broker.plan.tls_port is not None
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRAMEWIRE_")}
    env.update(
        FRAMEWIRE_BROKER_URL=f"mqtts://127.0.0.1:{broker.plan.tls_port}",
        FRAMEWIRE_MQTT_USERNAME="ledger",
        FRAMEWIRE_MQTT_PASSWORD_FILE=str(broker.secrets["ledger"]),
        FRAMEWIRE_AGENT_ID="ledger",
        FRAMEWIRE_TOPIC_PREFIX=prefix,
        FRAMEWIRE_DATA_DIR=str(tmp_path / "ledger"),
        FRAMEWIRE_METRICS_PORT="0",
        PYTHONUNBUFFERED="1",
        **extra,
    )
    return env


def openssl_style_ca(folder: Path) -> tuple[Path, Path, Path]:
    """A CA as `openssl req -x509` makes it (no keyUsage) and a server certificate from it:
    what Python 3.13 refused with "CA cert does not include key usage extension"."""
    folder.mkdir()
    now = dt.datetime.now(dt.UTC)
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "openssl-style CA")])
    ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = folder / "ca.pem", folder / "s.pem", folder / "s.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    paths[2].chmod(0o600)
    return paths


def test_certs_are_kept_on_a_second_run_and_keys_are_private(tmp_path: Path) -> None:
    folder = tmp_path / "tls"
    first = write_certificates(folder, HOSTS, ["ledger"])
    assert {f.action for f in first} == {"wrote"}
    ca_before = (folder / "ca.pem").read_bytes()
    again = write_certificates(folder, HOSTS, ["ledger", "inference"])
    kept = {f.path.name for f in again if f.action == "kept"}
    wrote = {f.path.name for f in again if f.action == "wrote"}
    assert kept == {"ca.pem", "ca.key", "broker.pem", "broker.key"} | {
        "client-ledger.pem",
        "client-ledger.key",
    }
    assert wrote == {"client-inference.pem", "client-inference.key"}
    assert (folder / "ca.pem").read_bytes() == ca_before
    # another host: a new broker certificate from the same CA
    moved = write_certificates(folder, [*HOSTS, "broker.lan"])
    assert {f.path.name for f in moved if f.action == "wrote"} == {"broker.pem", "broker.key"}
    assert (folder / "ca.pem").read_bytes() == ca_before
    for key in folder.glob("*.key"):
        assert key.stat().st_mode & 0o777 == 0o600, key
    assert folder.stat().st_mode & 0o777 == 0o700
    renewed = write_certificates(folder, HOSTS, new_ca=True)
    assert all(f.action == "wrote" for f in renewed)
    assert (folder / "ca.pem").read_bytes() != ca_before


@pytest.mark.integration
def test_certificates_pass_strict_verification_against_mosquitto(tmp_path: Path) -> None:
    certs = CertFolder(tmp_path / "tls")
    write_certificates(certs.root, HOSTS)
    plan = tls_plan(tmp_path, certs, "strict")
    assert plan.tls_port is not None
    with EmbeddedBroker(plan):
        for host in HOSTS:  # by name and by address, as the SANs say
            peer = handshake(strict_context(certs.ca_cert), plan.tls_port, host)
            assert ("DNS", "localhost") in peer["subjectAltName"]  # type: ignore[operator]
    # the control: a CA made the old way fails the same strict check
    ca, cert, key = openssl_style_ca(tmp_path / "old")
    old = BrokerPlan(
        tmp_path / "old-broker", port=free_port(), tls_cert=cert, tls_key=key, tls_port=free_port()
    )
    assert old.tls_port is not None
    with EmbeddedBroker(old), pytest.raises(ssl.SSLCertVerificationError, match="key usage"):
        handshake(strict_context(ca), old.tls_port, "localhost")


@pytest.mark.integration
def test_an_agent_connects_over_tls_and_checks_the_certificate(tmp_path: Path) -> None:
    certs = CertFolder(tmp_path / "tls")
    write_certificates(certs.root, HOSTS)
    plan = tls_plan(tmp_path, certs, "tlstest")
    t = TopicTree("tlstest")
    with EmbeddedBroker(plan) as broker:
        env = ledger_env(tmp_path, broker, "tlstest", FRAMEWIRE_MQTT_CA_FILE=str(certs.ca_cert))
        with Recorder(plan.port, t.all_availability()) as rec:
            good = subprocess.Popen(
                [sys.executable, "-m", "framewire", "run", "ledger"],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            try:
                wait_until(
                    lambda: any(m.payload == b"online" for m in rec.on(t.availability("ledger"))),
                    what="ledger online over TLS",
                )
            finally:
                good.terminate()
                good.wait(30)
        # without our CA the certificate is not trusted: the agent never gets in, and says why
        env.pop("FRAMEWIRE_MQTT_CA_FILE")
        env["FRAMEWIRE_AGENT_ID"] = "ledger-untrusting"
        bad = subprocess.Popen(
            [sys.executable, "-m", "framewire", "run", "ledger"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        said: list[str] = []
        assert bad.stderr is not None
        lines = bad.stderr
        reader = threading.Thread(target=lambda: said.extend(iter(lines.readline, "")))
        reader.start()
        try:
            wait_until(
                lambda: "certificate verify failed" in "".join(said),
                timeout=120,  # it starts slowly on a busy machine
                what="the reason it cannot connect",
            )
        finally:
            bad.terminate()
            bad.wait(30)
            reader.join(30)
            assert bad.stderr is not None
            bad.stderr.close()
        stderr = "".join(said)
        assert "certificate verify failed" in stderr
        assert "system trust store (mqtt_ca_file unset)" in stderr


@pytest.mark.integration
def test_an_agent_that_distrusts_the_broker_says_why_once(tmp_path: Path) -> None:
    certs = CertFolder(tmp_path / "tls")
    write_certificates(certs.root, HOSTS)
    other = CertFolder(tmp_path / "other-ca")  # a CA that did not sign the broker's certificate
    write_certificates(other.root, HOSTS)
    plan = tls_plan(tmp_path, certs, "wrongca")
    with (
        EmbeddedBroker(plan) as broker,
        tempfile.TemporaryDirectory(prefix="fw") as short,  # AF_UNIX paths are short
        socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify,
    ):
        notify.bind(str(Path(short) / "notify"))
        notify.settimeout(0.1)
        env = ledger_env(
            tmp_path,
            broker,
            "wrongca",
            FRAMEWIRE_MQTT_CA_FILE=str(other.ca_cert),
            FRAMEWIRE_RECONNECT_MAX="0.3",  # many attempts in a few seconds
            NOTIFY_SOCKET=str(Path(short) / "notify"),
        )
        agent = subprocess.Popen(
            [sys.executable, "-m", "framewire", "run", "ledger"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            _, stderr = agent.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            agent.terminate()
            _, stderr = agent.communicate(timeout=30)
        states: list[str] = []
        while True:
            try:
                states.append(notify.recv(4096).decode())
            except TimeoutError:
                break
    attempts = broker.log_tail(400).count("New connection from")  # flushed once stopped
    assert attempts >= 5, broker.log_tail(400)  # it kept trying ...
    assert stderr.count("certificate verify failed") == 1, stderr  # ... and said so once
    (line,) = [x for x in stderr.splitlines() if "certificate verify failed" in x]
    assert f"mqtt_ca_file {other.ca_cert}" in line
    assert "set mqtt_ca_file to the CA that signed the broker certificate" in line
    assert "framewire broker certs" in line
    status = [s for s in states if s.startswith("STATUS=")]
    assert len(status) == 1 and "certificate verify failed" in status[0], states


# --- the whole pipeline over mutual TLS --------------------------------------------------
@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    """This module's `broker` (which the `pipeline` fixture uses): TLS on, every TLS client
    must show a certificate from the CA, and the plain listener stays for the test's own
    recorders."""
    certs = CertFolder(tmp_path / "tls")
    write_certificates(certs.root, HOSTS, list(USERS.values()))
    prefix = f"t{uuid.uuid4().hex[:10]}"
    embedded = EmbeddedBroker(tls_plan(tmp_path, certs, prefix, tls_ca=certs.ca_cert))
    embedded.start()
    try:
        yield Broker(embedded, prefix)
    finally:
        embedded.stop()


@pytest.mark.integration
def test_the_pipeline_runs_over_mutual_tls(pipeline: Pipeline, tmp_path: Path) -> None:
    p = pipeline
    certs = CertFolder(tmp_path / "tls")
    tls_port = p.broker.embedded.plan.tls_port
    for kind, agent in p.agents.items():
        user = USERS[kind]
        agent.env.update(
            FRAMEWIRE_BROKER_URL=f"mqtts://localhost:{tls_port}",
            FRAMEWIRE_MQTT_CA_FILE=str(certs.ca_cert),
            FRAMEWIRE_MQTT_CERT_FILE=str(certs.client_cert(user)),
            FRAMEWIRE_MQTT_KEY_FILE=str(certs.client_key(user)),
        )
    with observer(p) as rec:
        p.start()
        wait_online(rec, p, *USERS.values())
        for i in range(3):
            (p.captures / f"tls-{i}.jpg").write_bytes(jpeg_bytes(i))
        wait_until(lambda: len(ledger_rows(p.ledger_db)) == 3, what="3 rows over TLS")
    assert sorted(r["source_name"] for r in ledger_rows(p.ledger_db)) == [
        "tls-0.jpg",
        "tls-1.jpg",
        "tls-2.jpg",
    ]
    for agent in p.agents.values():  # every agent connected to the TLS listener
        assert f"connected to localhost:{tls_port}" in agent.output(), agent.output()
    # a client without a certificate is turned away by the TLS listener itself (TLS 1.3
    # tells it on the first read, after a handshake that looked fine)
    ctx = strict_context(certs.ca_cert)
    with (
        pytest.raises(ssl.SSLError, match=r"CERTIFICATE_REQUIRED|HANDSHAKE_FAILURE"),
        socket.create_connection(("127.0.0.1", tls_port), timeout=10) as raw,
        ctx.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        tls.recv(1)


def test_identify_prints_one_json_object_per_image(tmp_path: Path) -> None:
    spec = load_specs()[5]
    card = tmp_path / "card.jpg"
    card.write_bytes(card_jpeg(spec, random.Random(2)))
    junk = tmp_path / "junk.jpg"
    junk.write_text("not a card")
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "framewire",
            "identify",
            str(card),
            str(junk),
            "--catalog",
            str(sample_catalog_path()),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 1  # one of the two could not be read
    first, second = (json.loads(line) for line in out.stdout.splitlines())
    assert first["status"] == "identified"
    assert (first["card_name"], first["card_number"], first["set_name"]) == (
        spec.name,
        spec.number,
        spec.set_name,
    )
    assert first["market_price"] is not None and first["ocr_text"]
    assert second["error_kind"] == "not_image" and "not an image" in second["error"]
