"""`dualmta send` and the binary invoked as `sendmail` (issue 4 item 5): local submission into the spool of a running
daemon, exact bytes in the Maildir, -t with To/Cc/Bcc, dot handling, exit codes, and S13 (LF input relayed with
CRLF only and dot-stuffed on the wire).
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from conftest import DEADLINE, Spool, parse_delivered, server_binary
from mtalog import maildir, outbound_settings, wait_event, wait_queue_empty
from peers import Peer

SENDER = "sender@lab.example"


def send(srv, args: list[str], data: bytes, program: Path | None = None) -> subprocess.CompletedProcess:
    """Runs `dualmta send ARGS -c CONF` (or PROGRAM ARGS -c CONF for a symlink) with `data` on stdin."""
    argv = [str(program)] if program else [str(server_binary()), "send"]
    return subprocess.run(argv + args + ["-c", str(srv.conf)], input=data, capture_output=True, timeout=30,
                          cwd=str(srv.workdir))


def delivered_to(srv, user: str, count: int = 1) -> list[Path]:
    end = time.monotonic() + DEADLINE
    while len(maildir(srv.spool, "lab.example", user)) < count:
        assert time.monotonic() < end, f"nothing delivered to {user}: {Spool(srv.spool).summary()}"
        time.sleep(0.02)  # poll interval inside the deadline loop
    files = maildir(srv.spool, "lab.example", user)
    assert len(files) == count, files
    return files


def queued_id(run: subprocess.CompletedProcess) -> str:
    text = run.stderr.decode()
    assert run.returncode == 0 and "queued as " in text, (run.returncode, text)
    return text.split("queued as ", 1)[1].split()[0]


def test_send_with_arguments_exact_bytes_in_maildir(mta):
    message = (b"From: Sender <sender@lab.example>\nTo: u@lab.example\nSubject: exact\n"
               b"Date: Sun, 29 Nov 2026 01:00:00 +0000\nMessage-ID: <exact@lab.example>\n\n"
               b"line one\n..two dots stay\n.\n")
    run = send(mta, ["-v", "-f", SENDER, "u@lab.example"], message)
    qid = queued_id(run)
    (path,) = delivered_to(mta, "u")
    got = parse_delivered(path)
    assert got.return_path == SENDER
    assert got.received.startswith("from local user ") and f"with local id {qid}" in got.received, got.received
    # Without -i the lone dot ends the input; everything before it arrives with CRLF, byte for byte.
    assert got.rest == message[:-2].replace(b"\n", b"\r\n"), got.rest
    assert b"\n" not in got.raw.replace(b"\r\n", b"")
    # The daemon was woken over the control channel (no timer would have run it so soon).
    wait_event(mta, "control", command=f"wake {qid}")
    wait_queue_empty(mta)


def test_send_t_takes_to_cc_bcc_and_removes_bcc(mta):
    message = (b"From: sender@lab.example\nTo: Ann <ann@lab.example>,\n  bob@lab.example\n"
               b"Cc: friends: carl@lab.example;\nBcc: dora@lab.example\nSubject: minus t\n\nhello\n")
    run = send(mta, ["-t", "-v", "-f", SENDER], message)
    qid = queued_id(run)
    files = [delivered_to(mta, user)[0] for user in ("ann", "bob", "carl", "dora")]
    for path in files:
        got = parse_delivered(path)
        raw = got.raw
        # Delivered-To names each copy's own recipient; the message's header must not name dora.
        assert b"Bcc" not in raw and b"dora" not in got.rest.split(b"\r\n\r\n", 1)[0], raw
        assert b"To: Ann <ann@lab.example>,\r\n  bob@lab.example\r\n" in raw, raw
        assert b"Message-ID: <" in raw and b"\r\nDate: " in raw, raw
    accepted = [e for e in wait_event(mta, "delivery", id=qid, count=4) if e.get("result") == "delivered"]
    assert sorted(e["rcpt"] for e in accepted) == [f"<{u}@lab.example>" for u in ("ann", "bob", "carl", "dora")]
    wait_queue_empty(mta)


@pytest.mark.parametrize("flag", ["-i", "-oi"])
def test_send_i_keeps_dot_lines(mta, flag):
    message = b"Subject: dots\n\na\n.\nb\n..c\n"
    qid = queued_id(send(mta, [flag, "-v", "u@lab.example"], message))
    (path,) = delivered_to(mta, "u")
    got = parse_delivered(path)
    assert got.rest.endswith(b"\r\n\r\na\r\n.\r\nb\r\n..c\r\n"), got.rest
    assert f"id {qid}" in got.received


def test_send_exit_codes_and_nothing_queued(mta):
    cases = [
        (["u@lab.example"], b"Subject: x\n\nbare\rCR\n", 65, b"bare CR"),
        ([], b"Subject: x\n\nno rcpt\n", 64, b"no recipients"),
        (["-t"], b"To: undisclosed-recipients:;\n\nx\n", 64, b"no recipients"),
        (["not an address@@x"], b"x\n", 65, b"bad recipient"),
        (["-f", "bad sender@x", "u@lab.example"], b"x\n", 65, b"bad sender"),
        (["-Z", "u@lab.example"], b"x\n", 64, b"unknown option"),
        (["-bs"], b"", 64, b"unsupported mode"),
    ]
    for args, data, code, text in cases:
        run = send(mta, args, data)
        assert run.returncode == code and text in run.stderr, (args, run.returncode, run.stderr)
    Spool(mta.spool).settle(queued=0, delivered=0)
    assert not list((mta.spool / "incoming").iterdir())


def test_send_spool_error_is_tempfail(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory\n")
    conf = tmp_path / "bad.conf"
    conf.write_text(f"spool_dir = {blocker}/spool\nlocal_domains = lab.example\n")
    run = subprocess.run([str(server_binary()), "send", "-c", str(conf), "u@lab.example"],
                         input=b"Subject: x\n\nx\n", capture_output=True, timeout=30)
    assert run.returncode == 75, (run.returncode, run.stderr)
    assert b"Not a directory" in run.stderr, run.stderr
    # Bad data is still 65, not 75, even when the spool is unusable.
    run = subprocess.run([str(server_binary()), "send", "-c", str(conf), "u@lab.example"],
                         input=b"bare\rCR\n", capture_output=True, timeout=30)
    assert run.returncode == 65, (run.returncode, run.stderr)


def test_sendmail_and_mailq_names(mta, tmp_path):
    sendmail = tmp_path / "sendmail"
    os.symlink(server_binary(), sendmail)
    run = send(mta, ["-oi", "-odb", "-F", "Some One", f"-f{SENDER}", "-v", "u@lab.example"],
               b"Subject: via sendmail\n\nhi\n", program=sendmail)
    qid = queued_id(run)
    # What cron and mutt pass (-oi, -odb, -F) is accepted without a warning on every call.
    assert b"warning" not in run.stderr, run.stderr
    (path,) = delivered_to(mta, "u")
    got = parse_delivered(path)
    assert got.return_path == SENDER and f"id {qid}" in got.received
    wait_queue_empty(mta)

    listed = send(mta, ["-bp"], b"", program=sendmail)
    assert listed.returncode == 0 and listed.stdout == b"Mail queue is empty\n", listed
    flushed = send(mta, ["-q"], b"", program=sendmail)
    assert flushed.returncode == 0 and b"0 message(s) due now" in flushed.stdout, flushed
    wait_event(mta, "control", command="flush")


def test_s13_lf_input_is_relayed_with_crlf_and_dot_stuffing(start_server):
    sink = Peer("127.0.0.1", 0, None, name="s13-sink")
    try:
        srv = start_server(**outbound_settings(routes=f"sink.example=[127.0.0.1]:{sink.port}"))
        body = (b"From: <sender@lab.example>\nSubject: s13\nDate: Sun, 29 Nov 2026 01:00:00 +0000\n"
                b"Message-ID: <s13@lab.example>\n\nfirst\n.\nsecond\n.\r\n..x\n.y\nlast")
        qid = queued_id(send(srv, ["-i", "-v", "-f", SENDER, "bob@sink.example"], body))
        (message,) = sink.wait_messages(1, DEADLINE)
        expected = body.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n") + b"\r\n"
        # The sink un-stuffs and splits on CRLF only: a missing stuff or a bare LF would change these bytes.
        assert message.data.endswith(b"\r\n" + expected), message.data
        assert message.data.startswith(b"Received: from local user "), message.data[:200]
        assert f"with local id {qid}".encode() in message.data
        assert message.data.count(b"\n") == message.data.count(b"\r\n")
        assert message.data.count(b"\r") == message.data.count(b"\r\n")
        assert message.mail_from == SENDER and message.rcpts == ["bob@sink.example"]
        wait_queue_empty(srv)

        # A bare CR cannot be sent at all (we never pass one on: SMTP smuggling).
        run = send(srv, ["-i", "bob@sink.example"], b"Subject: s13\n\na\r.\rb\n")
        assert run.returncode == 65 and b"bare CR" in run.stderr, run
        assert len(sink.messages) == 1
    finally:
        sink.stop()
