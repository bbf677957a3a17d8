"""Maildir atomicity at a crash: the daemon SIGKILLs itself (crash point `maildir.tmp-written`, debug builds) after
the copy is written and fsynced in tmp/ and before the rename into new/. A Maildir reader must see nothing then; the
restarted daemon removes the crashed copy from tmp/ at start-up (logged), delivers the message exactly once, and
leaves tmp/ empty. A file another program left in tmp/ is removed only once it is older than 36 hours."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from conftest import DEADLINE, ON_CI, Closed, Server, Spool, server_binary, simple_message, unique_tag

POINT = "maildir.tmp-written"


@pytest.fixture(scope="module", autouse=True)
def _needs_crash_points():
    if b"DUALMTA_CRASH_AT" not in server_binary().read_bytes():
        message = "dualmta was built without crash points (release build); use a debug build"
        if ON_CI:
            pytest.fail(message)
        pytest.skip(message)


def mailbox(spool, sub: str) -> list[str]:
    d = spool / "mailboxes" / "lab.example" / "u" / sub
    return sorted(p.name for p in d.iterdir()) if d.is_dir() else []


def test_crash_between_tmp_and_rename_leaves_new_empty_and_start_up_cleans_tmp(start_server, monkeypatch):
    monkeypatch.setenv("DUALMTA_CRASH_AT", POINT)
    srv: Server = start_server()
    monkeypatch.delenv("DUALMTA_CRASH_AT")
    subject = unique_tag("atomic")
    message = simple_message(subject, b"a line of the body\r\n" * 200)
    c = srv.session()
    try:
        c.cmd(b"MAIL FROM:<a@r.example>").expect(250)
        c.cmd(b"RCPT TO:<u@lab.example>").expect(250)
        c.cmd(b"DATA").expect(354)
        c.send(message + b".\r\n")
        try:
            c.read_reply().expect(250)  # the runner may crash the daemon before or after this reply is written
        except (Closed, ConnectionError):
            pass
    finally:
        c.close()
    assert srv.proc is not None
    try:
        srv.proc.wait(DEADLINE)
    except subprocess.TimeoutExpired:
        pytest.fail(f"crash point {POINT} not reached; log:\n{srv.log_text()}")
    srv.kill()
    assert srv.proc.returncode == -signal.SIGKILL and f"crash-point {POINT}:" in srv.log_text(), srv.log_text()

    # At the crash: the whole copy is in tmp/, nothing a reader could see.
    assert mailbox(srv.spool, "new") == [] and mailbox(srv.spool, "cur") == []
    [crashed] = mailbox(srv.spool, "tmp")
    queued = Spool(srv.spool).queued_ids()
    assert len(queued) == 1 and f".{queued.pop()}." in crashed, (crashed, queued)

    # Files of other writers: one older than 36 hours (gone after the restart), one recent (kept).
    tmp = srv.spool / "mailboxes" / "lab.example" / "u" / "tmp"
    old, recent = tmp / "1700000000.M1P1R1.elsewhere", tmp / "1700000000.M2P2R2.elsewhere"
    old.write_bytes(b"half")
    recent.write_bytes(b"half")
    past = time.time() - 37 * 3600
    os.utime(old, (past, past))

    again = start_server(spool=srv.spool)
    again.wait_log(rf"maildir-tmp-removed .*{crashed}")
    again.wait_log(r"maildir-tmp-removed .*1700000000\.M1P1R1\.elsewhere")
    s = Spool(again.spool)
    s.settle(queued=0, delivered=1)
    [copy] = s.delivered()
    assert subject in copy.rest.decode("latin-1") and copy.rest.endswith(b"a line of the body\r\n" * 200)
    assert mailbox(again.spool, "tmp") == [recent.name]
    assert "maildir-tmp-removed" not in "\n".join(line for line in again.lines if recent.name in line)
