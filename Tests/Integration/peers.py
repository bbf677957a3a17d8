"""Scripted SMTP peers for the outbound tests: a real TCP server on a loopback address that answers every stage
as the test says, and records what it received (a "scripted fake MX").

`Peer(host, port, script)` listens at once; `script` gives the `Behaviour` for each session (a list: session N uses
item N, the last item repeats; or a callable taking the 0-based session number). A session is one connection, or one
more transaction on a connection the client kept open (its connection cache): a MAIL after an earlier MAIL on the same
connection starts the next session record, with the next behaviour, so "the first attempt fails, the retry works"
scripts mean the same with and without connection reuse. `tcp_connections` counts the TCP connections themselves. Every wait is a poll
against a deadline on a condition variable; `stop()` closes the listener and every connection. Standard library only.
"""

from __future__ import annotations

import select
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import pytest

DEFAULT_EHLO = ("250-peer.test", "250-PIPELINING", "250-8BITMIME", "250-ENHANCEDSTATUSCODES", "250 SIZE 10485760")


@dataclass
class Behaviour:
    """What the peer answers on one connection. Replies are full lines without CRLF ("250 2.1.5 Ok")."""
    greeting: str | None = "220 peer.test ESMTP scripted"  # None: never greet, hold the connection open
    ehlo: Sequence[str] = DEFAULT_EHLO
    helo: str = "250 peer.test"
    # One reply, or a function of the MAIL argument ("FROM:<a@b> SIZE=123").
    mail: str | Callable[[str], str] = "250 2.1.0 Ok"
    # One reply for every recipient, or a function of the recipient address (without brackets). None (or a
    # function returning None): stall - never answer, hold the connection until the client gives up (O11).
    rcpt: str | None | Callable[[str], str | None] = "250 2.1.5 Ok"
    data: str = "354 End data with <CR><LF>.<CR><LF>"
    eod: str | None = "250 2.0.0 Ok: queued"  # None: close right after the final "." without any reply
    drop_after_data_bytes: int | None = None  # close mid-DATA once this many message bytes arrived
    greeting_byte_delay: float = 0.0  # send the greeting one byte at a time with this pause (O12)
    eod_delay: float = 0.0  # pause before answering the final "." (a slow peer, for concurrency tests)
    # Reply to STARTTLS (None: 502). After a 2xx the handshake "fails": the peer closes (or sends garbage first).
    starttls: str | None = None
    after_starttls: str = "close"  # "close" | "garbage"


@dataclass
class Session:
    """One connection as the peer saw it."""
    number: int
    client: tuple
    commands: list[str] = field(default_factory=list)
    mail_from: str | None = None
    rcpts_accepted: list[str] = field(default_factory=list)
    data: bytes | None = None  # the message (dot-unstuffed) once the final "." arrived
    accepted: bool = False  # a 2xx was sent for the final "."
    ended: str = ""  # how the session ended: quit, peer-closed, dropped-mid-data, no-reply-after-dot, ...
    reused: bool = False  # a later transaction on a connection the client kept open


@dataclass
class Message:
    mail_from: str
    rcpts: list[str]
    data: bytes


def _address(arg: str) -> str:
    """`FROM:<a@b> SIZE=1` -> `a@b`."""
    start, end = arg.find("<"), arg.find(">")
    return arg[start + 1:end] if 0 <= start < end else arg.split(":", 1)[-1].strip()


class Peer:
    def __init__(self, host: str, port: int = 0,
                 script: Behaviour | Sequence[Behaviour] | Callable[[int], Behaviour] | None = None,
                 name: str = "peer"):
        self.host = host
        self.name = name
        if script is None:
            script = [Behaviour()]
        elif isinstance(script, Behaviour):
            script = [script]
        self._script = script
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._listener = socket.socket(family, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            self._listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        self._listener.bind((host, port))
        self._listener.listen(64)
        self.port = self._listener.getsockname()[1]
        self.sessions: list[Session] = []
        self.tcp_connections = 0  # accepted TCP connections (fewer than sessions when the client reuses them)
        self.max_open = 0  # most sessions open at the same time
        self._cond = threading.Condition()
        self._stopped = False
        self._socks: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._acceptor = threading.Thread(target=self._accept_loop, daemon=True, name=f"{name}-accept")
        self._acceptor.start()

    # -- public view

    def behaviour(self, number: int) -> Behaviour:
        if callable(self._script):
            return self._script(number)
        return self._script[min(number, len(self._script) - 1)]

    @property
    def messages(self) -> list[Message]:
        with self._cond:
            return [Message(s.mail_from or "", list(s.rcpts_accepted), s.data or b"")
                    for s in self.sessions if s.accepted]

    @property
    def connection_count(self) -> int:
        with self._cond:
            return len(self.sessions)

    def wait(self, predicate: Callable[["Peer"], object], timeout: float, what: str):
        end = time.monotonic() + timeout
        with self._cond:
            while True:
                value = predicate(self)
                if value:
                    return value
                remaining = end - time.monotonic()
                if remaining <= 0:
                    pytest.fail(f"{self.name} ({self.host}:{self.port}): timed out after {timeout:.1f}s waiting for "
                                f"{what}; sessions: {self.describe()}")
                self._cond.wait(min(remaining, 0.1))

    def wait_messages(self, count: int, timeout: float) -> list[Message]:
        self.wait(lambda p: len([s for s in p.sessions if s.accepted]) >= count, timeout, f"{count} message(s)")
        return self.messages

    def wait_sessions_ended(self, count: int, timeout: float) -> list[Session]:
        self.wait(lambda p: len([s for s in p.sessions if s.ended]) >= count, timeout, f"{count} ended session(s)")
        with self._cond:
            return list(self.sessions)

    def describe(self) -> str:
        return "; ".join(f"#{s.number} {s.client[0]}{' reused' if s.reused else ''} cmds={s.commands} "
                         f"accepted={s.accepted} ended={s.ended!r}"
                         for s in self.sessions) or "none"

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            socks = list(self._socks)
        try:
            self._listener.close()
        except OSError:
            pass
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                s.close()
            except OSError:
                pass
        self._acceptor.join(2)
        for t in self._threads:
            t.join(2)

    def __enter__(self) -> "Peer":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- server

    def _accept_loop(self) -> None:
        while True:
            with self._cond:
                if self._stopped:
                    return
            try:
                r, _, _ = select.select([self._listener], [], [], 0.1)
            except (OSError, ValueError):
                return
            if not r:
                continue
            try:
                conn, client = self._listener.accept()
            except OSError:
                return
            with self._cond:
                if self._stopped:
                    conn.close()
                    return
                session = Session(number=len(self.sessions), client=client)
                self.sessions.append(session)
                self.tcp_connections += 1
                self.max_open = max(self.max_open, len([x for x in self.sessions if not x.ended]))
                self._socks.append(conn)
                self._cond.notify_all()
            t = threading.Thread(target=self._serve, args=(conn, session), daemon=True,
                                 name=f"{self.name}-{session.number}")
            self._threads.append(t)
            t.start()

    def _end(self, session: Session, how: str) -> None:
        with self._cond:
            if not session.ended:
                session.ended = how
            self._cond.notify_all()

    def _serve(self, conn: socket.socket, session: Session) -> None:
        try:
            self._serve_script(conn, session)
        except Exception as exc:  # a bug in a script must show up in the session record, not kill silently
            self._end(session, f"peer-error: {exc!r}")
            raise

    def _serve_script(self, conn: socket.socket, session: Session) -> None:
        b = self.behaviour(session.number)
        conn.settimeout(30)
        buf = b""

        def send(*lines: str) -> None:
            conn.sendall(b"".join(line.encode() + b"\r\n" for line in lines))

        def read_line() -> bytes | None:
            nonlocal buf
            while b"\r\n" not in buf:
                chunk = conn.recv(65536)
                if not chunk:
                    return None
                buf += chunk
            line, buf = buf.split(b"\r\n", 1)
            return line

        try:
            if b.greeting is None:
                # Never greet: wait for the client to give up (or for stop()).
                while conn.recv(65536):
                    pass
                self._end(session, "client-closed-before-greeting")
                return
            if b.greeting_byte_delay:
                for byte in b.greeting.encode() + b"\r\n":
                    conn.sendall(bytes([byte]))
                    time.sleep(b.greeting_byte_delay)  # the scripted slowness itself, not a wait for a condition
            else:
                send(b.greeting)
            if not b.greeting.startswith("2"):
                # 4xx/5xx greeting: answer QUIT if it comes, then close.
                line = read_line()
                if line is not None:
                    with self._cond:
                        session.commands.append(line.decode("latin-1"))
                    send("221 2.0.0 Bye")
                self._end(session, "refused-at-greeting")
                return
            while True:
                line = read_line()
                if line is None:
                    self._end(session, "peer-closed")
                    return
                text = line.decode("latin-1")
                verb = text.split(" ", 1)[0].upper()
                arg = text[len(verb):].strip()
                with self._cond:
                    session.commands.append(text)
                    self._cond.notify_all()
                if verb == "EHLO":
                    send(*b.ehlo)
                elif verb == "HELO":
                    send(b.helo)
                elif verb == "STARTTLS":
                    if b.starttls is None:
                        send("502 5.5.1 STARTTLS not available")
                        continue
                    send(b.starttls)
                    if b.starttls.startswith("2"):
                        if b.after_starttls == "garbage":
                            conn.sendall(b"this is not a TLS server hello\r\n")
                        self._end(session, "tls-handshake-failed")
                        return
                elif verb == "MAIL":
                    if session.commands and any(c.split(" ", 1)[0].upper() == "MAIL" for c in session.commands[:-1]):
                        # A reused connection: this transaction is the next session (and the next behaviour).
                        with self._cond:
                            session.commands.pop()
                            if not session.ended:
                                session.ended = "next-transaction"
                            session = Session(number=len(self.sessions), client=session.client, reused=True,
                                              commands=[text])
                            self.sessions.append(session)
                            self._cond.notify_all()
                        b = self.behaviour(session.number)
                    reply = b.mail(arg) if callable(b.mail) else b.mail
                    if reply.startswith("2"):
                        with self._cond:
                            session.mail_from = _address(arg)
                            session.rcpts_accepted = []
                    send(reply)
                elif verb == "RCPT":
                    address = _address(arg)
                    reply = b.rcpt(address) if callable(b.rcpt) else b.rcpt
                    if reply is None:
                        while conn.recv(65536):
                            pass
                        self._end(session, "client-closed-while-stalled")
                        return
                    if reply.startswith("2"):
                        with self._cond:
                            session.rcpts_accepted.append(address)
                    send(reply)
                elif verb == "DATA":
                    if session.mail_from is None or not session.rcpts_accepted:
                        send("503 5.5.1 No valid recipients")
                        continue
                    send(b.data)
                    if not b.data.startswith("3"):
                        continue
                    # Read the message up to the lone ".".
                    body = bytearray()
                    while True:
                        if b.drop_after_data_bytes is not None and len(body) + len(buf) >= b.drop_after_data_bytes:
                            self._end(session, "dropped-mid-data")
                            return
                        if b.drop_after_data_bytes is not None and b"\r\n" not in buf:
                            chunk = conn.recv(65536)
                            if not chunk:
                                self._end(session, "peer-closed-in-data")
                                return
                            buf += chunk
                            continue
                        line = read_line()
                        if line is None:
                            self._end(session, "peer-closed-in-data")
                            return
                        if line == b".":
                            break
                        if line.startswith(b"."):
                            line = line[1:]
                        body += line + b"\r\n"
                    with self._cond:
                        session.data = bytes(body)
                        self._cond.notify_all()
                    if b.eod is None:
                        self._end(session, "no-reply-after-dot")
                        return
                    if b.eod_delay:
                        time.sleep(b.eod_delay)  # the scripted slowness itself, not a wait for a condition
                    send(b.eod)
                    with self._cond:
                        session.accepted = b.eod.startswith("2")
                        self._cond.notify_all()
                elif verb == "RSET":
                    with self._cond:
                        session.mail_from = None
                        session.rcpts_accepted = []
                    send("250 2.0.0 Ok")
                elif verb == "NOOP":
                    send("250 2.0.0 Ok")
                elif verb == "QUIT":
                    self._end(session, "quit")  # before the reply: the client may reconnect right after it
                    send("221 2.0.0 Bye")
                    return
                else:
                    send("502 5.5.2 Command not recognized")
        except OSError as exc:
            self._end(session, f"error: {exc}")
        finally:
            try:
                conn.close()
            except OSError:
                pass
            self._end(session, "closed")


@pytest.fixture
def peers():
    """Factory: peers(host="127.0.0.1", port=0, script=None, name="peer") -> a started Peer; all stopped at
    teardown. Import it into a test module to use it (`from peers import peers`)."""
    started: list[Peer] = []

    def _peer(host: str = "127.0.0.1", port: int = 0, script=None, name: str = "peer") -> Peer:
        p = Peer(host, port, script, name=name)
        started.append(p)
        return p

    yield _peer
    for p in started:
        p.stop()
