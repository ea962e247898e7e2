"""`batchmove serve` for a team: TLS with a self-signed certificate made here and the plain-HTTP
warning with --public-url (real processes); `serve adduser` and the users file's checks
(in-process: they come before the console listens)."""

from __future__ import annotations

import datetime
import http.client
import ipaddress
import re
import ssl
import stat
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from click.testing import CliRunner, Result

from batchmove.cli import cli
from batchmove.console import read_people
from tests.support.console import KEY, start_process


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and localhost, and its key (PEM), made now."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "batchmove test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
            .sign(key, hashes.SHA256()))
    certfile, keyfile = folder / "cert.pem", folder / "key.pem"
    certfile.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    keyfile.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                          serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    return certfile, keyfile


def run_cli(*args: str, **env: str) -> Result:
    """`batchmove ARGS` in this process (click's runner): `serve adduser`, and `serve`'s
    refusals, which come before it listens."""
    return CliRunner().invoke(cli, list(args), env=env)


def test_tls_serves_the_page_with_a_secure_cookie(tmp_path: Path) -> None:
    certfile, keyfile = self_signed(tmp_path)
    console = start_process(["serve", "--port", "0", "--workspace", str(tmp_path / "runs"),
                             "--key-env", "BATCHMOVE_TEST_KEY", "--certfile", str(certfile),
                             "--keyfile", str(keyfile)], "console on ", tmp_path / "err.log")
    try:
        url = urlsplit(console.url)
        assert (url.scheme, url.hostname, url.query) == ("https", "127.0.0.1", f"key={KEY}")
        assert re.fullmatch(r"/c/[0-9a-f]{16}/", url.path)
        context = ssl.create_default_context(cafile=str(certfile))
        conn = http.client.HTTPSConnection("127.0.0.1", url.port, context=context, timeout=10)
        conn.request("GET", f"{url.path}?key={KEY}")
        moved = conn.getresponse()
        moved.read()
        assert moved.status == 303
        cookie = moved.getheader("Set-Cookie") or ""
        assert "Secure" in cookie
        assert KEY not in cookie
        conn.request("GET", url.path, headers={"Cookie": cookie.split(";")[0]})
        page = conn.getresponse()
        assert page.status == 200
        assert b'id="upload-form"' in page.read()
        conn.close()
        plain = http.client.HTTPConnection("127.0.0.1", url.port, timeout=10)
        plain.request("GET", "/")
        with pytest.raises((http.client.HTTPException, ConnectionError)):
            plain.getresponse()
    finally:
        console.stop()


def test_adduser_writes_a_private_file_and_the_console_reads_it(tmp_path: Path) -> None:
    users = tmp_path / "users.toml"
    done = run_cli("serve", "adduser", "alice", "--role", "submitter", "--users", str(users))
    assert done.exit_code == 0, done.output
    secret = done.stdout.splitlines()[-1].rsplit(" ", 1)[-1]
    assert stat.S_IMODE(users.stat().st_mode) == 0o600
    assert secret not in users.read_text()  # only its hash
    done = run_cli("serve", "adduser", "bob", "--role", "approver", "--users", str(users),
                   "--four-eyes", "--secret-env", "BOB_SECRET", BOB_SECRET="bob's long secret")
    assert done.exit_code == 0, done.output
    assert "bob's long secret" not in done.stdout + users.read_text()
    people = read_people(users)
    assert people.roles() == {"alice": "submitter", "bob": "approver"}
    assert people.four_eyes
    assert people.check("alice", secret) is not None
    assert people.check("bob", "bob's long secret") is not None
    assert people.check("bob", secret) is None


@pytest.mark.parametrize(("content", "mode", "says"), [
    ('[people.a]\nrole = "boss"\nsecret = "scrypt$1$1$1$a$b"\n', 0o600, "role must be one of"),
    ('[people.a]\nrole = "admin"\nsecret = "hunter2"\n', 0o600, "secret is not a scrypt hash"),
    ('[people.a]\nrole = "admin"\nsecret = "scrypt$1$1$1$a$b"\n', 0o644, "others can read"),
    ("four_eyes = true\n", 0o600, "no people"),
    ('fours_eyes = true\n', 0o600, "unknown key 'fours_eyes'")])
def test_a_bad_users_file_is_refused_before_listening(tmp_path: Path, content: str, mode: int,
                                                      says: str) -> None:
    users = tmp_path / "users.toml"
    users.write_text(content)
    users.chmod(mode)
    done = run_cli("serve", "--port", "0", "--workspace", str(tmp_path / "runs"),
                   "--users", str(users))
    assert done.exit_code == 2
    assert done.stderr.startswith("batchmove: ")
    assert says in done.stderr.splitlines()[0]
    assert "hunter2" not in done.output
    assert done.stdout == ""


@pytest.mark.parametrize(("args", "first_line"), [
    (["--public-url", "ftp://x"], "batchmove: --public-url must be an http:// or https://"),
    (["--certfile", "pyproject.toml"], "batchmove: --certfile and --keyfile go together")])
def test_bad_lan_options_are_refused(tmp_path: Path, args: list[str], first_line: str) -> None:
    done = run_cli("serve", "--port", "0", "--workspace", str(tmp_path / "runs"), *args)
    assert done.exit_code == 2
    assert done.stderr.splitlines()[0].startswith(first_line)


def test_plain_http_beyond_loopback_warns_and_prints_the_public_url(tmp_path: Path) -> None:
    console = start_process(["serve", "--port", "0", "--host", "0.0.0.0",
                             "--allow-non-loopback", "--workspace", str(tmp_path / "runs"),
                             "--public-url", "http://moves.lan:8700/", "--key-env",
                             "BATCHMOVE_TEST_KEY"], "console on ", tmp_path / "err.log")
    try:
        prefix = (tmp_path / "runs" / "console-id").read_text().strip()
        assert console.url == f"http://moves.lan:8700/c/{prefix}/?key={KEY}"
    finally:
        console.stop()
    warning = (tmp_path / "err.log").read_text()
    assert warning.startswith("batchmove: warning: serving plain HTTP beyond this machine")
