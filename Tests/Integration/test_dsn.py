"""RFC 3461 DSN end to end: the parameters on the wire (real clients: smtplib with mail_options/rcpt_options,
swaks, `dualmta send -N/-R/-V`), what NOTIFY does to reports, RET/ENVID/ORCPT in the reports (parsed with Python's
`email` package), passing the request on to a next hop that offers DSN (smtp-sink, a second dualmta) and the
`relayed` notice for one that does not (smtp-sink -N), and `bounce_queue_lifetime` for reports nobody takes."""

from __future__ import annotations

import email
import email.policy
import json
import re
import smtplib
import subprocess
import time

import pytest

from conftest import DEADLINE, server_binary, simple_message, unique_tag
from mtalog import events, maildir, outbound_settings, parse_dsn, story, wait_event, wait_queue_empty
from peers import Behaviour, peers  # noqa: F401  (fixture)
from test_outbound import SmtpSink

HOST = "mx.lab.example"
SENDER = "alice@lab.example"  # local: the reports land in the spool's Maildir
REJECT = Behaviour(rcpt="550 5.1.1 <nobody@dest.test>: Recipient address rejected")


def box(srv, user: str) -> list:
    return maildir(srv.spool, "lab.example", user)


def wait_box(srv, user: str, count: int = 1) -> list:
    end = time.monotonic() + DEADLINE
    while len(found := box(srv, user)) < count:
        if time.monotonic() >= end:
            pytest.fail(f"{user}: {len(found)} of {count} messages\n{srv.log_text()}")
        time.sleep(0.02)  # between polls only
    return found


def smtp_send(srv, rcpts: list[str], mail_options=(), rcpt_options=(), sender: str = SENDER,
              subject: str | None = None) -> str:
    """One transaction with smtplib; returns the queue id from the final reply."""
    with smtplib.SMTP("127.0.0.1", srv.port, timeout=DEADLINE) as client:
        client.ehlo("client.example")
        assert client.has_extn("dsn"), client.esmtp_features
        client.mail(sender, list(mail_options))
        for rcpt in rcpts:
            code, text = client.rcpt(rcpt, list(rcpt_options))
            assert code == 250, (code, text)
        code, text = client.data(simple_message(subject or unique_tag("dsn")))
        assert code == 250, (code, text)
    return re.search(rb"queued as (\S+)", text).group(1).decode()


@pytest.mark.parametrize("command, reply", [
    ("MAIL FROM:<a@r.example> RET=BODY", "501 5.5.4"),
    ("MAIL FROM:<a@r.example> RET=FULL RET=HDRS", "501 5.5.4"),
    ("MAIL FROM:<a@r.example> ENVID=a+2", "501 5.5.4"),
    ("MAIL FROM:<a@r.example> ENVID=" + "x" * 101, "501 5.5.4"),
    ("MAIL FROM:<a@r.example> XDSN=1", "555 5.5.4"),
    ("RCPT TO:<u@lab.example> NOTIFY=NEVER,DELAY", "501 5.5.4"),
    ("RCPT TO:<u@lab.example> NOTIFY=DELAY NOTIFY=DELAY", "501 5.5.4"),
    ("RCPT TO:<u@lab.example> ORCPT=u@lab.example", "501 5.5.4"),
    ("RCPT TO:<u@lab.example> ORCPT=rfc822;u+0D+0A@lab.example", "501 5.5.4"),
    ("RCPT TO:<u@lab.example> XNOTIFY=NEVER", "555 5.5.4"),
    ("RCPT TO:<u@lab.example> NOTIFY=success,delay ORCPT=rfc822;u+2Bx@lab.example", "250 2.1.5"),
])
def test_dsn_parameter_syntax(mta, command, reply):
    with mta.session() as c:
        if command.startswith("RCPT"):
            c.cmd(b"MAIL FROM:<a@r.example>").expect(250)
        got = c.cmd(command.encode())
        assert f"{got.code} {got.enh}" == reply, got.text
        c.cmd(b"QUIT")
    mta.assert_alive()


def test_notify_never_gives_no_report_only_a_log_line(start_server, peers):  # noqa: F811
    dest = peers(script=REJECT, name="dest")
    srv = start_server(**outbound_settings(routes=f"dest.test=[127.0.0.1]:{dest.port}"))
    qid = smtp_send(srv, ["nobody@dest.test"], rcpt_options=["NOTIFY=NEVER"])
    wait_event(srv, "recipient", id=qid, result="failed")
    no_report = wait_event(srv, "no-report", id=qid)[0]
    assert no_report["rcpt"] == "<nobody@dest.test>" and no_report["reason"] == "NOTIFY=NEVER", no_report.line
    wait_event(srv, "removed", id=qid)
    assert not events(srv, "bounce") and not events(srv, "double-bounce"), story(srv, qid)
    wait_queue_empty(srv)
    assert not box(srv, "alice")


def test_failure_report_carries_envid_orcpt_and_headers_only(start_server, peers):  # noqa: F811
    dest = peers(script=REJECT, name="dest")
    srv = start_server(**outbound_settings(routes=f"dest.test=[127.0.0.1]:{dest.port}"))
    qid = smtp_send(srv, ["nobody@dest.test"], mail_options=["RET=HDRS", "ENVID=abc+2Bd"],
                    rcpt_options=["NOTIFY=FAILURE", "ORCPT=rfc822;Nobody+2Bx@dest.test"], subject="ret-hdrs")
    bounce = wait_event(srv, "bounce", id=qid)[0]
    [raw] = wait_box(srv, "alice")
    report = parse_dsn(raw.read_bytes())
    assert report.per_message["Original-Envelope-Id"] == "abc+d", report.per_message.items()
    assert report.per_message["Reporting-MTA"] == f"dns; {HOST}"
    [group] = report.recipients
    assert group["Original-Recipient"] == "rfc822; Nobody+x@dest.test", group.items()
    assert group["Final-Recipient"] == "rfc822; nobody@dest.test"
    assert (group["Action"], group["Status"]) == ("failed", "5.1.1"), group.items()
    assert group["Diagnostic-Code"].startswith("smtp; 550 5.1.1"), group.items()
    assert group["Remote-MTA"] == "dns; [127.0.0.1]", group.items()
    assert report.third is not None and report.third.get_content_type() == "text/rfc822-headers"
    assert "Subject: ret-hdrs" in report.third.get_payload() and "hello" not in report.third.get_payload()
    assert report.message["Message-ID"] and bounce["ndr"]
    wait_queue_empty(srv)


def test_notify_success_with_local_delivery_gives_a_delivered_notice(mta):
    qid = smtp_send(mta, ["bob@lab.example"], mail_options=["RET=FULL", "ENVID=local-1"],
                    rcpt_options=["NOTIFY=SUCCESS,DELAY"], subject="success-local")
    notice = wait_event(mta, "success-notice", id=qid)[0]
    assert notice["rcpt"] == f"<{SENDER}>", notice.line
    wait_box(mta, "bob")
    [raw] = wait_box(mta, "alice")
    report = parse_dsn(raw.read_bytes())
    assert report.message["Subject"] == "Successful Mail Delivery Report"
    assert report.per_message["Original-Envelope-Id"] == "local-1"
    [group] = report.recipients
    assert (group["Action"], group["Status"]) == ("delivered", "2.0.0"), group.items()
    assert group["Final-Recipient"] == "rfc822; bob@lab.example"
    assert group["Remote-MTA"] is None, group.items()
    # Notices that report no failure return the header section only (RFC 3461 §6.2), even with RET=FULL.
    assert report.third is not None and report.third.get_content_type() == "text/rfc822-headers"
    wait_queue_empty(mta)


@pytest.mark.parametrize("sink_dsn", [True, False], ids=["next-hop-with-dsn", "next-hop-without-dsn"])
def test_success_is_passed_on_or_reported_as_relayed(start_server, tmp_path, sink_dsn):
    sink = SmtpSink(tmp_path, extra_args=[] if sink_dsn else ["-N"])
    try:
        srv = start_server(**outbound_settings(routes=f"remote.example=[127.0.0.1]:{sink.port}"))
        qid = smtp_send(srv, ["bob@remote.example"], mail_options=["RET=HDRS", "ENVID=id+20one"],
                        rcpt_options=["NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;Bob+2Bx@remote.example"])
        wait_event(srv, "recipient", id=qid, result="delivered")
        wait_event(srv, "removed", id=qid)
        [dump] = sink.files()
        text = dump.read_text(errors="replace")
        if sink_dsn:
            assert f"X-Mail-Args: <{SENDER}> RET=HDRS ENVID=id+20one" in text, text
            assert "X-Rcpt-Args: <bob@remote.example> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;Bob+2Bx@remote.example" \
                in text, text
            assert not events(srv, "success-notice"), story(srv, qid)
            wait_queue_empty(srv)
            assert not box(srv, "alice")
        else:
            assert "RET=" not in text and "NOTIFY=" not in text, text
            wait_event(srv, "success-notice", id=qid)
            [raw] = wait_box(srv, "alice")
            report = parse_dsn(raw.read_bytes())
            assert report.per_message["Original-Envelope-Id"] == "id one"
            [group] = report.recipients
            assert (group["Action"], group["Status"]) == ("relayed", "2.0.0"), group.items()
            assert group["Original-Recipient"] == "rfc822; Bob+x@remote.example"
            assert group["Remote-MTA"] == "dns; [127.0.0.1]", group.items()
            wait_queue_empty(srv)
    finally:
        sink.stop()


def test_second_dualmta_takes_over_the_dsn_request(start_server, tmp_path):
    """A relays to B (which offers DSN): A passes NOTIFY/ORCPT/RET/ENVID on and sends nothing; B delivers to its
    Maildir and sends the `delivered` notice, with the ENVID and ORCPT the client gave to A."""
    b = start_server(spool=tmp_path / "spool-b", local_domains="lab.example, dest.test")
    a = start_server(spool=tmp_path / "spool-a", **outbound_settings(routes=f"dest.test=[127.0.0.1]:{b.port}"))
    qid = smtp_send(a, ["carol@dest.test"], mail_options=["ENVID=chain-7"],
                    rcpt_options=["NOTIFY=SUCCESS", "ORCPT=rfc822;Carol@dest.test"])
    wait_event(a, "removed", id=qid)
    assert not events(a, "success-notice"), story(a, qid)
    relayed = wait_event(b, "accepted")[0]["id"]
    notice = wait_event(b, "success-notice", id=relayed)[0]
    assert notice["rcpt"] == f"<{SENDER}>"
    [raw] = wait_box(b, "alice")
    report = parse_dsn(raw.read_bytes())
    assert report.per_message["Original-Envelope-Id"] == "chain-7"
    [group] = report.recipients
    assert group["Action"] == "delivered" and group["Original-Recipient"] == "rfc822; Carol@dest.test", group.items()
    wait_queue_empty(a)
    wait_queue_empty(b)
    assert not box(a, "alice")


@pytest.mark.parametrize("rcpt_options, notices", [([], 1), (["NOTIFY=FAILURE"], 0), (["NOTIFY=DELAY"], 1)],
                         ids=["absent", "failure-only", "delay"])
def test_delay_notice_follows_notify(start_server, peers, rcpt_options, notices):  # noqa: F811
    dest = peers(script=Behaviour(rcpt="450 4.2.1 try later"), name="dest")
    srv = start_server(**outbound_settings(routes=f"dest.test=[127.0.0.1]:{dest.port}", delay_warning_after="1s",
                                           retry_schedule="1s"))
    qid = smtp_send(srv, ["later@dest.test"], rcpt_options=rcpt_options)
    # Two deferred runs, the second after the warning time: the notice (if any) is decided by then.
    wait_event(srv, "deferred", id=qid, count=2)
    if notices:
        wait_event(srv, "delay-notice", id=qid)
        [raw] = wait_box(srv, "alice")
        [group] = parse_dsn(raw.read_bytes()).recipients
        assert group["Action"] == "delayed" and group["Will-Retry-Until"], group.items()
    else:
        assert not events(srv, "delay-notice"), story(srv, qid)
    deferred = events(srv, "deferred", id=qid)[0]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", deferred["next_attempt"]), deferred.line
    srv.cli("queue", "delete", qid)


def test_send_n_r_v_reach_the_envelope_and_the_notice(mta):
    run = subprocess.run([str(server_binary()), "send", "-c", str(mta.conf), "-f", SENDER, "-N",
                          "success", "-R", "hdrs", "-V", "sent-by-cli", "bob@lab.example"],
                         input=b"Subject: cli\r\n\r\nhi\r\n", capture_output=True, timeout=30)
    assert run.returncode == 0, run.stderr
    wait_box(mta, "bob")
    [raw] = wait_box(mta, "alice")
    report = parse_dsn(raw.read_bytes())
    assert report.per_message["Original-Envelope-Id"] == "sent-by-cli"
    assert report.recipients[0]["Action"] == "delivered"
    bad = subprocess.run([str(server_binary()), "send", "-c", str(mta.conf), "-N", "sometimes",
                          "bob@lab.example"], input=b"x\r\n", capture_output=True, timeout=30)
    assert bad.returncode == 64, bad.stderr
    wait_queue_empty(mta)


def test_reports_expire_after_bounce_queue_lifetime(start_server, peers):  # noqa: F811
    """The original is refused (550); its report goes to a host that always says 451; after
    bounce_queue_lifetime (2 s, not max_queue_lifetime = 1 h) the report fails and becomes a double bounce.
    `queue list --json` shows both give-up times while they are queued."""
    dest = peers(script=REJECT, name="dest")
    home = peers(script=Behaviour(rcpt="451 4.3.0 not now"), name="home")
    srv = start_server(**outbound_settings(
        routes=f"dest.test=[127.0.0.1]:{dest.port}, home.test=[127.0.0.1]:{home.port}",
        bounce_queue_lifetime="2s"))
    qid = smtp_send(srv, ["nobody@dest.test"], sender="bob@home.test")
    ndr = wait_event(srv, "bounce", id=qid)[0]["ndr"]
    wait_event(srv, "deferred", id=ndr)
    listed = {m["id"]: m for m in json.loads(srv.cli("queue", "list", "--json").stdout)}
    assert ndr in listed, listed
    report = listed[ndr]
    assert time.mktime(time.strptime(report["expires"], "%Y-%m-%dT%H:%M:%SZ")) \
        - time.mktime(time.strptime(report["arrival"], "%Y-%m-%dT%H:%M:%SZ")) == 2, report
    shown = srv.cli("queue", "show", ndr).stdout.decode()
    assert re.search(r"^expires: +\d{4}-\d\d-\d\dT", shown, re.M), shown
    expired = wait_event(srv, "expired", id=ndr, timeout=DEADLINE + 5)[0]
    assert expired["status"] == "4.3.0", expired.line
    double = wait_event(srv, "double-bounce", id=ndr)[0]
    assert double["original"] == qid
    wait_queue_empty(srv)


def parse_global_report(raw: bytes):
    """An RFC 6533 report: (message, human text, per-message fields, recipient groups, third part), parsed with
    the `email` package (the global-delivery-status body is header-syntax groups, read with the same parser)."""
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert msg.get_content_type() == "multipart/report", msg.get_content_type()
    assert msg.get_param("report-type") == "delivery-status"
    parts = list(msg.iter_parts())
    assert [p.get_content_type() for p in parts[:2]] == ["text/plain", "message/global-delivery-status"], \
        [p.get_content_type() for p in parts]
    # The email package reads a message/* part as one message: the per-message group is its header, the
    # recipient groups (header-syntax blocks separated by blank lines) its body.
    [inner] = parts[1].get_payload()
    rest = inner.get_payload().replace("\r\n", "\n").strip("\n")
    groups = [inner] + [email.message_from_string(block + "\n", policy=email.policy.compat32)
                        for block in rest.split("\n\n") if block.strip()]
    human = parts[0].get_content()
    return msg, human, groups[0], groups[1:], parts[2] if len(parts) > 2 else None


UTF8_MESSAGE = ("From: <alice@lab.example>\r\nTo: <nobody@dest.test>\r\nSubject: Grüße aus Köln\r\n"
                "Message-ID: <utf8-1@client.example>\r\n\r\nHallo\r\n").encode()


def send_utf8(srv, rcpt: str) -> str:
    with smtplib.SMTP("127.0.0.1", srv.port, timeout=DEADLINE) as client:
        client.ehlo("client.example")
        client.mail(SENDER, ["SMTPUTF8", "BODY=8BITMIME"])
        assert client.rcpt(rcpt)[0] == 250
        code, text = client.data(UTF8_MESSAGE)
        assert code == 250, text
    return re.search(rb"queued as (\S+)", text).group(1).decode()


def test_a_local_decision_is_reported_as_ours_in_an_rfc6533_report(start_server, peers):  # noqa: F811
    """The next hop lacks SMTPUTF8, so we refuse before MAIL: the report says this server decided, has an
    x-dualmta diagnostic and no Remote-MTA, and, the message being SMTPUTF8, uses the RFC 6533 types."""
    dest = peers(name="dest")  # EHLO without SMTPUTF8
    srv = start_server(**outbound_settings(routes=f"dest.test=[127.0.0.1]:{dest.port}"))
    qid = send_utf8(srv, "nobody@dest.test")
    failed = wait_event(srv, "recipient", id=qid, result="failed")[0]
    assert failed["status"] == "5.6.7", failed.line
    attempt = wait_event(srv, "delivery", id=qid)[0]
    assert attempt["result"] == "refused", attempt.line
    [raw] = wait_box(srv, "alice")
    msg, human, per_message, [group], third = parse_global_report(raw.read_bytes())
    assert group["Status"] == "5.6.7" and group["Action"] == "failed", group.items()
    assert group["Remote-MTA"] is None, group.items()
    assert group["Diagnostic-Code"].lower().startswith("x-dualmta; refused before sending to [127.0.0.1]"), \
        group.items()
    assert "This server decided" in human and "remote server said" not in human, human
    assert third is not None and third.get_content_type() == "message/global"
    [attached] = third.get_payload()
    assert str(attached["Subject"]) == "Grüße aus Köln", attached.items()
    assert not [c for s in dest.sessions for c in s.commands if c.upper().startswith("MAIL")], dest.describe()
    wait_queue_empty(srv)


def test_a_peer_refusal_of_an_smtputf8_message_is_quoted_as_the_peers(start_server, peers):  # noqa: F811
    ehlo = ("250-peer.test", "250-PIPELINING", "250-8BITMIME", "250-SMTPUTF8", "250 ENHANCEDSTATUSCODES")
    dest = peers(script=Behaviour(ehlo=ehlo, rcpt=REJECT.rcpt), name="dest")
    srv = start_server(**outbound_settings(routes=f"dest.test=[127.0.0.1]:{dest.port}"))
    qid = send_utf8(srv, "nobody@dest.test")
    wait_event(srv, "bounce", id=qid)
    [raw] = wait_box(srv, "alice")
    msg, human, per_message, [group], third = parse_global_report(raw.read_bytes())
    assert group["Diagnostic-Code"].startswith("smtp; 550 5.1.1"), group.items()
    assert group["Remote-MTA"] == "dns; [127.0.0.1]", group.items()
    assert "The remote server said" in human, human
    assert third.get_content_type() == "message/global"
    wait_queue_empty(srv)


MIME_8BIT = ("From: <alice@lab.example>\r\nTo: <bob@remote.example>\r\nSubject: downgrade\r\nMIME-Version: 1.0\r\n"
             "Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\n"
             "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
             "Grüße aus Köln = 1\r\n--b1\r\nContent-Type: application/octet-stream\r\n"
             "Content-Transfer-Encoding: 8bit\r\n\r\n\u00ff\u00fe binary-ish\r\n--b1--\r\n").encode()


def send_8bit(srv, rcpt: str, message: bytes) -> str:
    with smtplib.SMTP("127.0.0.1", srv.port, timeout=DEADLINE) as client:
        client.ehlo("client.example")
        client.mail(SENDER, ["BODY=8BITMIME"])
        assert client.rcpt(rcpt)[0] == 250
        code, text = client.data(message)
        assert code == 250, text
    return re.search(rb"queued as (\S+)", text).group(1).decode()


def test_8bit_mime_is_downgraded_for_a_next_hop_without_8bitmime(start_server, tmp_path):
    sink = SmtpSink(tmp_path, extra_args=["-8"])  # smtp-sink without 8BITMIME
    try:
        srv = start_server(**outbound_settings(routes=f"remote.example=[127.0.0.1]:{sink.port}"))
        qid = send_8bit(srv, "bob@remote.example", MIME_8BIT)
        wait_event(srv, "recipient", id=qid, result="delivered")
        [dump] = sink.files()
        raw = dump.read_bytes()
        assert all(byte < 0x80 for byte in raw), "8-bit bytes reached a peer without 8BITMIME"
        assert b"BODY=" not in raw.split(b"\n\n", 1)[0], raw[:400]
        received = email.message_from_bytes(raw.split(b"X-Rcpt-Args", 1)[1].split(b"\n", 1)[1],
                                            policy=email.policy.default)
        original = email.message_from_bytes(MIME_8BIT, policy=email.policy.default)
        got = [p.get_payload(decode=True) for p in received.iter_parts()]
        want = [p.get_payload(decode=True) for p in original.iter_parts()]
        assert got == want, (got, want)
        assert [p["Content-Transfer-Encoding"] for p in received.iter_parts()] == ["quoted-printable", "base64"]
        assert received["Subject"] == "downgrade"
        wait_queue_empty(srv)
    finally:
        sink.stop()


def test_8bit_without_mime_fails_as_our_decision(start_server, tmp_path):
    sink = SmtpSink(tmp_path, extra_args=["-8"])
    try:
        srv = start_server(**outbound_settings(routes=f"remote.example=[127.0.0.1]:{sink.port}"))
        qid = send_8bit(srv, "bob@remote.example", "Subject: no mime\r\n\r\nGrüße\r\n".encode())
        failed = wait_event(srv, "recipient", id=qid, result="failed")[0]
        assert failed["status"] == "5.6.3", failed.line
        [raw] = wait_box(srv, "alice")
        report = parse_dsn(raw.read_bytes())
        [group] = report.recipients
        assert group["Remote-MTA"] is None and group["Diagnostic-Code"].startswith("x-dualmta; "), group.items()
        assert "not MIME" in group["Diagnostic-Code"], group.items()
        assert "This server decided" in report.human, report.human
        assert not sink.files()
        wait_queue_empty(srv)
    finally:
        sink.stop()


def test_trace_follows_original_report_and_double_bounce(start_server, peers):  # noqa: F811
    """original -> 550 -> report -> 550 -> double-bounce notice (delivered to the local postmaster): `trace` of any
    id in the chain prints all three, also after every one of them left the queue."""
    dest = peers(script=REJECT, name="dest")
    home = peers(script=Behaviour(rcpt="550 5.1.1 <bob@home.test>: no such user"), name="home")
    srv = start_server(**outbound_settings(
        routes=f"dest.test=[127.0.0.1]:{dest.port}, home.test=[127.0.0.1]:{home.port}"))
    qid = smtp_send(srv, ["nobody@dest.test"], sender="bob@home.test", subject="trace-chain")
    ndr = wait_event(srv, "bounce", id=qid)[0]["ndr"]
    notice = wait_event(srv, "double-bounce", id=ndr)[0]["notice"]
    wait_event(srv, "removed", id=notice)
    wait_queue_empty(srv)

    for start in (qid, ndr, notice):
        run = srv.cli("trace", start, "--json")
        assert run.returncode == 0, run.stderr
        chain = json.loads(run.stdout)["chain"]
        assert [node["id"] for node in chain] == [qid, ndr, notice], chain
    assert [node.get("report_of") for node in chain] == [None, qid, ndr]
    original, report, double = (node["events"] for node in chain)
    assert [e["event"] for e in original] == ["received", "attempt", "failed", "report", "removed"], original
    attempt = original[1]
    assert (attempt["mx"], attempt["addr"], attempt["family"], attempt["result"]) == \
        ("[127.0.0.1]", "127.0.0.1", "ipv4", "rejected"), attempt
    assert attempt["reply"].startswith("550 5.1.1") and int(attempt["ms"]) >= 0, attempt
    assert original[3]["id"] == ndr and original[3]["kind"] == "bounce", original[3]
    assert [e["event"] for e in report] == ["received", "attempt", "failed", "double-bounce", "removed"], report
    assert report[0]["report_of"] == qid and report[0]["from"] == ""
    assert report[3]["id"] == notice
    assert [e["event"] for e in double] == ["received", "delivered", "removed"], double
    text = srv.cli("trace", qid).stdout.decode()
    print(text)  # shown in the report of the issue
    assert text.splitlines()[0] == qid and f"    {ndr} (report on {qid})" in text, text
    assert srv.cli("trace", "0M8ZK3Q1F2A7XQ").returncode == 69
    assert srv.cli("trace", "../etc").returncode == 65
