"""Real clients against the server: swaks, Python smtplib and Postfix's smtp-source, over 127.0.0.1 and ::1.

The Maildir copy must be the bytes sent, preceded by exactly `Return-Path:` and our `Received:` header.
"""

from __future__ import annotations

import re
import smtplib
import subprocess
import threading
from pathlib import Path

import pytest

from conftest import DEADLINE, HOSTNAME, Server, Spool, parse_received, require_tool, simple_message, unique_tag

FAMILIES = [pytest.param("127.0.0.1", "127.0.0.1", id="ipv4"), pytest.param("::1", "IPv6:::1", id="ipv6")]
SENDER = "alice@r.example"


def check_delivered_copy(srv: Server, sent: bytes, qid: str, literal: str, helo: str, rcpt: str = "u@lab.example"):
    spool = Spool(srv.spool)
    spool.settle(delivered=1)
    (d,) = spool.delivered()
    assert d.return_path == SENDER
    m = parse_received(d.received)
    assert m.group("addr") == literal, d.received
    assert m.group("helo") == helo and m.group("by") == HOSTNAME and m.group("proto") == "ESMTP", d.received
    assert m.group("id") == qid and m.group("for") == rcpt, d.received
    assert d.rest == sent, "stored message differs from the bytes sent"
    srv.wait_log(rf"result=delivered.*\bid={qid}\b|\bid={qid}\b.*result=delivered")
    srv.assert_alive()


def swaks(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    exe = require_tool("swaks")
    return subprocess.run([exe, "--hide-informational", *args], capture_output=True, text=True, timeout=timeout)


def swaks_target(srv: Server, host: str) -> list[str]:
    return ["--server", host, "--port", str(srv.port)] + (["-6"] if ":" in host else ["-4"])


def queued_id(output: str) -> str:
    m = re.search(r"<-\s+250 .*queued as (\S+)", output)
    assert m, f"no 'queued as' in swaks output:\n{output}"
    return m.group(1)


@pytest.mark.parametrize("host, literal", FAMILIES)
def test_smtplib(mta: Server, host: str, literal: str):
    sent = simple_message(unique_tag("smtplib"), b"line one\r\n\r\nline three\r\n")
    with smtplib.SMTP(host, mta.port, local_hostname="client.example", timeout=DEADLINE) as s:
        code, _ = s.ehlo()
        assert code == 250
        assert s.mail(SENDER)[0] == 250
        assert s.rcpt("u@lab.example")[0] == 250
        code, text = s.data(sent)
        assert code == 250, text
    qid = re.search(rb"queued as (\S+)", text).group(1).decode()
    check_delivered_copy(mta, sent, qid, literal, "client.example")


@pytest.mark.parametrize("host, literal", FAMILIES)
def test_swaks(mta: Server, host: str, literal: str, tmp_path: Path):
    sent = simple_message(unique_tag("swaks"), b"swaks body\r\n")
    data = tmp_path / "data.eml"
    # --no-data-fixup sends the file as it is, followed by CRLF; our file supplies the final '.'.
    data.write_bytes(sent + b".")
    p = swaks(*swaks_target(mta, host), "--ehlo", "client.example", "--from", SENDER, "--to", "u@lab.example",
              "--data", f"@{data}", "--no-data-fixup")
    assert p.returncode == 0, p.stdout + p.stderr
    check_delivered_copy(mta, sent, queued_id(p.stdout), literal, "client.example")


def test_swaks_pipeline(mta: Server, tmp_path: Path):
    sent = simple_message(unique_tag("pipe"))
    data = tmp_path / "data.eml"
    data.write_bytes(sent + b".")
    p = swaks(*swaks_target(mta, "::1"), "--ehlo", "client.example", "--from", SENDER, "--to", "u@lab.example",
              "--data", f"@{data}", "--no-data-fixup", "--pipeline")
    assert p.returncode == 0, p.stdout + p.stderr
    # swaks sends MAIL, RCPT and DATA as one group when PIPELINING is advertised (otherwise it fails).
    assert re.search(r"-> MAIL FROM:<[^>]*>\s*\n\s*-> RCPT TO:<[^>]*>\s*\n\s*-> DATA", p.stdout), p.stdout
    check_delivered_copy(mta, sent, queued_id(p.stdout), "IPv6:::1", "client.example")


def test_swaks_relay_denied(mta: Server):
    p = swaks(*swaks_target(mta, "127.0.0.1"), "--local-interface", "127.0.0.2", "--ehlo", "client.example",
              "--from", "x@remote.example", "--to", "victim@remote.example")
    assert p.returncode != 0
    assert re.search(r"<\*\*\s+554 5\.7\.1", p.stdout), p.stdout
    Spool(mta.spool).settle()
    mta.assert_alive()


def test_oversized_message(mta: Server, tmp_path: Path):
    body = (b"x" * 76 + b"\r\n") * 20000  # about 1.5 MB; message_size_limit = 1M
    sent = simple_message(unique_tag("big"), body)
    # smtplib without the SIZE parameter: the server reads up to the '.', then refuses.
    with smtplib.SMTP("127.0.0.1", mta.port, local_hostname="client.example", timeout=DEADLINE) as s:
        s.ehlo()
        assert s.esmtp_features.get("size") == str(1 << 20), s.esmtp_features  # message_size_limit = 1M
        assert s.mail(SENDER)[0] == 250
        assert s.rcpt("u@lab.example")[0] == 250
        code, text = s.data(sent)
        assert (code, text[:5]) == (552, b"5.3.4"), (code, text)
        # The session survives the refusal.
        assert s.noop()[0] == 250
    # swaks the same way over IPv6.
    data = tmp_path / "big.eml"
    data.write_bytes(sent + b".")
    p = swaks(*swaks_target(mta, "::1"), "--from", SENDER, "--to", "u@lab.example", "--data", f"@{data}",
              "--no-data-fixup")
    assert p.returncode != 0 and re.search(r"<\*\*\s+552 5\.3\.4", p.stdout), p.stdout[-2000:]
    Spool(mta.spool).settle()
    mta.assert_alive()


def test_bare_lf_in_data(mta: Server, tmp_path: Path):
    data = tmp_path / "lf.eml"
    data.write_bytes(b"Subject: bare lf\r\n\r\nline one\nline two\r\n.")
    p = swaks(*swaks_target(mta, "127.0.0.1"), "--from", SENDER, "--to", "u@lab.example", "--data", f"@{data}",
              "--no-data-fixup")
    assert p.returncode != 0 and re.search(r"<\*\*\s+554 5\.5\.2", p.stdout), p.stdout
    Spool(mta.spool).settle()
    mta.assert_alive()


# The per-client cap (max_connections_per_client, default 50, catalogue L06) is raised: all 200 come from loopback.
MANY = {"max_connections_per_client": "300"}


def test_200_concurrent_senders(start_server):
    srv = start_server(**MANY)
    n = 200
    barrier = threading.Barrier(n, timeout=60)
    subjects = [unique_tag(f"c{i:03d}") for i in range(n)]
    results: dict[int, object] = {}

    def send(i: int) -> None:
        try:
            host = "127.0.0.1" if i % 2 else "::1"
            with smtplib.SMTP(host, srv.port, local_hostname="client.example", timeout=60) as s:
                s.ehlo()
                barrier.wait()  # all 200 connections are open before anyone sends
                assert s.mail(SENDER)[0] == 250
                assert s.rcpt(f"user{i % 7}@lab.example")[0] == 250
                code, text = s.data(simple_message(subjects[i]))
                results[i] = (code, text)
        except Exception as exc:  # recorded and asserted below
            results[i] = exc

    threads = [threading.Thread(target=send, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    failures = {i: r for i, r in results.items() if not (isinstance(r, tuple) and r[0] == 250)}
    assert len(results) == n and not failures, f"{len(failures)} failures, e.g. {list(failures.items())[:3]}"
    spool = Spool(srv.spool)
    spool.settle(delivered=n, timeout=120)
    seen: dict[str, int] = {}
    for d in spool.delivered():
        m = re.search(rb"\r\nSubject: (\S+)\r\n", b"\r\n" + d.rest)
        assert m, d.path
        seen[m.group(1).decode()] = seen.get(m.group(1).decode(), 0) + 1
    assert sorted(seen) == sorted(subjects), "lost or unexpected messages"
    assert all(v == 1 for v in seen.values()), {k: v for k, v in seen.items() if v != 1}
    srv.assert_alive()


def test_smtp_source_200(start_server):
    exe = require_tool("smtp-source")
    srv = start_server(**MANY)
    p = subprocess.run([exe, "-s", "200", "-m", "200", "-c", "-f", SENDER, "-t", "u@lab.example",
                        f"127.0.0.1:{srv.port}"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    spool = Spool(srv.spool)
    spool.settle(delivered=200, timeout=120)
    # smtp-source's Message-Id is not unique across sessions; count delivered files and queue ids instead.
    ids = {parse_received(d.received).group("id") for d in spool.delivered()}
    assert len(ids) == 200
    srv.assert_alive()
