"""The commit protocol, proven by its system calls: the real daemon runs under `strace -f -y`, several clients send
mail at once (local Maildir deliveries, relayed messages that are deferred and get their envelope rewritten, and
messages with both), and synctrace.check() verifies, for every message, that each file was fsynced before it was
renamed into queue/ or a Maildir new/ (the commit syncs a message's two files at once, on several threads), that
the envelope reached queue/ after its data, that queue/ was fsynced before the 250 naming the message, that an
envelope update fsyncs queue/, and that a Maildir new/ is fsynced before the queue entry goes (docs/durability.md).

A kill -9 keeps the page cache, so no crash test can see a missing fsync; this test can. The first tests feed the
checker hand-written traces, good and bad, so it cannot pass by checking nothing.
"""

from __future__ import annotations

import os
import re
import signal
import smtplib
import subprocess
import threading
import time
from pathlib import Path

import pytest

from conftest import DEADLINE, Server, default_settings, free_port, require_tool, simple_message, unique_tag
from mtalog import outbound_settings
from synctrace import check, parse

SPOOL = "/s"

# A commit of one message by a group-commit thread (201) answered by a session thread (200), written the way strace
# prints it. The data file and the envelope are synced in one round: the commit thread fdatasyncs the data while its
# sync lane (203) fdatasyncs the envelope, so both calls are split into `<unfinished ...>` and `<... resumed>` lines
# around each other (and around the session's unrelated reply).
GOOD_COMMIT = """\
200 1.000001 openat(AT_FDCWD</>, "/s/incoming/ID1.msg", O_WRONLY|O_CREAT|O_EXCL, 0600) = 12</s/incoming/ID1.msg>
201 1.000002 write(12</s/incoming/ID1.msg>, "Received: x\\r\\n", 13) = 13
201 1.000003 openat(AT_FDCWD</>, "/s/incoming/ID1.env", O_WRONLY|O_CREAT|O_EXCL, 0600) = 13</s/incoming/ID1.env>
201 1.000004 write(13</s/incoming/ID1.env>, "DUALMTA-ENV 1\\n", 14) = 14
201 1.000005 sync_file_range(12</s/incoming/ID1.msg>, 0, 0, SYNC_FILE_RANGE_WRITE) = 0
201 1.000006 sync_file_range(13</s/incoming/ID1.env>, 0, 0, SYNC_FILE_RANGE_WRITE) = 0
201 1.000007 fdatasync(12</s/incoming/ID1.msg> <unfinished ...>
203 1.000008 fdatasync(13</s/incoming/ID1.env> <unfinished ...>
200 1.000009 sendto(9<socket:[1]>, "250 2.1.5 Ok\\r\\n", 14, MSG_NOSIGNAL, NULL, 0) = 14
201 1.000010 <... fdatasync resumed>) = 0
203 1.000011 <... fdatasync resumed>) = 0
201 1.000012 rename("/s/incoming/ID1.msg", "/s/queue/ID1.msg") = 0
201 1.000013 rename("/s/incoming/ID1.env", "/s/queue/ID1.env") = 0
201 1.000014 openat(AT_FDCWD</>, "/s/queue", O_RDONLY|O_DIRECTORY) = 14</s/queue>
201 1.000015 fsync(14</s/queue>) = 0
200 1.000016 sendto(9<socket:[1]>, "250 2.0.0 Ok: queued as ID1\\r\\n", 30, MSG_NOSIGNAL, NULL, 0) = 30
"""

# Local delivery of ID1 by a runner thread (202), then the queue entry removed.
GOOD_DELIVERY = """\
202 2.000001 openat(18</s/mailboxes/d/u/tmp>, "9.ID1.R0.h", O_WRONLY|O_CREAT|O_EXCL, 0600) = 22</s/mailboxes/d/u/tmp/9.ID1.R0.h>
202 2.000002 write(22</s/mailboxes/d/u/tmp/9.ID1.R0.h>, "Return-Path: <a@b>\\r\\n", 20) = 20
202 2.000003 fsync(22</s/mailboxes/d/u/tmp/9.ID1.R0.h>) = 0
202 2.000004 renameat(18</s/mailboxes/d/u/tmp>, "9.ID1.R0.h", 19</s/mailboxes/d/u/new>, "9.ID1.R0.h") = 0
202 2.000005 fsync(19</s/mailboxes/d/u/new>) = 0
202 2.000006 unlink("/s/queue/ID1.env") = 0
202 2.000007 unlink("/s/queue/ID1.msg") = 0
"""

# An envelope update of ID1 (the runner deferred a recipient).
GOOD_UPDATE = """\
202 3.000001 openat(AT_FDCWD</>, "/s/queue/ID1.ABCDEFGH.tmp", O_WRONLY|O_CREAT|O_EXCL, 0600) = 15</s/queue/ID1.ABCDEFGH.tmp>
202 3.000002 write(15</s/queue/ID1.ABCDEFGH.tmp>, "DUALMTA-ENV 1\\n", 14) = 14
202 3.000003 fsync(15</s/queue/ID1.ABCDEFGH.tmp>) = 0
202 3.000004 rename("/s/queue/ID1.ABCDEFGH.tmp", "/s/queue/ID1.env") = 0
202 3.000005 openat(AT_FDCWD</>, "/s/queue", O_RDONLY|O_DIRECTORY) = 16</s/queue>
202 3.000006 fsync(16</s/queue>) = 0
"""


def without(trace: str, *fragments: str) -> str:
    """The trace without the lines containing any of `fragments` (each must match exactly one line)."""
    lines = trace.splitlines(keepends=True)
    for fragment in fragments:
        hits = [line for line in lines if fragment in line]
        assert len(hits) == 1, f"{fragment!r} matches {len(hits)} lines"
    return "".join(line for line in lines if not any(f in line for f in fragments))


def test_parser_joins_unfinished_and_resumed_lines_of_interleaved_threads():
    calls = parse(GOOD_COMMIT)
    syncs = {c.args[0]: c for c in calls if c.name == "fdatasync"}
    data, envelope = syncs["12</s/incoming/ID1.msg>"], syncs["13</s/incoming/ID1.env>"]
    assert (data.start, data.end, data.pid, data.result) == (6, 9, 201, "0")
    assert (envelope.start, envelope.end, envelope.pid, envelope.result) == (7, 10, 203, "0")
    assert data.start < envelope.start < data.end < envelope.end  # one round: the two syncs overlap
    reply = [c for c in calls if c.name == "sendto"][-1]
    assert reply.args[1] == '"250 2.0.0 Ok: queued as ID1\\r\\n"' and reply.pid == 200
    # sync_file_range is parsed; signals and exits are skipped; a call cut by death has no result.
    extra = parse('7 1.0 --- SIGTERM {si_signo=SIGTERM} ---\n7 1.1 fsync(3</a>) = ?\n7 1.2 +++ killed by SIGKILL +++\n')
    assert extra == []
    with pytest.raises(ValueError):
        parse("7 1.0 <... fsync resumed>) = 0\n")


def test_good_orders_pass_and_every_part_is_counted():
    report = check(GOOD_COMMIT + GOOD_DELIVERY + GOOD_UPDATE, SPOOL)
    assert report.violations == []
    assert report.committed == {"ID1"} and report.moves_checked == 4 and report.commit_points == {"ID1"}
    assert report.maildir_deliveries == {"ID1"} and report.envelope_updates == {"ID1"}


@pytest.mark.parametrize("trace, fragments, rule", [
    # the data file's sync (printed split in two lines) removed
    (GOOD_COMMIT, ("fdatasync(12</s/incoming/ID1.msg> <unfinished", "201 1.000010 <... fdatasync resumed>"),
     "rule 1"),
    # the envelope's sync (on the sync lane) removed
    (GOOD_COMMIT, ("fdatasync(13</s/incoming/ID1.env> <unfinished", "203 1.000011 <... fdatasync resumed>"),
     "rule 1"),
    (GOOD_COMMIT, ("fsync(14</s/queue>)",), "rule 2"),  # the directory fsync removed
    (GOOD_UPDATE, ("fsync(15</s/queue/ID1.ABCDEFGH.tmp>)",), "rule 1"),
    (GOOD_UPDATE, ("fsync(16</s/queue>)",), "rule 3"),
    (GOOD_DELIVERY, ("fsync(22</s/mailboxes/d/u/tmp/9.ID1.R0.h>)",), "rule 1"),
    (GOOD_DELIVERY, ("fsync(19</s/mailboxes/d/u/new>)",), "rule 4"),
])
def test_a_missing_fsync_is_a_violation(trace, fragments, rule):
    bad = without(trace, *fragments)
    context = GOOD_COMMIT if trace is not GOOD_COMMIT else ""
    violations = check(context + bad, SPOOL).violations
    assert violations and all(v.startswith(rule) for v in violations), violations


def swap(trace: str, first: str, second: str) -> str:
    lines = trace.splitlines()
    i = next(n for n, line in enumerate(lines) if first in line)
    j = next(n for n, line in enumerate(lines) if second in line)
    lines[i], lines[j] = lines[j], lines[i]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("trace, first, second, rule", [
    # the commit point (the envelope's rename) before the data is in queue/
    (GOOD_COMMIT, 'rename("/s/incoming/ID1.msg"', 'rename("/s/incoming/ID1.env"', "rule 6"),
    # the 250 written before the directory fsync
    (GOOD_COMMIT, "fsync(14</s/queue>)", "queued as ID1", "rule 2"),
    # a write after the fsync
    (GOOD_UPDATE, "write(15<", "fsync(15<", "rule 1"),
    # the queue entry removed before new/ is fsynced
    (GOOD_DELIVERY, "fsync(19</s/mailboxes/d/u/new>)", 'unlink("/s/queue/ID1.env")', "rule 4"),
])
def test_a_wrong_order_is_a_violation(trace, first, second, rule):
    bad = swap(trace, first, second)
    context = GOOD_COMMIT if trace is not GOOD_COMMIT else ""
    violations = check(context + bad, SPOOL).violations
    assert violations and all(v.startswith(rule) for v in violations), violations


def move_below(trace: str, moved: str, anchor: str) -> str:
    """The trace with the line containing `moved` taken out and put back just below the line containing `anchor`."""
    lines = trace.splitlines()
    line = lines.pop(next(n for n, text in enumerate(lines) if moved in text))
    lines.insert(next(n for n, text in enumerate(lines) if anchor in text) + 1, line)
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("resumed, rename", [
    # the sync lane still syncing the envelope when the envelope is renamed
    ("203 1.000011 <... fdatasync resumed>", 'rename("/s/incoming/ID1.env"'),
    # the data's sync still running when the data is renamed
    ("201 1.000010 <... fdatasync resumed>", 'rename("/s/incoming/ID1.msg"'),
])
def test_a_sync_that_ends_after_its_rename_started_does_not_count(resumed, rename):
    # The syncs are issued at once on several threads; each must have ended before its own file's rename.
    violations = check(move_below(GOOD_COMMIT, resumed, rename), SPOOL).violations
    assert len(violations) == 1 and violations[0].startswith("rule 1"), violations


@pytest.mark.parametrize("old, new", [
    # The Maildir copy written straight into new/ (then "renamed" onto itself).
    ('openat(18</s/mailboxes/d/u/tmp>, "9.ID1.R0.h", O_WRONLY|O_CREAT|O_EXCL, 0600) = 22</s/mailboxes/d/u/tmp/9.ID1.R0.h>',
     'openat(19</s/mailboxes/d/u/new>, "9.ID1.R0.h", O_WRONLY|O_CREAT|O_EXCL, 0600) = 22</s/mailboxes/d/u/new/9.ID1.R0.h>'),
    # The envelope written under its final name.
    ('openat(AT_FDCWD</>, "/s/queue/ID1.ABCDEFGH.tmp", O_WRONLY|O_CREAT|O_EXCL, 0600) = 15</s/queue/ID1.ABCDEFGH.tmp>',
     'openat(AT_FDCWD</>, "/s/queue/ID1.env", O_WRONLY|O_CREAT|O_TRUNC, 0600) = 15</s/queue/ID1.env>'),
])
def test_a_file_created_under_its_final_name_is_a_violation(old, new):
    trace = GOOD_COMMIT + GOOD_DELIVERY + GOOD_UPDATE
    assert old in trace
    violations = check(trace.replace(old, new), SPOOL).violations
    assert any(v.startswith("rule 5") for v in violations), violations


def test_a_directory_fsync_that_started_before_the_rename_does_not_count():
    # The fsync of queue/ overlaps the rename (another thread): it may have missed the new entry.
    trace = GOOD_COMMIT.replace(
        '201 1.000013 rename("/s/incoming/ID1.env", "/s/queue/ID1.env") = 0\n'
        "201 1.000014 openat(AT_FDCWD</>, \"/s/queue\", O_RDONLY|O_DIRECTORY) = 14</s/queue>\n"
        "201 1.000015 fsync(14</s/queue>) = 0\n",
        '201 1.000013 rename("/s/incoming/ID1.env", "/s/queue/ID1.env" <unfinished ...>\n'
        "203 1.000014 fsync(14</s/queue>) = 0\n"
        "201 1.000015 <... rename resumed>) = 0\n")
    violations = check(trace, SPOOL).violations
    assert len(violations) == 1 and violations[0].startswith("rule 2"), violations


# ---------------------------------------------------------------------------------------------------------------
# The real daemon under strace

CLIENTS = 6
PER_CLIENT = 3
# "?name": some architectures (arm64) have only the *at calls; strace must not refuse the list there.
TRACED = ("openat,?open,write,pwrite64,writev,sendto,sendmsg,fsync,fdatasync,?sync_file_range,"
          "?rename,?renameat,renameat2,?link,linkat,?unlink,unlinkat")


def children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


@pytest.fixture
def traced_server(tmp_path):
    """A dualmta under `strace -f`, routing remote.example to a closed loopback port (every relay attempt is
    refused, so the runner defers and rewrites the envelope). Yields (server, trace path)."""
    strace = require_tool("strace")
    spool = tmp_path / "spool"
    trace = tmp_path / "trace.txt"
    settings = default_settings(spool)
    settings.update(outbound_settings(routes=f"remote.example=[127.0.0.1]:{free_port()}", retry_schedule="1h"))
    srv = Server(tmp_path, spool, settings, free_port(), "traced")
    srv.wrapper = [strace, "-f", "-y", "-ttt", "-s", "256", "-e", f"trace={TRACED}", "-o", str(trace)]
    srv.start(timeout=3 * DEADLINE)
    try:
        yield srv, trace
    finally:
        srv.stop()


def stop_traced(srv: Server) -> None:
    """SIGTERM the daemon itself (strace ignores it as a background job) and wait for strace to end, so the trace is
    complete: a clean stop lets deliveries in progress finish first."""
    assert srv.proc is not None
    daemons = children(srv.proc.pid)
    assert len(daemons) == 1, f"expected strace to have one child, found {daemons}"
    os.kill(daemons[0], signal.SIGTERM)
    try:
        srv.proc.wait(3 * DEADLINE)
    except subprocess.TimeoutExpired:
        pytest.fail(f"dualmta under strace did not stop after SIGTERM; log:\n{srv.log_text()}")


def test_every_message_follows_the_commit_protocol_under_concurrent_load(traced_server):
    srv, trace = traced_server
    kinds = ["local", "relay", "both"]
    rcpts = {"local": ["u@lab.example"], "relay": ["far@remote.example"],
             "both": ["v@lab.example", "far@remote.example"]}
    sent: dict[str, str] = {}  # queue id -> kind
    errors: list[BaseException] = []
    lock = threading.Lock()
    start = threading.Barrier(CLIENTS)

    def client(number: int) -> None:
        try:
            with smtplib.SMTP("127.0.0.1", srv.port, timeout=3 * DEADLINE) as smtp:
                smtp.ehlo("strace.example")
                start.wait(DEADLINE)
                for n in range(PER_CLIENT):
                    kind = kinds[(number + n) % len(kinds)]
                    smtp.mail("a@r.example")
                    for rcpt in rcpts[kind]:
                        code, _ = smtp.rcpt(rcpt)
                        assert code == 250, (rcpt, code)
                    code, text = smtp.data(simple_message(unique_tag(kind), b"body\r\n" * 50))
                    m = re.search(rb"queued as (\S+)", text)
                    assert code == 250 and m, (code, text)
                    with lock:
                        sent[m.group(1).decode()] = kind
        except BaseException as exc:  # noqa: BLE001  (reported below, with the others)
            with lock:
                errors.append(exc)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(6 * DEADLINE)
    assert not errors, errors
    assert len(sent) == CLIENTS * PER_CLIENT

    # Wait for the runner's work: local-only entries removed, the others' envelopes rewritten after the deferral.
    queue = srv.spool / "queue"

    def settled() -> bool:
        for qid, kind in sent.items():
            env = queue / f"{qid}.env"
            if kind == "local":
                if env.exists():
                    return False
            else:
                try:
                    if b"\nruns 1\n" not in env.read_bytes():  # the envelope records the first deferred run
                        return False
                except FileNotFoundError:
                    return False
        return True

    end = time.monotonic() + 6 * DEADLINE
    while not settled() and time.monotonic() < end:
        time.sleep(0.05)  # poll interval inside the deadline loop
    unsettled = None if settled() else sorted(p.name for p in queue.iterdir())
    stop_traced(srv)

    # The order of the calls first: a protocol bug can also keep the queue from settling, and this says why.
    report = check(trace.read_text(errors="surrogateescape"), os.path.realpath(srv.spool))
    assert report.violations == [], "\n".join(report.violations)
    assert unsettled is None, f"queue did not settle: {unsettled}\n{srv.log_text()}"
    # The check saw every message: each 250, each local copy, each deferral's envelope update.
    assert report.committed >= set(sent), set(sent) - report.committed
    assert report.commit_points >= set(sent), set(sent) - report.commit_points
    local = {qid for qid, kind in sent.items() if kind != "relay"}
    deferred = {qid for qid, kind in sent.items() if kind != "local"}
    assert report.maildir_deliveries == local
    assert report.envelope_updates >= deferred, deferred - report.envelope_updates
    assert report.moves_checked >= 2 * len(sent) + len(local) + len(deferred)
