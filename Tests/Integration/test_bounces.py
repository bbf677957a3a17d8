"""Bounces end to end (issue 4; RFC 3464, RFC 5321 §4.5.5, the paper's Test 3; rows N01-N03): every failed or expired
message ends in exactly one report to its sender, or - when the sender is `<>` - exactly one double-bounce notice
to the local postmaster, and a notice that fails itself is logged and discarded. Each test checks the log story
(with both queue ids) and what arrived where, and ends with an empty queue."""

from __future__ import annotations

import json
import time

import pytest

from conftest import DEADLINE, free_port
from dnslab import lab_dns  # noqa: F401  (fixture)
from mtalog import (events, maildir, outbound_settings, parse_dsn, queue_empty, story, submit, wait_event,
                    wait_queue_empty)
from peers import Behaviour, peers  # noqa: F401  (fixture)

HOST = "mx.lab.example"
REJECT = Behaviour(rcpt="550 5.1.1 <nobody@dest.test>: Recipient address rejected")


def postmaster_box(srv) -> list:
    return maildir(srv.spool, HOST, "postmaster")


def assert_queue_list_empty(srv) -> None:
    run = srv.cli("queue", "list", "--json")
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout) == [], run.stdout


def line_index(srv, event) -> int:
    return srv.log_text().splitlines().index(event.line)


@pytest.mark.parametrize("relay_families", ["ipv4", "ipv4, ipv6"], ids=["T10.3-ipv4-only-relay", "T10.3.5-dual-stack"])
def test_paper_test3_bounce_that_cannot_go_home(relay_families, start_server, peers, lab_dns):  # noqa: F811
    """alice@v6only.test (MX with AAAA ::1 only) sends via relay R to nobody@dest.test (MX A 127.0.0.1), which
    answers 550. IPv4-only R: the NDR to alice has no usable address (5.4.4, family mismatch) -> one double-bounce
    notice in R's postmaster Maildir, no NDR of the NDR, nothing ever sent over IPv6. Dual-stack R: the NDR reaches
    mx.v6only.test over ::1 and there is no double bounce."""
    port = free_port()
    dest = peers("127.0.0.1", port, REJECT, name="mx.dest.test")
    v6 = peers("::1", port, name="mx.v6only.test")
    srv = start_server(**outbound_settings(inet_protocols=relay_families, dns_servers=lab_dns.server,
                                           mx_port=str(port), allow_loopback_mx="yes"))
    orig = submit(srv, "alice@v6only.test", ["nobody@dest.test"], subject="test3-original")

    failed = wait_event(srv, "recipient", id=orig, rcpt="<nobody@dest.test>", result="failed")[0]
    assert failed["status"] == "5.1.1", failed.line
    bounce = wait_event(srv, "bounce", id=orig)[0]
    assert bounce["rcpt"] == "<alice@v6only.test>", bounce.line
    ndr = bounce["ndr"]
    wait_event(srv, "removed", id=orig)
    wait_event(srv, "removed", id=ndr)

    if relay_families == "ipv4":
        ndr_final = wait_event(srv, "recipient", id=ndr, rcpt="<alice@v6only.test>")[0]
        assert (ndr_final["result"], ndr_final["status"]) == ("failed", "5.4.4"), story(srv, orig, ndr)
        assert "ipv4" in ndr_final["reason"].lower() or "family" in ndr_final["reason"].lower(), ndr_final.line
        double = wait_event(srv, "double-bounce", id=ndr)[0]
        assert double["original"] == orig, double.line
        notice = double["notice"]
        delivered = wait_event(srv, "recipient", id=notice)[0]
        assert delivered["result"] == "delivered" and delivered["rcpt"] == f"<postmaster@{HOST}>", delivered.line
        wait_event(srv, "removed", id=notice)
        # The story, in order: original bounced, NDR undeliverable (double bounce), notice delivered.
        assert line_index(srv, bounce) < line_index(srv, ndr_final) < line_index(srv, double) \
            < line_index(srv, delivered), story(srv, orig, ndr, notice)
        box = postmaster_box(srv)
        assert len(box) == 1, box
        notice_dsn = parse_dsn(box[0].read_bytes())
        [group] = notice_dsn.recipients
        assert group["Final-Recipient"].lower() == "rfc822; alice@v6only.test" and group["Status"] == "5.4.4", \
            group.items()
        assert notice_dsn.third is not None, "the undeliverable NDR is not attached to the notice"
        attached = notice_dsn.third.as_string()
        assert "To: <alice@v6only.test>" in attached and "multipart/report" in attached, attached
        assert notice_dsn.message["Auto-Submitted"], notice_dsn.message.items()
        assert ndr in notice_dsn.human and orig in notice_dsn.human, notice_dsn.human
        assert len(events(srv, "bounce")) == 1, story(srv, orig, ndr, notice)  # no second-generation NDR
        assert len(events(srv, "double-bounce")) == 1
        assert not [e for e in events(srv, "delivery") if e.get("family") == "ipv6"], srv.log_text()
        assert v6.connection_count == 0, v6.describe()
    else:
        [report] = v6.wait_messages(1, DEADLINE)
        assert report.mail_from == "" and report.rcpts == ["alice@v6only.test"]
        [group] = parse_dsn(report.data).recipients
        assert group["Status"] == "5.1.1" and group["Final-Recipient"].lower() == "rfc822; nobody@dest.test"
        sent = events(srv, "delivery", id=ndr)
        assert [(e["family"], e["addr"], e["result"]) for e in sent] == [("ipv6", "[::1]", "sent")], story(srv, ndr)
        assert not events(srv, "double-bounce") and not postmaster_box(srv)
    assert dest.connection_count == 1 and not dest.messages, dest.describe()
    wait_queue_empty(srv)
    assert_queue_list_empty(srv)


def test_n01_null_sender_failure_gives_a_double_bounce_notice_not_an_ndr(start_server, peers):
    dest = peers(script=REJECT, name="dest")
    srv = start_server(**outbound_settings(routes=f"dest.test=[127.0.0.1]:{dest.port}"))
    orig = submit(srv, "", ["nobody@dest.test"], subject="null-sender")
    double = wait_event(srv, "double-bounce", id=orig)[0]
    notice = double["notice"]
    wait_event(srv, "recipient", id=notice, result="delivered")
    wait_event(srv, "removed", id=notice)
    wait_event(srv, "removed", id=orig)
    assert not events(srv, "bounce"), story(srv, orig)
    box = postmaster_box(srv)
    assert len(box) == 1, box
    notice_dsn = parse_dsn(box[0].read_bytes())
    [group] = notice_dsn.recipients
    assert group["Final-Recipient"].lower() == "rfc822; nobody@dest.test" and group["Status"] == "5.1.1", \
        group.items()
    assert group["Diagnostic-Code"].startswith("smtp; 550 5.1.1"), group.items()
    assert notice_dsn.third is not None and "Subject: null-sender" in notice_dsn.third.as_string()
    # From the internal sender, whose own failure ends the chain (RFC 5321 §4.5.5).
    assert notice_dsn.message["Return-Path"] == f"<double-bounce@{HOST}>", notice_dsn.message["Return-Path"]
    wait_queue_empty(srv)
    assert_queue_list_empty(srv)


def test_n02_failing_double_bounce_notice_is_logged_and_discarded(start_server, peers):
    dest = peers(script=REJECT, name="dest")
    srv = start_server(**outbound_settings(routes=f"dest.test=[127.0.0.1]:{dest.port}",
                                           double_bounce_recipient="postmaster@dest.test"))
    orig = submit(srv, "", ["nobody@dest.test"])
    notice = wait_event(srv, "double-bounce", id=orig)[0]["notice"]
    discarded = wait_event(srv, "discarded", id=notice)[0]
    assert discarded.line  # the triple bounce ends here
    wait_event(srv, "removed", id=notice)
    wait_event(srv, "removed", id=orig)
    assert not events(srv, "bounce") and len(events(srv, "double-bounce")) == 1, srv.log_text()
    assert dest.connection_count == 2 and not dest.messages, dest.describe()
    assert not postmaster_box(srv)
    wait_queue_empty(srv)


def test_n03_non_null_mailer_daemon_sender_gets_an_ndr_with_auto_submitted(start_server, peers):
    dest = peers(script=REJECT, name="dest")
    sink = peers(name="src-sink")
    srv = start_server(**outbound_settings(
        routes=f"dest.test=[127.0.0.1]:{dest.port}, src.test=[127.0.0.1]:{sink.port}"))
    orig = submit(srv, "MAILER-DAEMON@src.test", ["nobody@dest.test"])
    bounce = wait_event(srv, "bounce", id=orig)[0]
    assert bounce["rcpt"] == "<MAILER-DAEMON@src.test>"
    [report] = sink.wait_messages(1, DEADLINE)
    assert report.mail_from == "" and report.rcpts == ["MAILER-DAEMON@src.test"]
    dsn = parse_dsn(report.data)
    assert (dsn.message["Auto-Submitted"] or "").startswith("auto-replied"), dsn.message.items()
    assert [g["Status"] for g in dsn.recipients] == ["5.1.1"]
    assert not events(srv, "double-bounce")
    wait_event(srv, "removed", id=bounce["ndr"])
    wait_queue_empty(srv)


def test_delay_notice_once_then_expiry_report(start_server, peers):
    """delay_warning_after = 2s, max_queue_lifetime = 5s, destination refuses every connection: exactly one delay
    notice (Action: delayed, Will-Retry-Until), then one failure report (Action: failed, Status 4.4.1 or 4.4.7),
    and the queue ends empty."""
    sink = peers(name="src-sink")
    closed = free_port()
    srv = start_server(**outbound_settings(
        routes=f"dest.test=[127.0.0.1]:{closed}, src.test=[127.0.0.1]:{sink.port}",
        delay_warning_after="2s", max_queue_lifetime="5s"))
    started = time.monotonic()
    orig = submit(srv, "alice@src.test", ["bob@dest.test"], subject="slow-one")
    notice = wait_event(srv, "delay-notice", id=orig)[0]
    # Envelope times are whole seconds: the notice may come up to 1 s before delay_warning_after has passed.
    assert time.monotonic() - started >= 0.9, notice.line
    expired = wait_event(srv, "expired", id=orig, timeout=15)[0]
    assert expired["rcpt"] == "<bob@dest.test>" and expired["status"] in ("4.4.1", "4.4.7"), expired.line
    assert time.monotonic() - started >= 3.9, expired.line
    bounce = wait_event(srv, "bounce", id=orig)[0]
    wait_event(srv, "removed", id=orig)
    wait_event(srv, "removed", id=bounce["ndr"])
    wait_event(srv, "removed", id=notice["ndr"])
    assert len(events(srv, "delay-notice")) == 1 and len(events(srv, "bounce")) == 1, story(srv, orig)
    assert len(events(srv, "deferred", id=orig)) >= 2, story(srv, orig)  # it really kept retrying meanwhile

    reports = sink.wait_messages(2, DEADLINE)
    assert len(reports) == 2 and all(r.mail_from == "" and r.rcpts == ["alice@src.test"] for r in reports)
    delayed, failed = (parse_dsn(r.data) for r in reports)
    [d] = delayed.recipients
    assert d["Action"] == "delayed" and d["Status"].startswith("4."), d.items()
    assert d["Will-Retry-Until"], d.items()
    [f] = failed.recipients
    assert f["Action"] == "failed" and f["Status"] in ("4.4.1", "4.4.7"), f.items()
    assert f["Final-Recipient"].lower() == "rfc822; bob@dest.test"
    wait_queue_empty(srv)
    assert_queue_list_empty(srv)


def test_null_sender_gets_no_delay_notice_and_a_double_bounce_at_expiry(start_server, peers):
    """RFC 3461 §6.2: never a delay notice for `<>`; at expiry the failure goes to postmaster (no NDR)."""
    closed = free_port()
    srv = start_server(**outbound_settings(routes=f"dest.test=[127.0.0.1]:{closed}", delay_warning_after="1s",
                                           max_queue_lifetime="3s", bounce_queue_lifetime="3s"))
    orig = submit(srv, "", ["bob@dest.test"])
    expired = wait_event(srv, "expired", id=orig, timeout=15)[0]
    assert expired["status"] in ("4.4.1", "4.4.7"), expired.line
    notice = wait_event(srv, "double-bounce", id=orig)[0]["notice"]
    wait_event(srv, "removed", id=notice)
    wait_event(srv, "removed", id=orig)
    assert len(events(srv, "deferred", id=orig)) >= 2, story(srv, orig)  # it was past delay_warning_after
    assert not events(srv, "delay-notice") and not events(srv, "bounce"), srv.log_text()
    assert len(postmaster_box(srv)) == 1
    wait_queue_empty(srv)


def test_paper_test3_with_family_mismatch_defer_fails_at_expiry(start_server, peers, lab_dns):  # noqa: F811
    """family_mismatch = defer: the NDR to the IPv6-only sender domain is kept and retried instead of failing at
    once; at max_queue_lifetime it fails, and that failure becomes the one double-bounce notice."""
    port = free_port()
    peers("127.0.0.1", port, REJECT, name="mx.dest.test")
    v6 = peers("::1", port, name="mx.v6only.test")
    srv = start_server(**outbound_settings(inet_protocols="ipv4", dns_servers=lab_dns.server, mx_port=str(port),
                                           allow_loopback_mx="yes", family_mismatch="defer",
                                           max_queue_lifetime="3s", bounce_queue_lifetime="3s"))
    orig = submit(srv, "alice@v6only.test", ["nobody@dest.test"])
    ndr = wait_event(srv, "bounce", id=orig)[0]["ndr"]
    first = wait_event(srv, "recipient", id=ndr)[0]
    assert first["result"] == "deferred" and first["status"].startswith("4."), first.line
    expired = wait_event(srv, "expired", id=ndr, timeout=15)[0]
    assert expired["status"].startswith("4."), expired.line
    double = wait_event(srv, "double-bounce", id=ndr)[0]
    assert double["original"] == orig
    wait_event(srv, "removed", id=double["notice"])
    wait_event(srv, "removed", id=ndr)
    assert len(events(srv, "bounce")) == 1 and len(events(srv, "double-bounce")) == 1, srv.log_text()
    assert len(postmaster_box(srv)) == 1 and v6.connection_count == 0
    wait_queue_empty(srv)


@pytest.mark.parametrize("mode", ["reject", "warn", "off"])
def test_sender_return_check_prevents_test3_at_the_door(mode, start_server, lab_dns):  # noqa: F811
    """The paper's Test 3 prevented: an IPv4-only relay with `sender_return_check` asks the planner at MAIL FROM
    whether a bounce could reach alice@v6only.test (MX with AAAA only). reject: 550 5.1.8, nothing queued, so no
    bounce can ever be owed; warn: accepted with an X-Dualmta-Return-Path-Warning header; off: accepted as before. A
    sender whose domain is reachable is accepted in every mode."""
    srv = start_server(**outbound_settings(inet_protocols="ipv4", dns_servers=lab_dns.server, allow_loopback_mx="yes",
                                           sender_return_check=mode, local_domains="lab.example"))
    with srv.session() as c:
        reply = c.cmd(b"MAIL FROM:<alice@v6only.test>")
        if mode == "reject":
            reply.expect(550, "5.1.8")
            assert "v6only.test" in reply.text, reply.text
            c.cmd(b"RCPT TO:<bob@lab.example>").expect(503, "5.5.1")
            c.cmd(b"RSET").expect(250)
            # A sender whose domain has an IPv4 MX is fine.
            c.cmd(b"MAIL FROM:<carol@dest.test>").expect(250)
            c.cmd(b"QUIT")
            events_seen = wait_event(srv, "sender-return-check")
            assert events_seen[0]["mode"] == "reject", events_seen[0].line
            assert queue_empty(srv.spool)
            return
        reply.expect(250)
        c.cmd(b"RSET").expect(250)
        c.cmd(b"QUIT")
    qid = submit(srv, "alice@v6only.test", ["bob@lab.example"], subject=f"src-{mode}")
    wait_event(srv, "removed", id=qid)
    [copy] = maildir(srv.spool, "lab.example", "bob")
    has_warning = b"X-Dualmta-Return-Path-Warning:" in copy.read_bytes()
    assert has_warning == (mode == "warn"), copy.read_bytes()[:800]
