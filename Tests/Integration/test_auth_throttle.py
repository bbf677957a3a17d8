"""AUTH brute force across connections: failures count per client address and per user name over all sessions, so
parallel or fresh connections gain nothing. Past 10 failures, AUTH from that address (or for that user) gets
454 4.7.0 without any password check, even with the right password; other addresses and users are unaffected."""

from __future__ import annotations

import base64
import re
import socket
import ssl
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import DEADLINE, HOSTNAME, Server, free_port
from test_tls import PASSWORD, USER, users_file

LIMIT = 10  # the daemon's failure limit per address and per user


def read_reply(sock) -> bytes:
    data = b""
    while not re.search(rb"(^|\r\n)\d{3} [^\r\n]*\r\n$", data):
        chunk = sock.recv(4096)
        if not chunk:
            raise AssertionError(f"closed after {data!r}")
        data += chunk
    return data


def attempt(host: str, port: int, source: str, user: str, password: str) -> str:
    """One connection: EHLO, STARTTLS, EHLO, AUTH PLAIN. Returns the AUTH reply's code and enhanced status."""
    sock = socket.create_connection((host, port), timeout=DEADLINE * 3, source_address=(source, 0))
    try:
        read_reply(sock)
        sock.sendall(b"EHLO brute.example\r\n")
        read_reply(sock)
        sock.sendall(b"STARTTLS\r\n")
        assert read_reply(sock).startswith(b"220")
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        tls = context.wrap_socket(sock, server_hostname=HOSTNAME)
        tls.sendall(b"EHLO brute.example\r\n")
        read_reply(tls)
        token = base64.b64encode(f"\0{user}\0{password}".encode())
        tls.sendall(b"AUTH PLAIN " + token + b"\r\n")
        reply = read_reply(tls).decode()
        return reply[:9]
    finally:
        sock.close()


@pytest.fixture
def submission_server(start_server, tmp_path):
    port = free_port()
    srv = start_server(submission_listen=f"127.0.0.1:{port}", submission_users_file=str(users_file(tmp_path)),
                       relay_networks="192.0.2.0/24", metrics_listen=f"127.0.0.1:{free_port()}")
    return srv, port


def parallel(attempts: list[tuple[str, str, str]], port: int) -> list[str]:
    with ThreadPoolExecutor(max_workers=len(attempts)) as pool:
        futures = [pool.submit(attempt, "127.0.0.1", port, source, user, password)
                   for source, user, password in attempts]
        return [f.result() for f in futures]


def throttled_metric(srv: Server, by: str) -> float:
    out = srv.cli("stats", "--raw").stdout.decode()
    m = re.search(rf'^dualmta_auth_throttled_total\{{by="{by}"\}} (\S+)$', out, re.M)
    return float(m.group(1)) if m else 0.0


def test_failures_from_one_address_across_parallel_connections(submission_server):
    srv, port = submission_server
    # 10 parallel connections from 127.0.0.1, each guessing once for a different (unknown) user.
    codes = parallel([("127.0.0.1", f"guess{i}", "wrong") for i in range(LIMIT)], port)
    assert codes == ["535 5.7.8"] * LIMIT, codes
    # The address is now over the limit: even the right password gets 454 4.7.0, on a fresh connection.
    assert attempt("127.0.0.1", port, "127.0.0.1", USER, PASSWORD) == "454 4.7.0"
    assert parallel([("127.0.0.1", f"more{i}", "wrong") for i in range(3)], port) == ["454 4.7.0"] * 3
    line = srv.wait_log(r"auth-throttled")
    assert "by=address" in line and "wrong" not in line and PASSWORD not in srv.log_text()
    assert throttled_metric(srv, "address") == 4
    # Another address with the right password is not affected.
    assert attempt("127.0.0.1", port, "127.0.0.2", USER, PASSWORD) == "235 2.7.0"


def test_failures_for_one_user_across_addresses(submission_server):
    srv, port = submission_server
    # One wrong guess for alice from each of 10 addresses (127.0.0.11 ... 127.0.0.20), in parallel.
    codes = parallel([(f"127.0.0.{11 + i}", USER, f"wrong{i}") for i in range(LIMIT)], port)
    assert codes == ["535 5.7.8"] * LIMIT, codes
    # alice is now refused from a new address, right password or not; another user from there is checked normally.
    assert attempt("127.0.0.1", port, "127.0.0.30", USER, PASSWORD) == "454 4.7.0"
    assert attempt("127.0.0.1", port, "127.0.0.30", "bob", "wrong") == "535 5.7.8"
    assert "by=user" in srv.wait_log(r"auth-throttled")
    assert throttled_metric(srv, "user") == 1
