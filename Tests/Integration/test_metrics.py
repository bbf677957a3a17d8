"""Family-labelled metrics (issue 9): after known traffic over loopback, `GET /metrics` on metrics_listen (fetched
with curl, parsed with prometheus_client's text parser) has the expected counts per address family and MX rank, any
other path is 404, and `dualmta stats` prints the same samples (or says metrics are not configured)."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from conftest import ON_CI, free_port
from dnslab import lab_dns  # noqa: F401  (fixture)
from mtalog import outbound_settings, submit, wait_event
from peers import peers  # noqa: F401  (fixture)


def prometheus_parser():
    try:
        from prometheus_client.parser import text_string_to_metric_families
    except ImportError:
        message = "prometheus_client is not installed (Debian: python3-prometheus-client; pip: prometheus_client)"
        if ON_CI:
            pytest.fail(message + " -- required when CI=true")
        pytest.skip(message)
    return text_string_to_metric_families


def curl(url: str) -> tuple[str, str]:
    """(HTTP status, body) with curl."""
    tool = shutil.which("curl")
    if tool is None:
        if ON_CI:
            pytest.fail("curl is not installed -- required when CI=true")
        pytest.skip("curl is not installed")
    out = subprocess.run([tool, "-sS", "--max-time", "10", "-o", "-", "-w", "\n%{http_code}", url],
                         capture_output=True, text=True, timeout=20)
    assert out.returncode == 0, out.stderr
    body, _, status = out.stdout.rpartition("\n")
    return status, body


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """{(sample name, sorted labels): value} from the exposition text, via the real Prometheus parser."""
    parse = prometheus_parser()
    found = {}
    for family in parse(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(found, name: str, **labels: str) -> float | None:
    return found.get((name, tuple(sorted(labels.items()))))


def test_metrics_per_family_after_known_traffic(start_server, peers, tmp_path):
    prometheus_parser()
    dest = peers(host="::1", name="dest6")
    closed = free_port()  # nobody listens there: connects are refused
    metrics_port = free_port()
    srv = start_server(**outbound_settings(
        routes=f"remote6.example=[::1]:{dest.port}, dead.example=[127.0.0.1]:{closed}",
        metrics_listen=f"127.0.0.1:{metrics_port}", retry_schedule="1h"))

    # Known traffic: 3 messages accepted over IPv4, 2 over IPv6; one remote delivery over IPv6 (rank 1), one
    # destination that refuses over IPv4 (rank 1) and stays queued.
    local_ids = [submit(srv, "a@r.example", ["u@lab.example"], host=host)
                 for host in ("127.0.0.1", "127.0.0.1", "::1")]
    sent_id = submit(srv, "a@r.example", ["bob@remote6.example"], host="::1")
    dead_id = submit(srv, "a@r.example", ["bob@dead.example"], host="127.0.0.1")
    for queue_id in [*local_ids, sent_id]:
        wait_event(srv, "removed", id=queue_id)
    wait_event(srv, "delivery", id=dead_id, result="failed")
    wait_event(srv, "deferred", id=dead_id)
    dest.wait_messages(1, timeout=10)

    status, body = curl(f"http://127.0.0.1:{metrics_port}/metrics")
    assert status == "200", body
    found = samples(body)
    assert value(found, "dualmta_messages_accepted_total", family="ipv4") == 3, body
    assert value(found, "dualmta_messages_accepted_total", family="ipv6") == 2, body

    assert value(found, "dualmta_connect_attempts_total", family="ipv6", mx_rank="1") == 1, body
    assert value(found, "dualmta_connect_successes_total", family="ipv6", mx_rank="1") == 1, body
    assert value(found, "dualmta_remote_recipients_total", family="ipv6", mx_rank="1", result="sent") == 1, body
    assert value(found, "dualmta_delivery_duration_seconds_count", family="ipv6", mx_rank="1") == 1, body

    assert value(found, "dualmta_connect_attempts_total", family="ipv4", mx_rank="1") == 1, body
    assert value(found, "dualmta_connect_failures_total", family="ipv4", mx_rank="1", reason="refused") == 1, body
    assert value(found, "dualmta_connect_successes_total", family="ipv4", mx_rank="1") is None, body

    assert value(found, "dualmta_queue_messages") == 1, body  # the refused one waits for its retry
    assert value(found, "dualmta_bounces_total") == 0, body
    assert value(found, "dualmta_double_bounces_total") == 0, body
    assert value(found, "dualmta_family_fallbacks_total", **{"from": "ipv6", "to": "ipv4"}) is None, body

    status, _ = curl(f"http://127.0.0.1:{metrics_port}/other")
    assert status == "404"

    stats = srv.cli("stats")
    assert stats.returncode == 0, stats.stderr
    printed = stats.stdout.decode()
    assert 'dualmta_messages_accepted_total{family="ipv6"} 2' in printed, printed
    assert not any(line.startswith("#") for line in printed.splitlines()), printed


def test_fallback_from_ipv6_to_ipv4_is_counted(start_server, peers, lab_dns):  # noqa: F811
    """mx.cache.example.test has AAAA ::1 and A 127.0.0.1; the peer listens on 127.0.0.1 only, so ::1 refuses and
    IPv4 takes the message: one ipv6 -> ipv4 fallback, the failure and the success both at MX rank 1."""
    prometheus_parser()
    port = free_port()
    peers("127.0.0.1", port, name="v4-only-mx")
    metrics_port = free_port()
    srv = start_server(**outbound_settings(dns_servers=lab_dns.server, mx_port=str(port), allow_loopback_mx="yes",
                                           metrics_listen=f"[::1]:{metrics_port}"))
    queue_id = submit(srv, "a@r.example", ["bob@cache.example.test"])
    wait_event(srv, "delivery", id=queue_id, result="sent")
    found = samples(curl(f"http://[::1]:{metrics_port}/metrics")[1])
    assert value(found, "dualmta_family_fallbacks_total", **{"from": "ipv6", "to": "ipv4"}) == 1
    assert value(found, "dualmta_family_fallbacks_total", **{"from": "ipv4", "to": "ipv6"}) is None
    assert value(found, "dualmta_connect_failures_total", family="ipv6", mx_rank="1", reason="refused") == 1
    assert value(found, "dualmta_connect_successes_total", family="ipv4", mx_rank="1") == 1
    assert value(found, "dualmta_delivery_duration_seconds_count", family="ipv4", mx_rank="1") == 1


def test_stats_without_metrics_listen_says_so(mta):
    out = mta.cli("stats")
    assert out.returncode != 0
    assert "metrics are not configured" in out.stderr.decode(), out.stderr
