"""Redis with TLS (certificates made by the test), a password, and an ACL user
restricted to dtq's key prefix: jobs run end to end, and nothing leaks."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from dtqtest import RedisServer, free_port

from dtq_core import EngineError, EngineUnavailable, Queue, Worker

PASSWORD = "s3cret-Pa55"
ACL_USER, ACL_PASSWORD = "dtqapp", "app-Pa55"


def make_certificates(directory: Path) -> Path:
    """A throw-away CA and a server certificate for 127.0.0.1; returns the CA file."""

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
            "-days", "1", "-subj", "/CN=dtq-test-ca")  # fmt: skip
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
            "-subj", "/CN=localhost")  # fmt: skip
    (directory / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "server.crt", "-days", "1", "-extfile", "san.ext")  # fmt: skip
    return directory / "ca.crt"


class TlsServer(RedisServer):
    """A private redis-server that speaks only TLS and wants a password."""

    def __init__(self, directory: Path) -> None:
        self.ca = make_certificates(directory)
        self.tls_port = free_port()
        super().__init__(
            directory,
            "--tls-port", str(self.tls_port),
            "--tls-cert-file", str(directory / "server.crt"),
            "--tls-key-file", str(directory / "server.key"),
            "--tls-ca-cert-file", str(self.ca),
            "--tls-auth-clients", "no",
            "--requirepass", PASSWORD,
        )  # fmt: skip

    def _wait_until_up(self) -> None:
        # The plain port is open too, but only for this check and the ACL set-up.
        self.client = redis.Redis(port=self.port, password=PASSWORD, decode_responses=True)
        super()._wait_until_up()

    def tls_url(self, user: str = "", password: str = PASSWORD) -> str:
        return f"rediss://{user}:{password}@127.0.0.1:{self.tls_port}/0?ssl_ca_certs={self.ca}"


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsServer]:
    server = TlsServer(tmp_path_factory.mktemp("tls"))
    # The ACL user may touch only keys under dtq: (no channels: dtq needs none), and no dangerous command.
    server.client.execute_command(
        "ACL",
        "SETUSER",
        ACL_USER,
        "on",
        f">{ACL_PASSWORD}",
        "~dtq:*",
        "resetchannels",
        "+@all",
        "-@dangerous",
    )
    yield server
    server.stop()


def run_one_job(url: str, namespace: str, **options: object) -> object:
    with Queue(["test_only"], url, namespace=namespace, **options) as queue:  # type: ignore[arg-type]
        queue.enqueue("test_only", {"action": "duplicate_text", "text": "tls"}, id="j")
        worker = Worker(["test_only"], url, namespace=namespace, mode="thread", **options)  # type: ignore[arg-type]
        worker.get_jobs()
        worker.close()
        return queue.result("j", timeout=10)


def test_a_job_runs_over_tls_with_a_password(tls_server: TlsServer, namespace: str) -> None:
    assert run_one_job(tls_server.tls_url(), namespace) == "tlstls"


def test_a_job_runs_as_an_acl_user_limited_to_dtq_keys(tls_server: TlsServer, namespace: str) -> None:
    url = tls_server.tls_url(ACL_USER, ACL_PASSWORD)
    assert run_one_job(url, namespace) == "tlstls"
    limited = redis.Redis.from_url(url)
    with pytest.raises(redis.exceptions.NoPermissionError):
        limited.get("not-dtq:anything")
    limited.close()


def test_a_prefix_outside_the_acl_is_refused_with_a_clear_error(
    tls_server: TlsServer, namespace: str
) -> None:
    url = tls_server.tls_url(ACL_USER, ACL_PASSWORD)
    with pytest.raises(EngineError) as caught:
        run_one_job(url, namespace, prefix="other")
    message = str(caught.value)
    assert "no permissions to access one of the keys" in message
    assert "must allow keys under other:* (~other:*)" in message
    assert ACL_PASSWORD not in message


@pytest.mark.parametrize("password", ["wrong-password-xyz", ""])
def test_a_wrong_or_missing_password_is_a_refused_login_not_an_unreachable_server(
    tls_server: TlsServer, namespace: str, password: str
) -> None:
    # It was EngineUnavailable, "cannot reach Redis ... Is redis-server running there?":
    # redis-py raises a refused login as a ConnectionError, and no retry mends it.
    user = ACL_USER if password else ""
    url = tls_server.tls_url(user, password)
    with pytest.raises(EngineError) as caught, Queue(["test_only"], url, namespace=namespace) as queue:
        queue.enqueue("test_only", {"action": "echo"})
    assert not isinstance(caught.value, EngineUnavailable)
    message = str(caught.value)
    assert message.startswith(f"Redis at rediss://{user}:***@127.0.0.1:{tls_server.tls_port}")
    assert "refused dtq's login" in message and "put the right password in the URL" in message
    assert "wrong-password-xyz" not in message
