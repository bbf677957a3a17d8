"""End-to-end tests of the outbound engine (issue 3) over real loopback sockets: swaks -> dualmta -> Postfix's
smtp-sink, -> a second dualmta over ::1, and -> scripted SMTP peers that answer each stage as the test says (rows
O01-O17). Every test checks the log lines (one `delivery` line per attempt and recipient, one `recipient` line per
decision) and what arrived where, and ends with an empty queue when the message is done.
"""

from __future__ import annotations

import json
import os
import pwd
import socket
import subprocess
import time
from pathlib import Path

import pytest

from conftest import DEADLINE, _die_with_parent, free_port, parse_delivered, parse_received, require_tool
from dnslab import lab_dns  # noqa: F401  (fixture)
from mtalog import (events, maildir, outbound_settings, parse_dsn, story, submit, wait_event, wait_queue_empty)
from peers import Behaviour, peers  # noqa: F401  (fixture)

SENDER = "alice@src.example"


@pytest.fixture
def relay(start_server, peers):
    """relay(dest_script, **settings) -> (server, dest peer, ndr sink): remote.example goes to a scripted peer,
    the sender's domain src.example to a sink that collects the reports."""
    def _relay(dest_script=None, **overrides):
        dest = peers(script=dest_script, name="dest")
        ndr = peers(name="ndr-sink")
        routes = f"remote.example=[127.0.0.1]:{dest.port}, src.example=[127.0.0.1]:{ndr.port}"
        srv = start_server(**outbound_settings(routes=routes, **overrides))
        return srv, dest, ndr
    return _relay


# ---------------------------------------------------------------------------------------------------------------
# Real peers


class SmtpSink:
    """Postfix's smtp-sink on 127.0.0.1:PORT, dumping every transaction into its own file."""

    def __init__(self, directory: Path, extra_args: list[str] | None = None):
        binary = require_tool("smtp-sink")
        self.dump = directory / "sink-dump"
        self.dump.mkdir()
        self.port = free_port()
        user = pwd.getpwuid(os.getuid()).pw_name
        self.proc = subprocess.Popen(
            [binary, "-u", user, *(extra_args or []), "-d", f"{self.dump}/%M.", f"127.0.0.1:{self.port}", "100"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=_die_with_parent)
        end = time.monotonic() + DEADLINE
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    if s.recv(512).startswith(b"220"):
                        break
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > end:
                self.stop()
                pytest.fail(f"smtp-sink did not start: {self.proc.stderr.read().decode(errors='replace')}")
            time.sleep(0.02)  # between polls only

    def files(self) -> list[Path]:
        return sorted(p for p in self.dump.rglob("*") if p.is_file())

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def test_swaks_to_smtp_sink_via_static_route(start_server, tmp_path):
    swaks = require_tool("swaks")
    sink = SmtpSink(tmp_path)
    try:
        srv = start_server(**outbound_settings(routes=f"remote.example=[127.0.0.1]:{sink.port}"))
        subject = f"to-sink-{time.monotonic_ns()}"
        run = subprocess.run([swaks, "--server", "127.0.0.1", "--port", str(srv.port), "--from", SENDER,
                              "--to", "bob@remote.example", "--h-Subject", subject],
                             capture_output=True, timeout=30)
        assert run.returncode == 0, run.stdout.decode(errors="replace") + run.stderr.decode(errors="replace")
        qid = wait_event(srv, "accepted")[0]["id"]
        final = wait_event(srv, "recipient", id=qid)[0]
        assert final["result"] == "delivered" and final["status"].startswith("2."), final.line
        attempts = events(srv, "delivery", id=qid)
        assert [(a["family"], a["addr"], a["result"]) for a in attempts] == [("ipv4", "[127.0.0.1]", "sent")], \
            story(srv, qid)
        assert attempts[0]["rcpt"] == "<bob@remote.example>" and attempts[0]["reply"].startswith("250")
        wait_event(srv, "removed", id=qid)
        wait_queue_empty(srv)
        end = time.monotonic() + DEADLINE
        while not sink.files() and time.monotonic() < end:
            time.sleep(0.02)  # between polls only, inside the deadline loop
        files = sink.files()
        assert len(files) == 1, f"smtp-sink dumps: {files}"
        dump = files[0].read_text(errors="replace")
        assert f"X-Mail-Args: <{SENDER}>" in dump and "X-Rcpt-Args: <bob@remote.example>" in dump, dump
        assert f"Subject: {subject}" in dump and f"id {qid}" in dump, dump
    finally:
        sink.stop()


def test_relay_to_second_dualmta_over_ipv6(start_server, tmp_path):
    final = start_server(spool=tmp_path / "final-spool", hostname="mx.dest.example", local_domains="dest.example")
    relay = start_server(spool=tmp_path / "relay-spool",
                         **outbound_settings(routes=f"dest.example=[::1]:{final.port}"))
    qid = submit(relay, SENDER, ["bob@dest.example"], subject="two-hops")
    wait_event(relay, "removed", id=qid)
    attempts = events(relay, "delivery", id=qid)
    assert [(a["family"], a["addr"], a["result"]) for a in attempts] == [("ipv6", "[::1]", "sent")], story(relay, qid)
    wait_queue_empty(relay)
    end = time.monotonic() + DEADLINE
    while not maildir(final.spool, "dest.example", "bob") and time.monotonic() < end:
        time.sleep(0.02)  # between polls only, inside the deadline loop
    files = maildir(final.spool, "dest.example", "bob")
    assert len(files) == 1, files
    delivered = parse_delivered(files[0])
    assert delivered.return_path == SENDER
    outer = parse_received(delivered.received)
    assert outer.group("by") == "mx.dest.example" and outer.group("addr") in ("IPv6:::1", "::1"), delivered.received
    assert outer.group("helo") == "mx.lab.example", delivered.received
    headers = delivered.raw.split(b"\r\n\r\n", 1)[0].decode()
    assert headers.count("\r\nReceived: ") == 2, headers
    assert f"id {qid}" in headers and "Subject: two-hops" in headers, headers
    wait_queue_empty(final)


# ---------------------------------------------------------------------------------------------------------------
# Scripted peers (peers.py): a fake MX that answers each stage as the test says


def test_450_at_rcpt_then_250_is_retried_and_delivered_once(relay):
    srv, dest, ndr = relay([Behaviour(rcpt="450 4.2.0 try later"), Behaviour()])
    body = b".leading dot\r\n..two dots\r\n.\r\nlast line\r\n"  # dot-stuffed on the wire, intact at the end
    qid = submit(srv, SENDER, ["bob@remote.example"], body=b"." + body.replace(b"\r\n.", b"\r\n.."))
    wait_event(srv, "removed", id=qid, timeout=15)
    attempts = events(srv, "delivery", id=qid)
    assert [a["result"] for a in attempts] == ["deferred", "sent"], story(srv, qid)
    assert attempts[0]["reply"].startswith("450 4.2.0"), attempts[0].line
    finals = events(srv, "recipient", id=qid)
    assert [(f["result"], f["status"]) for f in finals] == [("deferred", "4.2.0"), ("delivered", "2.0.0")], \
        story(srv, qid)
    assert events(srv, "deferred", id=qid), story(srv, qid)
    messages = dest.wait_messages(1, DEADLINE)
    assert len(messages) == 1 and messages[0].rcpts == ["bob@remote.example"] and messages[0].mail_from == SENDER
    assert messages[0].data.endswith(b"\r\n\r\n" + body), messages[0].data
    assert dest.connection_count == 2, dest.describe()
    assert ndr.connection_count == 0 and not events(srv, "bounce")
    wait_queue_empty(srv)


def test_550_at_rcpt_fails_without_retry_and_one_dsn_goes_to_the_sender(relay):
    srv, dest, ndr = relay(Behaviour(rcpt="550 5.1.1 <bob@remote.example>: Recipient address rejected"))
    qid = submit(srv, SENDER, ["bob@remote.example"], subject="will-bounce")
    bounce = wait_event(srv, "bounce", id=qid)[0]
    assert bounce["rcpt"] == f"<{SENDER}>", bounce.line
    ndr_id = bounce["ndr"]
    wait_event(srv, "removed", id=ndr_id)
    wait_event(srv, "removed", id=qid)
    wait_queue_empty(srv)
    attempts = events(srv, "delivery", id=qid)
    assert [a["result"] for a in attempts] == ["rejected"], story(srv, qid)
    final = events(srv, "recipient", id=qid)
    assert [(f["result"], f["status"]) for f in final] == [("failed", "5.1.1")], story(srv, qid)
    assert dest.connection_count == 1 and not dest.messages, dest.describe()  # not retried, no DATA

    [report] = ndr.wait_messages(1, DEADLINE)
    assert report.mail_from == "" and report.rcpts == [SENDER]
    dsn = parse_dsn(report.data)
    msg = dsn.message
    assert msg["Auto-Submitted"] and msg["Auto-Submitted"].startswith("auto-replied"), msg["Auto-Submitted"]
    assert msg["To"] and SENDER in msg["To"] and msg["From"] and "MAILER-DAEMON" in msg["From"].upper()
    assert msg["Date"] and msg["Message-ID"] and msg["Subject"]
    assert dsn.per_message["Reporting-MTA"] == "dns; mx.lab.example", dsn.per_message.items()
    assert dsn.per_message["Arrival-Date"], dsn.per_message.items()
    [group] = dsn.recipients
    assert group["Final-Recipient"].lower() == "rfc822; bob@remote.example", group.items()
    assert group["Action"] == "failed" and group["Status"] == "5.1.1", group.items()
    assert group["Remote-MTA"] and group["Remote-MTA"].startswith("dns;"), group.items()
    assert group["Diagnostic-Code"].startswith("smtp; 550 5.1.1"), group.items()
    assert group["Last-Attempt-Date"], group.items()
    assert dsn.third is not None and b"will-bounce" in dsn.third.as_bytes(), "original (headers) not attached"
    assert "bob@remote.example" in dsn.human


def test_connection_dropped_mid_data_is_retried_and_delivered_exactly_once(relay):
    srv, dest, ndr = relay([Behaviour(drop_after_data_bytes=4096), Behaviour()])
    body = b"".join(b"line %05d of a message long enough to be cut in the middle\r\n" % i for i in range(2000))
    qid = submit(srv, SENDER, ["bob@remote.example"], body=body)
    wait_event(srv, "removed", id=qid, timeout=15)
    attempts = events(srv, "delivery", id=qid)
    assert [a["result"] for a in attempts] == ["failed", "sent"], story(srv, qid)
    finals = events(srv, "recipient", id=qid)
    assert [f["result"] for f in finals] == ["deferred", "delivered"], story(srv, qid)
    assert finals[0]["status"] == "4.4.2", finals[0].line
    messages = dest.wait_messages(1, DEADLINE)
    assert len(messages) == 1 and messages[0].data.endswith(body), dest.describe()
    sessions = dest.wait_sessions_ended(2, DEADLINE)
    assert sessions[0].ended == "dropped-mid-data" and not sessions[0].accepted, dest.describe()
    # The client may have handed the whole body to the kernel before the peer hung up; then it cannot know whether
    # the "." arrived, and a possible-duplicate warning is legitimate (as in Postfix). No bounce in any case.
    assert not events(srv, "bounce")
    wait_queue_empty(srv)


def test_no_reply_after_dot_is_deferred_and_logged_as_possible_duplicate(relay):
    srv, dest, ndr = relay([Behaviour(eod=None), Behaviour()])
    qid = submit(srv, SENDER, ["bob@remote.example"], subject="maybe-twice")
    wait_event(srv, "removed", id=qid, timeout=15)
    dup = events(srv, "possible-duplicate", id=qid)
    assert len(dup) == 1 and dup[0]["addr"] == "[127.0.0.1]", story(srv, qid)
    attempts = events(srv, "delivery", id=qid)
    assert [a["result"] for a in attempts] == ["failed", "sent"], story(srv, qid)
    finals = events(srv, "recipient", id=qid)
    assert [f["result"] for f in finals] == ["deferred", "delivered"], story(srv, qid)
    sessions = dest.wait_sessions_ended(2, DEADLINE)
    # The peer got the whole message twice: that is exactly the duplicate the log warns about.
    assert sessions[0].ended == "no-reply-after-dot" and sessions[0].data is not None
    assert len(dest.messages) == 1 and dest.messages[0].data == sessions[0].data
    wait_queue_empty(srv)


def test_two_recipients_one_rejected_gives_one_dsn_for_that_one(relay):
    def rcpt(address: str) -> str:
        return "550 5.1.1 no such user" if address.startswith("nobody@") else "250 2.1.5 Ok"
    srv, dest, ndr = relay(Behaviour(rcpt=rcpt))
    qid = submit(srv, SENDER, ["bob@remote.example", "nobody@remote.example"])
    bounces = wait_event(srv, "bounce", id=qid)
    wait_event(srv, "removed", id=qid)
    wait_event(srv, "removed", id=bounces[0]["ndr"])
    finals = {f["rcpt"]: (f["result"], f["status"]) for f in events(srv, "recipient", id=qid)}
    assert finals == {"<bob@remote.example>": ("delivered", "2.0.0"),
                      "<nobody@remote.example>": ("failed", "5.1.1")}, story(srv, qid)
    [message] = dest.wait_messages(1, DEADLINE)
    assert message.rcpts == ["bob@remote.example"]
    [report] = ndr.wait_messages(1, DEADLINE)
    dsn = parse_dsn(report.data)
    assert [g["Final-Recipient"].lower() for g in dsn.recipients] == ["rfc822; nobody@remote.example"]
    assert len(events(srv, "bounce")) == 1
    wait_queue_empty(srv)


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelining", "no-pipelining"])
def test_two_recipients_both_rejected_give_one_dsn_with_two_groups(pipelining, relay):
    """O06: every RCPT fails -> no message data is sent (without PIPELINING not even DATA), one DSN."""
    ehlo = ("250-peer.test", "250-PIPELINING", "250 8BITMIME") if pipelining else ("250-peer.test", "250 8BITMIME")
    srv, dest, ndr = relay(Behaviour(rcpt="550 5.1.1 no such user", ehlo=ehlo))
    qid = submit(srv, SENDER, ["a1@remote.example", "a2@remote.example"])
    wait_event(srv, "removed", id=qid)
    [report] = ndr.wait_messages(1, DEADLINE)
    dsn = parse_dsn(report.data)
    assert sorted(g["Final-Recipient"].lower() for g in dsn.recipients) == \
        ["rfc822; a1@remote.example", "rfc822; a2@remote.example"]
    assert all(g["Action"] == "failed" and g["Status"] == "5.1.1" for g in dsn.recipients)
    commands = [c.upper() for c in dest.sessions[0].commands]
    if pipelining:
        # RFC 2920: DATA may be in the pipeline; after its 503 only RSET/QUIT may follow, never message lines.
        after = commands[commands.index("DATA") + 1:] if "DATA" in commands else []
        assert set(after) <= {"RSET", "QUIT"}, dest.describe()
    else:
        assert "DATA" not in commands, dest.describe()
    assert len(events(srv, "bounce", id=qid)) == 1
    wait_queue_empty(srv)


def test_rcpt_250_450_550_sends_data_for_one_defers_one_bounces_one(relay):
    """O05: DATA for the accepted recipient only; the 450 one is retried; one DSN for the 550 one."""
    def first(address: str) -> str:
        return {"ok": "250 2.1.5 Ok", "later": "450 4.2.1 busy"}.get(address.split("@")[0], "550 5.1.1 unknown")
    srv, dest, ndr = relay([Behaviour(rcpt=first), Behaviour()])
    qid = submit(srv, SENDER, ["ok@remote.example", "later@remote.example", "no@remote.example"])
    wait_event(srv, "removed", id=qid, timeout=15)
    messages = dest.wait_messages(2, DEADLINE)
    assert [m.rcpts for m in messages] == [["ok@remote.example"], ["later@remote.example"]], dest.describe()
    finals = [(f["rcpt"], f["result"]) for f in events(srv, "recipient", id=qid)]
    assert finals.count(("<ok@remote.example>", "delivered")) == 1
    assert finals.count(("<later@remote.example>", "deferred")) == 1
    assert finals.count(("<later@remote.example>", "delivered")) == 1
    assert finals.count(("<no@remote.example>", "failed")) == 1
    [report] = ndr.wait_messages(1, DEADLINE)
    assert [g["Final-Recipient"].lower() for g in parse_dsn(report.data).recipients] == ["rfc822; no@remote.example"]
    wait_queue_empty(srv)


@pytest.mark.parametrize("first", [
    pytest.param(Behaviour(greeting=None), id="O11-no-greeting"),
    pytest.param(Behaviour(greeting="421 4.3.2 not now"), id="O02-421-greeting"),
    pytest.param(Behaviour(greeting="554 5.3.2 go away"), id="O02-554-greeting"),
    pytest.param(Behaviour(greeting="220 slow peer says hello", greeting_byte_delay=0.2), id="O12-1-byte-per-200ms"),
    pytest.param(Behaviour(greeting="2x0 ok"), id="O13-garbage-code"),
    pytest.param(Behaviour(greeting="220 " + "x" * 600), id="O13-600-octet-line"),
    pytest.param(Behaviour(ehlo=("250-peer.test", "550 mixed codes")), id="O13-mixed-multiline"),
    pytest.param(Behaviour(rcpt=None), id="O11-stall-after-rcpt"),
])
def test_host_level_failure_on_ipv6_moves_on_to_the_ipv4_address(first, start_server, peers, lab_dns):  # noqa: F811
    """`remote.example` is routed to a host name with AAAA ::1 and A 127.0.0.1 (lab DNS): the peer on ::1 fails
    at the greeting (no greeting at all: smtp_reply_timeout), the one on 127.0.0.1 accepts."""
    port = free_port()
    bad = peers("::1", port, [first], name="v6-bad")
    good = peers("127.0.0.1", port, name="v4-good")
    srv = start_server(**outbound_settings(routes=f"remote.example=dual.example.test:{port}",
                                           dns_servers=lab_dns.server, allow_loopback_mx="yes",
                                           smtp_reply_timeout="1s"))
    started = time.monotonic()
    qid = submit(srv, SENDER, ["bob@remote.example"])
    wait_event(srv, "removed", id=qid)
    elapsed = time.monotonic() - started
    attempts = events(srv, "delivery", id=qid)
    assert [(a["family"], a["addr"], a["result"]) for a in attempts] == \
        [("ipv6", "[::1]", "failed"), ("ipv4", "[127.0.0.1]", "sent")], story(srv, qid)
    assert [f["result"] for f in events(srv, "recipient", id=qid)] == ["delivered"], story(srv, qid)
    assert bad.connection_count == 1 and not bad.messages, bad.describe()
    assert len(good.wait_messages(1, DEADLINE)) == 1
    if first.greeting is None or first.greeting_byte_delay or first.rcpt is None:
        assert int(attempts[0]["ms"]) >= 900, attempts[0].line  # the greeting deadline, not an instant failure
    if first.greeting_byte_delay:
        # The deadline covers the whole reply (O12), not each read: it ends well before the 5 s the greeting takes.
        assert int(attempts[0]["ms"]) < 3000, attempts[0].line
    assert elapsed < 12  # a sanity bound only; the per-attempt ms above carry the meaning
    wait_queue_empty(srv)


def test_ehlo_502_falls_back_to_helo(relay):
    """O03."""
    srv, dest, ndr = relay(Behaviour(ehlo=("502 5.5.2 no EHLO here",)))
    qid = submit(srv, SENDER, ["bob@remote.example"])
    wait_event(srv, "removed", id=qid)
    [message] = dest.wait_messages(1, DEADLINE)
    commands = dest.sessions[0].commands
    assert commands[0].upper().startswith("EHLO ") and commands[1].upper().startswith("HELO "), commands
    assert [a["result"] for a in events(srv, "delivery", id=qid)] == ["sent"]


@pytest.mark.parametrize("first,status", [
    pytest.param(Behaviour(mail="451 4.3.0 try again"), "4.3.0", id="O04-mail-451"),
    pytest.param(Behaviour(data="451 4.3.0 data later"), "4.3.0", id="O07-data-451"),
    pytest.param(Behaviour(eod="451 4.3.0 queue full"), "4.3.0", id="O08-eod-451"),
])
def test_temporary_reply_defers_then_delivers(first, status, relay):
    srv, dest, ndr = relay([first, Behaviour()])
    qid = submit(srv, SENDER, ["bob@remote.example"])
    wait_event(srv, "removed", id=qid, timeout=15)
    finals = [(f["result"], f["status"]) for f in events(srv, "recipient", id=qid)]
    assert finals == [("deferred", status), ("delivered", "2.0.0")], story(srv, qid)
    assert len(dest.wait_messages(1, DEADLINE)) == 1
    assert not events(srv, "bounce")
    wait_queue_empty(srv)


@pytest.mark.parametrize("first,status", [
    pytest.param(Behaviour(mail="550 5.7.1 sender refused"), "5.7.1", id="O04-mail-550"),
    pytest.param(Behaviour(data="554 5.6.0 no data"), "5.6.0", id="O07-data-554"),
    pytest.param(Behaviour(eod="552 5.3.4 too big"), "5.3.4", id="O08-eod-552"),
    pytest.param(Behaviour(eod="554 5.7.1 content refused"), "5.7.1", id="O08-eod-554"),
])
def test_permanent_reply_bounces_without_retry(first, status, relay):
    srv, dest, ndr = relay(first)
    qid = submit(srv, SENDER, ["bob@remote.example"])
    wait_event(srv, "removed", id=qid)
    finals = [(f["result"], f["status"]) for f in events(srv, "recipient", id=qid)]
    assert finals == [("failed", status)], story(srv, qid)
    assert dest.connection_count == 1 and not dest.messages
    [report] = ndr.wait_messages(1, DEADLINE)
    [group] = parse_dsn(report.data).recipients
    assert group["Status"] == status and group["Diagnostic-Code"].startswith("smtp; 5"), group.items()
    wait_queue_empty(srv)


STARTTLS_EHLO = ("250-peer.test", "250-PIPELINING", "250-STARTTLS", "250 8BITMIME")


@pytest.mark.parametrize("after", ["close", "garbage"])
def test_o15_failed_tls_handshake_reconnects_in_plaintext(after, relay):
    """smtp_tls = may (default): a handshake that fails is retried once without TLS (Postfix `may`)."""
    tls = Behaviour(ehlo=STARTTLS_EHLO, starttls="220 2.0.0 Ready to start TLS", after_starttls=after)
    srv, dest, ndr = relay([tls, tls])
    qid = submit(srv, SENDER, ["bob@remote.example"])
    wait_event(srv, "removed", id=qid, timeout=15)
    assert [f["result"] for f in events(srv, "recipient", id=qid)][-1] == "delivered", story(srv, qid)
    [message] = dest.wait_messages(1, DEADLINE)
    sessions = dest.sessions
    assert sessions[0].ended == "tls-handshake-failed", dest.describe()
    assert not [c for c in sessions[-1].commands if c.upper() == "STARTTLS"], dest.describe()
    assert len(sessions) == 2, dest.describe()


def test_o16_starttls_454_continues_in_plaintext_on_the_same_connection(relay):
    srv, dest, ndr = relay(Behaviour(ehlo=STARTTLS_EHLO, starttls="454 4.7.0 TLS not available now"))
    qid = submit(srv, SENDER, ["bob@remote.example"])
    wait_event(srv, "removed", id=qid)
    [message] = dest.wait_messages(1, DEADLINE)
    assert dest.connection_count == 1, dest.describe()
    commands = [c.split(" ")[0].upper() for c in dest.sessions[0].commands]
    assert commands[:3] == ["EHLO", "STARTTLS", "MAIL"], commands
    assert [a["result"] for a in events(srv, "delivery", id=qid)] == ["sent"]


def test_o17_message_bigger_than_peer_size_bounces_5_3_4(relay):
    def mail(arg: str) -> str:
        size = [p for p in arg.upper().split() if p.startswith("SIZE=")]
        return "552 5.3.4 Message size exceeds fixed limit" if size and int(size[0][5:]) > 1000 else "250 2.1.0 Ok"
    srv, dest, ndr = relay(Behaviour(ehlo=("250-peer.test", "250-8BITMIME", "250 SIZE 1000"), mail=mail))
    qid = submit(srv, SENDER, ["bob@remote.example"], body=(b"x" * 70 + b"\r\n") * 40)
    wait_event(srv, "removed", id=qid)
    finals = [(f["result"], f["status"]) for f in events(srv, "recipient", id=qid)]
    assert finals == [("failed", "5.3.4")], story(srv, qid)
    mails = [c for s in dest.sessions for c in s.commands if c.upper().startswith("MAIL")]
    assert all("SIZE=" in m.upper() for m in mails), mails  # declared, so the peer could refuse before DATA
    assert not dest.messages and not [c for s in dest.sessions for c in s.commands if c.upper() == "DATA"]
    [report] = ndr.wait_messages(1, DEADLINE)
    assert [g["Status"] for g in parse_dsn(report.data).recipients] == ["5.3.4"]
    wait_queue_empty(srv)


@pytest.fixture
def dual_host(start_server, peers, lab_dns):  # noqa: F811
    """dual_host(v6_script, v4_script) -> (server, v6 peer, v4 peer): remote.example is routed to
    dual.example.test (AAAA ::1, A 127.0.0.1 in the lab DNS) at one port where both peers listen."""
    def _make(v6_script, v4_script=None):
        port = free_port()
        v6 = peers("::1", port, v6_script, name="v6")
        v4 = peers("127.0.0.1", port, v4_script, name="v4")
        srv = start_server(**outbound_settings(routes=f"remote.example=dual.example.test:{port}",
                                               dns_servers=lab_dns.server, allow_loopback_mx="yes"))
        return srv, v6, v4
    return _make


def test_4xx_at_rcpt_moves_on_to_the_next_address_in_the_same_run(dual_host):
    """RFC 5321 §5.1, RFC 3974 §3: a 4xx to RCPT is "this host": the next address is tried at once."""
    srv, v6, v4 = dual_host(Behaviour(rcpt="451 4.3.0 local problem"))
    qid = submit(srv, SENDER, ["bob@remote.example"])
    wait_event(srv, "removed", id=qid)
    attempts = [(a["family"], a["result"]) for a in events(srv, "delivery", id=qid)]
    assert attempts == [("ipv6", "deferred"), ("ipv4", "sent")], story(srv, qid)
    assert [f["result"] for f in events(srv, "recipient", id=qid)] == ["delivered"], story(srv, qid)
    assert not events(srv, "deferred", id=qid)
    assert len(v4.wait_messages(1, DEADLINE)) == 1 and not v6.messages


def test_5xx_at_rcpt_stops_no_other_address_is_tried(dual_host):
    """RFC 5321 §5.1, RFC 3974 §3: a 5xx to RCPT is about the recipient: bounce, try no other address or MX."""
    srv, v6, v4 = dual_host(Behaviour(rcpt="550 5.1.1 no such user"))
    qid = submit(srv, "owner@lab.example", ["bob@remote.example"])
    wait_event(srv, "removed", id=qid)
    attempts = [(a["family"], a["result"]) for a in events(srv, "delivery", id=qid)]
    assert attempts == [("ipv6", "rejected")], story(srv, qid)
    assert v4.connection_count == 0, v4.describe()
    assert len(events(srv, "bounce", id=qid)) == 1


def test_8bit_message_to_a_peer_without_8bitmime_bounces_5_6_3(relay):
    """RFC 6152 §3: BODY=8BITMIME content for a peer that does not announce 8BITMIME cannot be sent as is;
    this message is not MIME, so it cannot be converted to 7 bit either (test_dsn.py has the MIME downgrade): it
    bounces with 5.6.3, as our decision, and the data is never sent."""
    srv, dest, ndr = relay(Behaviour(ehlo=("250-peer.test", "250 PIPELINING")))
    qid = submit(srv, SENDER, ["bob@remote.example"], body="Grüße\r\n".encode(), mail_params=" BODY=8BITMIME")
    wait_event(srv, "removed", id=qid)
    finals = [(f["result"], f["status"]) for f in events(srv, "recipient", id=qid)]
    assert finals == [("failed", "5.6.3")], story(srv, qid)
    assert not dest.messages
    [report] = ndr.wait_messages(1, DEADLINE)
    [group] = parse_dsn(report.data).recipients
    assert group["Status"] == "5.6.3" and group["Diagnostic-Code"].startswith("x-dualmta; "), group.items()
    wait_queue_empty(srv)


def test_recipients_in_two_domains_go_to_their_own_next_hops(start_server, peers):
    """Grouping by destination: one transaction per next hop; a refused hop defers only its own recipient."""
    one = peers(name="one")
    ndr = peers(name="ndr")
    closed = free_port()  # nothing listens on [::1]:closed
    srv = start_server(**outbound_settings(routes=(f"one.example=[127.0.0.1]:{one.port}, "
                                                   f"two.example=[::1]:{closed}, src.example=[127.0.0.1]:{ndr.port}")))
    qid = submit(srv, SENDER, ["a@one.example", "b@two.example", "c@one.example"])
    finals = wait_event(srv, "recipient", id=qid, count=3)
    by = {f["rcpt"]: f["result"] for f in finals}
    assert by == {"<a@one.example>": "delivered", "<c@one.example>": "delivered", "<b@two.example>": "deferred"}, \
        story(srv, qid)
    [message] = one.wait_messages(1, DEADLINE)
    assert sorted(message.rcpts) == ["a@one.example", "c@one.example"]  # one transaction for one destination
    wait_event(srv, "deferred", id=qid)
    assert not events(srv, "bounce")


def test_delivery_concurrency_bounds_parallel_sessions(relay):
    """delivery_concurrency = 2 and a peer that takes 0.5 s per message: never more than 2 sessions at once, and
    all 6 messages are delivered (each new message wakes the runner; nothing waits for a poll interval)."""
    srv, dest, ndr = relay(Behaviour(eod_delay=0.5), delivery_concurrency="2")
    ids = [submit(srv, SENDER, [f"r{i}@remote.example"]) for i in range(6)]
    for qid in ids:
        wait_event(srv, "removed", id=qid, timeout=15)
    assert len(dest.wait_messages(6, DEADLINE)) == 6
    assert 1 <= dest.max_open <= 2, dest.describe()
    assert dest.max_open == 2, "the two workers never overlapped"
    wait_queue_empty(srv)


@pytest.mark.parametrize("script", [
    pytest.param(Behaviour(greeting="554 5.3.2 go away"), id="O02-554-greeting"),
    pytest.param(Behaviour(greeting="421 4.3.2 busy"), id="O02-421-greeting"),
    pytest.param(Behaviour(ehlo=("502 5.5.2 no EHLO",), helo="550 5.7.1 no HELO either"), id="O03-helo-5xx"),
    pytest.param(Behaviour(greeting=None), id="O11-no-greeting"),
])
def test_host_level_failure_on_the_only_address_defers_never_bounces(script, relay):
    """O01-O03, O11: "this host, not this message": with no other address left the recipient is deferred with a
    4.x.x status (a 5xx greeting says nothing about the recipient), no report is sent."""
    srv, dest, ndr = relay(script, smtp_reply_timeout="1s")
    qid = submit(srv, SENDER, ["bob@remote.example"])
    final = wait_event(srv, "recipient", id=qid)[0]
    assert final["result"] == "deferred" and final["status"].startswith("4."), final.line
    wait_event(srv, "deferred", id=qid)
    assert not events(srv, "bounce") and not dest.messages


def test_connection_refused_on_the_only_address_defers_4_4_1(start_server, peers):
    """O01."""
    closed = free_port()
    srv = start_server(**outbound_settings(routes=f"remote.example=[::1]:{closed}"))
    qid = submit(srv, SENDER, ["bob@remote.example"])
    final = wait_event(srv, "recipient", id=qid)[0]
    assert (final["result"], final["status"]) == ("deferred", "4.4.1"), final.line
    [attempt] = events(srv, "delivery", id=qid)
    assert (attempt["family"], attempt["result"]) == ("ipv6", "failed") and "refused" in attempt["reason"]
    assert not events(srv, "bounce")


@pytest.mark.parametrize("literal", ["[127.0.0.1]", "[IPv6:::1]"])
def test_route_agrees_with_delivery_for_a_literal_naming_this_host(literal, start_server):
    """`dualmta route` must print what the engine does (issue 3 item 7)."""
    srv = start_server(**outbound_settings(routes="nothing.invalid=[127.0.0.1]:9"))
    qid = submit(srv, SENDER, [f"bob@{literal}"])
    wait_event(srv, "removed", id=qid)
    assert maildir(srv.spool, "mx.lab.example", "bob"), story(srv, qid)  # the engine: local delivery
    run = srv.cli("route", f"bob@{literal}", "--json")
    assert run.returncode == 0, run.stderr
    plan = json.loads(run.stdout)
    assert "deliverLocally" in plan["verdict"] and plan["attempts"] == [], plan
