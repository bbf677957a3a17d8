"""kill -9 while sessions are mid-DATA and right after some got their 250; restart on the same spool.

Invariants (docs/rules.md): no loss (every 250 is delivered), nothing partial (a message whose final '.' was never
sent never appears), duplicates only in the known window (a message whose '.' was sent but whose 250 was lost in the
crash may appear at most once). incoming/ is empty after the restart.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass

import pytest

from conftest import RawClient, Spool, simple_message, unique_tag, wait_until

SENDERS_MID_DATA = 10    # stop in the middle of DATA and stay there
SENDERS_LOOPING = 20     # send message after message until the server dies
KILL_AFTER_250S = 30     # this many 250s before the kill is armed


@dataclass
class Attempt:
    subject: str
    group: str
    dot_sent: bool = False
    got_250: bool = False


class Recorder:
    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.attempts: list[Attempt] = []
        self.ok = 0
        self.mid_data_ready = 0
        self.killed = threading.Event()

    def new(self, group: str) -> Attempt:
        a = Attempt(unique_tag(f"crash-{group}"), group)
        with self.cond:
            self.attempts.append(a)
        return a


def open_transaction(port: int, host: str, a: Attempt) -> RawClient:
    c = RawClient(host, port)
    c.read_reply().expect(220)
    c.cmd(b"EHLO crash.example").expect(250)
    return c


def mid_data_sender(port: int, host: str, rec: Recorder) -> None:
    a = rec.new("mid")
    try:
        c = open_transaction(port, host, a)
        c.cmd(b"MAIL FROM:<a@r.example>").expect(250)
        c.cmd(b"RCPT TO:<u@lab.example>").expect(250)
        c.cmd(b"DATA").expect(354)
        message = simple_message(a.subject, b"first part of the body\r\n" * 50)
        c.send(message)  # no final '.'
        with rec.cond:
            rec.mid_data_ready += 1
            rec.cond.notify_all()
        c.read_reply(timeout=60)  # blocks until the kill closes the connection
    except Exception:
        pass


def looping_sender(port: int, host: str, rec: Recorder) -> None:
    try:
        c = open_transaction(port, host, Attempt("", ""))
        for _ in range(200):
            if rec.killed.is_set():
                return
            a = rec.new("loop")
            c.cmd(b"MAIL FROM:<a@r.example>").expect(250)
            c.cmd(b"RCPT TO:<u@lab.example>").expect(250)
            c.cmd(b"DATA").expect(354)
            c.send(simple_message(a.subject, b"body line\r\n" * 20))
            a.dot_sent = True  # before the write: once it starts, the server may see the end of data
            c.send(b".\r\n")
            c.read_reply(timeout=60).expect(250)
            with rec.cond:
                a.got_250 = True
                rec.ok += 1
                rec.cond.notify_all()
    except Exception:
        pass


def subject_of(rest: bytes) -> str:
    m = re.search(rb"(?:^|\r\n)Subject: (\S+)\r\n", rest)
    assert m, rest[:300]
    return m.group(1).decode()


@pytest.mark.parametrize("trial", range(3))  # the kill lands at a different point each time
def test_kill9_mid_data_and_restart(start_server, trial: int):
    srv = start_server()
    rec = Recorder()
    threads = [threading.Thread(target=mid_data_sender, args=(srv.port, "127.0.0.1" if i % 2 else "::1", rec))
               for i in range(SENDERS_MID_DATA)]
    threads += [threading.Thread(target=looping_sender, args=(srv.port, "::1" if i % 2 else "127.0.0.1", rec))
                for i in range(SENDERS_LOOPING)]
    for t in threads:
        t.start()

    deadline = time.monotonic() + 60
    with rec.cond:
        while not (rec.mid_data_ready == SENDERS_MID_DATA and rec.ok >= KILL_AFTER_250S):
            assert time.monotonic() < deadline, (f"senders did not get going: mid={rec.mid_data_ready} "
                                                 f"ok={rec.ok}\n{srv.log_text()}")
            rec.cond.wait(0.1)
        # Kill right after the next 250 reaches a client.
        seen = rec.ok
        while rec.ok == seen:
            assert time.monotonic() < deadline
            rec.cond.wait(0.1)
        srv.kill()
        rec.killed.set()
    queued_at_kill = len(Spool(srv.spool).queued_ids())
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads), "a sender thread hangs after the kill"

    restarted = start_server(spool=srv.spool)
    spool = Spool(srv.spool)
    wait_until(lambda: not spool.queue_files(), 60, "the queue to drain after the restart")

    counts: dict[str, int] = {}
    for d in spool.delivered():
        s = subject_of(d.rest)
        counts[s] = counts.get(s, 0) + 1
    by_subject = {a.subject: a for a in rec.attempts}
    unknown = set(counts) - set(by_subject)
    assert not unknown, f"delivered messages nobody sent: {unknown}"

    acked = [a for a in rec.attempts if a.got_250]
    lost = [a.subject for a in acked if counts.get(a.subject, 0) == 0]
    duplicated = [a.subject for a in acked if counts.get(a.subject, 0) > 1]
    partial = [a.subject for a in rec.attempts if not a.dot_sent and counts.get(a.subject, 0)]
    in_flight = [a for a in rec.attempts if a.dot_sent and not a.got_250]
    in_flight_delivered = [a.subject for a in in_flight if counts.get(a.subject, 0) == 1]
    in_flight_duplicated = [a.subject for a in in_flight if counts.get(a.subject, 0) > 1]
    print(f"crash test: {len(acked)} acknowledged, {len(in_flight)} in flight at the kill "
          f"({len(in_flight_delivered)} of them committed before the crash, 250 lost: {in_flight_delivered}), "
          f"{sum(1 for a in rec.attempts if not a.dot_sent)} without end of data; "
          f"{queued_at_kill} committed messages were still queued at the kill")
    assert not lost, f"acknowledged but lost: {lost}"
    assert not duplicated, f"acknowledged and delivered twice: {duplicated}"
    assert not partial, f"delivered without an end of data: {partial}"
    assert not in_flight_duplicated, f"in flight and delivered twice: {in_flight_duplicated}"
    assert len(acked) >= KILL_AFTER_250S + 1
    assert not spool.incoming_files(), f"incoming/ not empty after restart: {spool.summary()}"
    assert not spool.queue_files()
    restarted.assert_alive()
