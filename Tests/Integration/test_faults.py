"""Fault rules end to end (`fault =` in the config): failures on purpose on the receiving side (our server answers
as the rule says) and on the sending side (our client behaves as if the peer or the network had failed), over real
loopback sockets with real clients (Python smtplib, swaks, raw sockets) and real peers (a second dualmta, scripted
peers). Every rule that fires is one `fault=F<n>` log field.
"""

from __future__ import annotations

import json
import signal
import smtplib
import socket
import subprocess
import time

import pytest

from conftest import DEADLINE, free_port, server_binary, simple_message, unique_tag, wait_until
from dnslab import lab_dns  # noqa: F401  (fixture)
from mtalog import (events, maildir, outbound_settings, parse_dsn, queue_empty, story, submit, wait_event,
                    wait_queue_empty)
from peers import Behaviour, peers  # noqa: F401  (fixture)

SENDER = "alice@src.example"


def rules(*lines: str) -> str:
    """Several `fault =` lines from one setting (the key may repeat)."""
    return "\nfault = ".join(lines)


def smtp(server, host: str = "127.0.0.1") -> smtplib.SMTP:
    client = smtplib.SMTP(host, server.port, local_hostname="client.example", timeout=DEADLINE)
    return client


# ---------------------------------------------------------------------------------------------------------------
# Inbound


def test_rcpt_tempfail_first_two_tries_then_accept(start_server):
    srv = start_server(fault=rules("inbound rcpt rcpt=tempfail*@* reply 451 4.7.1 try later first=2"))
    answers = []
    for _ in range(3):
        with smtp(srv) as client:
            client.ehlo()
            client.mail(SENDER)
            answers.append(client.rcpt("tempfail1@lab.example"))
            # An unmatched recipient is never touched.
            assert client.rcpt("other@lab.example")[0] == 250
    assert [code for code, _ in answers] == [451, 451, 250], answers
    assert answers[0][1].startswith(b"4.7.1 try later"), answers[0]
    fired = events(srv, "fault", fault="F1")
    assert [(e["stage"], e["action"], e["family"]) for e in fired] == [("rcpt", "reply", "ipv4")] * 2


def test_refused_rcpt_is_not_in_the_transaction(start_server):
    srv = start_server(fault=rules("inbound rcpt rcpt=no@lab.example reply 550 5.1.1 no such user"))
    with smtp(srv) as client:
        client.ehlo()
        client.mail(SENDER)
        assert client.rcpt("no@lab.example")[0] == 550
        # The session state follows the reply: no recipient yet, so DATA is out of sequence.
        assert client.docmd("DATA")[0] == 503
        assert client.rcpt("yes@lab.example")[0] == 250
        code, _ = client.data(simple_message(unique_tag("t")))
        assert code == 250
    wait_queue_empty(srv)
    assert len(maildir(srv.spool, "lab.example", "yes")) == 1
    assert maildir(srv.spool, "lab.example", "no") == []


def test_rate_limit_421_at_connect_for_one_family(start_server):
    srv = start_server(fault=rules("inbound connect family=ipv4 reply 421 4.7.0 too many connections, slow down"))
    with srv.connect("127.0.0.1") as c:
        replies = c.read_until_closed()
        assert [r.short() for r in replies] == [(421, "4.7.0")], replies
    # IPv6 clients are served as usual.
    with srv.session("::1") as c:
        c.cmd(b"QUIT").expect(221)
    assert [e["family"] for e in events(srv, "fault")] == ["ipv4"]


def test_drop_at_mail_closes_without_a_reply(start_server):
    srv = start_server(fault=rules("inbound mail from=*@drop.example drop"))
    with srv.session() as c:
        c.send(b"MAIL FROM:<x@drop.example>\r\n")
        assert c.read_until_closed() == []
    with srv.session() as c:  # another sender is untouched
        c.cmd(b"MAIL FROM:<x@fine.example>").expect(250)
    wait_event(srv, "fault", fault="F1", stage="mail", action="drop")


def test_reset_at_ehlo_sends_rst(start_server):
    srv = start_server(fault=rules("inbound ehlo reset"))
    sock = socket.create_connection(("127.0.0.1", srv.port), timeout=DEADLINE)
    try:
        assert sock.recv(512).startswith(b"220")
        sock.sendall(b"EHLO client.example\r\n")
        with pytest.raises(ConnectionResetError):
            while sock.recv(512):
                pass
    finally:
        sock.close()
    wait_event(srv, "fault", fault="F1", stage="ehlo", action="reset")


def test_delay_then_continue(start_server):
    srv = start_server(fault=rules("inbound data-end delay 1500ms"))
    with smtp(srv) as client:
        client.ehlo()
        client.mail(SENDER)
        client.rcpt("slow@lab.example")
        started = time.monotonic()
        code, text = client.data(simple_message(unique_tag("t")))
        elapsed = time.monotonic() - started
        assert code == 250 and b"queued as" in text
        assert elapsed >= 1.4, elapsed
    with srv.session() as c:
        started = time.monotonic()
        c.cmd(b"NOOP").expect(250)
        assert time.monotonic() - started < 1.0
    wait_queue_empty(srv)
    assert len(maildir(srv.spool, "lab.example", "slow")) == 1


def test_delay_does_not_block_other_sessions(start_server):
    srv = start_server(fault=rules("inbound rcpt rcpt=slow@* delay 3s"))
    slow = srv.session()
    try:
        slow.cmd(b"MAIL FROM:<a@b.example>").expect(250)
        slow.send(b"RCPT TO:<slow@lab.example>\r\n")
        # While the slow session waits, another one runs a whole transaction.
        started = time.monotonic()
        submit(srv, SENDER, ["fast@lab.example"])
        assert time.monotonic() - started < 2.5
        slow.read_reply(timeout=DEADLINE).expect(250)
    finally:
        slow.close()


def test_greylist_holds_then_passes(start_server):
    srv = start_server(fault=rules("inbound rcpt domain=lab.example greylist 1s"))
    first = time.monotonic()
    codes = []

    def attempt():
        with srv.session() as c:
            c.cmd(b"MAIL FROM:<" + SENDER.encode() + b">").expect(250)
            reply = c.cmd(b"RCPT TO:<grey@lab.example>")
            codes.append(reply.short())
            return reply.code == 250

    wait_until(attempt, what="the greylisted triplet to pass", interval=0.2)
    assert codes[0] == (450, "4.7.1"), codes
    assert codes[-1] == (250, "2.1.5") and all(c == (450, "4.7.1") for c in codes[:-1]), codes
    assert time.monotonic() - first >= 1.0
    # Another recipient is a new triplet: held again.
    with srv.session() as c:
        c.cmd(b"MAIL FROM:<" + SENDER.encode() + b">").expect(250)
        c.cmd(b"RCPT TO:<other@lab.example>").expect(450, "4.7.1")


def test_discard_at_data_end(start_server):
    srv = start_server(fault=rules("inbound data-end rcpt=void@* discard"))
    with smtp(srv) as client:
        client.ehlo()
        client.mail(SENDER)
        client.rcpt("void@lab.example")
        code, text = client.data(simple_message(unique_tag("t")))
        assert code == 250, text
    wait_event(srv, "fault", fault="F1", stage="data-end", action="discard")
    wait_event(srv, "rejected", reason="message discarded by a fault rule")
    assert events(srv, "accepted") == []
    assert queue_empty(srv.spool)
    assert maildir(srv.spool, "lab.example", "void") == []


def test_submission_listener_too(start_server, tmp_path):
    # The submission service consults the same rules: here a 421 at connect on its listener only.
    users = tmp_path / "users"
    users.write_text("# nobody\n")
    port = free_port()
    srv = start_server(submission_listen=f"127.0.0.1:{port}", submission_users_file=str(users),
                       fault=rules(f"inbound connect listener=127.0.0.1:{port} reply 421 4.3.2 closed for maintenance"))
    with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as sock:
        reply = b""
        while chunk := sock.recv(512):
            reply += chunk
        assert reply.startswith(b"421 4.3.2 closed for maintenance"), reply
    with srv.session() as c:  # the MX listener is untouched
        c.cmd(b"QUIT").expect(221)
    wait_event(srv, "fault", fault="F1", stage="connect", action="reply")


# ---------------------------------------------------------------------------------------------------------------
# Outbound


def test_paper_test1_with_outbound_rules(start_server, lab_dns, tmp_path):  # noqa: F811
    """The paper's Test 1 on loopback: mx10's three AAAA unreachable and its two A refused (rules, before any
    packet), then mx20 reached over IPv6 -- the same six attempts, in the same order, as the namespace lab."""
    port = free_port("::1", "127.0.0.21")
    mx20 = start_server(spool=tmp_path / "mx20", port=port, listen="[::1]:{port}, 127.0.0.21:{port}",
                        hostname="mx20.paper1.example.test", local_domains="paper1.example.test")
    # bind_address6 = ::1 is a safety net: should a rule not fire, a loopback source cannot reach 2001:db8::/32.
    sender = start_server(**outbound_settings(
        dns_servers=lab_dns.server, mx_port=str(port), allow_loopback_mx="yes", bind_address6="::1",
        fault=rules("outbound connect family=ipv6 mx=mx10.paper1.example.test unreachable",
                    "outbound connect family=ipv4 mx=mx10.paper1.example.test refuse")))
    rcpt = "user@paper1.example.test"
    run = sender.cli("route", rcpt, "--json")
    assert run.returncode == 0, run.stderr
    plan = [(a["mxHost"], a["preference"], a["endpoint"]["address"]) for a in json.loads(run.stdout)["attempts"]]
    mx10_v6 = ["2001:db8:10::1", "2001:db8:10::2", "2001:db8:10::3"]
    assert plan == [("mx10.paper1.example.test", 10, a) for a in mx10_v6] \
        + [("mx10.paper1.example.test", 10, a) for a in ["127.0.0.11", "127.0.0.12"]] \
        + [("mx20.paper1.example.test", 20, "::1"), ("mx20.paper1.example.test", 20, "127.0.0.21")], plan

    # `dualmta route` names the rules that would apply to each planned address.
    text = sender.cli("route", rcpt).stdout.decode()
    assert text.split("fault rules (from the config):\n", 1)[1].splitlines() == \
        [f"  mx10.paper1.example.test [{a}]: F1 connect unreachable" for a in mx10_v6] \
        + [f"  mx10.paper1.example.test {a}: F2 connect refuse" for a in ["127.0.0.11", "127.0.0.12"]] \
        + ["  mx20.paper1.example.test [::1]: none", "  mx20.paper1.example.test 127.0.0.21: none"], text

    qid = submit(sender, SENDER, [rcpt])
    wait_event(sender, "removed", id=qid)
    attempts = events(sender, "delivery", id=qid)
    assert [(a["mx"], a["pref"], a["family"], a["addr"], a["result"], a.get("fault")) for a in attempts] == [
        ("mx10.paper1.example.test", "10", "ipv6", "[2001:db8:10::1]", "failed", "F1"),
        ("mx10.paper1.example.test", "10", "ipv6", "[2001:db8:10::2]", "failed", "F1"),
        ("mx10.paper1.example.test", "10", "ipv6", "[2001:db8:10::3]", "failed", "F1"),
        ("mx10.paper1.example.test", "10", "ipv4", "[127.0.0.11]", "failed", "F2"),
        ("mx10.paper1.example.test", "10", "ipv4", "[127.0.0.12]", "failed", "F2"),
        ("mx20.paper1.example.test", "20", "ipv6", "[::1]", "sent", None),
    ], story(sender, qid)
    assert all("no route to host" in a["reason"].lower() for a in attempts[:3]), story(sender, qid)
    assert all("refused" in a["reason"].lower() for a in attempts[3:5]), story(sender, qid)
    # Same transport cache as real failures: the five dead addresses are skipped by the next message.
    second = submit(sender, SENDER, [rcpt])
    wait_event(sender, "removed", id=second)
    assert [(a["addr"], a["result"]) for a in events(sender, "delivery", id=second)] == [("[::1]", "sent")]
    accepted = wait_event(mx20, "accepted", count=2)
    assert [a["family"] for a in accepted] == ["ipv6", "ipv6"]
    wait_queue_empty(mx20)
    assert len(maildir(mx20.spool, "paper1.example.test", "user")) == 2


def relay(start_server, peers, dest_script=None, **settings):  # noqa: F811
    """A server routing remote.example to a scripted peer and the sender's domain to a report sink."""
    dest = peers(script=dest_script, name="dest")
    ndr = peers(name="ndr-sink")
    routes = f"remote.example=[127.0.0.1]:{dest.port}, src.example=[127.0.0.1]:{ndr.port}"
    return start_server(**outbound_settings(routes=routes, **settings)), dest, ndr


def test_rejected_rcpt_bounces_like_a_real_one(start_server, peers):  # noqa: F811
    srv, dest, ndr = relay(start_server, peers, fault=rules(
        "outbound rcpt rcpt=gone@remote.example reply 550 5.1.1 no such user here"))
    qid = submit(srv, SENDER, ["gone@remote.example", "here@remote.example"])
    wait_event(srv, "removed", id=qid)
    lines = {a["rcpt"]: a for a in events(srv, "delivery", id=qid)}
    assert lines["<gone@remote.example>"]["result"] == "rejected"
    assert lines["<gone@remote.example>"]["fault"] == "F1"
    assert "550 5.1.1 no such user here" in lines["<gone@remote.example>"]["reply"]
    assert lines["<here@remote.example>"]["result"] == "sent"
    # Only our side's view changed: the peer saw both RCPTs (the rule replaced its answer to one of them).
    message = dest.wait_messages(1, DEADLINE)[0]
    assert message.rcpts == ["gone@remote.example", "here@remote.example"]
    report = parse_dsn(ndr.wait_messages(1, DEADLINE)[0].data)
    assert [(g["Final-Recipient"].lower(), g["Action"], g["Status"]) for g in report.recipients] == \
        [("rfc822; gone@remote.example", "failed", "5.1.1")], report.recipients


def test_receiver_451s_the_first_two_tries(start_server, peers):  # noqa: F811
    srv, dest, _ = relay(start_server, peers, fault=rules(
        "outbound data-end reply 451 4.3.0 try again later first=2"))
    qid = submit(srv, SENDER, ["bob@remote.example"])
    wait_event(srv, "removed", id=qid, timeout=DEADLINE * 2)
    results = [(a["result"], a.get("fault")) for a in events(srv, "delivery", id=qid)]
    assert results == [("deferred", "F1"), ("deferred", "F1"), ("sent", None)], story(srv, qid)
    # The peer really received three transactions; it kept the last one (the rule answered the first two).
    assert len(dest.wait_messages(3, DEADLINE)) == 3


def test_banner_drop_then_retry(start_server, peers):  # noqa: F811
    srv, dest, _ = relay(start_server, peers, fault=rules("outbound banner drop first=1"))
    qid = submit(srv, SENDER, ["bob@remote.example"])
    wait_event(srv, "removed", id=qid, timeout=DEADLINE * 2)
    attempts = events(srv, "delivery", id=qid)
    assert [(a["result"], a.get("fault")) for a in attempts] == [("failed", "F1"), ("sent", None)], story(srv, qid)
    assert "connection lost" in attempts[0]["reason"]


def test_connect_blackhole_waits_for_connect_timeout(start_server, peers):  # noqa: F811
    srv, dest, _ = relay(start_server, peers, connect_timeout="1s", fault=rules("outbound connect blackhole first=1"))
    qid = submit(srv, SENDER, ["bob@remote.example"])
    wait_event(srv, "removed", id=qid, timeout=DEADLINE * 2)
    attempts = events(srv, "delivery", id=qid)
    assert [(a["result"], a.get("fault")) for a in attempts] == [("failed", "F1"), ("sent", None)], story(srv, qid)
    assert attempts[0]["reason"].endswith("connect timed out") and int(attempts[0]["ms"]) >= 950
    # No packet: the peer saw one connection only (the retry).
    assert dest.connection_count == 1


def test_happy_eyeballs_moves_on_from_a_blackholed_ipv6(start_server, peers, lab_dns):  # noqa: F811
    port = free_port()
    v6 = peers("::1", port, name="v6")
    v4 = peers("127.0.0.1", port, name="v4")
    srv = start_server(**outbound_settings(
        dns_servers=lab_dns.server, mx_port=str(port), allow_loopback_mx="yes", connect_strategy="happy-eyeballs",
        connection_attempt_delay="200ms", connect_timeout="5s",
        fault=rules("outbound connect family=ipv6 blackhole")))
    started = time.monotonic()
    qid = submit(srv, SENDER, ["bob@cache.example.test"])
    wait_event(srv, "removed", id=qid)
    assert time.monotonic() - started < 4, "waited for the connect timeout instead of moving on"
    connects = [(c["family"], c["result"], c.get("fault")) for c in events(srv, "connect", id=qid)]
    assert connects == [("ipv4", "won", None), ("ipv6", "lost", "F1")] or \
        connects == [("ipv6", "lost", "F1"), ("ipv4", "won", None)], connects
    # The journal keeps the race too (the console draws the lost connect on the message's time line).
    journal = [json.loads(line) for line in (srv.spool / "state" / "history" / f"{qid}.log").read_text().splitlines()]
    raced = sorted((e["family"], e["result"]) for e in journal if e["event"] == "connect")
    assert raced == [("ipv4", "won"), ("ipv6", "lost")], journal
    assert len(v4.wait_messages(1, DEADLINE)) == 1
    assert v6.connection_count == 0


def test_tls_fail_falls_back_to_plaintext_like_a_real_failure(start_server, tmp_path):
    port = free_port()
    peer = start_server(spool=tmp_path / "peer", port=port, local_domains="remote.example")
    srv = start_server(**outbound_settings(
        routes=f"remote.example=[127.0.0.1]:{port}", smtp_tls="may", fault=rules("outbound starttls tls-fail")))
    qid = submit(srv, SENDER, ["bob@remote.example"])
    wait_event(srv, "removed", id=qid)
    attempts = events(srv, "delivery", id=qid)
    assert [(a["result"], a.get("fault")) for a in attempts] == [("sent", "F1")], story(srv, qid)
    assert "fault rule" in attempts[0]["tls_fallback"] and "tls" not in attempts[0].fields, attempts[0].line
    wait_event(peer, "accepted")


def test_connect_delay_then_deliver(start_server, peers):  # noqa: F811
    srv, dest, _ = relay(start_server, peers, fault=rules("outbound connect delay 1s"))
    qid = submit(srv, SENDER, ["bob@remote.example"])
    wait_event(srv, "removed", id=qid)
    attempts = events(srv, "delivery", id=qid)
    assert [(a["result"], a.get("fault")) for a in attempts] == [("sent", "F1")], story(srv, qid)
    assert int(attempts[0]["ms"]) >= 950


# ---------------------------------------------------------------------------------------------------------------
# Bad rules


def test_bad_rule_is_a_config_error_with_file_and_line(start_server, tmp_path):
    srv = start_server()
    conf = tmp_path / "bad.conf"
    good = srv.render_config() + "fault = inbound rcpt reply 451 4.7.1 later\n"
    conf.write_text(good + "fault = inbound rcpt reply 250 fine\n")
    result = subprocess.run([str(server_binary()), "config", "check", "-c", str(conf)],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode != 0
    line = good.count("\n") + 1
    expected = f"{conf}:{line}: fault: an inbound reply needs a 4xx or 5xx code (got 250)"
    assert expected in result.stderr + result.stdout, result.stderr + result.stdout


# ---------------------------------------------------------------------------------------------------------------
# At run time: `dualmta fault` over the control socket, `fault =` lines on SIGHUP


def fault_cli(srv, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(server_binary()), "fault", *args, "-c", str(srv.conf)], capture_output=True,
                          text=True, timeout=30, cwd=str(srv.workdir))


def test_fault_cli_add_list_delete_clear(start_server):
    srv = start_server(fault=rules("inbound mail from=*@never.example drop"))
    added = fault_cli(srv, "add", "inbound", "rcpt", "rcpt=cli@*", "reply", "451", "4.7.1", "added at run time")
    assert (added.returncode, added.stdout) == (0, "F2\n"), added.stderr
    with srv.session() as c:
        c.cmd(b"MAIL FROM:<a@b.example>").expect(250)
        reply = c.cmd(b"RCPT TO:<cli@lab.example>").expect(451, "4.7.1")
        assert reply.last_text == "added at run time"
    listed = fault_cli(srv, "list")
    assert listed.returncode == 0
    assert listed.stdout.splitlines() == [
        "F1 config matched=0 fired=0 inbound mail from=*@never.example drop",
        "F2 added matched=1 fired=1 inbound rcpt rcpt=cli@* reply 451 4.7.1 added at run time",
    ]
    assert fault_cli(srv, "delete", "F2").returncode == 0
    with srv.session() as c:
        c.cmd(b"MAIL FROM:<a@b.example>").expect(250)
        c.cmd(b"RCPT TO:<cli@lab.example>").expect(250)
    missing = fault_cli(srv, "delete", "F2")
    assert missing.returncode == 65 and "no fault rule F2" in missing.stderr
    # Ids are never reused within a run.
    assert fault_cli(srv, "add", "inbound data drop").stdout == "F3\n"
    assert fault_cli(srv, "clear").returncode == 0
    assert fault_cli(srv, "list").stdout == ""
    wait_event(srv, "fault-control", command="fault clear")


def test_fault_cli_rejects_a_bad_rule_with_the_config_message(start_server):
    srv = start_server()
    bad = fault_cli(srv, "add", "inbound rcpt greylist")
    assert bad.returncode == 65
    assert bad.stderr == "dualmta: fault: 'greylist' needs one DURATION (like 30s or 2m)\n"
    assert fault_cli(srv, "list").stdout == ""  # nothing half-applied
    assert events(srv, "fault-control") == [e for e in events(srv, "fault-control") if e["command"] == "fault list"]


def test_fault_cli_without_a_daemon(start_server):
    srv = start_server()
    srv.stop()
    result = fault_cli(srv, "list")
    assert result.returncode == 69 and "no running daemon" in result.stderr, result.stderr


def test_sighup_replaces_config_rules_keeps_added_ones(start_server):
    srv = start_server(fault=rules("inbound mail from=*@a.example drop", "inbound mail from=*@b.example drop"))
    assert fault_cli(srv, "add", "inbound mail from=*@c.example drop").stdout == "F3\n"
    srv.settings["fault"] = rules("inbound mail from=*@b.example drop", "inbound rcpt reply 450")
    srv.conf.write_text(srv.render_config())
    srv.proc.send_signal(signal.SIGHUP)
    wait_event(srv, "reloaded")
    listed = [line.split(" ", 4) for line in fault_cli(srv, "list").stdout.splitlines()]
    assert [f"{parts[0]} {parts[4]}" for parts in listed] == [
        "F2 inbound mail from=*@b.example drop",
        "F3 inbound mail from=*@c.example drop",
        "F4 inbound rcpt reply 450",
    ]
    # A bad line on reload keeps every rule as it was.
    srv.settings["fault"] = rules("inbound rcpt reply 450", "inbound rcpt explode")
    srv.conf.write_text(srv.render_config())
    srv.proc.send_signal(signal.SIGHUP)
    wait_event(srv, "reload-failed")
    # (The CLI reads the config too: give it a valid file again, without a reload.)
    srv.settings["fault"] = None
    srv.conf.write_text(srv.render_config())
    assert len(fault_cli(srv, "list").stdout.splitlines()) == 3


def test_every_fault_is_counted_by_side_stage_family(start_server, peers):  # noqa: F811
    from test_metrics import curl, samples, value
    metrics_port = free_port()
    srv, dest, _ = relay(start_server, peers, metrics_listen=f"127.0.0.1:{metrics_port}", fault=rules(
        "inbound rcpt rcpt=held@* reply 451 4.7.1 later", "outbound rcpt reply 450 4.2.0 busy first=1"))
    with srv.session("::1") as c:
        c.cmd(b"MAIL FROM:<a@b.example>").expect(250)
        c.cmd(b"RCPT TO:<held@lab.example>").expect(451, "4.7.1")
    with srv.session("127.0.0.1") as c:
        c.cmd(b"MAIL FROM:<a@b.example>").expect(250)
        c.cmd(b"RCPT TO:<held@lab.example>").expect(451, "4.7.1")
    qid = submit(srv, SENDER, ["bob@remote.example"])
    wait_event(srv, "removed", id=qid, timeout=DEADLINE * 2)
    status, body = curl(f"http://127.0.0.1:{metrics_port}/metrics")
    assert status == "200"
    found = samples(body)
    name = "dualmta_faults_total"
    assert value(found, name, side="inbound", stage="rcpt", family="ipv6") == 1
    assert value(found, name, side="inbound", stage="rcpt", family="ipv4") == 1
    assert value(found, name, side="outbound", stage="rcpt", family="ipv4") == 1


def test_paper_test3_bounce_path_with_an_inbound_rule(start_server, lab_dns, tmp_path):  # noqa: F811
    """The receiver (a second dualmta) refuses one recipient by rule; the sender, IPv4-only, cannot return the
    report to a sender whose domain has only an AAAA MX (the paper's Test 3), so the double bounce goes to the
    postmaster."""
    port = free_port()
    receiver = start_server(spool=tmp_path / "receiver", port=port, local_domains="remote.example",
                            fault=rules("inbound rcpt rcpt=nobody@* reply 550 5.1.1 no such user"))
    sender = start_server(**outbound_settings(
        routes=f"remote.example=[127.0.0.1]:{port}", dns_servers=lab_dns.server, inet_protocols="ipv4",
        allow_loopback_mx="yes"))
    qid = submit(sender, "alice@v6only.test", ["nobody@remote.example"])
    wait_event(sender, "double-bounce", timeout=DEADLINE * 2)
    failed = events(sender, "recipient", id=qid)
    assert [(r["rcpt"], r["result"], r["status"]) for r in failed] == [("<nobody@remote.example>", "failed", "5.1.1")]
    wait_event(receiver, "fault", fault="F1", stage="rcpt", action="reply")
    wait_queue_empty(sender)
    assert len(maildir(sender.spool, "mx.lab.example", "postmaster")) == 1, story(sender, qid)


def test_console_lists_the_rules_and_changes_them_with_the_token(start_server):
    """The web console's /faults page and /api/faults show the rules in force and how often each fired; with
    `http_token`, POST /api/faults/add?rule=... adds one (the CLI's parser and ids) and .../ID/delete removes it."""
    import urllib.error
    import urllib.parse
    import urllib.request
    http_port = free_port()
    token = "lab-token-0123456789"
    srv = start_server(fault=rules("inbound rcpt rcpt=nobody@* reply 550 5.1.1 <b>no</b> such user"),
                       http_listen=f"127.0.0.1:{http_port}", http_token=token)
    with smtplib.SMTP("127.0.0.1", srv.port, timeout=DEADLINE) as c:
        c.ehlo("console.example")
        c.mail("a@r.example")
        assert c.rcpt("nobody@lab.example")[0] == 550
    base = f"http://127.0.0.1:{http_port}"

    def get(path: str) -> bytes:
        with urllib.request.urlopen(base + path, timeout=DEADLINE) as response:
            return response.read()

    def post(path: str, authorization: str | None) -> tuple[int, dict]:
        request = urllib.request.Request(base + path, method="POST")
        if authorization:
            request.add_header("Authorization", authorization)
        try:
            with urllib.request.urlopen(request, timeout=DEADLINE) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, {}

    rules_now = json.loads(get("/api/faults"))
    assert [(r["id"], r["origin"], r["fired"]) for r in rules_now] == [("F1", "config", 1)], rules_now
    page = get("/faults").decode()
    assert "F1" in page and "&lt;b&gt;no&lt;/b&gt;" in page and "<b>no</b>" not in page
    assert post("/api/faults/clear", None)[0] == 401
    added = urllib.parse.quote("outbound connect family=ipv6 unreachable")
    status, answer = post(f"/api/faults/add?rule={added}", f"Bearer {token}")
    assert status == 200 and answer["ok"] and "F2" in answer["output"], answer
    bad = urllib.parse.quote("inbound rcpt explode")
    assert post(f"/api/faults/add?rule={bad}", f"Bearer {token}")[0] == 400
    assert [r["id"] for r in json.loads(get("/api/faults"))] == ["F1", "F2"]
    assert post("/api/faults/F2/delete", f"Bearer {token}")[0] == 200
    assert post("/api/faults/F2/delete", f"Bearer {token}")[0] == 404
    assert [r["id"] for r in json.loads(get("/api/faults"))] == ["F1"]
    srv.assert_alive()
