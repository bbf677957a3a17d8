"""connect_strategy = happy-eyeballs (RFC 8305 adapted to SMTP): within one MX preference level the preferred
family starts first and the other family starts after connection_attempt_delay; the first TCP connection wins and
the others are closed; pref 20 is never contacted while a pref-10 address is pending. Every started attempt is logged
as `connect id= mx= pref= addr= family= result=won|lost|failed ms=`. Timing is asserted only with wide bounds.

AAAA silently dropped, A works -> IPv4 wins after about the attempt delay, not after connect_timeout (30 s).
A working AAAA wins over the A. With both pref-10 addresses silently dropped, pref 20 is contacted only once
both timed out."""

import time

from lab import DNSServer, Dualmta, Sink, plan_attempts, smtp_submit, wait_done, zone

ZONE = """
he.test.        MX   10 mx10.he.test.
he.test.        MX   20 mx20.he.test.
mx10.he.test.   AAAA 2001:db8:10::25
                A    192.0.2.10
mx20.he.test.   AAAA 2001:db8:20::25
                A    192.0.2.20
"""
MX10_V6, MX10_V4 = "2001:db8:10::25", "192.0.2.10"
MX20_V6, MX20_V4 = "2001:db8:20::25", "192.0.2.20"
SENDER_V4, SENDER_V6 = "192.0.2.25", "2001:db8:1::25"


def setup(lab, connect_timeout: str = "30s"):
    DNSServer(lab, zone(ZONE)).start()
    mx10 = Sink(lab, lab.host("mx10", v4=[MX10_V4], v6=[MX10_V6]), "mx10.he.test").start()
    mx20 = Sink(lab, lab.host("mx20", v4=[MX20_V4], v6=[MX20_V6]), "mx20.he.test").start()
    sender_host = lab.host("sender", v4=[SENDER_V4], v6=[SENDER_V6])
    sender = Dualmta(lab, sender_host, "sender.lab.test", connect_strategy="happy-eyeballs",
                     connection_attempt_delay="250ms", connect_timeout=connect_timeout).start()
    client = lab.host("client", v4=["192.0.2.100"])
    return sender_host, sender, client, mx10, mx20


def connects(mta: Dualmta, queue_id: str) -> list[tuple[str, str, str, str]]:
    return [(line["pref"], line["addr"], line["family"], line["result"]) for line in mta.events("connect", id=queue_id)]


def test_route_shows_the_staggered_schedule(lab):
    _, sender, _, _, _ = setup(lab)
    text = sender.route("user@he.test")
    # The plan itself is unchanged (RFC 3974 order); the schedule follows it.
    assert [p[3] for p in plan_attempts(text)] == [MX10_V6, MX10_V4, MX20_V6, MX20_V4], text
    assert "happy-eyeballs schedule (connection_attempt_delay 250ms" in text, text
    schedule = text[text.index("happy-eyeballs schedule"):].splitlines()
    assert [line.split()[0] for line in schedule if line.strip().startswith("+")] == ["+0ms", "+250ms", "+0ms",
                                                                                       "+250ms"], text
    assert f"mx10.he.test ipv6 [{MX10_V6}]:25" in text and "pref 20, only after every pref 10 attempt failed" in text


def test_silently_dropped_ipv6_loses_to_ipv4_after_the_attempt_delay(lab):
    sender_host, sender, client, mx10, mx20 = setup(lab, connect_timeout="30s")
    sender_host.silent_drop(MX10_V6)
    started = time.monotonic()
    queue_id = smtp_submit(client, SENDER_V4, "user@he.test", "alice@client.test", "he-drop")
    wait_done(sender, queue_id, timeout=20)
    elapsed = time.monotonic() - started
    assert elapsed < 5, f"IPv4 should win after ~250 ms, not after connect_timeout (30 s); took {elapsed:.1f}s"

    assert connects(sender, queue_id) == [
        ("10", f"[{MX10_V6}]", "ipv6", "lost"),
        ("10", f"[{MX10_V4}]", "ipv4", "won"),
    ], sender.text()
    lost = sender.events("connect", id=queue_id, result="lost")[0]
    assert int(lost["ms"]) >= 200, f"IPv4 started before the attempt delay: {lost.raw}"
    delivered = [line for line in sender.attempts(queue_id) if line["result"] == "sent"]
    assert [(line["addr"], line["family"]) for line in delivered] == [(f"[{MX10_V4}]", "ipv4")], sender.text()

    messages = mx10.wait_messages(1)
    assert [m.peer for m in messages] == [SENDER_V4]
    assert not mx20.sessions, "pref 20 was contacted although pref 10 delivered"


def test_working_ipv6_wins_over_ipv4(lab):
    _, sender, client, mx10, mx20 = setup(lab)
    queue_id = smtp_submit(client, SENDER_V4, "user@he.test", "alice@client.test", "he-v6")
    wait_done(sender, queue_id, timeout=20)
    # The AAAA connects on loopback-like speed, well inside the 250 ms delay: the A never even starts.
    assert connects(sender, queue_id) == [("10", f"[{MX10_V6}]", "ipv6", "won")], sender.text()
    assert [(line["addr"], line["result"]) for line in sender.attempts(queue_id)] == [(f"[{MX10_V6}]", "sent")]
    assert [m.peer for m in mx10.wait_messages(1)] == [SENDER_V6]
    assert not mx20.sessions


def test_never_contacts_pref_20_while_a_pref_10_address_is_pending(lab):
    sender_host, sender, client, mx10, mx20 = setup(lab, connect_timeout="3s")
    sender_host.silent_drop(MX10_V6, MX10_V4)
    started = time.monotonic()
    queue_id = smtp_submit(client, SENDER_V4, "user@he.test", "alice@client.test", "he-levels")
    messages = mx20.wait_messages(1, timeout=30)
    first_pref20_session = time.monotonic()
    wait_done(sender, queue_id, timeout=30)

    assert connects(sender, queue_id) == [
        ("10", f"[{MX10_V6}]", "ipv6", "failed"),
        ("10", f"[{MX10_V4}]", "ipv4", "failed"),
        ("20", f"[{MX20_V6}]", "ipv6", "won"),
    ], sender.text()
    assert all(line["reason"] == "connect timed out"
               for line in sender.events("connect", id=queue_id, result="failed")), sender.text()
    # Pref 20 only after both pref-10 attempts timed out (3 s each, the second started 250 ms after the first).
    assert first_pref20_session - started >= 3.0, "pref 20 was contacted while pref 10 was still pending"
    assert len(mx20.sessions) == 1 and [m.peer for m in messages] == [SENDER_V6]
    assert not mx10.sessions
