"""The paper's Test 2 — IPv4-only relay, IPv6-only middle MX, dual-stack backup that must not loop.

R (IPv4-only dualmta) → mx30 (dual-stack dualmta, backup MX, relay_domains = example.test) → mx20 (IPv6-only
dualmta, final destination) while mx10 (dual-stack) is down (link down). Asserted: R tries mx10's A then mx30's A and
never mx20's AAAA; mx30 prunes itself (level 30) and tries mx10 AAAA, mx10 A, mx20 AAAA; it never connects to itself
and never claims a loop; the message arrives once at mx20 with three Received lines (R, mx30, mx20).
"""

import pytest

from lab import DNSServer, Dualmta, attempt_tuples, plan_attempts, received_headers, swaks, wait_done, zone

ZONE = """
example.test.       MX   10 mx10.example.test.
example.test.       MX   20 mx20.example.test.
example.test.       MX   30 mx30.example.test.
mx10.example.test.  AAAA 2001:db8:10::1
                    A    192.0.2.10
mx20.example.test.  AAAA 2001:db8:20::1
mx30.example.test.  AAAA 2001:db8:30::1
                    A    192.0.2.30
"""


def build(lab):
    """The Test 2 network: DNS, mx10 (down), mx20 (IPv6-only dualmta), mx30 (backup dualmta), R, a client."""
    DNSServer(lab, zone(ZONE)).start()
    mx10 = lab.host("mx10", v4=["192.0.2.10"], v6=["2001:db8:10::1"])
    mx10.link_down()  # DOWN: connects time out / fail with "No route to host" (ARP/ND failure)
    mx20_host = lab.host("mx20", v6=["2001:db8:20::1"])
    mx20 = Dualmta(lab, mx20_host, "mx20.example.test", local_domains="example.test").start()
    mx30_host = lab.host("mx30", v4=["192.0.2.30"], v6=["2001:db8:30::1"])
    # relay_networks does not cover R: mx30 accepts the message because it is a backup MX (relay_domains).
    mx30 = Dualmta(lab, mx30_host, "mx30.example.test", relay_domains="example.test",
                   relay_networks="127.0.0.0/8").start()
    relay_host = lab.host("relay", v4=["192.0.2.40"])
    relay = Dualmta(lab, relay_host, "relay.lab.test").start()
    client = lab.host("client", v4=["192.0.2.100"])
    return mx20_host, mx20, mx30, relay, client


@pytest.mark.usefixtures("need_swaks")
def test_ipv4_relay_backup_mx_relays_upward_without_loop(lab):
    mx20_host, mx20, mx30, relay, client = build(lab)

    relay_plan = relay.route("user@example.test")
    assert plan_attempts(relay_plan) == [("mx10.example.test", 10, "ipv4", "192.0.2.10"),
                                         ("mx30.example.test", 30, "ipv4", "192.0.2.30")], relay_plan
    assert "mx20.example.test" in relay_plan.split("skipped:", 1)[-1], relay_plan
    mx30_plan = mx30.route("user@example.test")
    assert plan_attempts(mx30_plan) == [("mx10.example.test", 10, "ipv6", "2001:db8:10::1"),
                                        ("mx10.example.test", 10, "ipv4", "192.0.2.10"),
                                        ("mx20.example.test", 20, "ipv6", "2001:db8:20::1")], mx30_plan

    queue_id, _ = swaks(client, "192.0.2.40", "user@example.test", "alice@client.test", "test2")
    wait_done(relay, queue_id, timeout=40)

    # At R: mx10's A fails, mx30's A takes it; mx20 skipped for family, never attempted; no bounce.
    assert attempt_tuples(relay, queue_id) == [
        ("mx10.example.test", "[192.0.2.10]", "ipv4", "failed"),
        ("mx30.example.test", "[192.0.2.30]", "ipv4", "sent"),
    ], relay.text()
    skipped = relay.events("skipped", id=queue_id)
    assert any("mx20.example.test" in line["subject"] for line in skipped), relay.text()
    assert [line["result"] for line in relay.events("recipient", id=queue_id)] == ["delivered"], relay.text()

    # At mx30: accepted from R over IPv4, then mx10 AAAA, mx10 A, mx20 AAAA; never itself, no loop claim.
    accepted = mx30.wait_event("accepted", client="[192.0.2.40]")
    mx30_id = accepted["id"]
    wait_done(mx30, mx30_id, timeout=40)
    assert attempt_tuples(mx30, mx30_id) == [
        ("mx10.example.test", "[2001:db8:10::1]", "ipv6", "failed"),
        ("mx10.example.test", "[192.0.2.10]", "ipv4", "failed"),
        ("mx20.example.test", "[2001:db8:20::1]", "ipv6", "sent"),
    ], mx30.text()
    own = {"[192.0.2.30]", "[2001:db8:30::1]"}
    assert not [line.raw for line in mx30.events("delivery") if line.get("addr") in own]
    assert "loops back" not in mx30.text().lower()
    assert len(mx30.events("accepted")) == 1, mx30.text()  # it never handed the message to itself

    # At mx20: once, over IPv6 from mx30, with three Received lines (mx20's, mx30's, R's).
    mx20.wait_event("delivery", rcpt="<user@example.test>", result="delivered")
    assert [(line["client"], line["family"]) for line in mx20.events("accepted")] == [
        ("[IPv6:2001:db8:30::1]", "ipv6")], mx20.text()
    files = mx20.maildir("example.test", "user")
    assert len(files) == 1, files
    received = received_headers(files[0])
    assert len(received) == 3, received
    assert "by mx20.example.test" in received[0] and "[IPv6:2001:db8:30::1]" in received[0], received[0]
    assert "by mx30.example.test" in received[1] and "[192.0.2.40]" in received[1], received[1]
    assert "by relay.lab.test" in received[2] and "[192.0.2.100]" in received[2], received[2]


@pytest.mark.usefixtures("need_swaks")
def test_backup_mx_defers_while_everything_better_is_down(lab):
    """mx20 down too → mx30 defers 4.4.1 and keeps the message (no bounce, never itself, no loop claim);
    when mx20 comes back, the next run delivers it once."""
    mx20_host, mx20, mx30, relay, client = build(lab)
    mx20_host.link_down()
    swaks(client, "192.0.2.40", "user@example.test", "alice@client.test", "test2-deferred")
    mx30_id = mx30.wait_event("accepted", client="[192.0.2.40]")["id"]
    deferred = mx30.wait_event("recipient", id=mx30_id, timeout=30)
    assert (deferred["result"], deferred["status"]) == ("deferred", "4.4.1"), deferred.raw
    assert [a[1] for a in attempt_tuples(mx30, mx30_id)] == ["[2001:db8:10::1]", "[192.0.2.10]", "[2001:db8:20::1]"]
    assert [p.suffix for p in mx30.queue_files()].count(".msg") == 1

    mx20_host.link_up()
    wait_done(mx30, mx30_id, timeout=40)
    finals = [(line["result"], line["status"]) for line in mx30.events("recipient", id=mx30_id)]
    assert finals[-1][0] == "delivered" and all(r == "deferred" for r, _ in finals[:-1]), mx30.text()
    own = {"[192.0.2.30]", "[2001:db8:30::1]"}
    assert not [line.raw for line in mx30.events("delivery") if line.get("addr") in own]
    assert "loops back" not in mx30.text().lower()
    assert len(mx30.events("accepted")) == 1, mx30.text()  # no NDR or other message generated or received
    mx20.wait_event("delivery", rcpt="<user@example.test>", result="delivered")
    assert len(mx20.maildir("example.test", "user")) == 1
