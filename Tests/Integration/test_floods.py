"""Floods and slow peers (rows L04, L05, L07, L08, L09, and slowloris on commands next to L03).

Every check is against the real server over loopback: thousands of idle connections from a separate process while a
new client must still get its 220 in under a second, a client that dribbles one byte per second (on a command and in
DATA), the global connection limit, EMFILE on accept (CPU from /proc/PID/stat, no busy loop), and the fd count in
/proc/PID/fd after 10,000 connect/close cycles.
"""

from __future__ import annotations

import os
import select
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import DEADLINE, Closed, RawClient, Server, Spool, wait_until

# The idle-connection generator runs as its own process (one process can hold at most ~20,000 fds here).
# It connects N sockets, then reports greetings and closes as they happen, until all are closed or time runs out.
IDLE_GENERATOR = r"""
import selectors, socket, sys, time
host, port, n, limit = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
family = socket.AF_INET6 if ":" in host else socket.AF_INET
socks = []
for _ in range(n):
    s = socket.socket(family, socket.SOCK_STREAM)
    s.settimeout(30)
    s.connect((host, port))
    s.setblocking(False)
    socks.append(s)
print("connected", len(socks), flush=True)
sel = selectors.DefaultSelector()
for s in socks:
    sel.register(s, selectors.EVENT_READ)
greeted = closed = timeout_replies = 0
seen = set()
end = time.monotonic() + limit
last = None
while closed < n and time.monotonic() < end:
    for key, _ in sel.select(0.2):
        s = key.fileobj
        try:
            data = s.recv(4096)
        except BlockingIOError:
            continue
        except OSError:
            data = b""
        if not data:
            closed += 1
            sel.unregister(s)
            s.close()
            continue
        if s.fileno() not in seen and data.startswith(b"220"):
            seen.add(s.fileno())
            greeted += 1
        if b"421 4.4.2" in data:
            timeout_replies += 1
    state = (greeted, closed)
    if state != last:
        print("state", greeted, closed, timeout_replies, flush=True)
        last = state
print("done", greeted, closed, timeout_replies, flush=True)
"""


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def greeting_latency(srv: Server, host: str = "127.0.0.1") -> float:
    start = time.monotonic()
    with RawClient(host, srv.port, timeout=5) as c:
        c.read_reply(5).expect(220)
    return time.monotonic() - start


def test_l05_5000_idle_connections_new_client_still_greeted(start_server):
    idle = 5000
    timeout = 8
    srv = start_server(max_connections=str(idle + 500), max_connections_per_client=str(idle + 500),
                       command_timeout=f"{timeout}s")
    gen = subprocess.Popen([sys.executable, "-c", IDLE_GENERATOR, "127.0.0.1", str(srv.port), str(idle),
                            str(timeout + 40)], stdout=subprocess.PIPE, text=True)
    try:
        latencies: list[float] = []
        last_state = None
        connected_at = None
        done = None
        end = time.monotonic() + 90
        while done is None:
            assert time.monotonic() < end, f"generator did not finish; last state {last_state}"
            r, _, _ = select.select([gen.stdout], [], [], 0.25)
            if r:
                line = gen.stdout.readline()
                assert line, f"generator exited early ({gen.poll()})"
                words = line.split()
                if words[0] == "connected":
                    connected_at = time.monotonic()
                elif words[0] == "state":
                    last_state = words[1:]
                elif words[0] == "done":
                    done = [int(w) for w in words[1:]]
            # A new client, all along: from the first idle connects until the last idle one is closed.
            latencies.append(greeting_latency(srv, "::1" if len(latencies) % 2 else "127.0.0.1"))
        greeted, closed, timeout_replies = done
        elapsed = time.monotonic() - connected_at
        assert greeted == idle, f"only {greeted} of {idle} idle connections got a 220"
        assert closed == idle, f"only {closed} of {idle} idle connections were closed by the server"
        assert timeout_replies == idle, f"{timeout_replies} of {idle} got 421 4.4.2 before the close"
        assert elapsed < timeout + 20, f"idle connections closed only after {elapsed:.1f}s (timeout {timeout}s)"
        ordered = sorted(latencies)
        worst, p99 = ordered[-1], ordered[int(len(ordered) * 0.99)]
        print(f"L05: {len(latencies)} probes, 220 latency p99 {p99 * 1000:.0f} ms, worst {worst * 1000:.0f} ms, all "
              f"{idle} closed after {elapsed:.1f}s")
        # < 1 s is the requirement; on a shared 2-core CI machine one scheduling hiccup may exceed it, so the
        # 99th percentile must meet it and no probe may take more than 3 s.
        assert p99 < 1.0, f"p99 of the 220 latency is {p99:.2f}s ({len(latencies)} probes, worst {worst:.2f}s)"
        assert worst < 3.0, f"a new client waited {worst:.2f}s for its 220"
    finally:
        if gen.poll() is None:
            gen.kill()
        gen.wait()
    srv.assert_alive()


# Regression (found by this suite): the command timer used to be re-armed by every received chunk, so it was an idle
# timeout and a peer sending one byte per second kept its session (and slot) forever.
@pytest.mark.parametrize("where", ["command", "data"])
def test_slowloris_one_byte_per_second(start_server, where):
    """L03/L04 with a peer that keeps sending: one byte per second must not keep a session alive forever. The
    deadline is per command (and per DATA phase), not per byte: 421 4.4.2 arrives at the command timeout."""
    timeout = 3
    srv = start_server(command_timeout=f"{timeout}s")
    c = srv.session(nodelay=True)
    if where == "data":
        c.cmd(b"MAIL FROM:<a@r.example>").expect(250)
        c.cmd(b"RCPT TO:<u@lab.example>").expect(250)
        c.cmd(b"DATA").expect(354)
        dribble = b"Subject: slow\r\n\r\n" + b"x" * 100
    else:
        dribble = b"NOOP" + b" " * 100
    start = time.monotonic()
    got = b""
    for i in range(len(dribble)):
        if time.monotonic() - start > timeout + 3:
            break
        try:
            c.sock.send(dribble[i:i + 1], socket.MSG_NOSIGNAL)
        except OSError:
            break
        got = c.quiet(1.0)  # one byte per second; collects whatever the server says meanwhile
        if c.eof or b"\r\n" in got:
            break
    elapsed = time.monotonic() - start
    assert b"421 4.4.2" in got, f"no 421 4.4.2 after {elapsed:.1f}s of one byte per second: {got!r}"
    assert elapsed <= timeout + 2.5, f"421 only after {elapsed:.1f}s (timeout {timeout}s)"
    if not c.eof:
        c.quiet(DEADLINE)
    assert c.eof, "the connection stays open after the 421"
    Spool(srv.spool).settle(0, 0)
    srv.assert_alive()


def test_l07_max_connections_plus_one(start_server):
    limit = 5
    srv = start_server(max_connections=str(limit), max_connections_per_client="100")
    held = []
    try:
        for i in range(limit):
            c = srv.connect("::1" if i % 2 else "127.0.0.1")
            c.read_reply().expect(220)
            held.append(c)
        extra = srv.connect()
        replies = extra.read_until_closed()
        assert [r.code for r in replies] == [421], [r.text for r in replies]
        assert "too many connections" in replies[0].text
        held[0].cmd(b"EHLO t.example").expect(250)  # the others are unaffected
    finally:
        for c in held:
            c.close()

    def greeted() -> bool:
        with srv.connect() as c:
            return c.read_reply().code == 220
    wait_until(greeted, DEADLINE, "a 220 once the held connections are gone", interval=0.05)
    srv.assert_alive()


def test_l08_emfile_on_accept_no_busy_loop(start_server):
    """The server's fd limit is lowered to 64 (prlimit --pid: lowering needs no privilege) and 100 clients connect:
    accept() fails with EMFILE and the listener backs off (CPU < 10 % over 5 s); once they go, service resumes."""
    srv = start_server(max_connections_per_client="200")
    pid = srv.proc.pid
    r = subprocess.run(["prlimit", f"--pid={pid}", "--nofile=64:64"], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"prlimit failed: {r.stderr.strip()}")
    held = []
    try:
        for i in range(100):
            held.append(RawClient("::1" if i % 2 else "127.0.0.1", srv.port))
        wait_until(lambda: "accept-failed" in srv.log_text(), DEADLINE, "the EMFILE log line")
        before = cpu_seconds(pid)
        started = time.monotonic()
        time.sleep(5)  # the measurement window itself, not a wait for a condition
        used = (cpu_seconds(pid) - before) / (time.monotonic() - started)
        print(f"L08: {used:.1%} CPU over 5 s with accept() failing with EMFILE; {fd_count(pid)} fds open")
        assert used < 0.10, f"{used:.0%} CPU while accept() fails with EMFILE (busy loop?)"
        lines = [line for line in srv.log_text().splitlines() if "accept-failed" in line]
        assert len(lines) <= 2, f"EMFILE logged {len(lines)} times in ~5 s (rate limit is once per 10 s)"
    finally:
        for c in held:
            c.close()

    def greeted() -> bool:
        try:
            return greeting_latency(srv) < 5
        except (Closed, TimeoutError, OSError, AssertionError):
            return False
    wait_until(greeted, 30, "a 220 after the flood went away", interval=0.1)
    srv.assert_alive()


def connect_close(port: int, cycles: int, reset_every: int) -> None:
    """Connect and close `cycles` times, alternating families; every `reset_every`-th close is an RST (SO_LINGER 0)."""
    for i in range(cycles):
        family, host = (socket.AF_INET6, "::1") if i % 2 else (socket.AF_INET, "127.0.0.1")
        s = socket.socket(family, socket.SOCK_STREAM)
        s.connect((host, port))
        if reset_every and i % reset_every == 0:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        s.close()


def greeted_on_both_families(srv: Server) -> bool:
    for host in ("127.0.0.1", "::1"):
        with RawClient(host, srv.port) as c:
            if c.read_reply().code != 220:
                return False
    return True


def test_l09_10000_connect_close_cycles_no_fd_leak(start_server):
    timeout = 5
    srv = start_server(command_timeout=f"{timeout}s")
    pid = srv.proc.pid
    srv.assert_alive()  # warm-up: anything opened lazily on the first session is part of the baseline
    baseline = fd_count(pid)
    connect_close(srv.port, 10_000, reset_every=10)
    wait_until(lambda: fd_count(pid) <= baseline, 60,
               f"the server's fd count back to its baseline of {baseline} (now {fd_count(pid)})", interval=0.1)
    # Session slots of peers that reset before the greeting are released at once (see the test below).
    wait_until(lambda: greeted_on_both_families(srv), timeout + DEADLINE, "220 on both families after the cycles",
               interval=0.2)
    srv.assert_alive()
    assert fd_count(pid) <= baseline + 2  # the probes' own sessions may still be closing


# Regression (found by this suite): a peer that resets before the 220 is written used to keep its session slot and
# per-client count until the command timeout (onClose was registered after the greeting). 400 resets from one address
# would lock it out (max_connections_per_client 50).
def test_l09_reset_before_greeting_releases_the_session_slot(start_server):
    srv = start_server(command_timeout="300s")
    connect_close(srv.port, 400, reset_every=1)
    wait_until(lambda: greeted_on_both_families(srv), DEADLINE, "220 on both families after 400 resets",
               interval=0.2)
