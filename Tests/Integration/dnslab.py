"""A real DNS server for the end-to-end tests: unbound on 127.0.0.1 at a free high port, serving the lab zones
below from `local-data` (a Python port of Tests/DNSTests/LabDNSServer.swift). dualmta is pointed at it with
`dns_servers = 127.0.0.1:PORT`; the machine's own resolver is never asked.

Readiness: a hand-built UDP query for `ready.example.test A` is polled against a deadline. The process is killed
at teardown (and dies with pytest: PR_SET_PDEATHSIG).

The lab zones point mail hosts at loopback (dualmta needs `allow_loopback_mx = yes` and `mx_port = PORT`):
- `dual.example.test`      AAAA ::1, A 127.0.0.1 (a host name for `routes`)
- `cache.example.test`     MX 10 mx.cache.example.test (AAAA ::1, A 127.0.0.1) - transport cache test
- `nullmx.example.test`    MX 0 .  (RFC 7505)
- `nosuch.example.test`    does not exist (NXDOMAIN inside the static zone)
- `*.refused.test`         REFUSED (a temporary DNS failure for the resolver)
- `v6only.test`            MX 10 mx.v6only.test (AAAA ::1 only) - the paper's Test 3
- `dest.test`              MX 10 mx.dest.test (A 127.0.0.1 only)
- `t1.example.test`        MX 10 mx10 (AAAA ::1, A 127.0.0.2, A 127.0.0.3), MX 20 mx20 (A 127.0.0.4)
- `paper1.example.test`    MX 10 mx10 (AAAA 2001:db8:10::1-3, A 127.0.0.11-12), MX 20 mx20 (AAAA ::1, A 127.0.0.21) -
                           the paper's Test 1 with fault rules (test_faults.py)
- `cname.example.test`     MX 10 alias.example.test, a CNAME to dual.example.test
- `selfmx.example.test`    MX 10 dual.example.test (self when mx_port is the server's own port)
- `nodata.example.test`    TXT only
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import struct
import subprocess
import tempfile
import time
from pathlib import Path

from conftest import ON_CI, _die_with_parent

import pytest

ZONES = ["example.test.", "v6only.test.", "dest.test."]

RECORDS = [
    "ready.example.test. 300 IN A 192.0.2.250",
    "dual.example.test. 300 IN AAAA ::1",
    "dual.example.test. 300 IN A 127.0.0.1",
    "cache.example.test. 300 IN MX 10 mx.cache.example.test.",
    "mx.cache.example.test. 300 IN AAAA ::1",
    "mx.cache.example.test. 300 IN A 127.0.0.1",
    "nullmx.example.test. 300 IN MX 0 .",
    "v6only.test. 300 IN MX 10 mx.v6only.test.",
    "mx.v6only.test. 300 IN AAAA ::1",
    "dest.test. 300 IN MX 10 mx.dest.test.",
    "mx.dest.test. 300 IN A 127.0.0.1",
    # the paper's Test 1 on loopback: all AAAA, then all A of pref 10, then pref 20
    "t1.example.test. 300 IN MX 10 mx10.t1.example.test.",
    "t1.example.test. 300 IN MX 20 mx20.t1.example.test.",
    "mx10.t1.example.test. 300 IN AAAA ::1",
    "mx10.t1.example.test. 300 IN A 127.0.0.2",
    "mx10.t1.example.test. 300 IN A 127.0.0.3",
    "mx20.t1.example.test. 300 IN A 127.0.0.4",
    # the paper's Test 1 with fault rules instead of a lab network: mx10's three AAAA are made unreachable and its
    # two A refused by `fault =` rules before any packet; mx20 is a second dualmta on ::1 (and 127.0.0.21)
    "paper1.example.test. 300 IN MX 10 mx10.paper1.example.test.",
    "paper1.example.test. 300 IN MX 20 mx20.paper1.example.test.",
    "mx10.paper1.example.test. 300 IN AAAA 2001:db8:10::1",
    "mx10.paper1.example.test. 300 IN AAAA 2001:db8:10::2",
    "mx10.paper1.example.test. 300 IN AAAA 2001:db8:10::3",
    "mx10.paper1.example.test. 300 IN A 127.0.0.11",
    "mx10.paper1.example.test. 300 IN A 127.0.0.12",
    "mx20.paper1.example.test. 300 IN AAAA ::1",
    "mx20.paper1.example.test. 300 IN A 127.0.0.21",
    # MX target that is a CNAME (against RFC 2181 §10.3: follow it, warn)
    "cname.example.test. 300 IN MX 10 alias.example.test.",
    "alias.example.test. 300 IN CNAME dual.example.test.",
    # the best MX is this host (the dualmta under test listens on ::1 and 127.0.0.1 at mx_port)
    "selfmx.example.test. 300 IN MX 10 dual.example.test.",
    # NODATA: the name exists, no MX, no A, no AAAA
    "nodata.example.test. 300 IN TXT \"no mail here\"",
]


def unbound_path() -> str | None:
    for candidate in ("/usr/sbin/unbound", "/usr/bin/unbound"):
        if os.access(candidate, os.X_OK):
            return candidate
    return shutil.which("unbound")


def _free_udp_tcp_port(host: str = "127.0.0.1") -> int:
    for _ in range(100):
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            u.bind((host, 0))
            port = u.getsockname()[1]
            t.bind((host, port))
            return port
        except OSError:
            continue
        finally:
            u.close()
            t.close()
    raise RuntimeError("no free UDP+TCP port")


def dns_query(name: str, qtype: int, port: int, host: str = "127.0.0.1", timeout: float = 0.5):
    """One UDP query; returns (rcode, ancount) or None without an answer."""
    qid = random.randrange(65536)
    packet = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    for label in name.rstrip(".").split("."):
        packet += bytes([len(label)]) + label.encode()
    packet += b"\x00" + struct.pack(">HH", qtype, 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        try:
            s.sendto(packet, (host, port))
            reply, _ = s.recvfrom(4096)
        except OSError:
            return None
    if len(reply) < 12:
        return None
    rid, flags, _, ancount, _, _ = struct.unpack(">HHHHHH", reply[:12])
    if rid != qid:
        return None
    return flags & 0x000F, ancount


class LabDNS:
    def __init__(self, port: int, proc: subprocess.Popen, directory: Path):
        self.port = port
        self.proc = proc
        self.directory = directory

    @property
    def server(self) -> str:
        """The `dns_servers` value."""
        return f"127.0.0.1:{self.port}"

    def log(self) -> str:
        try:
            return (self.directory / "unbound.log").read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.directory, ignore_errors=True)


def _config(port: int, directory: Path) -> str:
    lines = [
        "server:",
        f"    interface: 127.0.0.1@{port}",
        f"    port: {port}",
        "    do-daemonize: no",
        '    username: ""',
        '    chroot: ""',
        f'    directory: "{directory}"',
        f'    pidfile: "{directory}/unbound.pid"',
        "    use-syslog: no",
        '    logfile: ""',
        "    verbosity: 1",
        "    do-ip4: yes",
        "    do-ip6: no",
        "    do-udp: yes",
        "    do-tcp: yes",
        "    access-control: 127.0.0.0/8 allow",
        "    rrset-roundrobin: no",
        '    module-config: "iterator"',
        '    local-zone: "refused.test." refuse',
    ]
    for zone in ZONES:
        lines.append(f'    local-zone: "{zone}" static')
        lines.append(f'    local-data: "{zone} 300 IN SOA ns.{zone} hostmaster.{zone} 1 3600 600 86400 300"')
    lines += ['    local-data: "' + record.replace('"', '\\"') + '"' for record in RECORDS]
    lines += ["remote-control:", "    control-enable: no", ""]
    return "\n".join(lines)


def start_lab_dns(timeout: float = 15) -> LabDNS:
    binary = unbound_path()
    if binary is None:
        message = "unbound is not installed (Debian package: unbound)"
        if ON_CI:
            pytest.fail(message + " -- required when CI=true")
        pytest.skip(message)
    last_log = ""
    for _ in range(4):
        port = _free_udp_tcp_port()
        directory = Path(tempfile.mkdtemp(prefix="dualmta-unbound-"))
        conf = directory / "unbound.conf"
        conf.write_text(_config(port, directory))
        log = open(directory / "unbound.log", "wb")
        proc = subprocess.Popen([binary, "-d", "-c", str(conf)], stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
        log.close()
        lab = LabDNS(port, proc, directory)
        end = time.monotonic() + timeout
        while time.monotonic() < end and proc.poll() is None:
            answer = dns_query("ready.example.test", 1, port)
            if answer and answer[0] == 0 and answer[1] >= 1:
                return lab
            time.sleep(0.02)  # between polls only
        last_log = lab.log()
        lab.stop()
    pytest.fail(f"unbound did not answer in time; its log:\n{last_log}")


@pytest.fixture(scope="module")
def lab_dns():
    lab = start_lab_dns()
    yield lab
    lab.stop()
