"""Back-pressure: a client that sends and never reads costs the daemon a bounded amount of memory.

Each test opens one connection with a 4 KiB receive buffer, brings it to a stage (after the greeting, after EHLO,
inside STARTTLS, on the submission port, on the metrics listener) and then sends commands as fast as the socket
takes them without reading a byte. The daemon must stop reading that connection once its unsent replies pass a small
bound, so the client's sends stall (TCP flow control) instead of the daemon queueing every reply in memory. Checked
from outside: the sends stall, the daemon's peak RSS (/proc/PID/status VmHWM) stays within a few MB of what it was
before the flood, and a second client is served normally while the flooding connection is held.
"""

from __future__ import annotations

import base64
import fcntl
import socket
import ssl
import struct
import termios
import time
from pathlib import Path

import pytest

from conftest import DEADLINE, HOSTNAME, RawClient, Server, free_port, wait_until
from test_tls import PASSWORD, USER, users_file

# The whole flood may not grow the daemon by more than this (it holds tens of KiB of output per connection; the
# rest is allocator slack and the kernel's socket buffers, which are not in RSS).
RSS_GROWTH_LIMIT_KB = 6 * 1024
# What the daemon may read from a client that reads nothing: 14-octet replies to 25-octet commands fill the kernel's
# send buffer (capped at 64 KiB, doubled by the kernel) and our 64 KiB output bound, plus one 64 KiB read already
# taken, with room to spare. Without back-pressure it reads the whole 2.5 MB that 100,000 recipients take.
CONSUMED_LIMIT = 1024 * 1024
# Without back-pressure the flood runs this long (then fails); with it, the sends stall within a second or two.
FLOOD_SECONDS = 10.0
# No byte accepted by the socket for this long = the daemon stopped reading.
STALL_SECONDS = 1.0


def status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def reset_peak(pid: int) -> int:
    """Resets VmHWM to the current RSS (/proc/PID/clear_refs, "5"), so an earlier peak (the password hash's 16 MB
    at AUTH) does not count as growth; returns the current VmRSS."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    return status_kb(pid, "VmRSS")


def small_buffer_socket(host: str, port: int) -> socket.socket:
    """Connected socket whose receive buffer is 4 KiB (set before connect, so the window stays small)."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(DEADLINE)
    sock.connect((host, port))
    return sock


def server_receive_queue(server_port: int, client: socket.socket) -> int:
    """Bytes the daemon has not read yet on the server side of `client`'s connection (rx_queue in /proc/net/tcp)."""
    client_port = client.getsockname()[1]
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            remote_port = int(fields[2].rsplit(":", 1)[1], 16)
            if local_port == server_port and remote_port == client_port:
                return int(fields[4].split(":")[1], 16)
    raise AssertionError(f"no server socket for client port {client_port} in /proc/net/tcp*")


def client_send_queue(client: socket.socket) -> int:
    """Bytes our side has not handed to the peer yet (SIOCOUTQ)."""
    return struct.unpack("i", fcntl.ioctl(client.fileno(), termios.TIOCOUTQ, b"\0" * 4))[0]


def read_reply(sock: socket.socket) -> bytes:
    """One whole SMTP reply (plain or TLS socket), blocking up to the socket's timeout."""
    data = b""
    while True:
        lines = data.split(b"\r\n")
        if len(lines) > 1 and any(len(line) >= 4 and line[3:4] == b" " for line in lines[:-1]):
            return data
        chunk = sock.recv(4096)
        if not chunk:
            raise AssertionError(f"connection closed; got {data!r}")
        data += chunk


def flood(sock: socket.socket, command: bytes, prefix: bytes = b"") -> tuple[int, str]:
    """Send `prefix`, then `command` over and over, without reading. Returns (bytes sent, how it ended: "stalled"
    when no byte was taken for STALL_SECONDS, "closed" when the daemon closed the connection, "ran" at the time
    limit)."""
    block = command * max(1, 16384 // len(command))
    pending = memoryview(prefix + block)
    sent = 0
    sock.settimeout(STALL_SECONDS)
    end = time.monotonic() + FLOOD_SECONDS
    while time.monotonic() < end:
        try:
            n = sock.send(pending)
        except (socket.timeout, ssl.SSLWantWriteError):
            return sent, "stalled"
        except (BrokenPipeError, ConnectionResetError):
            return sent, "closed"
        sent += n
        pending = pending[n:]
        if not pending:
            pending = memoryview(block)
    return sent, "ran"


# Legitimate and repeatable for up to recipient_limit (100,000 here) commands: each one gets "250 2.1.5 Ok".
MAIL = b"MAIL FROM:<a@remote.example>\r\n"
RCPT = b"RCPT TO:<a@lab.example>\r\n"


def assert_bounded_flood(srv: Server, sock: socket.socket, port: int | None = None,
                         serve_host: str = "127.0.0.1") -> None:
    pid = srv.proc.pid
    before = reset_peak(pid)
    sent, ending = flood(sock, RCPT, prefix=MAIL)
    peak = status_kb(pid, "VmHWM")
    now = status_kb(pid, "VmRSS")
    growth = peak - before
    consumed = sent
    if ending == "stalled":
        consumed = sent - server_receive_queue(port or srv.port, sock) - client_send_queue(sock)
    print(f"flood: sent {sent} bytes, daemon read {consumed}, ending={ending}, VmRSS {before} kB -> {now} kB, "
          f"VmHWM {peak} kB (growth {growth} kB)")
    assert ending == "stalled", f"({ending}) the daemon read {sent} bytes in {FLOOD_SECONDS}s from a silent reader"
    assert consumed <= CONSUMED_LIMIT, f"the daemon read {consumed} bytes from a client that reads nothing"
    assert growth <= RSS_GROWTH_LIMIT_KB, f"RSS grew by {growth} kB during the flood (limit {RSS_GROWTH_LIMIT_KB})"
    # Meanwhile another client is served as usual.
    with RawClient(serve_host, srv.port) as other:
        other.read_reply().expect(220)
        other.cmd(b"EHLO other.example").expect(250)
        other.cmd(b"QUIT").expect(221)
    assert srv.running()


@pytest.fixture
def warmed(start_server):
    """A server that has served one session (thread pools and caches exist), outside relay_networks, with the
    largest recipient_limit, so that a long run of RCPT commands is legitimate."""
    def _start(**settings) -> Server:
        settings.setdefault("relay_networks", "192.0.2.0/24")
        settings.setdefault("recipient_limit", "100000")
        srv = start_server(**settings)
        srv.assert_alive()
        return srv
    return _start


def test_flood_from_a_client_that_never_reads_the_greeting(warmed):
    srv = warmed()
    sock = small_buffer_socket("127.0.0.1", srv.port)
    # The 220 is waiting in our buffer; peek (never read) until the EHLO reply arrived after it.
    wait_until(lambda: sock.recv(4, socket.MSG_PEEK)[:3] == b"220", what="the greeting")
    sock.sendall(b"EHLO flood.example\r\n")
    wait_until(lambda: b"\r\n250 " in sock.recv(4096, socket.MSG_PEEK), what="the EHLO reply")
    assert_bounded_flood(srv, sock)
    sock.close()


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_flood_of_pipelined_commands(warmed, host: str):
    srv = warmed()
    sock = small_buffer_socket(host, srv.port)
    read_reply(sock)
    sock.sendall(b"EHLO flood.example\r\n")
    read_reply(sock)
    assert_bounded_flood(srv, sock, serve_host=host)
    sock.close()


def no_verify() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def start_tls(sock: socket.socket) -> ssl.SSLSocket:
    read_reply(sock)
    sock.sendall(b"EHLO flood.example\r\n")
    read_reply(sock)
    sock.sendall(b"STARTTLS\r\n")
    assert read_reply(sock).startswith(b"220")
    tls = no_verify().wrap_socket(sock, server_hostname=HOSTNAME)
    tls.sendall(b"EHLO flood.example\r\n")
    assert read_reply(tls).startswith(b"250")
    return tls


def test_flood_inside_starttls(warmed):
    srv = warmed()
    tls = start_tls(small_buffer_socket("127.0.0.1", srv.port))
    assert_bounded_flood(srv, tls)
    tls.close()


def test_flood_on_the_submission_port_after_auth(warmed, tmp_path):
    port = free_port()
    srv = warmed(submission_listen=f"127.0.0.1:{port}", submission_users_file=str(users_file(tmp_path)))
    tls = start_tls(small_buffer_socket("127.0.0.1", port))
    token = base64.b64encode(f"\0{USER}\0{PASSWORD}".encode())
    tls.sendall(b"AUTH PLAIN " + token + b"\r\n")
    assert read_reply(tls).startswith(b"235")
    assert_bounded_flood(srv, tls, port=port)
    tls.close()


def test_data_flood_stays_bounded(warmed):
    """Inside DATA nothing is answered until the end: the body streams to the spool (and past message_size_limit is
    discarded), so memory stays flat however much is sent; then the message gets its one reply."""
    srv = warmed()
    with RawClient("127.0.0.1", srv.port) as c:
        c.read_reply().expect(220)
        c.cmd(b"EHLO flood.example").expect(250)
        c.cmd(MAIL.rstrip()).expect(250)
        c.cmd(RCPT.rstrip()).expect(250)
        c.cmd(b"DATA").expect(354)
        pid = srv.proc.pid
        before = reset_peak(pid)
        line = b"x" * 78 + b"\r\n"
        c.send(b"Subject: flood\r\n\r\n" + line * (8 * 1024 * 1024 // len(line)), timeout=60)
        c.send(b".\r\n")
        c.read_reply(timeout=60).expect(552, "5.3.4")
        growth = status_kb(pid, "VmHWM") - before
        print(f"DATA flood: VmRSS before {before} kB, growth {growth} kB")
        assert growth <= RSS_GROWTH_LIMIT_KB


def test_flood_of_recipients_past_the_limit(warmed):
    """The flood an attacker used: default recipient_limit, then RCPT lines past it without reading. Each 452 now
    counts as an error, so the session ends (421) after a few dozen replies instead of answering forever."""
    srv = warmed(recipient_limit="100")
    sock = small_buffer_socket("127.0.0.1", srv.port)
    read_reply(sock)
    sock.sendall(b"EHLO flood.example\r\n")
    read_reply(sock)
    pid = srv.proc.pid
    before = reset_peak(pid)
    sent, ending = flood(sock, b"RCPT TO:<alice@lab.example>\r\n", prefix=MAIL)
    growth = status_kb(pid, "VmHWM") - before
    print(f"flood past the limit: sent {sent} bytes, ending={ending}, VmRSS before {before} kB, growth {growth} kB")
    assert ending in ("closed", "stalled"), f"the daemon read {sent} bytes in {FLOOD_SECONDS}s from a silent reader"
    assert growth <= RSS_GROWTH_LIMIT_KB, f"RSS grew by {growth} kB during the flood (limit {RSS_GROWTH_LIMIT_KB})"
    sock.close()
    srv.assert_alive()


def test_recipients_past_the_limit_count_as_errors(warmed):
    """452 4.5.3 for every RCPT past recipient_limit used to be free: a client could repeat it forever. Now each
    one counts toward the error limit and the session ends with 421 4.7.0."""
    srv = warmed(recipient_limit="100")
    with RawClient("127.0.0.1", srv.port) as c:
        c.read_reply().expect(220)
        c.cmd(b"EHLO flood.example").expect(250)
        c.cmd(b"MAIL FROM:<a@remote.example>").expect(250)
        rcpts = b"".join(b"RCPT TO:<u%d@lab.example>\r\n" % i for i in range(300))
        c.send_while_reading(rcpts, stop_on_reply=False)
        replies = c.read_until_closed()
    codes = [r.short() for r in replies]
    assert codes[:100] == [(250, "2.1.5")] * 100
    assert codes[-1] == (421, "4.7.0"), codes[-3:]
    assert codes[100:-1] == [(452, "4.5.3")] * 20
    srv.wait_log(r"too many errors")


def test_metrics_listener_flood(warmed):
    """The HTTP listener answers one request per connection and closes, whatever follows the request."""
    port = free_port()
    srv = warmed(metrics_listen=f"127.0.0.1:{port}")
    sock = small_buffer_socket("127.0.0.1", port)
    pid = srv.proc.pid
    before = reset_peak(pid)
    sent, ending = flood(sock, b"GET /metrics HTTP/1.0\r\n\r\n")
    growth = status_kb(pid, "VmHWM") - before
    # The daemon closes after its one answer (or stops reading while that answer waits): never reads on and on.
    assert ending in ("stalled", "closed"), f"the metrics listener read {sent} bytes from a client that reads nothing"
    assert growth <= RSS_GROWTH_LIMIT_KB
    sock.close()
    assert srv.running()
