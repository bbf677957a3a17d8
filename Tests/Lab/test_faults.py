"""The lab's own fault helpers do what the scenarios rely on, seen by a plain socket:
unreachable route → EHOSTUNREACH at once, no listener → ECONNREFUSED, dead-MAC neighbour → silent timeout,
link down → no connection, link up → IPv6 addresses are back and connections work again. And the DNS server
answers over both families in zone order."""

import errno
import socket
import time

import pytest

from lab import DNSServer, Sink, dns_query, zone


@pytest.mark.parametrize("address", ["2001:db8:50::25", "192.0.2.50"])
def test_fault_helpers(lab, address):
    target = lab.host("target", v4=["192.0.2.50"], v6=["2001:db8:50::25"])
    Sink(lab, target, "target").start()
    idle = lab.host("idle", v4=["192.0.2.51"], v6=["2001:db8:51::25"])
    client = lab.host("client", v4=["192.0.2.100"], v6=["2001:db8:100::100"])
    assert client.banner(address).startswith("220 ")

    client.unreachable(address)
    with pytest.raises(OSError) as info:
        client.connect(address, timeout=2)
    assert info.value.errno == errno.EHOSTUNREACH, info.value
    client.reachable(address)
    assert client.banner(address).startswith("220 ")

    with pytest.raises(ConnectionRefusedError):
        client.connect(idle.v6[0] if ":" in address else idle.v4[0])

    client.silent_drop(address)
    started = time.monotonic()
    with pytest.raises((socket.timeout, TimeoutError)):
        client.connect(address, timeout=1)
    assert time.monotonic() - started >= 0.9
    client.undo_silent_drop(address)

    target.link_down()
    with pytest.raises(OSError):
        client.connect(address, timeout=1)
    target.link_up()
    assert target.ip("-6", "addr", "show", "dev", "eth0").stdout.count("2001:db8:50::25") == 1
    assert client.banner(address).startswith("220 ")


def test_dns_server_answers_both_families_in_order(lab):
    records = zone("""
    example.test.  MX 10 mx.example.test.
    mx.example.test. AAAA 2001:db8:10::3
                     AAAA 2001:db8:10::1
                     AAAA 2001:db8:10::2
    """.replace("\n    ", "\n"))
    dns = DNSServer(lab, records).start()
    client = lab.host("client", v4=["192.0.2.100"], v6=["2001:db8:100::100"])
    for server in ("192.0.2.53", "2001:db8::53"):
        for _ in range(3):  # rrset-roundrobin is off: the zone's order, every time
            assert dns_query(client, server, "mx.example.test", "AAAA") == (
                0, ["2001:db8:10::3", "2001:db8:10::1", "2001:db8:10::2"])
        assert dns_query(client, server, "example.test", "MX") == (0, ["TYPE15"])
        assert dns_query(client, server, "mx.example.test", "A") == (0, [])  # NODATA
        assert dns_query(client, server, "nosuch.example.test", "A")[0] == 3  # NXDOMAIN
    assert dns.proc is not None and dns.proc.running()
