"""Maildir files as mail tools expect them: LF line ends, `Return-Path:` first and `Delivered-To:` second, read back
by Python's `mailbox.Maildir`, by grep, and by a real mail reader (mutt, in a pseudo-terminal, piping every message
to a file). Messages arrive over real SMTP on loopback."""

from __future__ import annotations

import mailbox
import os
import pty
import select
import signal
import subprocess
import time
from pathlib import Path

from conftest import DEADLINE, require_tool, wait_until
from mtalog import maildir

SUBJECTS = ["first", "second with dots", "third"]


def deliver_three(srv) -> Path:
    for number, subject in enumerate(SUBJECTS, start=1):
        with srv.session() as client:
            body = (f"From: <a@lab.example>\r\nTo: <u@lab.example>\r\nSubject: {subject}\r\nX-Id: {number}\r\n\r\n"
                    f"line one of {number}\r\n..leading dot\r\n").encode()
            client.transaction("a@lab.example", ["u@lab.example"], body).expect(250)
            client.cmd(b"QUIT").expect(221)
    wait_until(lambda: len(maildir(srv.spool, "lab.example", "u")) == 3, what="three messages in u's Maildir")
    return srv.spool / "mailboxes" / "lab.example" / "u"


def test_maildir_files_have_lf_return_path_and_delivered_to_first(mta):
    box = deliver_three(mta)
    for path in sorted((box / "new").iterdir()):
        data = path.read_bytes()
        assert b"\r" not in data, f"CR in a Maildir file: {data[:200]!r}"
        lines = data.split(b"\n")
        assert lines[0] == b"Return-Path: <a@lab.example>", lines[:3]
        assert lines[1] == b"Delivered-To: u@lab.example", lines[:3]
        assert lines[2].startswith(b"Received: "), lines[:3]
        assert b"\n.leading dot\n" in data, "dot-stuffing left in the stored message"
    # What users do with LF files: a plain anchored grep finds exactly one message.
    found = subprocess.run(["grep", "-l", "^X-Id: 2$", "-r", str(box / "new")], capture_output=True, timeout=30)
    assert found.returncode == 0 and len(found.stdout.splitlines()) == 1, found


def test_python_mailbox_reads_every_message(mta):
    box = mailbox.Maildir(str(deliver_three(mta)), factory=None, create=False)
    messages = sorted(box, key=lambda m: m["X-Id"])
    assert [m["Subject"] for m in messages] == SUBJECTS
    for number, message in enumerate(messages, start=1):
        assert message["Delivered-To"] == "u@lab.example"
        assert message["Return-Path"] == "<a@lab.example>"
        assert message.get_payload() == f"line one of {number}\n.leading dot\n"


def run_in_terminal(argv: list[str], env: dict[str, str], timeout: float = DEADLINE * 2) -> tuple[int, str]:
    """Runs a full-screen program in a pseudo-terminal until it exits; returns its status and screen output."""
    pid, fd = pty.fork()
    if pid == 0:
        os.execvpe(argv[0], argv, env)
    end = time.monotonic() + timeout
    reaped = False
    screen = b""
    try:
        while True:
            finished, status = os.waitpid(pid, os.WNOHANG)
            if finished:
                reaped = True
                return os.waitstatus_to_exitcode(status), screen.decode("latin-1")
            if time.monotonic() >= end:
                raise AssertionError(f"{argv[0]} did not finish within {timeout}s")
            readable, _, _ = select.select([fd], [], [], 0.1)
            if readable:
                try:
                    screen += os.read(fd, 65536)
                except OSError:
                    pass  # EIO once the child closed the terminal
    finally:
        if not reaped:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        os.close(fd)


def test_mutt_opens_the_maildir_and_pipes_every_message(mta, tmp_path):
    mutt = require_tool("mutt")
    box = deliver_three(mta)
    out = tmp_path / "piped.txt"
    # Tag every message and pipe each one separately (pipe_split) to a file, then leave; -R: read-only.
    keys = f"<tag-pattern>~A<enter><pipe-entry>cat >> {out}<enter><exit>"
    argv = [mutt, "-n", "-F", "/dev/null", "-R", "-f", str(box),
            "-e", "set pipe_split=yes pipe_decode=no wait_key=no auto_tag=yes",
            "-e", f"push '{keys}'"]
    # A missing ~/Mail makes mutt beep at start and drop the pushed keys: give it a home with one.
    home = tmp_path / "home"
    (home / "Mail").mkdir(parents=True)
    env = {"TERM": "vt100", "HOME": str(home), "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    status, screen = run_in_terminal(argv, env)
    assert status == 0, screen
    piped = out.read_text()
    assert piped.count("Delivered-To: u@lab.example\n") == 3, (piped, screen)
    for number, subject in enumerate(SUBJECTS, start=1):
        assert f"Subject: {subject}\n" in piped and f"line one of {number}\n" in piped, piped
