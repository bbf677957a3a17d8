"""`dualmta queue show|hold|release|delete|flush|bounce` and `mailq` against a running daemon (issue 4 item 4).

The message under test goes to remote.example, routed to a closed loopback port ([127.0.0.1]:9) with a one-hour
retry schedule, so after its first attempt it stays queued and every further attempt can only come from a flush
sent over the control channel (<spool>/state/control). The sender is local, so a bounce lands in a Maildir.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from conftest import DEADLINE, Spool, server_binary
from peers import peers  # noqa: F401  (fixture)
from mtalog import events, maildir, parse_dsn, submit, wait_event, wait_queue_empty

SENDER = "sender@lab.example"
RCPT = "someone@remote.example"
REMOTE = {
    "routes": "remote.example=[127.0.0.1]:9",
    "retry_schedule": "1h",
    "connect_timeout": "1s",
    "delay_warning_after": "0",
}


@pytest.fixture
def qsrv(start_server):
    return start_server(**REMOTE)


def queued_remote(srv) -> str:
    """A message that had its first (failed) attempt and now waits an hour."""
    qid = submit(srv, SENDER, [RCPT])
    wait_event(srv, "deferred", id=qid)
    # The log line comes just before the envelope update: wait for the update itself.
    end = time.monotonic() + DEADLINE
    while not show_json(srv, qid)["attempts"]:
        assert time.monotonic() < end, f"no attempt recorded for {qid}"
        time.sleep(0.02)  # between polls only (deadline above)
    return qid


def cli_ok(srv, *args: str) -> str:
    run = srv.cli(*args)
    assert run.returncode == 0, f"{args}: exit {run.returncode}: {run.stderr.decode(errors='replace')}"
    return run.stdout.decode()


def show_json(srv, qid: str) -> dict:
    return json.loads(cli_ok(srv, "queue", "show", qid, "--json"))


def attempts(srv, qid: str) -> int:
    return len(events(srv, "delivery", id=qid))


def test_show_prints_envelope_recipients_and_attempts(qsrv):
    qid = queued_remote(qsrv)
    text = cli_ok(qsrv, "queue", "show", qid)
    assert f"id:           {qid}" in text, text
    assert f"sender:       <{SENDER}>" in text, text
    assert "127.0.0.1 (helo t.example, ESMTP)" in text, text
    assert "held:         no" in text, text
    assert f"pending   <{RCPT}>" in text, text
    assert "attempts (1):" in text and "family=ipv4" in text and "127.0.0.1" in text, text

    shown = show_json(qsrv, qid)
    assert shown["id"] == qid and shown["sender"] == SENDER and shown["helo"] == "t.example", shown
    assert [(r["address"], r["state"]) for r in shown["recipients"]] == [(RCPT, "pending")], shown
    (attempt,) = shown["attempts"]
    assert attempt["family"] == "ipv4" and "127.0.0.1" in attempt["address"], attempt
    assert attempt["result"] != "sent" and RCPT in attempt["recipients"], attempt
    # retry_schedule = 1h: the next attempt is far away.
    assert shown["next_attempt"] > shown["arrival"], shown


def test_flush_one_and_all_retry_now_through_the_daemon(qsrv):
    qid = queued_remote(qsrv)
    assert attempts(qsrv, qid) == 1
    out = cli_ok(qsrv, "queue", "flush", qid)
    assert "no running daemon" not in out, out
    wait_event(qsrv, "control", command=f"flush {qid}")
    wait_event(qsrv, "deferred", id=qid, count=2)

    out = cli_ok(qsrv, "queue", "flush")
    assert f"{qid}: due now" in out and "1 message(s) due now" in out, out
    wait_event(qsrv, "control", command="flush")
    wait_event(qsrv, "deferred", id=qid, count=3)
    assert len(show_json(qsrv, qid)["attempts"]) == 3


def test_hold_blocks_delivery_and_release_resumes(qsrv):
    qid = queued_remote(qsrv)
    assert cli_ok(qsrv, "queue", "hold", qid) == f"{qid}: held\n"
    assert show_json(qsrv, qid)["held"] is True
    assert f"{qid} (held)" in cli_ok(qsrv, "queue", "list")

    out = cli_ok(qsrv, "queue", "flush", qid)
    assert "held (release it first)" in out, out
    wait_event(qsrv, "control", command=f"flush {qid}")

    out = cli_ok(qsrv, "queue", "release", qid)
    assert out.startswith(f"{qid}: released"), out
    assert show_json(qsrv, qid)["held"] is False
    cli_ok(qsrv, "queue", "flush", qid)
    wait_event(qsrv, "deferred", id=qid, count=2)
    # The flush while held made no attempt: one before the hold, one after the release.
    assert attempts(qsrv, qid) == 2, "\n".join(e.line for e in events(qsrv, "delivery", id=qid))


def test_delete_removes_without_bounce(qsrv):
    qid = queued_remote(qsrv)
    assert cli_ok(qsrv, "queue", "delete", qid) == f"{qid}: deleted\n"
    Spool(qsrv.spool).settle(queued=0, delivered=0)
    assert json.loads(cli_ok(qsrv, "queue", "list", "--json")) == []
    gone = qsrv.cli("queue", "show", qid)
    assert gone.returncode == 69 and b"not found" in gone.stderr, gone
    assert qsrv.cli("queue", "delete", qid).returncode == 69
    qsrv.assert_alive()


def test_bounce_now_reports_to_the_sender(qsrv):
    qid = queued_remote(qsrv)
    out = cli_ok(qsrv, "queue", "bounce", qid)
    assert out.startswith(f"{qid}: 1 recipient bounced"), out
    wait_queue_empty(qsrv)
    end = time.monotonic() + DEADLINE
    while not maildir(qsrv.spool, "lab.example", "sender") and time.monotonic() < end:
        time.sleep(0.02)  # between polls only (deadline above)
    (report,) = maildir(qsrv.spool, "lab.example", "sender")
    raw = report.read_bytes()
    dsn = parse_dsn(raw)
    (group,) = dsn.recipients
    assert group["Action"].strip() == "failed" and group["Status"].strip() == "5.0.0", str(group)
    assert RCPT in group["Final-Recipient"], str(group)
    assert b"bounced by the administrator" in raw, raw[:2000]


def test_bad_ids_exit_65_and_touch_nothing(qsrv, tmp_path):
    qid = queued_remote(qsrv)
    before = sorted((p.name, p.stat().st_mtime_ns) for p in (qsrv.spool / "queue").iterdir())
    for args in (("show", "../../etc/passwd"), ("delete", "../x"), ("hold", "../x"), ("release", "a/b"),
                 ("bounce", qid.lower()), ("flush", "../x"), ("show", "../x")):
        run = qsrv.cli("queue", *args)
        assert run.returncode == 65 and b"bad queue id" in run.stderr, (args, run)
    after = sorted((p.name, p.stat().st_mtime_ns) for p in (qsrv.spool / "queue").iterdir())
    assert before == after

    # With a spool that does not exist yet, a bad id must not even create it.
    fresh = tmp_path / "fresh" / "spool"
    conf = tmp_path / "fresh.conf"
    conf.write_text(f"spool_dir = {fresh}\n")
    for args in (("show", "../../etc/passwd"), ("delete", "../x")):
        run = subprocess.run([str(server_binary()), "queue", *args, "-c", str(conf)], capture_output=True,
                             timeout=30)
        assert run.returncode == 65 and b"bad queue id" in run.stderr, run
    assert not (tmp_path / "fresh").exists()


def test_usage_and_missing_message_exit_codes(qsrv):
    assert qsrv.cli("queue", "show", "ZZZZZZZZZZZZZZ").returncode == 69
    assert qsrv.cli("queue", "show").returncode == 64
    assert qsrv.cli("queue", "frobnicate").returncode == 64


def test_flush_without_daemon_updates_next_attempt(qsrv):
    qid = queued_remote(qsrv)
    assert show_json(qsrv, qid)["next_attempt"] > time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    qsrv.stop()
    assert not (qsrv.spool / "state" / "control").exists()
    out = cli_ok(qsrv, "queue", "flush", qid)
    assert "no running daemon; messages are due at its next start" in out, out
    assert show_json(qsrv, qid)["next_attempt"] <= time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def test_control_socket_is_private(qsrv):
    path = qsrv.spool / "state" / "control"
    mode = path.lstat().st_mode
    assert (mode & 0o777) == 0o600 and (mode & 0o170000) == 0o140000, oct(mode)


def test_mailq_symlink_lists_the_queue(qsrv, tmp_path):
    qid = queued_remote(qsrv)
    link = tmp_path / "mailq"
    os.symlink(server_binary(), link)
    run = subprocess.run([str(link), "-c", str(qsrv.conf)], capture_output=True, timeout=30)
    assert run.returncode == 0, run.stderr
    assert run.stdout.decode() == cli_ok(qsrv, "queue", "list")
    assert qid in run.stdout.decode() and f"<{RCPT}>" in run.stdout.decode()


def test_hold_incoming_queues_on_hold_until_released(start_server, peers):
    dest = peers(name="dest")
    srv = start_server(routes=f"remote.example=[127.0.0.1]:{dest.port}", hold_incoming="yes")
    qid = submit(srv, SENDER, [RCPT])
    (accepted,) = wait_event(srv, "accepted", id=qid)
    assert accepted.fields.get("held") == "yes", accepted.line
    shown = show_json(srv, qid)
    assert shown["held"] is True and shown["attempts"] == [], shown
    assert f"{qid} (held)" in cli_ok(srv, "queue", "list")

    out = cli_ok(srv, "queue", "release", qid)
    assert out.startswith(f"{qid}: released"), out
    wait_event(srv, "removed", id=qid)
    # The peer saw exactly one transaction: nothing went out while the message was held.
    assert [m.rcpts for m in dest.messages] == [[RCPT]], dest.messages
    assert attempts(srv, qid) == 1
