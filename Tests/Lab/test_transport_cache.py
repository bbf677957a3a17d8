"""Transport cache: IPv6 broken → delivered over IPv4; IPv6 restored → the next message still goes
to the cached IPv4 address (moved to the front of its level) until transport_cache_ttl has passed, then IPv6 first
again. Destination: an in-process sink that records the peer address of every session."""

import time

from lab import DNSServer, Dualmta, Sink, attempt_tuples, plan_attempts, smtp_submit, wait_done, wait_until, zone

TTL = 6.0
NEGATIVE_TTL = 1.0  # the shortest retry interval (retry_schedule = 1s)
ZONE = """
example.test.     MX   10 mx.example.test.
mx.example.test.  AAAA 2001:db8:50::25
                  A    192.0.2.50
"""
V6, V4 = "2001:db8:50::25", "192.0.2.50"


def test_cached_ipv4_transport_until_ttl_then_ipv6_again(lab):
    DNSServer(lab, zone(ZONE)).start()
    sink = Sink(lab, lab.host("mx", v4=[V4], v6=[V6]), "mx.example.test").start()
    sender_host = lab.host("sender", v4=["192.0.2.25"], v6=["2001:db8:1::25"])
    sender = Dualmta(lab, sender_host, "sender.lab.test", transport_cache_ttl=f"{int(TTL)}s",
                     retry_schedule=f"{int(NEGATIVE_TTL)}s").start()
    client = lab.host("client", v4=["192.0.2.100"])
    assert [p[3] for p in plan_attempts(sender.route("user@example.test"))] == [V6, V4]

    # 1. IPv6 broken: AAAA fails, A delivers.
    sender_host.unreachable(V6)
    first = smtp_submit(client, "192.0.2.25", "user@example.test", "alice@client.test", "cache-1")
    wait_done(sender, first)
    cached_at = time.monotonic()
    assert attempt_tuples(sender, first) == [
        ("mx.example.test", f"[{V6}]", "ipv6", "failed"),
        ("mx.example.test", f"[{V4}]", "ipv4", "sent"),
    ], sender.text()

    # 2. IPv6 restored. Once the negative entry for the AAAA has expired (1s) and within the TTL, the cached IPv4
    # transport alone puts the A first ("cached transport moved to front"); the AAAA is not even skipped as dead.
    sender_host.reachable(V6)
    wait_until(lambda: time.monotonic() >= cached_at + NEGATIVE_TTL + 0.5, what="the negative entry to expire")
    plan = sender.route("user@example.test")
    assert [p[3] for p in plan_attempts(plan)] == [V4, V6] and "cached transport" in plan, plan
    second = smtp_submit(client, "192.0.2.25", "user@example.test", "alice@client.test", "cache-2")
    wait_done(sender, second)
    assert time.monotonic() - cached_at < TTL, "the second message was too slow to test the cache (machine overloaded?)"
    assert attempt_tuples(sender, second) == [("mx.example.test", f"[{V4}]", "ipv4", "sent")], sender.text()
    assert [line["addr"] for line in sender.events("route", id=second)] == [f"[{V4}]"], sender.text()
    assert not sender.events("skipped", id=second), sender.text()

    # 3. The entry expires: `dualmta route` shows the AAAA first again, not before the TTL; the next message uses it.
    wait_until(lambda: [p[3] for p in plan_attempts(sender.route("user@example.test"))] == [V6, V4],
               timeout=TTL + 10, what="AAAA first again after the TTL", interval=0.25)
    assert time.monotonic() - cached_at >= TTL - 1.5, "the cached transport expired before transport_cache_ttl"
    third = smtp_submit(client, "192.0.2.25", "user@example.test", "alice@client.test", "cache-3")
    wait_done(sender, third)
    assert attempt_tuples(sender, third) == [("mx.example.test", f"[{V6}]", "ipv6", "sent")], sender.text()

    # What arrived where: three messages, families v4, v4, v6, from the sender's own addresses.
    messages = sink.wait_messages(3)
    assert [(m.peer, m.local) for m in messages] == [
        ("192.0.2.25", V4), ("192.0.2.25", V4), ("2001:db8:1::25", V6)], messages
