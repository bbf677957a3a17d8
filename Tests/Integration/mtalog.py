"""Helpers shared by the outbound, DNS-routing and bounce tests: parse dualmta's text log lines, submit messages over
SMTP, start an outbound-capable server, and parse delivery status notifications with Python's `email` package."""

from __future__ import annotations

import email
import email.policy
import re
import time
from dataclasses import dataclass
from email.message import Message
from pathlib import Path

import pytest

from conftest import DEADLINE, Server, simple_message, unique_tag

_LINE = re.compile(r"^(?P<ts>\S+) (?P<level>\w+)\s+(?P<event>\S+)(?P<rest>.*)$")
_FIELD = re.compile(r'(\w[\w.-]*)=("(?:[^"\\]|\\.)*"|\S*)')


@dataclass
class Event:
    event: str
    fields: dict[str, str]
    line: str

    def __getitem__(self, key: str) -> str:
        return self.fields[key]

    def get(self, key: str, default: str | None = None) -> str | None:
        return self.fields.get(key, default)


def parse_line(line: str) -> Event | None:
    m = _LINE.match(line)
    if not m:
        return None
    fields = {}
    for key, value in _FIELD.findall(m.group("rest")):
        if value.startswith('"'):
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        fields[key] = value
    return Event(m.group("event"), fields, line)


def events(server: Server, event: str | None = None, **match: str) -> list[Event]:
    """Log events (in order) with that name whose fields equal every `match` value."""
    with server._cond:
        lines = list(server.lines)
    out = []
    for line in lines:
        e = parse_line(line)
        if e is None or (event is not None and e.event != event):
            continue
        if all(e.fields.get(k) == v for k, v in match.items()):
            out.append(e)
    return out


def wait_event(server: Server, event: str, timeout: float = DEADLINE, count: int = 1, **match: str) -> list[Event]:
    """Waits until at least `count` matching events were logged; returns them all."""
    end = time.monotonic() + timeout
    while True:
        found = events(server, event, **match)
        if len(found) >= count:
            return found
        if time.monotonic() >= end:
            pytest.fail(f"timed out after {timeout:.1f}s waiting for {count} {event!r} event(s) with {match}; "
                        f"log:\n{server.log_text()}")
        with server._cond:
            server._cond.wait(0.1)


def story(server: Server, *ids: str) -> str:
    """The log lines mentioning any of `ids` (for assertion messages)."""
    return "\n".join(line for line in server.log_text().splitlines() if any(i in line for i in ids))


def outbound_settings(**overrides: str | None) -> dict[str, str | None]:
    """Outbound settings for fast tests; nothing ever asks the machine's resolver (every test sets routes or
    dns_servers)."""
    settings: dict[str, str | None] = {
        "retry_schedule": "1s",
        "connect_timeout": "2s",
        "smtp_reply_timeout": "2s",
        "delay_warning_after": "0",
        "max_queue_lifetime": "1h",
        "transport_cache_ttl": "1h",
    }
    settings.update(overrides)
    return settings


def submit(server: Server, sender: str, rcpts: list[str], subject: str | None = None, body: bytes = b"hello\r\n",
           host: str = "127.0.0.1", extra_headers: bytes = b"", mail_params: str = "") -> str:
    """One SMTP transaction to `server`; returns the queue id."""
    subject = subject or unique_tag("s")
    with server.session(host) as c:
        reply = c.transaction(sender, rcpts, simple_message(subject, body, extra_headers), mail_params)
        qid = reply.queue_id()
        c.cmd(b"QUIT")
    return qid


def maildir(spool: Path, domain: str, user: str) -> list[Path]:
    base = spool / "mailboxes" / domain / user
    return sorted(p for sub in ("new", "cur") for p in (base / sub).glob("*") if p.is_file())


def queue_empty(spool: Path) -> bool:
    q = spool / "queue"
    return not q.is_dir() or not any(q.iterdir())


def wait_queue_empty(server: Server, timeout: float = DEADLINE) -> None:
    end = time.monotonic() + timeout
    while not queue_empty(server.spool):
        if time.monotonic() >= end:
            left = sorted(p.name for p in (server.spool / "queue").iterdir())
            pytest.fail(f"queue not empty after {timeout:.1f}s: {left}\nlog:\n{server.log_text()}")
        time.sleep(0.02)  # between polls only (deadline above)


@dataclass
class DSN:
    message: Message
    per_message: Message
    recipients: list[Message]
    human: str
    third: Message | None


def parse_dsn(raw: bytes) -> DSN:
    """An RFC 3464 report inside RFC 6522 multipart/report, parsed with the stdlib MIME parser."""
    msg = email.message_from_bytes(raw, policy=email.policy.compat32)
    assert msg.get_content_type() == "multipart/report", f"not multipart/report: {msg.get_content_type()}"
    assert msg.get_param("report-type") == "delivery-status", f"report-type: {msg.get_param('report-type')!r}"
    parts = msg.get_payload()
    assert isinstance(parts, list) and len(parts) in (2, 3), f"expected 2 or 3 parts, got {len(parts)}"
    assert parts[0].get_content_type() == "text/plain", parts[0].get_content_type()
    assert parts[1].get_content_type() == "message/delivery-status", parts[1].get_content_type()
    groups = parts[1].get_payload()
    assert isinstance(groups, list) and len(groups) >= 2, f"delivery-status groups: {groups!r}"
    third = parts[2] if len(parts) == 3 else None
    if third is not None:
        assert third.get_content_type() in ("message/rfc822", "text/rfc822-headers"), third.get_content_type()
    human = parts[0].get_payload(decode=True).decode("utf-8", "replace")
    return DSN(msg, groups[0], groups[1:], human, third)


