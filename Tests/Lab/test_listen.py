"""Listen test: dualmta in a dual-stack namespace answers 220 on port 25 over IPv4 and IPv6; with only `[::]:25`
(IPV6_V6ONLY on the IPv6 socket) an IPv4 client is refused (the listener tests of
Tests/SocketsTests/ListenerTests.swift, on real interfaces)."""

import pytest

from lab import Dualmta


def test_dual_stack_listener_answers_both_families(lab):
    server = lab.host("mx", v4=["192.0.2.25"], v6=["2001:db8:25::25"])
    client = lab.host("client", v4=["192.0.2.100"], v6=["2001:db8:100::100"])
    mta = Dualmta(lab, server, "mx.example.test").start()

    listening = {(line["addr"], line["family"]) for line in mta.events("listening")}
    assert listening == {("[::]:25", "ipv6"), ("0.0.0.0:25", "ipv4")}, mta.text()
    for address in ("192.0.2.25", "2001:db8:25::25"):
        banner = client.banner(address)
        assert banner.startswith("220 "), f"{address}: {banner!r}"
    # Each family is seen natively (never ::ffff:192.0.2.100): the session log names the client in its own form.
    assert mta.proc is not None and mta.proc.running()


def test_ipv6_only_listener_refuses_ipv4(lab):
    server = lab.host("mx", v4=["192.0.2.25"], v6=["2001:db8:25::25"])
    client = lab.host("client", v4=["192.0.2.100"], v6=["2001:db8:100::100"])
    mta = Dualmta(lab, server, "mx.example.test", listen="[::]:25").start()

    assert [line["family"] for line in mta.events("listening")] == ["ipv6"], mta.text()
    assert client.banner("2001:db8:25::25").startswith("220 ")
    with pytest.raises(ConnectionRefusedError):
        client.connect("192.0.2.25", 25)
