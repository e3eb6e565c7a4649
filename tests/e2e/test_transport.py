"""Transport and open routes: HTTPS with HSTS from ``serve --ssl-*``, and a ``/readyz``
that anyone may call without costing a store write each time."""

from __future__ import annotations

import datetime as dt
import ipaddress
import signal
import ssl
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from hypemeter.backends.embedded.duckdb_store import DuckDBEventStore

from . import cluster
from .support import HYPEMETER, STARTUP_TIMEOUT, LiveServer, ServerFactory, cli_env, free_port

HSTS = "strict-transport-security"


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 signed by its own key, and that key (PEM files)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hypemeter-test")])
    now = dt.datetime.now(dt.UTC)
    public = key.public_key()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def wait_https(url: str, context: ssl.SSLContext, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"hypemeter serve exited with {proc.returncode}"
        try:
            if httpx.get(f"{url}/healthz", verify=context, timeout=2.0).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.05)
    raise TimeoutError("the HTTPS server did not start")


def test_serve_with_a_certificate_speaks_https_and_sends_hsts(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    data = tmp_path / "data"
    port = free_port()
    log = (tmp_path / "serve.log").open("wb")
    args = ["serve", "--port", str(port), "--data", str(data)]
    proc = subprocess.Popen(
        [*HYPEMETER, *args, "--ssl-certfile", str(cert), "--ssl-keyfile", str(key)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**cli_env(), **cluster.backend_env(data), "HYPEMETER_DECODE_WORKERS": "0"},
    )
    try:
        context = ssl.create_default_context(cafile=str(cert))
        url = f"https://127.0.0.1:{port}"
        wait_https(url, context, proc)

        health = httpx.get(f"{url}/healthz", verify=context, timeout=10.0)
        missing = httpx.get(f"{url}/v1/leaderboard", verify=context, timeout=10.0)
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5.0)  # TLS only
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        log.close()

    assert health.json() == {"status": "ok"}
    assert health.headers[HSTS] == "max-age=31536000"
    assert missing.status_code == 401  # errors carry it too
    assert missing.headers[HSTS] == "max-age=31536000"


def test_half_a_certificate_is_refused_by_name(tmp_path: Path) -> None:
    cert, _ = self_signed(tmp_path)
    args = ["serve", "--port", str(free_port()), "--data", str(tmp_path / "data")]
    done = subprocess.run(
        [*HYPEMETER, *args, "--ssl-certfile", str(cert)],
        capture_output=True,
        text=True,
        env={**cli_env(), **cluster.backend_env(tmp_path / "data")},
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "--ssl-keyfile" in done.stderr


def test_plain_http_carries_no_hsts_unless_a_trusted_proxy_says_https(
    shared_server: LiveServer,
) -> None:
    with shared_server.client() as client:
        plain = client.get("/healthz")
        proxied = client.get("/healthz", headers={"X-Forwarded-Proto": "https"})

    assert plain.status_code == 200
    assert HSTS not in plain.headers
    # The test client is 127.0.0.1, the proxy trusted by default (--forwarded-allow-ips).
    assert proxied.headers[HSTS] == "max-age=31536000"


def test_readyz_writes_to_the_store_at_most_once_per_period(
    make_server: ServerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs: list[float] = []

    def counted(check: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
        async def check_writable(self: object) -> None:
            runs.append(time.monotonic())
            await check(self)

        return check_writable

    monkeypatch.setattr(
        DuckDBEventStore, "check_writable", counted(DuckDBEventStore.check_writable)
    )
    if cluster.POSTGRES:
        from hypemeter.backends.cluster.postgres_store import PostgresEventStore

        monkeypatch.setattr(
            PostgresEventStore, "check_writable", counted(PostgresEventStore.check_writable)
        )
    srv = make_server(ready_probe_seconds=300)

    with httpx.Client(base_url=srv.url, timeout=30) as anyone:  # no key
        answers = [anyone.get("/readyz") for _ in range(50)]

    assert {a.status_code for a in answers} == {200}
    assert {a.json()["store"] for a in answers} == {"ok"}
    assert len(runs) == 1
