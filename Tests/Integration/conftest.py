"""Fixtures and helpers for the dualmta end-to-end tests.

Everything here talks to a real `dualmta serve` process over real loopback sockets. Nothing sleeps to wait for a
condition: every wait is a poll against a deadline, and every server process is killed at teardown (also when the
test fails). Standard library only, plus pytest.
"""

from __future__ import annotations

import atexit
import ctypes
import email.utils
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("DUALMTA_BIN", str(REPO / ".build" / "debug" / "dualmta")))
HOSTNAME = "mx.lab.example"
LOCAL_DOMAIN = "lab.example"
# One deadline for "the server should have answered by now". A debug build on a shared 2-core machine is slow.
DEADLINE = float(os.environ.get("DUALMTA_TEST_DEADLINE", "10"))
# How long "nothing more arrives" is watched for (only used to assert the absence of extra replies).
QUIET = 0.5
ON_CI = os.environ.get("CI", "").lower() == "true"

# ---------------------------------------------------------------------------------------------------------------
# Small utilities


def wait_until(predicate: Callable[[], object], timeout: float = DEADLINE, what: str = "condition",
               interval: float = 0.02):
    """Poll `predicate` until it returns a truthy value; return that value or fail at the deadline."""
    end = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= end:
            pytest.fail(f"timed out after {timeout:.1f}s waiting for {what}")
        time.sleep(interval)


def require_tool(name: str) -> str:
    """Path of an external tool; skip without it, but fail on CI (CI=true) where it must be installed."""
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin:/sbin:/bin")
    if path:
        return path
    message = f"{name} is not installed (Debian: swaks / postfix)"
    if ON_CI:
        pytest.fail(message + " -- required when CI=true")
    pytest.skip(message)


def free_port(v6: str = "::1", v4: str = "127.0.0.1") -> int:
    """A TCP port that is free on both the IPv6 and the IPv4 address given (bound, then released)."""
    for _ in range(100):
        s6 = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        s4 = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            s6.bind((v6, 0))
            port = s6.getsockname()[1]
            s4.bind((v4, port))
            return port
        except OSError:
            continue
        finally:
            s6.close()
            s4.close()
    raise RuntimeError("no free port found")


_binary_copy: Path | None = None


def server_binary() -> Path:
    """A private copy of the binary, made once per run: a concurrent `swift build` rewriting .build/debug/dualmta
    must not break the run (ETXTBSY) or swap binaries between tests."""
    global _binary_copy
    if _binary_copy is None:
        if not BIN.is_file():
            pytest.fail(f"dualmta binary not found at {BIN} (build it with `swift build`, or set DUALMTA_BIN)")
        directory = Path(tempfile.mkdtemp(prefix="dualmta-bin-"))
        atexit.register(shutil.rmtree, directory, True)
        _binary_copy = directory / "dualmta"
        shutil.copy2(BIN, _binary_copy)
    return _binary_copy


def _die_with_parent() -> None:
    # The server must not outlive a killed pytest: PR_SET_PDEATHSIG = 1.
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)
    except OSError:
        pass


# ---------------------------------------------------------------------------------------------------------------
# The server process


class ServerStartError(Exception):
    pass


class Server:
    """One `dualmta serve -c CONF` process; stderr is read by a thread into `lines`."""

    def __init__(self, workdir: Path, spool: Path, settings: dict[str, str | None], port: int | None,
                 name: str):
        self.workdir = workdir
        self.spool = spool
        self.settings = settings
        self.port = port
        self.name = name
        self.conf = workdir / f"{name}.conf"
        self.proc: subprocess.Popen | None = None
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._reader: threading.Thread | None = None
        self.listening: list[str] = []
        # Run the binary under another program (e.g. strace); that program must exec it as its child.
        self.wrapper: list[str] = []

    # -- configuration

    def render_config(self) -> str:
        out = []
        for key, value in self.settings.items():
            if value is None:
                continue
            out.append(f"{key} = {value.replace('{port}', str(self.port))}")
        return "\n".join(out) + "\n"

    @property
    def families(self) -> list[str]:
        """Loopback hosts a client can reach this server on, from the `listen` setting."""
        listen = self.settings.get("listen") or ""
        hosts = []
        if "[::1]" in listen or "[::]" in listen:
            hosts.append("::1")
        if "127.0.0.1" in listen or "0.0.0.0" in listen:
            hosts.append("127.0.0.1")
        return hosts

    # -- life cycle

    def start(self, timeout: float = DEADLINE) -> "Server":
        self.conf.write_text(self.render_config())
        self.lines = []
        self.listening = []
        self.proc = subprocess.Popen(
            [*self.wrapper, str(server_binary()), "serve", "-c", str(self.conf)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            cwd=str(self.workdir), preexec_fn=_die_with_parent)
        self._reader = threading.Thread(target=self._read, args=(self.proc,), daemon=True)
        self._reader.start()
        ready = re.compile(r"(^|\s)ready(\s|$)")
        end = time.monotonic() + timeout
        with self._cond:
            while True:
                if any(ready.search(line) for line in self.lines):
                    break
                if self.proc.poll() is not None and not self._reader.is_alive():
                    raise ServerStartError(f"dualmta exited with {self.proc.returncode} before ready:\n"
                                           + self.log_text())
                remaining = end - time.monotonic()
                if remaining <= 0:
                    self.kill()
                    raise ServerStartError(f"dualmta not ready after {timeout}s:\n" + self.log_text())
                self._cond.wait(min(remaining, 0.1))
            self.listening = [line for line in self.lines if "listening" in line]
        return self

    def _read(self, proc: subprocess.Popen) -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            with self._cond:
                self.lines.append(raw.decode("utf-8", "replace").rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 10) -> int | None:
        """SIGTERM, then SIGKILL if it does not exit in time. Returns the exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._reader is not None:
            self._reader.join(2)
        return self.proc.returncode

    def kill(self) -> None:
        """kill -9: no chance to clean up (crash test)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self._reader is not None:
            self._reader.join(2)

    # -- logs

    def log_text(self) -> str:
        with self._cond:
            return "\n".join(self.lines)

    def wait_log(self, pattern: str, timeout: float = DEADLINE) -> str:
        """First log line matching the regex `pattern`, waiting for it up to `timeout`."""
        rx = re.compile(pattern)
        end = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self.lines:
                    if rx.search(line):
                        return line
                remaining = end - time.monotonic()
                if remaining <= 0:
                    pytest.fail(f"no log line matching {pattern!r} within {timeout}s; log:\n{self.log_text_unlocked()}")
                self._cond.wait(min(remaining, 0.1))

    def log_text_unlocked(self) -> str:
        return "\n".join(self.lines)

    # -- CLI on the same config

    def cli(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
        return subprocess.run([str(server_binary()), *args, "-c", str(self.conf)], capture_output=True, timeout=timeout,
                              cwd=str(self.workdir))

    # -- clients

    def connect(self, host: str = "127.0.0.1", source: str | None = None, nodelay: bool = False) -> "RawClient":
        return RawClient(host, self.port, source=source, nodelay=nodelay)

    def session(self, host: str = "127.0.0.1", helo: str = "t.example", source: str | None = None,
                nodelay: bool = False) -> "RawClient":
        """Connected client that has read the 220 and had its EHLO accepted."""
        c = self.connect(host, source=source, nodelay=nodelay)
        c.read_reply().expect(220)
        c.cmd(b"EHLO " + helo.encode()).expect(250)
        return c

    def assert_alive(self) -> None:
        """The process still runs and a fresh connection on every listened family gets 220/250/221."""
        assert self.running(), f"dualmta is no longer running (exit {self.proc.returncode}):\n{self.log_text()}"
        for host in self.families:
            with self.connect(host) as c:
                c.read_reply().expect(220)
                c.cmd(b"EHLO alive.example").expect(250)
                c.cmd(b"NOOP").expect(250)
                c.cmd(b"QUIT").expect(221)


# ---------------------------------------------------------------------------------------------------------------
# Raw byte client


class Closed(Exception):
    """The server closed the connection (EOF or reset)."""


@dataclass
class Reply:
    code: int
    enh: str | None
    lines: list[bytes]

    @property
    def text(self) -> str:
        return b"\n".join(self.lines).decode("latin-1")

    @property
    def last_text(self) -> str:
        """Text after the code (and enhanced code) of the last line."""
        line = self.lines[-1][4:].decode("latin-1")
        if self.enh and line.startswith(self.enh):
            line = line[len(self.enh):].lstrip()
        return line

    def expect(self, code: int, enh: str | None = None) -> "Reply":
        assert self.code == code and (enh is None or self.enh == enh), \
            f"expected {code} {enh or ''}, got: {self.text!r}"
        return self

    def expect_any(self, *choices: tuple[int, str | None]) -> "Reply":
        for code, enh in choices:
            if self.code == code and (enh is None or self.enh == enh):
                return self
        assert False, f"expected one of {choices}, got: {self.text!r}"

    def queue_id(self) -> str:
        m = re.search(r"queued as (\S+)", self.text)
        assert self.code == 250 and m, f"no 'queued as <ID>' in {self.text!r}"
        return m.group(1)

    def short(self) -> tuple[int, str | None]:
        return (self.code, self.enh)


_REPLY_LINE = re.compile(rb"^(\d{3})([ -])(.*)$", re.S)
_ENH = re.compile(rb"^([245]\.\d{1,3}\.\d{1,3})(?:\s|$)")


class RawClient:
    """A byte-exact SMTP client. All reads and writes are bounded by deadlines (select + MSG_DONTWAIT)."""

    def __init__(self, host: str, port: int, source: str | None = None, nodelay: bool = False,
                 timeout: float = DEADLINE):
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        if nodelay:
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if source:
            self.sock.bind((source, 0))
        self.sock.settimeout(timeout)
        self.sock.connect((host, port))
        self.sock.settimeout(None)
        self.buf = b""
        self.eof = False
        self.transcript: list[tuple[str, bytes]] = []

    def __enter__(self) -> "RawClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    # -- writing

    def send(self, data: bytes, timeout: float = DEADLINE) -> None:
        """Write all of `data` (fails if the peer stops reading for `timeout`)."""
        self.transcript.append((">", data))
        view = memoryview(data)
        end = time.monotonic() + timeout
        while view:
            remaining = end - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("send timed out")
            _, w, _ = select.select([], [self.sock], [], remaining)
            if not w:
                continue
            try:
                n = self.sock.send(view, socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL)
            except BlockingIOError:
                continue
            view = view[n:]

    def send_bytewise(self, data: bytes) -> None:
        """One byte per write (combine with nodelay=True)."""
        for i in range(len(data)):
            self.send(data[i:i + 1])

    def send_while_reading(self, data: bytes, stop_on_reply: bool, timeout: float = DEADLINE) -> bool:
        """Write `data` while collecting whatever the server sends. Stops early when the server breaks the connection,
        or (with stop_on_reply) once a complete reply line arrived. Returns True if all of `data` was written."""
        view = memoryview(data)
        end = time.monotonic() + timeout
        while view:
            remaining = end - time.monotonic()
            if remaining <= 0:
                return False
            r, w, _ = select.select([self.sock], [self.sock], [], remaining)
            if r:
                if not self._fill_once():
                    return False
                if stop_on_reply and b"\r\n" in self.buf:
                    return False
            if w:
                try:
                    n = self.sock.send(view[:65536], socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL)
                except BlockingIOError:
                    continue
                except (BrokenPipeError, ConnectionResetError):
                    return False
                view = view[n:]
        return True

    # -- reading

    def _fill_once(self) -> bool:
        """One recv into the buffer. False on EOF/reset."""
        try:
            chunk = self.sock.recv(65536, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return True
        except (ConnectionResetError, ConnectionAbortedError):
            self.eof = True
            return False
        if not chunk:
            self.eof = True
            return False
        self.transcript.append(("<", chunk))
        self.buf += chunk
        return True

    def _fill(self, end: float) -> None:
        if self.eof:
            raise Closed(f"connection closed; unread {self.buf!r}")
        remaining = end - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"no reply within deadline; buffer {self.buf!r}")
        r, _, _ = select.select([self.sock], [], [], remaining)
        if r and not self._fill_once():
            raise Closed(f"connection closed; unread {self.buf!r}")

    def read_line(self, timeout: float = DEADLINE) -> bytes:
        end = time.monotonic() + timeout
        while b"\r\n" not in self.buf:
            self._fill(end)
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def read_reply(self, timeout: float = DEADLINE) -> Reply:
        end = time.monotonic() + timeout
        lines = []
        while True:
            line = self.read_line(max(0.0, end - time.monotonic()))
            m = _REPLY_LINE.match(line)
            assert m, f"malformed reply line {line!r} (after {lines!r})"
            if lines:
                assert int(m.group(1)) == int(_REPLY_LINE.match(lines[0]).group(1)), \
                    f"code changed inside a multi-line reply: {lines + [line]!r}"
            lines.append(line)
            if m.group(2) == b" ":
                break
        code = int(lines[0][:3])
        e = _ENH.match(lines[-1][4:])
        return Reply(code, e.group(1).decode() if e else None, lines)

    def read_replies(self, n: int, timeout: float = DEADLINE) -> list[Reply]:
        return [self.read_reply(timeout) for _ in range(n)]

    def read_until_closed(self, timeout: float = DEADLINE) -> list[Reply]:
        """All replies until the server closes; fails if it does not close within `timeout`."""
        end = time.monotonic() + timeout
        replies = []
        while True:
            try:
                while b"\r\n" not in self.buf:
                    self._fill(end)
            except Closed:
                assert self.buf == b"", f"unterminated bytes before close: {self.buf!r}"
                return replies
            except TimeoutError:
                pytest.fail(f"server did not close the connection within {timeout}s; replies so far "
                            f"{[r.text for r in replies]!r}")
            replies.append(self.read_reply(max(0.0, end - time.monotonic())))

    def expect_closed(self, timeout: float = DEADLINE) -> None:
        extra = self.read_until_closed(timeout)
        assert not extra, f"unexpected replies before close: {[r.text for r in extra]!r}"

    def quiet(self, period: float = QUIET) -> bytes:
        """Bytes the server sends within `period` (without failing on close). Used to assert 'no further reply'."""
        end = time.monotonic() + period
        while not self.eof:
            remaining = end - time.monotonic()
            if remaining <= 0:
                break
            r, _, _ = select.select([self.sock], [], [], remaining)
            if r and not self._fill_once():
                break
        return self.buf

    # -- commands

    def cmd(self, line: bytes, timeout: float = DEADLINE) -> Reply:
        self.send(line + b"\r\n")
        return self.read_reply(timeout)

    def transaction(self, sender: str, rcpts: Iterable[str], data: bytes, mail_params: str = "") -> Reply:
        """MAIL, RCPT..., DATA (each reply checked), then `data` + '.\\r\\n'. Returns the final reply.
        `data` must already be dot-stuffed and end in CRLF (or be empty)."""
        self.cmd(f"MAIL FROM:<{sender}>{mail_params}".encode()).expect(250)
        for rcpt in rcpts:
            self.cmd(f"RCPT TO:<{rcpt}>".encode()).expect(250)
        self.cmd(b"DATA").expect(354)
        self.send(data + b".\r\n")
        return self.read_reply()


# ---------------------------------------------------------------------------------------------------------------
# The spool as seen from outside


@dataclass
class Delivered:
    path: Path
    raw: bytes  # the file with CRLF line ends again, i.e. the bytes as the spool (and SMTP) had them
    return_path: str
    received: str  # unfolded, without the "Received:" name
    rest: bytes  # the message after our Received header, with CRLF line ends (as sent)
    delivered_to: str = ""
    file_bytes: bytes = b""  # the Maildir file exactly as written (LF line ends)


# `comments`: the optional TLS and AUTH comments between the from and by clauses, e.g.
# "(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)) (authenticated user alice)".
RECEIVED_RX = re.compile(
    r"^from (?P<helo>\S+) \((?:(?P<ptr>\S+) )?\[(?P<addr>[^\]]+)\]\)\s+"
    r"(?P<comments>(?:\((?:[^()]|\([^()]*\))*\)\s+)*)by (?P<by>\S+) \(dualmta\)\s+"
    r"with (?P<proto>\S+)\s+id (?P<id>\S+)(?:\s+for <(?P<for>[^>]*)>)?\s*;\s*(?P<date>.+)$")


def parse_delivered(path: Path) -> Delivered:
    """A Maildir file: LF line ends (the Maildir convention), 'Return-Path: <..>', 'Delivered-To: ..', our Received
    header (maybe folded), then the message as sent. `raw` and `rest` give the bytes back with CRLF, as they were
    received: the server accepts no bare CR or LF, so the conversion is exact."""
    file_bytes = path.read_bytes()
    assert b"\r\n" not in file_bytes, f"{path}: CRLF in a Maildir file: {file_bytes[:200]!r}"
    raw = file_bytes.replace(b"\n", b"\r\n")
    first, sep, after = raw.partition(b"\r\n")
    assert sep and first.startswith(b"Return-Path: "), f"{path}: no Return-Path line first: {raw[:200]!r}"
    m = re.fullmatch(rb"Return-Path: <(.*)>", first)
    assert m, f"{path}: bad Return-Path line {first!r}"
    second, sep, after = after.partition(b"\r\n")
    d = re.fullmatch(rb"Delivered-To: (.+)", second)
    assert sep and d, f"{path}: no Delivered-To line second: {raw[:300]!r}"
    assert after.startswith(b"Received: "), f"{path}: our Received header is not third: {after[:200]!r}"
    header_lines = []
    rest = after
    while True:
        if header_lines and not rest[:1] in (b" ", b"\t"):
            break  # the next header, the blank line, or the end of an empty message
        line, sep, tail = rest.partition(b"\r\n")
        assert sep, f"{path}: unterminated Received header {rest[:300]!r}"
        header_lines.append(line)
        rest = tail
    unfolded = b" ".join(part.strip() for part in header_lines).decode("utf-8", "replace")
    return Delivered(path, raw, m.group(1).decode("utf-8", "replace"), unfolded[len("Received:"):].strip(), rest,
                     d.group(1).decode("utf-8", "replace"), file_bytes)


def parse_received(value: str) -> re.Match:
    m = RECEIVED_RX.match(value)
    assert m, f"Received header does not match the expected shape: {value!r}"
    date = email.utils.parsedate_to_datetime(m.group("date"))
    assert date.tzinfo is not None, f"Received date without a zone: {value!r}"
    return m


class Spool:
    def __init__(self, root: Path):
        self.root = root

    def _files(self, sub: str) -> list[Path]:
        d = self.root / sub
        if not d.is_dir():
            return []
        return sorted(p for p in d.iterdir() if p.is_file())

    def queue_files(self) -> list[Path]:
        return self._files("queue")

    def queued_ids(self) -> set[str]:
        return {p.stem for p in self.queue_files() if p.suffix in (".msg", ".env")}

    def incoming_files(self) -> list[Path]:
        d = self.root / "incoming"
        return sorted(p for p in d.rglob("*") if p.is_file()) if d.is_dir() else []

    def maildir_files(self) -> list[Path]:
        base = self.root / "mailboxes"
        if not base.is_dir():
            return []
        out = []
        for sub in ("new", "cur"):
            out.extend(p for p in base.glob(f"*/*/{sub}/*") if p.is_file())
        return sorted(out)

    def delivered(self) -> list[Delivered]:
        return [parse_delivered(p) for p in self.maildir_files()]

    def summary(self) -> str:
        return (f"queue={[p.name for p in self.queue_files()]} incoming={[str(p) for p in self.incoming_files()]} "
                f"maildir={[str(p.relative_to(self.root)) for p in self.maildir_files()]}")

    def settle(self, queued: int = 0, delivered: int = 0, timeout: float = DEADLINE) -> None:
        """Wait until the queue holds exactly `queued` messages and the Maildirs exactly `delivered` files.
        Commits happen before the 250, so a wrongly accepted message is already in queue/ or the Maildirs."""
        def ok() -> bool:
            q = self.queue_files()
            msgs = [p for p in q if p.suffix == ".msg"]
            envs = [p for p in q if p.suffix == ".env"]
            # incoming/ is checked too: a rejected message's partial file may be removed just after the reply.
            return (len(msgs) == queued and len(envs) == queued and len(q) == 2 * queued
                    and len(self.maildir_files()) == delivered and not self.incoming_files())
        end = time.monotonic() + timeout
        while not ok():
            if time.monotonic() >= end:
                pytest.fail(f"spool did not settle to queued={queued} delivered={delivered}: {self.summary()}")
            time.sleep(0.02)


# ---------------------------------------------------------------------------------------------------------------
# Fixtures


def default_settings(spool: Path) -> dict[str, str | None]:
    return {
        "hostname": HOSTNAME,
        "listen": "[::1]:{port}, 127.0.0.1:{port}",
        "spool_dir": str(spool),
        "local_domains": LOCAL_DOMAIN,
        "relay_networks": "127.0.0.1/32, [::1]/128",
        "message_size_limit": "1M",
        "command_timeout": "30s",
        "log_format": "text",
        # Safety net: no test may ask the machine's own resolver. Port 9 on loopback answers nothing, so an MX
        # lookup is a temporary failure (4.4.3) and remote mail stays queued unless a test sets routes or its own
        # lab DNS server.
        "dns_servers": "127.0.0.1:9",
        # The web console's default port is shared by every daemon on the machine: tests that want the console
        # give it a port of their own.
        "http_listen": "none",
    }


@pytest.fixture
def start_server(tmp_path: Path, request):
    """Factory: start_server(spool=None, port=None, **settings) -> Server (ready). Every server is stopped at teardown.
    Setting values may contain '{port}'. A setting of None removes the key. Port collisions are retried."""
    servers: list[Server] = []

    def _start(spool: Path | None = None, port: int | None = None, wildcard: bool = False,
               **overrides: str | None) -> Server:
        spool = spool or (tmp_path / "spool")
        settings = default_settings(spool)
        settings.update(overrides)
        fixed_port = port is not None
        last_error: Exception | None = None
        for attempt in range(5):
            chosen = port if fixed_port else (free_port("::", "0.0.0.0") if wildcard else free_port())
            srv = Server(tmp_path, spool, settings, chosen, f"server{len(servers)}")
            servers.append(srv)
            try:
                return srv.start()
            except ServerStartError as exc:
                last_error = exc
                if fixed_port or "in use" not in str(exc).lower():
                    break
        pytest.fail(str(last_error))

    yield _start
    for srv in servers:
        srv.stop()
        if srv.lines:
            # Shown by pytest only when the test failed.
            print(f"---- {srv.name} log (port {srv.port}) ----\n{srv.log_text()}")


@pytest.fixture
def mta(start_server) -> Server:
    """A server with the default test configuration."""
    return start_server()


def unique_tag(prefix: str = "m") -> str:
    return f"{prefix}-{os.getpid()}-{time.monotonic_ns()}-{threading.get_ident() % 100000}"


def simple_message(subject: str, body: bytes = b"hello\r\n", extra_headers: bytes = b"") -> bytes:
    return (b"From: <a@r.example>\r\nTo: <u@lab.example>\r\nSubject: " + subject.encode() + b"\r\n"
            + b"Message-ID: <" + subject.encode() + b"@client.example>\r\n" + extra_headers + b"\r\n" + body)
