"""Crash-point harness (rows C02-C11): a debug build of dualmta honours DUALMTA_CRASH_AT=<point>[:<n>]
and SIGKILLs itself at the n-th pass of a named point (Sources/Spool/CrashPoint.swift lists them). Each test crashes
the server at one point with a real client (and, for the delivery path, a real SMTP sink), restarts it on the same
spool, and checks the invariants against what the client saw and what the sink got:

- no loss: a message the client got 250 for is delivered (or still queued);
- duplicates only in the known windows (after the commit but before the client saw 250; after a remote 250 but
  before the envelope update; a bounce committed before the original was marked);
- nothing partial: every delivered copy is byte-exact, incoming/ and queue temporaries are gone, corrupt/ is empty.

Plus plain `kill -9` of a daemon under load from 200 concurrent senders, with a before/after reconciliation.
C01 (mid-DATA) and a 30-sender kill -9 are in test_crash.py. C10 (a lock held across the crash) is implicit: every
restart here happens right after a SIGKILL, and dualmta takes no lock that could outlive it (flock only).
"""

from __future__ import annotations

import re
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import (DEADLINE, Closed, RawClient, Server, Spool, server_binary, simple_message,
                      unique_tag, wait_until)
from mtalog import outbound_settings
from peers import Behaviour, peers  # noqa: F401  (fixture)

CRASH_VARIABLE = "DUALMTA_CRASH_AT"
LOCAL = "u@lab.example"


@pytest.fixture(scope="module", autouse=True)
def _needs_crash_points():
    """A release binary compiles the hook out; the harness needs a debug build."""
    data = server_binary().read_bytes()
    if CRASH_VARIABLE.encode() not in data:
        pytest.skip("dualmta was built without crash points (release build); use a debug build")


@pytest.fixture
def crashing(start_server, monkeypatch):
    """crashing(point, n=1, **settings) -> a server armed to SIGKILL itself at the n-th pass of `point`."""
    def _start(point: str, n: int = 1, **settings) -> Server:
        monkeypatch.setenv(CRASH_VARIABLE, f"{point}:{n}")
        try:
            return start_server(**settings)
        finally:
            monkeypatch.delenv(CRASH_VARIABLE)
    return _start


def wait_crashed(srv: Server, point: str, timeout: float = DEADLINE) -> None:
    """The server died by SIGKILL at `point` (not from something else)."""
    assert srv.proc is not None
    try:
        srv.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"crash point {point} was not reached within {timeout}s; log:\n{srv.log_text()}")
    srv.kill()  # joins the log reader
    assert srv.proc.returncode == -signal.SIGKILL, f"exit {srv.proc.returncode}, not SIGKILL:\n{srv.log_text()}"
    assert f"crash-point {point}:" in srv.log_text(), f"died, but not at {point}:\n{srv.log_text()}"


def subject_of(raw: bytes) -> str:
    m = re.search(rb"(?:^|\r\n)Subject: (\S+)\r\n", raw)
    assert m, raw[:300]
    return m.group(1).decode()


def copies(spool: Path, subject: str) -> list[bytes]:
    """Delivered copies (the message after our Received header) of `subject` in every Maildir."""
    return [d.rest for d in Spool(spool).delivered() if subject_of(d.rest) == subject]


def maildir_of(spool: Path, address: str) -> list[Path]:
    user, domain = address.split("@")
    base = spool / "mailboxes" / domain / user
    return sorted(p for sub in ("new", "cur") for p in (base / sub).glob("*") if p.is_file())


def assert_clean(spool: Path) -> None:
    """Nothing partial after a restart: nothing half-written is left, nothing was quarantined."""
    s = Spool(spool)
    assert not s.incoming_files(), f"incoming/ not empty: {s.summary()}"
    tmp = [p.name for p in (spool / "queue").glob("*.tmp")]
    assert not tmp, f"envelope temporaries left in queue/: {tmp}"
    corrupt = sorted(p.name for p in (spool / "corrupt").iterdir()) if (spool / "corrupt").is_dir() else []
    assert not corrupt, f"a crash left something that recovery quarantined: {corrupt}"


def send_one(srv: Server, subject: str, rcpts: list[str], sender: str = "a@r.example") -> tuple[str, bytes]:
    """One transaction; returns ('250', message) or ('reset', message) when the connection died after the '.'."""
    message = simple_message(subject, b"line of the body\r\n" * 40)
    c = srv.session()
    try:
        c.cmd(f"MAIL FROM:<{sender}>".encode()).expect(250)
        for r in rcpts:
            c.cmd(f"RCPT TO:<{r}>".encode()).expect(250)
        c.cmd(b"DATA").expect(354)
        c.send(message + b".\r\n")  # nothing after the '.': a pipelined QUIT could turn the close into a reset
        try:
            reply = c.read_reply()
        except (Closed, ConnectionError):
            return "reset", message
        reply.expect(250)
        return "250", message
    finally:
        c.close()


# ---------------------------------------------------------------------------------------------------------------
# The commit path (C02-C05): what the client saw, what is there after the restart, what a retrying client causes.

@dataclass
class CommitCase:
    point: str
    row: str
    client_sees_250: bool
    after_restart: set[int]        # copies delivered after the restart
    after_retry: set[int] | None   # copies once a client that saw no 250 sent it again (None: it saw 250)
    on_disk: str                   # what the spool holds at the crash (state table of Spool.swift)


COMMIT_CASES = [
    CommitCase("commit.envelope-written", "C02", False, {0}, {1}, "incoming-both"),
    CommitCase("commit.files-synced", "C02", False, {0}, {1}, "incoming-both"),
    CommitCase("commit.message-renamed", "C02", False, {0}, {1}, "queue-msg-incoming-env"),
    # The rename is the commit; before fsync(queue/) a power loss could undo it, a process crash cannot.
    CommitCase("commit.envelope-renamed", "C03", False, {0, 1}, {1, 2}, "committed"),
    CommitCase("commit.directory-fsynced", "C04", False, {1}, {2}, "committed"),
    CommitCase("server.committed", "C04", False, {1}, {2}, "committed"),
    CommitCase("server.replied", "C05", True, {1}, None, "committed"),
]


@pytest.mark.parametrize("case", COMMIT_CASES, ids=lambda c: f"{c.row}-{c.point}")
def test_crash_in_commit_path(crashing, start_server, case: CommitCase):
    srv = crashing(case.point)
    subject = unique_tag(case.row)
    seen, message = send_one(srv, subject, [LOCAL])
    wait_crashed(srv, case.point)
    assert seen == ("250" if case.client_sees_250 else "reset"), f"client saw {seen} at {case.point}"

    # The disk at the crash is the state the table in Spool.swift names.
    inc = sorted(p.name.split(".", 1)[1] for p in (srv.spool / "incoming").iterdir())
    queue = sorted(p.name.split(".", 1)[1] for p in (srv.spool / "queue").iterdir())
    expected = {"incoming-both": (["env", "msg"], []),
                "queue-msg-incoming-env": (["env"], ["msg"])}.get(case.on_disk)
    if expected is not None:
        assert (inc, queue) == expected, f"at {case.point}: incoming={inc} queue={queue}"
    else:
        assert not inc, f"at {case.point}: incoming={inc}"  # committed: the data and envelope left incoming/

    again = start_server(spool=srv.spool)
    spool = Spool(srv.spool)
    wait_until(lambda: not spool.queue_files(), DEADLINE, "the queue to drain after the restart")
    got = copies(srv.spool, subject)
    assert len(got) in case.after_restart, f"{len(got)} copies after restart at {case.point}: {spool.summary()}"
    assert all(g == message for g in got), "a delivered copy differs from what was sent (partial?)"
    assert_clean(srv.spool)

    if case.after_retry is not None:
        seen, _ = send_one(again, subject, [LOCAL])
        assert seen == "250"
        wait_until(lambda: len(copies(srv.spool, subject)) >= min(case.after_retry), DEADLINE, "the retried copy")
        wait_until(lambda: not spool.queue_files() and not spool.incoming_files(), DEADLINE, "the queue to drain")
        assert len(copies(srv.spool, subject)) in case.after_retry
    again.assert_alive()


def test_c11_crash_loop_right_after_250(crashing, start_server):
    """C11: 20 times in a row the server dies right after a 250; restarted on the same spool each time. Every
    acknowledged message is delivered exactly once, no queue id is reused, nothing is left behind."""
    srv = crashing("server.replied")
    spool_dir = srv.spool
    acked: dict[str, str] = {}
    for round_ in range(20):
        subject = unique_tag(f"c11r{round_}")
        c = srv.session()
        reply = c.transaction("a@r.example", [LOCAL], simple_message(subject))
        c.close()
        acked[subject] = reply.queue_id()
        wait_crashed(srv, "server.replied")
        assert not Spool(spool_dir).incoming_files()
        if round_ < 19:
            srv = crashing("server.replied", spool=spool_dir)
    assert len(set(acked.values())) == 20, f"queue id reused: {acked}"
    final = start_server(spool=spool_dir)
    spool = Spool(spool_dir)
    spool.settle(0, 20)
    counts = {s: len(copies(spool_dir, s)) for s in acked}
    assert all(n == 1 for n in counts.values()), counts
    assert_clean(spool_dir)
    final.assert_alive()


# ---------------------------------------------------------------------------------------------------------------
# The delivery path (C06-C09, envelope updates, local delivery)


def outbound(routes: str, **extra) -> dict[str, str | None]:
    return outbound_settings(routes=routes, **extra)


@pytest.mark.parametrize("point", ["update.temp-fsynced", "update.renamed"])
def test_crash_in_envelope_update(crashing, start_server, peers, point):  # noqa: F811
    """A message to a local and a remote recipient; the remote says 450 first, so the run ends with an envelope
    update, which crashes. After the restart the old or the new envelope is in force (never a mix, never corrupt):
    the local copy exists exactly once (fixed Maildir names), the remote one arrives on the retry."""
    dest = peers(script=[Behaviour(rcpt="450 4.2.0 try later"), Behaviour()], name="dest")
    settings = outbound(f"remote.example=[127.0.0.1]:{dest.port}")
    srv = crashing(point, **settings)
    subject = unique_tag("upd")
    seen, message = send_one(srv, subject, [LOCAL, "r@remote.example"], sender="alice@src.example")
    assert seen == "250"
    wait_crashed(srv, point)
    tmp = list((srv.spool / "queue").glob("*.tmp"))
    assert len(tmp) == (1 if point == "update.temp-fsynced" else 0), [p.name for p in tmp]

    again = start_server(spool=srv.spool, **settings)
    dest.wait_messages(1, DEADLINE)
    wait_until(lambda: not Spool(srv.spool).queue_files(), DEADLINE, "the queue to drain")
    assert len(copies(srv.spool, subject)) == 1, Spool(srv.spool).summary()
    assert [m.rcpts for m in dest.messages] == [["r@remote.example"]]
    assert_clean(srv.spool)
    again.assert_alive()


def test_crash_after_local_delivery_before_update(crashing, start_server):
    """After the Maildir rename, before the envelope says so: the restart delivers again under the same fixed name,
    so the mailbox still holds one copy (better than the duplicate window allows)."""
    srv = crashing("local.delivered")
    subject = unique_tag("loc")
    seen, message = send_one(srv, subject, [LOCAL])
    assert seen == "250"
    wait_crashed(srv, "local.delivered")
    assert len(copies(srv.spool, subject)) == 1
    again = start_server(spool=srv.spool)
    Spool(srv.spool).settle(0, 1)
    assert copies(srv.spool, subject) == [message]
    assert_clean(srv.spool)
    again.assert_alive()


def test_c07_crash_after_remote_250_before_update(crashing, start_server, peers):  # noqa: F811
    """C07: the sink said 250, the envelope was not updated: the restart sends it again (duplicate, never loss)."""
    dest = peers(name="sink")
    settings = outbound(f"remote.example=[127.0.0.1]:{dest.port}")
    srv = crashing("outbound.remote-accepted", **settings)
    subject = unique_tag("c07")
    assert send_one(srv, subject, ["r@remote.example"], sender="alice@src.example")[0] == "250"
    wait_crashed(srv, "outbound.remote-accepted")
    assert len(dest.messages) == 1
    again = start_server(spool=srv.spool, **settings)
    wait_until(lambda: not Spool(srv.spool).queue_files(), DEADLINE, "the queue to drain")
    got = [m for m in dest.messages if subject_of(m.data) == subject]
    assert 1 <= len(got) <= 2, f"{len(got)} copies at the sink"
    assert_clean(srv.spool)
    again.assert_alive()


def test_c08_three_recipients_two_marked_then_crash(crashing, start_server, peers):  # noqa: F811
    """C08: two recipients delivered and marked in the first run, the third deferred; the crash hits right after
    the third is accepted on the retry. After the restart only the third is sent again."""
    one = peers(name="one")
    three = peers(script=[Behaviour(rcpt="450 4.2.0 later"), Behaviour()], name="three")
    settings = outbound(f"one.example=[127.0.0.1]:{one.port}, three.example=[127.0.0.1]:{three.port}")
    srv = crashing("outbound.remote-accepted", 3, **settings)
    subject = unique_tag("c08")
    rcpts = ["a1@one.example", "a2@one.example", "b@three.example"]
    assert send_one(srv, subject, rcpts, sender="alice@src.example")[0] == "250"
    wait_crashed(srv, "outbound.remote-accepted", timeout=DEADLINE + 5)
    again = start_server(spool=srv.spool, **settings)
    wait_until(lambda: not Spool(srv.spool).queue_files(), DEADLINE, "the queue to drain")
    assert [m.rcpts for m in one.messages] == [["a1@one.example", "a2@one.example"]], one.describe()
    got = [m.rcpts for m in three.messages]
    assert got in ([["b@three.example"]], [["b@three.example"]] * 2), three.describe()
    assert_clean(srv.spool)
    again.assert_alive()


def test_c09_bounce_committed_original_not_marked(crashing, start_server, peers):  # noqa: F811
    """C09: the report is committed as its own queue entry, the crash comes before the original is marked: at most
    two reports, never none."""
    dest = peers(script=Behaviour(rcpt="550 5.1.1 no such user"), name="dest")
    settings = outbound(f"remote.example=[127.0.0.1]:{dest.port}")
    srv = crashing("bounce.committed", **settings)
    subject = unique_tag("c09")
    assert send_one(srv, subject, ["nobody@remote.example"], sender=LOCAL)[0] == "250"
    wait_crashed(srv, "bounce.committed")
    again = start_server(spool=srv.spool, **settings)
    wait_until(lambda: not Spool(srv.spool).queue_files(), DEADLINE, "the queue to drain")
    reports = maildir_of(srv.spool, LOCAL)
    assert 1 <= len(reports) <= 2, f"{len(reports)} reports"
    for p in reports:
        assert subject.encode() in p.read_bytes(), "the report does not quote the failed message"
    assert not dest.messages
    assert_clean(srv.spool)
    again.assert_alive()


def test_c06_kill_after_dot_before_remote_reply(start_server, peers):  # noqa: F811
    """C06, driven by the sink (plain kill -9): the remote has the whole message, its reply is still pending. After
    the restart the message goes again: the sink may see it twice, it is never lost."""
    dest = peers(script=[Behaviour(eod_delay=15), Behaviour()], name="slow-sink")
    settings = outbound(f"remote.example=[127.0.0.1]:{dest.port}", smtp_reply_timeout="10s")
    srv = start_server(**settings)
    subject = unique_tag("c06")
    assert send_one(srv, subject, ["r@remote.example"], sender="alice@src.example")[0] == "250"
    dest.wait(lambda p: p.sessions and p.sessions[0].data is not None, DEADLINE, "the message at the sink")
    srv.kill()
    again = start_server(spool=srv.spool, **settings)
    dest.wait_messages(1, DEADLINE)
    wait_until(lambda: not Spool(srv.spool).queue_files(), DEADLINE, "the queue to drain")
    with_data = [s for s in dest.sessions if s.data is not None and subject_of(s.data) == subject]
    assert 1 <= len(with_data) <= 2
    assert_clean(srv.spool)
    again.assert_alive()


# ---------------------------------------------------------------------------------------------------------------
# kill -9 under load: 200 concurrent senders


SENDERS = 200
KILL_AFTER = 300  # acknowledged messages before the kill


@dataclass
class Attempt:
    subject: str
    dot_sent: bool = False
    got_250: bool = False


def test_kill9_under_load_every_250_accounted_for(start_server):
    """200 concurrent senders (100 per family) send message after message; kill -9 after 300 acknowledgements.
    Before the restart every acknowledged message is in queue/ or a Maildir; after it, every one is delivered exactly
    once, messages whose 250 was lost in the crash at most once, messages without a final '.' never."""
    settings = {"max_connections_per_client": "150"}
    srv = start_server(**settings)
    cond = threading.Condition()
    attempts: list[Attempt] = []
    killed = threading.Event()
    ok = [0]
    errors: list[str] = []

    def sender(host: str) -> None:
        try:
            c = RawClient(host, srv.port, timeout=30)
            c.read_reply(30).expect(220)
            c.cmd(b"EHLO load.example", 30).expect(250)
            while not killed.is_set():
                a = Attempt(unique_tag("load"))
                with cond:
                    attempts.append(a)
                c.cmd(b"MAIL FROM:<a@r.example>", 30).expect(250)
                c.cmd(f"RCPT TO:<{LOCAL}>".encode(), 30).expect(250)
                c.cmd(b"DATA", 30).expect(354)
                c.send(simple_message(a.subject, b"x\r\n" * 10))
                a.dot_sent = True
                c.send(b".\r\n")
                c.read_reply(30).expect(250)
                with cond:
                    a.got_250 = True
                    ok[0] += 1
                    cond.notify_all()
        except (Closed, ConnectionError, OSError, TimeoutError, AssertionError) as exc:
            if not killed.is_set():
                with cond:
                    errors.append(repr(exc))
                    cond.notify_all()

    threads = [threading.Thread(target=sender, args=("::1" if i % 2 else "127.0.0.1",), daemon=True)
               for i in range(SENDERS)]
    for t in threads:
        t.start()
    end = time.monotonic() + 90
    with cond:
        while ok[0] < KILL_AFTER and not errors:
            assert time.monotonic() < end, f"only {ok[0]} acknowledged; log:\n{srv.log_text()[-3000:]}"
            cond.wait(0.2)
        assert not errors, f"senders failed before the kill: {errors[:5]}"
        seen = ok[0]
        while ok[0] == seen:
            cond.wait(0.1)
        srv.kill()
        killed.set()
        acked = {a.subject for a in attempts if a.got_250}
    for t in threads:
        t.join(40)
    assert not any(t.is_alive() for t in threads), "a sender hangs after the kill"

    # Before the restart: every 250 is on disk, in queue/ (not yet delivered) or in a Maildir.
    spool = Spool(srv.spool)
    delivered_before = {subject_of(d.rest) for d in spool.delivered()}
    queued_subjects = set()
    for p in spool.queue_files():
        if p.suffix == ".msg":
            queued_subjects.add(subject_of(p.read_bytes()))
    missing = acked - delivered_before - queued_subjects
    assert not missing, f"{len(missing)} acknowledged messages are neither queued nor delivered at the kill"

    again = start_server(spool=srv.spool, **settings)
    wait_until(lambda: not spool.queue_files(), 60, "the queue to drain after the restart")
    counts: dict[str, int] = {}
    for d in spool.delivered():
        s = subject_of(d.rest)
        counts[s] = counts.get(s, 0) + 1
    by_subject = {a.subject: a for a in attempts}
    assert not set(counts) - set(by_subject), "delivered messages nobody sent"
    lost = [s for s in acked if counts.get(s, 0) == 0]
    dup = [s for s in acked if counts.get(s, 0) > 1]
    partial = [s for s, a in by_subject.items() if not a.dot_sent and counts.get(s, 0)]
    in_flight_dup = [s for s, a in by_subject.items() if a.dot_sent and not a.got_250 and counts.get(s, 0) > 1]
    print(f"kill -9 under load: {len(acked)} acknowledged, {len(queued_subjects)} queued and "
          f"{len(delivered_before)} delivered at the kill, "
          f"{sum(1 for a in attempts if a.dot_sent and not a.got_250)} in flight")
    assert not lost, f"acknowledged but lost: {lost[:5]}"
    assert not dup, f"acknowledged and delivered twice: {dup[:5]}"
    assert not partial, f"delivered without an end of data: {partial[:5]}"
    assert not in_flight_dup, f"in flight and delivered twice: {in_flight_dup[:5]}"
    assert_clean(srv.spool)
    again.assert_alive()
