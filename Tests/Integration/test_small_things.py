"""Small things that cost users time, each checked on the real binary: `--version`, the self-check's IPv6 findings
as info on a loopback-only host, a TLS failure reason said once, and the remote host named once in a bounce."""

from __future__ import annotations

import re
import subprocess

from conftest import server_binary, simple_message, unique_tag, wait_until
from mtalog import maildir, outbound_settings, parse_dsn, wait_event
from peers import Behaviour, peers  # noqa: F401  (fixture)
from test_tls import BrokenTLSPeer


def test_version():
    run = subprocess.run([str(server_binary()), "--version"], capture_output=True, timeout=30)
    assert run.returncode == 0 and re.fullmatch(rb"dualmta \d+\.\d+\.\d+\n", run.stdout), run


def test_loopback_only_host_gets_ipv6_findings_as_info_not_warnings(mta):
    # Whatever this machine's IPv6 looks like: with only loopback listeners no IPv6 finding is a warning.
    run = mta.cli("config", "check")
    assert run.returncode == 0, run.stderr
    warnings = [line for line in run.stdout.decode().splitlines() if line.startswith("warning:")]
    assert not [w for w in warnings if "IPv6" in w], run.stdout
    mta.wait_log(r"self-check-done")
    assert not [line for line in mta.lines if "self-check-warning" in line and "IPv6" in line], mta.log_text()


def test_a_tls_failure_reason_is_said_once(start_server):
    peer = BrokenTLSPeer()
    try:
        srv = start_server(**outbound_settings(routes=f"remote.example=[127.0.0.1]:{peer.port}", smtp_tls="encrypt"))
        with srv.session() as client:
            qid = client.transaction("a@lab.example", ["bob@remote.example"],
                                     simple_message(unique_tag("tls1"))).queue_id()
        final = wait_event(srv, "recipient", id=qid)[0]
        assert final["status"] == "4.7.5" and final["reason"].count("TLS handshake failed") == 1, final.line
    finally:
        peer.stop()


def test_the_bounce_names_a_literal_remote_host_once(start_server, peers):  # noqa: F811
    sink = peers(script=Behaviour(rcpt="550 5.1.1 no such user"), name="rejecting")
    srv = start_server(**outbound_settings(routes=f"remote.example=[127.0.0.1]:{sink.port}"))
    with srv.session() as client:
        client.transaction("alice@lab.example", ["nobody@remote.example"],
                           simple_message(unique_tag("nobody"))).expect(250)
    (path,) = wait_until(lambda: maildir(srv.spool, "lab.example", "alice"), what="the bounce in alice's Maildir")
    human = parse_dsn(path.read_bytes()).human
    remote = [line.strip() for line in human.splitlines() if "Remote host:" in line]
    assert remote == ["Remote host: [127.0.0.1]"], human
