"""DNS routing end to end with a REAL unbound serving lab zones on 127.0.0.1 (dnslab.py): RFC 3974 family order
per preference level, the transport cache and the routing verdicts for DNS answers (rows N-1 SERVFAIL, N-3
NXDOMAIN, N-5 null MX). dualmta is told `dns_servers = 127.0.0.1:PORT`, `allow_loopback_mx = yes` (the lab MX hosts
live on loopback) and `mx_port = PORT` (where the test's peer listens)."""

from __future__ import annotations

import json
import time

import pytest

from conftest import DEADLINE, free_port
from dnslab import _free_udp_tcp_port, lab_dns  # noqa: F401  (fixture)
from mtalog import events, maildir, outbound_settings, parse_dsn, story, submit, wait_event, wait_queue_empty
from peers import peers  # noqa: F401  (fixture)

SENDER = "alice@src.example"


def route_json(srv, address: str) -> dict:
    run = srv.cli("route", address, "--json")
    assert run.returncode == 0, run.stdout.decode(errors="replace") + run.stderr.decode(errors="replace")
    return json.loads(run.stdout)


def plan_order(plan: dict) -> list[tuple[str, int]]:
    return [(a["endpoint"]["address"], a["endpoint"]["port"]) for a in plan["attempts"]]


def delivery_order(srv, qid: str) -> list[tuple[str, str, str]]:
    return [(a["family"], a["addr"], a["result"]) for a in events(srv, "delivery", id=qid)]


def test_transport_cache_ipv6_fails_ipv4_cached_then_order_restored(start_server, peers, lab_dns):  # noqa: F811
    """mx.cache.example.test has AAAA ::1 and A 127.0.0.1; the peer listens on 127.0.0.1:PORT only, so ::1
    refuses. First message: IPv6 fails, IPv4 delivers. Second: straight to the cached 127.0.0.1, logged. After
    transport_cache_ttl: IPv6 first again. `dualmta route` prints the order each delivery used."""
    port = free_port()
    sink = peers("127.0.0.1", port, name="v4-only-mx")
    ttl = 3
    srv = start_server(**outbound_settings(dns_servers=lab_dns.server, mx_port=str(port), allow_loopback_mx="yes",
                                           transport_cache_ttl=f"{ttl}s"))
    rcpt = "bob@cache.example.test"

    before = route_json(srv, rcpt)
    assert plan_order(before) == [("::1", port), ("127.0.0.1", port)], before
    assert {a["mxHost"] for a in before["attempts"]} == {"mx.cache.example.test"}
    assert all(a["preference"] == 10 for a in before["attempts"])

    first = submit(srv, SENDER, [rcpt])
    wait_event(srv, "removed", id=first)
    assert delivery_order(srv, first) == [("ipv6", "[::1]", "failed"), ("ipv4", "[127.0.0.1]", "sent")], \
        story(srv, first)
    refused = events(srv, "delivery", id=first)[0]
    assert refused["mx"] == "mx.cache.example.test" and refused["pref"] == "10" and "refused" in refused["reason"]
    # The order delivery used is the order `dualmta route` printed.
    assert [a[1].strip("[]") for a in delivery_order(srv, first)] == [a for a, _ in plan_order(before)]

    second = submit(srv, SENDER, [rcpt])
    wait_event(srv, "removed", id=second)
    assert delivery_order(srv, second) == [("ipv4", "[127.0.0.1]", "sent")], story(srv, second)
    notes = events(srv, "route", id=second, addr="[127.0.0.1]")
    assert notes and "cached transport" in notes[0]["note"], story(srv, second)
    cached = route_json(srv, rcpt)
    assert plan_order(cached)[0] == ("127.0.0.1", port) and "cached" in (cached["attempts"][0].get("note") or ""), \
        cached

    # After the TTL (counted from the last success) the plan puts IPv6 first again.
    end = time.monotonic() + ttl + DEADLINE
    while True:
        plan = route_json(srv, rcpt)
        if plan_order(plan) == [("::1", port), ("127.0.0.1", port)]:
            break
        if time.monotonic() > end:
            pytest.fail(f"preference order not restored after transport_cache_ttl={ttl}s: {plan}")
        time.sleep(0.2)  # between polls only
    third = submit(srv, SENDER, [rcpt])
    wait_event(srv, "removed", id=third)
    assert delivery_order(srv, third) == [("ipv6", "[::1]", "failed"), ("ipv4", "[127.0.0.1]", "sent")], \
        story(srv, third)
    assert not [n for n in events(srv, "route", id=third) if "cached transport" in n["note"]], story(srv, third)
    assert len(sink.wait_messages(3, DEADLINE)) == 3
    wait_queue_empty(srv)


@pytest.mark.parametrize("rcpt,status", [
    pytest.param("bob@nullmx.example.test", "5.1.10", id="N-5-null-MX"),
    pytest.param("bob@nosuch.example.test", "5.1.2", id="N-3-NXDOMAIN"),
    pytest.param("bob@nodata.example.test", "5.4.4", id="N-4-NODATA"),
])
def test_permanent_dns_verdicts_fail_without_any_connection(rcpt, status, start_server, peers, lab_dns):  # noqa: F811
    ndr = peers(name="ndr-sink")
    srv = start_server(**outbound_settings(dns_servers=lab_dns.server, allow_loopback_mx="yes",
                                           routes=f"src.example=[127.0.0.1]:{ndr.port}"))
    plan = route_json(srv, rcpt)
    assert plan["attempts"] == [] and "permanentFailure" in plan["verdict"], plan
    assert plan["verdict"]["permanentFailure"]["status"] == status, plan
    qid = submit(srv, SENDER, [rcpt])
    wait_event(srv, "removed", id=qid)
    finals = [(f["rcpt"], f["result"], f["status"]) for f in events(srv, "recipient", id=qid)]
    assert finals == [(f"<{rcpt}>", "failed", status)], story(srv, qid)
    assert not events(srv, "delivery", id=qid), story(srv, qid)
    [report] = ndr.wait_messages(1, DEADLINE)
    [group] = parse_dsn(report.data).recipients
    assert group["Status"] == status and group["Action"] == "failed", group.items()
    assert ndr.connection_count == 1
    wait_queue_empty(srv)


@pytest.mark.parametrize("case", ["refused-zone", "no-server"])
def test_mx_lookup_failure_defers_4_4_3(case, start_server, lab_dns):  # noqa: F811
    """N-1: a temporary DNS failure (REFUSED from unbound, or nothing listening at the server's port) defers the
    domain with 4.4.3 and never falls back to A/AAAA."""
    if case == "refused-zone":
        dns, rcpt = lab_dns.server, "bob@mail.refused.test"
    else:
        dns, rcpt = f"127.0.0.1:{_free_udp_tcp_port()}", "bob@cache.example.test"
    srv = start_server(**outbound_settings(dns_servers=dns, allow_loopback_mx="yes", retry_schedule="1h"))
    started = time.monotonic()
    qid = submit(srv, SENDER, [rcpt])
    final = wait_event(srv, "recipient", id=qid, timeout=20)[0]
    assert (final["result"], final["status"]) == ("deferred", "4.4.3"), story(srv, qid)
    wait_event(srv, "deferred", id=qid)
    assert not events(srv, "delivery", id=qid), story(srv, qid)
    assert not events(srv, "bounce"), story(srv, qid)
    assert time.monotonic() - started < 20
    plan = route_json(srv, rcpt)
    assert plan["attempts"] == [] and plan["verdict"].get("temporaryFailure", {}).get("status") == "4.4.3", plan
    assert srv.spool.joinpath("queue", f"{qid}.env").exists()


def test_paper_test1_order_all_aaaa_then_all_a_then_next_preference(start_server, peers, lab_dns):  # noqa: F811
    """The paper's Test 1 on loopback: t1.example.test MX 10 mx10 (AAAA ::1, A 127.0.0.2, A 127.0.0.3) and
    MX 20 mx20 (A 127.0.0.4). Only 127.0.0.4 listens: three refusals at pref 10 (IPv6 first), then mx20."""
    good = peers("127.0.0.4", 0, name="mx20")
    port = good.port
    # retry_schedule 1m: the negative cache entries (connect failures) then live 60 s, so the second message
    # skips the three dead mx10 addresses.
    srv = start_server(**outbound_settings(dns_servers=lab_dns.server, mx_port=str(port), allow_loopback_mx="yes",
                                           retry_schedule="1m"))
    rcpt = "bob@t1.example.test"
    expected = [("::1", port), ("127.0.0.2", port), ("127.0.0.3", port), ("127.0.0.4", port)]
    plan = route_json(srv, rcpt)
    assert plan_order(plan) == expected, plan
    assert [(a["mxHost"], a["preference"]) for a in plan["attempts"]] == \
        [("mx10.t1.example.test", 10)] * 3 + [("mx20.t1.example.test", 20)], plan
    qid = submit(srv, SENDER, [rcpt])
    wait_event(srv, "removed", id=qid)
    attempts = events(srv, "delivery", id=qid)
    assert [(a["mx"], a["pref"], a["family"], a["addr"], a["result"]) for a in attempts] == [
        ("mx10.t1.example.test", "10", "ipv6", "[::1]", "failed"),
        ("mx10.t1.example.test", "10", "ipv4", "[127.0.0.2]", "failed"),
        ("mx10.t1.example.test", "10", "ipv4", "[127.0.0.3]", "failed"),
        ("mx20.t1.example.test", "20", "ipv4", "[127.0.0.4]", "sent"),
    ], story(srv, qid)
    assert [a["addr"].strip("[]") for a in attempts] == [a for a, _ in expected]  # what `route` printed
    assert len(good.wait_messages(1, DEADLINE)) == 1

    # Within the negative TTL the dead mx10 addresses are skipped (logged), mx20 is tried directly; the
    # cached success on mx20 never moves it ahead of pref 10 - the skips do.
    second = submit(srv, SENDER, [rcpt])
    wait_event(srv, "removed", id=second)
    assert [(a["mx"], a["addr"], a["result"]) for a in events(srv, "delivery", id=second)] == \
        [("mx20.t1.example.test", "[127.0.0.4]", "sent")], story(srv, second)
    skipped = {e["subject"] for e in events(srv, "skipped", id=second)}
    assert skipped == {"::1", "127.0.0.2", "127.0.0.3"}, story(srv, second)
    assert all("cached dead" in e["reason"] for e in events(srv, "skipped", id=second)), story(srv, second)
    plan = route_json(srv, rcpt)
    assert plan_order(plan)[0] == ("127.0.0.4", port) and plan["skipped"], plan
    assert len(good.wait_messages(2, DEADLINE)) == 2
    wait_queue_empty(srv)


def test_mx_target_that_is_a_cname_is_followed(start_server, peers, lab_dns):  # noqa: F811
    """N-6: cname.example.test MX 10 alias.example.test, a CNAME to dual.example.test (::1, 127.0.0.1)."""
    port = free_port()
    sink = peers("127.0.0.1", port, name="v4")
    srv = start_server(**outbound_settings(dns_servers=lab_dns.server, mx_port=str(port), allow_loopback_mx="yes"))
    plan = route_json(srv, "bob@cname.example.test")
    assert plan_order(plan) == [("::1", port), ("127.0.0.1", port)], plan
    assert plan["warnings"], f"no warning about the CNAME MX target: {plan}"
    qid = submit(srv, SENDER, ["bob@cname.example.test"])
    wait_event(srv, "removed", id=qid)
    assert delivery_order(srv, qid) == [("ipv6", "[::1]", "failed"), ("ipv4", "[127.0.0.1]", "sent")], \
        story(srv, qid)
    assert len(sink.wait_messages(1, DEADLINE)) == 1


def test_self_as_best_mx_is_a_loop_5_4_6(start_server, lab_dns):  # noqa: F811
    """N-7 / M03: selfmx.example.test's only MX is dual.example.test (::1, 127.0.0.1) and mx_port is the port this
    dualmta listens on: permanent 5.4.6, no connection to itself; the NDR goes to the (local) sender."""
    port = free_port()
    srv = start_server(port=port, **outbound_settings(dns_servers=lab_dns.server, mx_port=str(port),
                                                       allow_loopback_mx="yes"))
    plan = route_json(srv, "bob@selfmx.example.test")
    assert plan["attempts"] == [] and plan["verdict"].get("permanentFailure", {}).get("status") == "5.4.6", plan
    qid = submit(srv, "owner@lab.example", ["bob@selfmx.example.test"])
    wait_event(srv, "removed", id=qid)
    finals = [(f["result"], f["status"]) for f in events(srv, "recipient", id=qid)]
    assert finals == [("failed", "5.4.6")], story(srv, qid)
    assert not events(srv, "delivery", id=qid) and len(events(srv, "accepted")) == 1, srv.log_text()
    ndr = wait_event(srv, "bounce", id=qid)[0]["ndr"]
    wait_event(srv, "removed", id=ndr)
    box = maildir(srv.spool, "lab.example", "owner")
    assert len(box) == 1 and b"Status: 5.4.6" in box[0].read_bytes()
    wait_queue_empty(srv)


def test_transport_cache_survives_a_restart(start_server, peers, lab_dns, tmp_path):  # noqa: F811
    """The transport cache is persisted under <spool>/state/, so a restarted daemon still goes straight to
    the transport that worked."""
    port = free_port()
    sink = peers("127.0.0.1", port, name="v4-only-mx")
    settings = outbound_settings(dns_servers=lab_dns.server, mx_port=str(port), allow_loopback_mx="yes")
    spool = tmp_path / "spool"
    first_srv = start_server(spool=spool, **settings)
    first = submit(first_srv, SENDER, ["bob@cache.example.test"])
    wait_event(first_srv, "removed", id=first)
    assert delivery_order(first_srv, first) == [("ipv6", "[::1]", "failed"), ("ipv4", "[127.0.0.1]", "sent")]
    first_srv.stop()

    again = start_server(spool=spool, **settings)
    second = submit(again, SENDER, ["bob@cache.example.test"])
    wait_event(again, "removed", id=second)
    assert delivery_order(again, second) == [("ipv4", "[127.0.0.1]", "sent")], story(again, second)
    notes = events(again, "route", id=second, addr="[127.0.0.1]")
    assert notes and "cached transport" in notes[0]["note"], story(again, second)
    assert len(sink.wait_messages(2, DEADLINE)) == 2
