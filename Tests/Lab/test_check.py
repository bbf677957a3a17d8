"""`dualmta check DOMAIN --json` against the lab's zones (issue 6 item 3; RFC 3974 §4, RFC 7505).

One zone, several domains; SMTP sinks on the MX hosts; the check runs in a dual-stack `checker` namespace with the
same kind of config a lab dualmta gets (dns_servers = the lab DNS, connect_timeout 2s), and is asserted from its JSON:
- dual.test: two dual-stack MX → exit 0, every address answers 220 over both families; the sinks saw exactly one
  session per address, from the checker, with EHLO and QUIT, and no other host was contacted. nomail.test (null MX)
  → exit 0, the null-MX note, no connection at all.
- split.test: best MX IPv4-only, backup IPv6-only → exit 2, `unroutable-backup` naming the backup.
- tunnel.test: an AAAA in 2002::/16 → the 6to4 warning naming the embedded IPv4 192.0.2.4; the address cannot be
  reached from the lab (no route); the dual-stack backup answers, so the domain only gets warnings → exit 1.
"""

from __future__ import annotations

import json

from lab import DNSServer, Dualmta, Sink, wait_until, zone

ZONE = """
dual.test.              MX   10 mx10.dual.test.
dual.test.              MX   20 mx20.dual.test.
mx10.dual.test.         AAAA 2001:db8:10::25
                        A    192.0.2.10
mx20.dual.test.         AAAA 2001:db8:20::25
                        A    192.0.2.20
split.test.             MX   10 v4.split.test.
split.test.             MX   20 v6.split.test.
v4.split.test.          A    192.0.2.40
v6.split.test.          AAAA 2001:db8:60::25
tunnel.test.            MX   10 sixtofour.tunnel.test.
tunnel.test.            MX   20 mx20.dual.test.
sixtofour.tunnel.test.  AAAA 2002:c000:204::25
nomail.test.            MX   0 .
"""

CHECKER_V4 = "192.0.2.100"
CHECKER_V6 = "2001:db8:100::100"


def build(lab):
    """DNS, four MX hosts with sinks, and the checker's config (dualmta is not started there: `check` is a CLI)."""
    DNSServer(lab, zone(ZONE)).start()
    sinks = {
        "mx10": Sink(lab, lab.host("mx10", v4=["192.0.2.10"], v6=["2001:db8:10::25"]), "mx10.dual.test").start(),
        "mx20": Sink(lab, lab.host("mx20", v4=["192.0.2.20"], v6=["2001:db8:20::25"]), "mx20.dual.test").start(),
        "v4": Sink(lab, lab.host("v4", v4=["192.0.2.40"]), "v4.split.test").start(),
        "v6": Sink(lab, lab.host("v6", v6=["2001:db8:60::25"]), "v6.split.test").start(),
    }
    checker = Dualmta(lab, lab.host("checker", v4=[CHECKER_V4], v6=[CHECKER_V6]), "checker.lab.test")
    checker.write_config()
    return checker, sinks


def check(checker: Dualmta, domain: str) -> tuple[int, dict]:
    out = checker.cli("check", domain, "--json", timeout=60)
    assert out.returncode in (0, 1, 2), f"check {domain} -> {out.returncode}: {out.stderr}{out.stdout}"
    try:
        report = json.loads(out.stdout)
    except json.JSONDecodeError:
        raise AssertionError(f"check {domain}: not JSON:\n{out.stdout}\n{out.stderr}") from None
    assert report["exitStatus"] == out.returncode, report
    return out.returncode, report


def addresses(report: dict) -> dict[str, dict]:
    """address → its entry (class, warnings, reachability), over every MX."""
    return {entry["address"]: entry for mx in report["mx"] for entry in mx["ipv6"] + mx["ipv4"]}


def findings(report: dict, code: str) -> list[dict]:
    return [finding for finding in report["findings"] if finding["code"] == code]


def test_check_all_dual_stack_domain(lab):
    checker, sinks = build(lab)
    status, report = check(checker, "dual.test")

    assert status == 0, json.dumps(report, indent=1)
    assert [(mx["preference"], mx["host"], mx["familyClass"]) for mx in report["mx"]] == [
        (10, "mx10.dual.test", "dual-stack"), (20, "mx20.dual.test", "dual-stack")]
    seen = addresses(report)
    assert set(seen) == {"2001:db8:10::25", "192.0.2.10", "2001:db8:20::25", "192.0.2.20"}
    for address, entry in seen.items():
        assert entry["reachability"]["outcome"] == "ok", (address, entry)
        assert entry["reachability"]["banner"].startswith("mx"), entry
        assert entry["reachability"]["ehlo"] == ["8BITMIME"], entry
        assert entry["addressClass"] == "documentation"
    assert report["ehloDifferences"] == []
    assert {f["severity"] for f in report["findings"]} <= {"note"}, report["findings"]
    assert report["verdict"].startswith("ok: dual.test takes mail over IPv4 and IPv6"), report["verdict"]

    # Exactly one session per DNS address, from the checker's own address of that family, EHLO then QUIT.
    def sessions_done():
        done = [s for name in ("mx10", "mx20") for s in sinks[name].sessions if s.commands[-1:] == ["QUIT"]]
        return done if len(done) == 4 else None
    sessions = wait_until(sessions_done, what="4 finished probe sessions")
    assert sorted((s.local, s.peer) for s in sessions) == sorted([
        ("2001:db8:10::25", CHECKER_V6), ("192.0.2.10", CHECKER_V4),
        ("2001:db8:20::25", CHECKER_V6), ("192.0.2.20", CHECKER_V4)])
    assert all(s.commands == ["EHLO checker.lab.test", "QUIT"] for s in sessions), [s.commands for s in sessions]
    # Only the domain's own MX addresses: the other lab hosts were never contacted.
    assert sinks["v4"].sessions == [] and sinks["v6"].sessions == []

    text = checker.cli("check", "dual.test")
    assert text.returncode == 0, text.stdout + text.stderr
    assert "MX 10 mx10.dual.test: dual-stack" in text.stdout
    assert text.stdout.rstrip().splitlines()[-1].startswith("verdict: ok: dual.test"), text.stdout

    # A null MX: a correct "no mail here", nothing to connect to.
    before = sum(len(sink.sessions) for sink in sinks.values())
    assert before == 8  # the two checks of dual.test, 4 addresses each
    status, report = check(checker, "nomail.test")
    assert status == 0 and report["source"] == "null mx", report
    assert [f["code"] for f in report["findings"]] == ["null-mx"]
    assert sum(len(sink.sessions) for sink in sinks.values()) == before


def test_check_ipv4_best_mx_with_ipv6_only_backup(lab):
    checker, sinks = build(lab)
    status, report = check(checker, "split.test")

    assert status == 2, json.dumps(report, indent=1)
    assert [(mx["host"], mx["familyClass"]) for mx in report["mx"]] == [
        ("v4.split.test", "IPv4-only"), ("v6.split.test", "IPv6-only")]
    stuck = findings(report, "unroutable-backup")
    assert len(stuck) == 1 and stuck[0]["severity"] == "problem", report["findings"]
    assert stuck[0]["subject"] == "v6.split.test"
    assert "v4.split.test (10, IPv4-only)" in stuck[0]["message"]
    assert findings(report, "no-dual-stack-best-mx"), report["findings"]
    # Both hosts answer (the checker is dual-stack): the problem is the routing, not reachability.
    assert {a: e["reachability"]["outcome"] for a, e in addresses(report).items()} == {
        "192.0.2.40": "ok", "2001:db8:60::25": "ok"}
    assert report["verdict"].startswith("problems: split.test: backup MX 20 v6.split.test is IPv6-only"), \
        report["verdict"]
    assert sinks["mx10"].sessions == [] and sinks["mx20"].sessions == []


def test_check_aaaa_in_6to4_space(lab):
    checker, sinks = build(lab)
    status, report = check(checker, "tunnel.test")

    assert status == 1, json.dumps(report, indent=1)
    warning = findings(report, "address-6to4")
    assert len(warning) == 1 and warning[0]["severity"] == "warning", report["findings"]
    assert warning[0]["subject"] == "2002:c000:204::25"
    assert "embedded IPv4 192.0.2.4" in warning[0]["message"]
    entry = addresses(report)["2002:c000:204::25"]
    assert entry["addressClass"] == "6to4" and warning[0]["message"] in entry["warnings"]
    # The lab has no route to 2002::/16, like much of the Internet has no working 6to4 relay.
    assert entry["reachability"]["outcome"] == "unreachable", entry
    assert report["mx"][0]["familyClass"] == "IPv6-only"
    assert all(addresses(report)[a]["reachability"]["outcome"] == "ok" for a in ("2001:db8:20::25", "192.0.2.20"))
    assert not [f for f in report["findings"] if f["severity"] == "problem"], report["findings"]
    assert report["verdict"].startswith("warnings: tunnel.test:"), report["verdict"]


def test_check_reports_refused_and_timeout(lab):
    checker, sinks = build(lab)
    sinks["v4"].stop()  # no listener: "Connection refused"
    checker.host.silent_drop("2001:db8:60::25")  # SYNs vanish: connect times out (connect_timeout 2s)
    status, report = check(checker, "split.test")

    assert status == 2, json.dumps(report, indent=1)
    outcomes = {a: e["reachability"]["outcome"] for a, e in addresses(report).items()}
    assert outcomes == {"192.0.2.40": "refused", "2001:db8:60::25": "timeout"}, outcomes
    assert 1500 <= addresses(report)["2001:db8:60::25"]["reachability"]["milliseconds"] < 5000
    problems = {f["code"] for f in report["findings"] if f["severity"] == "problem"}
    assert problems == {"unroutable-backup", "no-smtp-ipv4", "no-smtp-ipv6", "no-smtp-answer"}, problems
