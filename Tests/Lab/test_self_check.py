"""The startup self-check (the paper's Dovecot finding as a warning): a dual-stack host whose name
has an AAAA record, but dualmta listens on IPv4 only. At start it logs the families of each listener and warns that
the AAAA address is served by no listener; `dualmta config check` prints the same warning. A dual-stack listener set
gives no such warning."""

from lab import DNSServer, Dualmta, zone

ZONE = """
mx.selfcheck.test.  AAAA 2001:db8:30::25
                    A    192.0.2.30
"""
V6, V4 = "2001:db8:30::25", "192.0.2.30"
AAAA_WARNING = f"hostname mx.selfcheck.test has AAAA {V6} but no listener accepts ipv6"


def test_ipv4_only_listener_on_a_name_with_aaaa_warns(lab):
    DNSServer(lab, zone(ZONE)).start()
    host = lab.host("mx", v4=[V4], v6=[V6])
    mta = Dualmta(lab, host, "mx.selfcheck.test", listen="0.0.0.0:25").start()

    mta.wait_event("self-check-done")
    listeners = [line["listener"] for line in mta.events("self-check") if "listener" in line.fields]
    assert listeners == ["0.0.0.0:25 serves ipv4: every IPv4 address"], mta.text()
    warnings = [line["reason"] for line in mta.events("self-check-warning")]
    assert len(warnings) == 1 and warnings[0].startswith(AAAA_WARNING), mta.text()
    assert mta.events("self-check-done")[0]["warnings"] == "1"

    out = mta.cli("config", "check")
    assert out.returncode == 0, out.stderr
    assert "listener 0.0.0.0:25 serves ipv4" in out.stdout, out.stdout
    assert [line for line in out.stdout.splitlines() if line.startswith("warning:")] == [
        f"warning: {warnings[0]}"], out.stdout


def test_dual_stack_listeners_cover_both_records(lab):
    DNSServer(lab, zone(ZONE)).start()
    host = lab.host("mx", v4=[V4], v6=[V6])
    mta = Dualmta(lab, host, "mx.selfcheck.test").start()  # listen = [::]:25, 0.0.0.0:25
    mta.wait_event("self-check-done")
    assert not mta.events("self-check-warning"), mta.text()
    out = mta.cli("config", "check")
    assert "warning:" not in out.stdout, out.stdout
