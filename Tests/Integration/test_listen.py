"""Listeners: each configured address is bound separately (IPV6_V6ONLY on IPv6 sockets), one log line per socket."""

from __future__ import annotations

import re
import socket

import pytest

from conftest import DEADLINE, RawClient, Server, Spool


def listening_lines(srv: Server) -> list[tuple[str, str]]:
    out = []
    for line in srv.listening:
        m = re.search(r"\baddr=(\S+).*\bfamily=(ipv4|ipv6)\b", line)
        assert m, f"listening line without addr=/family=: {line!r}"
        out.append((m.group(1), m.group(2)))
    return sorted(out)


def greet(host: str, port: int) -> None:
    with RawClient(host, port) as c:
        c.read_reply().expect(220)
        c.cmd(b"QUIT").expect(221)


def test_wildcard_dual_bind(start_server):
    srv = start_server(wildcard=True, listen="[::]:{port}, 0.0.0.0:{port}")
    p = srv.port
    assert listening_lines(srv) == sorted([(f"[::]:{p}", "ipv6"), (f"0.0.0.0:{p}", "ipv4")]), srv.listening
    greet("127.0.0.1", p)
    greet("::1", p)
    srv.assert_alive()
    Spool(srv.spool).settle()


def test_ipv6_only_listener(start_server):
    srv = start_server(listen="[::1]:{port}")
    p = srv.port
    assert listening_lines(srv) == [(f"[::1]:{p}", "ipv6")], srv.listening
    greet("::1", p)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(DEADLINE)
        with pytest.raises(ConnectionRefusedError):
            s.connect(("127.0.0.1", p))
    srv.assert_alive()
    Spool(srv.spool).settle()


def test_ipv4_only_listener(start_server):
    srv = start_server(listen="127.0.0.1:{port}")
    p = srv.port
    assert listening_lines(srv) == [(f"127.0.0.1:{p}", "ipv4")], srv.listening
    greet("127.0.0.1", p)
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
        s.settimeout(DEADLINE)
        with pytest.raises(ConnectionRefusedError):
            s.connect(("::1", p))
    srv.assert_alive()
    Spool(srv.spool).settle()
