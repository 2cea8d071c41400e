"""Issue 12, findings 5, 6, 8 and 11 with real processes: CLI output built from event data, Redis passwords in
what the CLI prints, Redis URLs every process must accept (encoded password, TLS), timestamps RFC 3339 cannot write.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from registry.connection import sync_client
from registry.wire.publisher import Publisher
from tests.conftest import RedisServer, free_port
from tests.e2e.stack import ROOT, Stack, running_stack
from tests.harness import jobreg, wait_for
from tests.security.attack import new_uuid
from tests.topology import Store

PASSWORD = "p@ss/w:rd%"  # every character a URL must encode
ENCODED = "p%40ss%2Fw%3Ard%25"
# A terminal escape sequence: clear the screen, set the window title, bell.
HOSTILE_USER = "\x1b[2J\x1b]0;pwn\x07"
RAW_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # what must never reach a terminal (\t, \n aside)

needs_redis = pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server")


def start_redis(*args: str) -> subprocess.Popen[bytes]:
    workdir = tempfile.mkdtemp(prefix="jobreg-sec-redis-")
    return subprocess.Popen(
        ["redis-server", "--bind", "127.0.0.1", "--save", "", "--dir", workdir, *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def serving(url: str, proc: subprocess.Popen[bytes]) -> bool:
    assert proc.poll() is None, "redis-server exited"
    try:
        return bool(sync_client(url).ping())
    except redis.RedisError:
        return False


@pytest.fixture
def password_redis() -> Iterator[RedisServer]:
    port = free_port()
    proc = start_redis("--port", str(port), "--requirepass", PASSWORD)
    url = f"redis://:{ENCODED}@127.0.0.1:{port}/0"
    try:
        wait_for(lambda: serving(url, proc), 10, "redis-server with a password")
        yield RedisServer(url, port, proc, "")
    finally:
        proc.kill()
        proc.wait()


def make_tls(directory: Path) -> tuple[Path, Path, Path]:
    """A CA, and a server certificate for 127.0.0.1 it signed: (ca, cert, key) PEM files."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "jobreg test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .sign(ca_key, hashes.SHA256())
    )
    paths = directory / "ca.pem", directory / "server.pem", directory / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return paths


def check_pipeline(server: RedisServer, logs: Path) -> Stack:
    """Worker and API on ``server.url``: an event published is applied by the worker and listed by the API."""
    with running_stack(server, logs) as stack:
        job = new_uuid()
        Publisher(sync_client(server.url), stack.keys).created(
            job, batch_id=new_uuid(), project_id=new_uuid(), user_id="alice", runs=1
        )
        wait_for(
            lambda: httpx.get(stack.url + "/api/v2/jobs", params={"id": job}).json()["pagination"]["total"] == 1,
            60,
            "the worker to apply the event",
            stack.log_tail,
        )
        worker_log = (logs / "worker0.log").read_text(errors="replace")
        assert "AuthenticationError" not in worker_log and "CERTIFICATE_VERIFY_FAILED" not in worker_log
        top = jobreg("top", "--once", "--interval", "0.1", env=stack.env)
        assert top.returncode == 0 and "jobs        1" in top.stdout, top.stderr
        return stack


@needs_redis
def test_every_process_accepts_an_encoded_password(password_redis: RedisServer, tmp_path: Path) -> None:
    """Finding 8: the worker got AuthenticationError (arq kept the password encoded) and retried forever."""
    check_pipeline(password_redis, tmp_path)


@needs_redis
def test_every_process_accepts_rediss_with_its_options(tmp_path: Path) -> None:
    """Finding 8: ``rediss://...?ssl_ca_certs=`` worked for the API; the worker failed certificate verification."""
    ca, cert, key = make_tls(tmp_path)
    port = free_port()
    proc = start_redis(
        "--port", "0", "--tls-port", str(port), "--requirepass", PASSWORD,
        "--tls-cert-file", str(cert), "--tls-key-file", str(key), "--tls-ca-cert-file", str(ca),
        "--tls-auth-clients", "no",
    )  # fmt: skip
    url = f"rediss://:{ENCODED}@127.0.0.1:{port}/0?ssl_ca_certs={ca}&ssl_cert_reqs=required"
    (tmp_path / "logs").mkdir()
    try:
        wait_for(lambda: serving(url, proc), 10, "redis-server with TLS")
        check_pipeline(RedisServer(url, port, proc, ""), tmp_path / "logs")
    finally:
        proc.kill()
        proc.wait()


@needs_redis
def test_printed_urls_never_show_the_password(password_redis: RedisServer, tmp_path: Path) -> None:
    """Finding 6: `jobreg top`'s connection error and `jobreg up`'s banner printed redis://:secret@..."""
    closed = f"redis://:{ENCODED}@127.0.0.1:{free_port()}/0"
    top = jobreg("top", "--once", env={**os.environ, "JOBREG_REDIS_URL": closed})
    assert top.returncode == 1 and "cannot read redis://:***@127.0.0.1" in top.stderr
    assert ENCODED not in top.stderr + top.stdout and PASSWORD not in top.stderr + top.stdout
    port = free_port()
    env = {**os.environ, "JOBREG_REDIS_URL": password_redis.url, "JOBREG_PREFIX": f"up{os.urandom(3).hex()}"}
    up = subprocess.Popen(
        [sys.executable, "-m", "registry.ops.cli", "up", "--port", str(port), "--data-dir", str(tmp_path / "d")],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: _healthy(port, up), 60, "jobreg up")
    finally:
        up.send_signal(signal.SIGINT)
        out, err = up.communicate(timeout=30)
    assert "store: Redis at redis://:***@127.0.0.1" in out, out
    assert ENCODED not in out + err and PASSWORD not in out + err


def _healthy(port: int, proc: subprocess.Popen[str]) -> bool:
    assert proc.poll() is None, "jobreg up exited"
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def test_cli_output_from_event_data_is_escaped(store: Store, tmp_path: Path) -> None:
    """Findings 5 and 11: `jobreg top` and `jobreg dead-letters` print what producers wrote; a terminal must
    get no control character from it, one row per change; a timestamp in year 10000 is dead-lettered."""
    with running_stack(store, tmp_path) as stack:
        client = stack.redis()
        project = new_uuid()
        for user in (HOSTILE_USER, "nul\x00here", "new\nline"):
            stack.publish(
                [
                    {
                        "event_id": new_uuid(),
                        "type": "created",
                        "job_id": new_uuid(),
                        "occurred_at": "2026-11-23T10:00:00Z",
                        "batch_id": new_uuid(),
                        "project_id": project,
                        "user_id": user,
                        "runs": "1",
                    }
                ]
            )
        field = "x\x1b[2J\x1b]0;pwn\x07\nFORGED"
        started = {"type": "started", "occurred_at": "2026-11-23T10:00:00Z"}
        client.xadd(stack.keys.events, {**started, "event_id": "e1", "job_id": new_uuid(), field: "v" * 70_000})
        year_10000 = new_uuid()
        late = {**started, "event_id": "e2", "job_id": year_10000, "occurred_at": "9999-12-31T23:59:59-23:59"}
        client.xadd(stack.keys.events, late)
        wait_for(lambda: client.xlen(stack.keys.dead) == 2, 60, "two dead letters", stack.log_tail)

        top = jobreg("top", "--once", "--interval", "0.1", env=stack.env)
        assert top.returncode == 0, top.stderr
        assert not RAW_CONTROLS.search(top.stdout), repr(top.stdout)
        rows = [r for r in top.stdout.split("latest changes\n", 1)[1].splitlines() if r.strip()]
        assert len(rows) == 3, rows  # a NUL or a newline in a user id no longer breaks a row
        assert any("\\x1b[2J\\x1b]0;pw" in row for row in rows)  # escaped, then cut to the column

        dead = jobreg("dead-letters", env=stack.env)
        assert dead.returncode == 0, dead.stderr
        assert not RAW_CONTROLS.search(dead.stdout), repr(dead.stdout)
        lines = dead.stdout.splitlines()
        assert len(lines) == 2 and not any(line.startswith("FORGED") for line in lines)
        assert "x\\x1b[2J\\x1b]0;pwn\\x07\\nFORGED exceeds 65536 bytes" in dead.stdout
        assert "occurred_at is not an RFC 3339 timestamp: '9999-12-31T23:59:59-23:59'" in dead.stdout
        as_json = jobreg("dead-letters", "--json", env=stack.env)
        assert not RAW_CONTROLS.search(as_json.stdout)
        assert httpx.get(stack.url + f"/api/v2/jobs/{year_10000}").status_code == 404
