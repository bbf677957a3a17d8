"""The paper's Test 1 — all AAAA, then all A, then the next preference (RFC 3974 order), on real namespaces.

mx10 has three AAAA (made unreachable from the sender: "No route to host") and two A (host up, no listener: refused);
mx20 is a dual-stack dualmta, the final destination. The sender is a dualmta submitted to by swaks. Asserted from the
sender's own attempt log lines and from what arrived at mx20: exact order, family and outcome; mx20's A never
contacted; `dualmta route` printed the same plan before anything was sent. Variants: IPv4-only and IPv6-only sender.
"""

import re
import time

import pytest

from lab import (DNSServer, Dualmta, attempt_tuples, plan_attempts, received_headers, smtp_submit, swaks, wait_done,
                 wait_until, zone)

ZONE = """
example.test.       MX   10 mx10.example.test.
example.test.       MX   20 mx20.example.test.
mx10.example.test.  AAAA 2001:db8:10::1
                    AAAA 2001:db8:10::2
                    AAAA 2001:db8:10::3
                    A    192.0.2.11
                    A    192.0.2.12
mx20.example.test.  AAAA 2001:db8:20::1
                    A    192.0.2.21
"""

NEGATIVE_TTL = 4.0
MX10_V6 = ["2001:db8:10::1", "2001:db8:10::2", "2001:db8:10::3"]
MX10_V4 = ["192.0.2.11", "192.0.2.12"]
SENDER = {"v4": ["192.0.2.25"], "v6": ["2001:db8:1::25"]}

# (mx, pref, family, address) per sender variant, in the exact order RFC 3974 + the project rule give.
PLANS = {
    "dual": [("mx10.example.test", 10, "ipv6", a) for a in MX10_V6]
    + [("mx10.example.test", 10, "ipv4", a) for a in MX10_V4]
    + [("mx20.example.test", 20, "ipv6", "2001:db8:20::1"), ("mx20.example.test", 20, "ipv4", "192.0.2.21")],
    "ipv4": [("mx10.example.test", 10, "ipv4", a) for a in MX10_V4] + [("mx20.example.test", 20, "ipv4", "192.0.2.21")],
    "ipv6": [("mx10.example.test", 10, "ipv6", a) for a in MX10_V6]
    + [("mx20.example.test", 20, "ipv6", "2001:db8:20::1")],
}


@pytest.mark.usefixtures("need_swaks")
@pytest.mark.parametrize("variant", ["dual", "ipv4", "ipv6"])
def test_all_aaaa_then_all_a_then_next_preference(lab, variant):
    DNSServer(lab, zone(ZONE)).start()
    lab.host("mx10", v4=MX10_V4, v6=MX10_V6)  # up, no SMTP listener: A attempts are refused
    mx20_host = lab.host("mx20", v4=["192.0.2.21"], v6=["2001:db8:20::1"])
    mx20 = Dualmta(lab, mx20_host, "mx20.example.test", local_domains="example.test").start()
    sender_host = lab.host("sender", v4=SENDER["v4"] if variant != "ipv6" else [],
                           v6=SENDER["v6"] if variant != "ipv4" else [])
    if "ipv6" in sender_host.families:
        sender_host.unreachable(*MX10_V6)
    client = lab.host("client", v4=["192.0.2.100"], v6=["2001:db8:100::100"])
    # The negative transport-cache TTL is the shortest retry interval: 4s keeps mx10 "dead" for the second message.
    sender = Dualmta(lab, sender_host, "sender.lab.test", retry_schedule=f"{int(NEGATIVE_TTL)}s").start()

    # The plan, before anything is sent: exactly the order the attempts must follow.
    plan = plan_attempts(sender.route("user@example.test"))
    assert plan == PLANS[variant], sender.route("user@example.test")

    server_address = sender_host.v4[0] if sender_host.v4 else sender_host.v6[0]
    queue_id, _ = swaks(client, server_address, "user@example.test", "alice@client.test", f"test1-{variant}")
    wait_done(sender, queue_id)

    delivered_family = "ipv4" if variant == "ipv4" else "ipv6"
    delivered_to = "192.0.2.21" if variant == "ipv4" else "2001:db8:20::1"
    failing = [p for p in PLANS[variant] if p[0] == "mx10.example.test"]
    expected = [(mx, f"[{addr}]", fam, "failed") for mx, _, fam, addr in failing]
    expected.append(("mx20.example.test", f"[{delivered_to}]", delivered_family, "sent"))
    assert attempt_tuples(sender, queue_id) == expected, sender.text()

    attempts = sender.attempts(queue_id)
    for line in attempts:
        if line["addr"].strip("[]") in MX10_V6:
            assert "no route to host" in line.get("reason", "").lower(), line.raw
        elif line["addr"].strip("[]") in MX10_V4:
            assert "refused" in line.get("reason", "").lower(), line.raw
    assert [line["pref"] for line in attempts] == [str(p[1]) for p in PLANS[variant]][:len(attempts)]
    final = sender.events("recipient", id=queue_id)
    assert [(line["rcpt"], line["result"]) for line in final] == [("<user@example.test>", "delivered")], sender.text()

    # At mx20: exactly one session (never on its A record unless the sender is IPv4-only), one message, once.
    accepted = mx20.events("accepted")
    assert [line["family"] for line in accepted] == [delivered_family], mx20.text()
    source = SENDER["v4"][0] if variant == "ipv4" else SENDER["v6"][0]
    expected_client = f"[{source}]" if variant == "ipv4" else f"[IPv6:{source}]"
    assert accepted[0]["client"] == expected_client, accepted[0].raw
    mx20.wait_event("delivery", rcpt="<user@example.test>", result="delivered")
    files = mx20.maildir("example.test", "user")
    assert len(files) == 1, files
    received = received_headers(files[0])
    assert len(received) == 2, received  # sender's (from swaks) and mx20's
    assert re.search(r"\(\S*\s*" + re.escape(expected_client) + r"\)", received[0]), received[0]
    assert "sender.lab.test" in received[1], received

    if variant != "dual":
        return
    # Within the negative TTL a second message skips the five dead mx10 addresses (logged) and goes to
    # mx20 first; once the entries expire, `dualmta route` puts mx10 first again (preference restored).
    failed_at = time.monotonic()
    second = smtp_submit(client, server_address, "user@example.test", "bob@client.test", "test1-second")
    wait_done(sender, second)
    assert time.monotonic() - failed_at < NEGATIVE_TTL, "second message too slow to test the negative cache"
    assert attempt_tuples(sender, second) == [("mx20.example.test", "[2001:db8:20::1]", "ipv6", "sent")], \
        sender.text()
    skipped = [line["subject"] for line in sender.events("skipped", id=second) if "cached dead" in line["reason"]]
    assert sorted(skipped) == sorted(MX10_V6 + MX10_V4), sender.text()
    restored = wait_until(lambda: (plan := plan_attempts(sender.route("user@example.test"))) == PLANS["dual"] and plan,
                          timeout=NEGATIVE_TTL + 10, what="mx10 first again in `dualmta route`", interval=0.25)
    assert restored and time.monotonic() - failed_at >= NEGATIVE_TTL - 1.5
    assert len(mx20.maildir("example.test", "user")) == 2
