"""The TLS listener with a real certificate, and `framewire identify` as a user runs it."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from broker_config import BrokerPlan, EmbeddedBroker, default_accounts, free_port
from framewire.samples import card_jpeg, load_specs, sample_catalog_path
from schemas import TopicTree
from tests.conftest import wait_until
from tests.recorder import Recorder


def make_certificates(folder: Path) -> tuple[Path, Path, Path]:
    """A private CA and a server certificate for 127.0.0.1, made with openssl."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed")
    ca_key, ca, key, csr, cert = (
        folder / n for n in ("ca.key", "ca.pem", "s.key", "s.csr", "s.pem")
    )
    ext = folder / "ext.cnf"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    run = [
        openssl,
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=framewire test CA",
        "-keyout",
        str(ca_key),
        "-out",
        str(ca),
    ]
    subprocess.run(run, check=True, capture_output=True)
    subprocess.run(
        [
            openssl,
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(csr),
        ],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [
            openssl,
            "x509",
            "-req",
            "-in",
            str(csr),
            "-CA",
            str(ca),
            "-CAkey",
            str(ca_key),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            str(ext),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return ca, cert, key


@pytest.mark.integration
def test_an_agent_connects_over_tls_and_checks_the_certificate(tmp_path: Path) -> None:
    ca, cert, key = make_certificates(tmp_path)
    tls_port = free_port()
    plan = BrokerPlan(
        tmp_path / "broker",
        port=free_port(),
        prefix="tlstest",
        tls_cert=cert,
        tls_key=key,
        tls_port=tls_port,
        accounts=default_accounts(),
    )
    t = TopicTree("tlstest")
    with EmbeddedBroker(plan) as broker:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FRAMEWIRE_")}
        env.update(
            FRAMEWIRE_BROKER_URL=f"mqtts://127.0.0.1:{tls_port}",
            FRAMEWIRE_MQTT_USERNAME="ledger",
            FRAMEWIRE_MQTT_PASSWORD_FILE=str(broker.secrets["ledger"]),
            FRAMEWIRE_MQTT_CA_FILE=str(ca),
            FRAMEWIRE_AGENT_ID="ledger",
            FRAMEWIRE_TOPIC_PREFIX="tlstest",
            FRAMEWIRE_DATA_DIR=str(tmp_path / "ledger"),
            FRAMEWIRE_METRICS_PORT="0",
        )
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
        # without our CA the certificate is not trusted: the agent never gets in
        env.pop("FRAMEWIRE_MQTT_CA_FILE")
        env["FRAMEWIRE_AGENT_ID"] = "ledger-untrusting"
        bad = subprocess.Popen(
            [sys.executable, "-m", "framewire", "run", "ledger"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            _, stderr = bad.communicate(timeout=4)
        except subprocess.TimeoutExpired:
            bad.terminate()
            _, stderr = bad.communicate(timeout=30)
        assert "CERTIFICATE_VERIFY_FAILED" in stderr or "certificate verify failed" in stderr


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
