"""The server's TLS suites, probed from outside with `openssl s_client -cipher` over STARTTLS.

By default only forward-secret key exchange with AEAD ciphers is offered in TLS 1.2 (Mozilla's "intermediate"
profile), plus the TLS 1.3 suites: a client that offers only static-RSA key exchange, CBC or SHA-1 MAC suites gets
no handshake. `tls_ciphers` replaces the TLS 1.2 list."""

from __future__ import annotations

import re
import subprocess

import pytest

from conftest import HOSTNAME, Server, require_tool, server_binary


def probe(srv: Server, *options: str) -> str | None:
    """The cipher a STARTTLS handshake with these s_client options agreed on, or None if it failed."""
    openssl = require_tool("openssl")
    run = subprocess.run([openssl, "s_client", "-starttls", "smtp", "-connect", f"127.0.0.1:{srv.port}",
                          "-servername", HOSTNAME, *options], input=b"QUIT\r\n", capture_output=True, timeout=30)
    out = run.stdout.decode(errors="replace")
    match = re.search(r"Cipher is (\S+)", out)
    if match and match.group(1) != "(NONE)":
        return match.group(1)
    return None


REFUSED_TLS12 = [
    "AES128-SHA",  # static RSA key exchange, CBC, SHA-1
    "AES256-GCM-SHA384",  # static RSA key exchange (no forward secrecy), even with AEAD
    "ECDHE-RSA-AES128-SHA",  # forward-secret but CBC with SHA-1
    "ECDHE-RSA-AES256-SHA384",  # CBC with SHA-384
    "DHE-RSA-AES128-SHA256",  # CBC
]
ACCEPTED_TLS12 = ["ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-RSA-AES256-GCM-SHA384", "ECDHE-RSA-CHACHA20-POLY1305",
                  "DHE-RSA-AES256-GCM-SHA384"]


def test_default_suites_are_forward_secret_aead_only(start_server):
    srv = start_server()
    for cipher in REFUSED_TLS12:
        assert probe(srv, "-tls1_2", "-cipher", cipher) is None, f"{cipher} was accepted"
    for cipher in ACCEPTED_TLS12:
        assert probe(srv, "-tls1_2", "-cipher", cipher) == cipher
    assert probe(srv, "-tls1_3") in ("TLS_AES_256_GCM_SHA384", "TLS_AES_128_GCM_SHA256",
                                     "TLS_CHACHA20_POLY1305_SHA256")
    # Below TLS 1.2 nothing at all.
    assert probe(srv, "-tls1_1", "-cipher", "ALL:@SECLEVEL=0") is None
    srv.assert_alive()


def test_tls_ciphers_replaces_the_tls12_list(start_server):
    srv = start_server(tls_ciphers="ECDHE-RSA-AES256-GCM-SHA384")
    assert probe(srv, "-tls1_2", "-cipher", "ECDHE-RSA-AES256-GCM-SHA384") == "ECDHE-RSA-AES256-GCM-SHA384"
    assert probe(srv, "-tls1_2", "-cipher", "ECDHE-RSA-AES128-GCM-SHA256") is None
    out = srv.cli("config", "show")
    assert b"tls_ciphers = ECDHE-RSA-AES256-GCM-SHA384" in out.stdout


@pytest.mark.parametrize("value", ["NO-SUCH-CIPHER", "eNULL:!eNULL"])
def test_tls_ciphers_that_select_nothing_are_refused(tmp_path, value: str):
    conf = tmp_path / "c.conf"
    conf.write_text(f"# x\ntls_ciphers = {value}\n")
    run = subprocess.run([str(server_binary()), "config", "check", "-c", str(conf)], capture_output=True, text=True,
                         timeout=30)
    assert run.returncode == 78 and f"{conf}:2: tls_ciphers:" in run.stderr, run.stderr
