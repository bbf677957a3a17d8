"""The dual-stack lab: network namespaces joined by a bridge, a real DNS server, dualmta instances and SMTP sinks.

Topology: one flat Ethernet segment. A bridge lives in its own namespace; every lab host is a namespace with one veth
(`eth0`) plugged into that bridge. IPv4 addresses are /24 (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24) and IPv6
addresses are /32 (2001:db8::/32, added with `nodad`), so every host of the same family is on-link and no router is
needed. Nothing is connected to the machine's real interfaces. An IPv4-only host has IPv6 disabled on its eth0 (only
::1 on lo); an IPv6-only host has no IPv4 address outside lo.

Names: every namespace is `<PREFIX><pid>-<n>-<host>` so parallel and aborted runs never collide; `clean_stale()`
removes namespaces (and the processes in them) of runs whose pid is gone. Every process started here is killed and
every namespace deleted at teardown, also on failure (pytest finalizers) and at interpreter exit (atexit).

Faults: `unreachable()` (route type unreachable: "No route to host"), `link_down()` /
`link_up()` (IPv6 addresses are re-added: Linux flushes them on down), `silent_drop()` (a permanent neighbour entry to
a MAC nobody owns: SYNs vanish, connect times out), and "no listener" is simply a host without a server.

Standard library only (ctypes for setns(2): the test process creates sockets inside lab namespaces from a helper
thread, so clients and sinks run in-process and their records are plain Python objects).
"""

from __future__ import annotations

import asyncio
import atexit
import ctypes
import ipaddress
import os
import random
import re
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

REPO = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("DUALMTA_BIN", str(REPO / ".build" / "debug" / "dualmta")))
PREFIX = os.environ.get("DUALMTA_LAB_PREFIX", "dlab")
RUN = f"{PREFIX}{os.getpid()}"
DEADLINE = float(os.environ.get("DUALMTA_TEST_DEADLINE", "15"))
DNS_V4 = "192.0.2.53"
DNS_V6 = "2001:db8::53"
DEAD_MAC = "02:00:00:de:ad:01"

_libc = ctypes.CDLL("libc.so.6", use_errno=True)
_CLONE_NEWNET = 0x40000000


class LabError(Exception):
    pass


# ---------------------------------------------------------------------------------------------------------------
# Small utilities


def wait_until(predicate: Callable[[], object], timeout: float = DEADLINE, what: str = "condition",
               interval: float = 0.02):
    """Poll `predicate` until it returns a truthy value; return it, or raise TimeoutError at the deadline."""
    end = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= end:
            raise TimeoutError(f"timed out after {timeout:.1f}s waiting for {what}")
        time.sleep(interval)


def run(argv: list[str], check: bool = True, timeout: float = 30, **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kwargs)
    if check and proc.returncode != 0:
        raise LabError(f"{' '.join(argv)} -> {proc.returncode}: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc


def _die_with_parent() -> None:
    # A lab process must not outlive a killed pytest: PR_SET_PDEATHSIG = SIGKILL (kept across `ip netns exec`'s exec).
    _libc.prctl(1, signal.SIGKILL)


def netns_problem() -> str | None:
    """None when this process can build the lab, else why not (not root, no `ip`, namespaces refused)."""
    if os.geteuid() != 0:
        return "the lab needs root (network namespaces)"
    if shutil.which("ip") is None:
        return "`ip` (iproute2) is not installed"
    probe = f"{RUN}-probe"
    try:
        run(["ip", "netns", "add", probe])
    except (LabError, OSError) as exc:
        return f"`ip netns add` does not work here: {exc}"
    run(["ip", "netns", "del", probe], check=False)
    return None


def in_netns(ns: str, fn: Callable[[], object]):
    """Run `fn` on a fresh thread that joined network namespace `ns`; sockets it creates stay in that namespace."""
    box: dict[str, object] = {}

    def target() -> None:
        try:
            fd = os.open(f"/run/netns/{ns}", os.O_RDONLY)
            try:
                if _libc.setns(fd, _CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns({ns}): {os.strerror(err)}")
            finally:
                os.close(fd)
            box["value"] = fn()
        except BaseException as exc:  # handed to the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=target, name=f"netns-{ns}")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box.get("value")


def family_of(address: str) -> str:
    return "ipv6" if ":" in address else "ipv4"


def literal(address: str) -> str:
    """How dualmta's logs write an address: `[2001:db8::1]` / `[192.0.2.1]`."""
    return f"[{address}]"


# ---------------------------------------------------------------------------------------------------------------
# Log lines: `TIMESTAMP LEVEL EVENT key=value key="quoted value" ...`

_FIELD = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S*)')


@dataclass
class LogLine:
    raw: str
    level: str
    event: str
    fields: dict[str, str]

    def __getitem__(self, key: str) -> str:
        return self.fields[key]

    def get(self, key: str, default: str | None = None) -> str | None:
        return self.fields.get(key, default)


def parse_log_line(raw: str) -> LogLine | None:
    parts = raw.split(None, 3)
    if len(parts) < 3 or not re.match(r"\d{4}-\d\d-\d\dT", parts[0]):
        return None
    fields = {}
    for key, value in _FIELD.findall(parts[3] if len(parts) > 3 else ""):
        if value.startswith('"'):
            value = re.sub(r"\\(.)", lambda m: {"n": "\n", "r": "\r", "t": "\t"}.get(m.group(1), m.group(1)),
                           value[1:-1])
        fields[key] = value
    return LogLine(raw, parts[1], parts[2], fields)


# ---------------------------------------------------------------------------------------------------------------
# Processes


class Proc:
    """A process in a lab namespace; stdout+stderr are collected line by line by a reader thread."""

    def __init__(self, name: str, ns: str, argv: list[str], cwd: Path):
        self.name = name
        self.ns = ns
        self.argv = argv
        self.lines: list[str] = []
        self.cond = threading.Condition()
        self.proc = subprocess.Popen(["ip", "netns", "exec", ns, *argv], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=str(cwd),
                                     preexec_fn=_die_with_parent)
        self.reader = threading.Thread(target=self._read, daemon=True, name=f"log-{name}")
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            with self.cond:
                self.lines.append(raw.decode("utf-8", "replace").rstrip("\n"))
                self.cond.notify_all()
        with self.cond:
            self.cond.notify_all()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def running(self) -> bool:
        return self.proc.poll() is None

    def text(self) -> str:
        with self.cond:
            return "\n".join(self.lines)

    def wait_line(self, pattern: str, timeout: float = DEADLINE, start: int = 0) -> tuple[int, str]:
        """(index, line) of the first line from `start` on matching regex `pattern`; LabError if the process exits
        or the deadline passes first."""
        rx = re.compile(pattern)
        end = time.monotonic() + timeout
        with self.cond:
            while True:
                for index in range(start, len(self.lines)):
                    if rx.search(self.lines[index]):
                        return index, self.lines[index]
                if self.proc.poll() is not None and not self.reader.is_alive():
                    raise LabError(f"{self.name} exited ({self.proc.returncode}) before a line matching "
                                   f"{pattern!r}:\n" + "\n".join(self.lines))
                remaining = end - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"{self.name}: no line matching {pattern!r} within {timeout}s:\n"
                                       + "\n".join(self.lines))
                self.cond.wait(min(remaining, 0.1))

    def stop(self, timeout: float = 5) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.reader.join(2)
        return self.proc.returncode


# ---------------------------------------------------------------------------------------------------------------
# Hosts and the lab


class Host:
    """One namespace on the lab segment. `v4` / `v6` are its addresses (either list may be empty)."""

    def __init__(self, lab: "Lab", name: str, ns: str, v4: list[str], v6: list[str]):
        self.lab = lab
        self.name = name
        self.ns = ns
        self.v4 = list(v4)
        self.v6 = list(v6)
        self.faults: list[list[str]] = []  # commands that undo each fault

    @property
    def families(self) -> set[str]:
        return ({"ipv4"} if self.v4 else set()) | ({"ipv6"} if self.v6 else set())

    @property
    def addresses(self) -> list[str]:
        return self.v6 + self.v4

    def ip(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return run(["ip", "-n", self.ns, *args], check=check)

    def exec(self, argv: list[str], check: bool = False, timeout: float = 60,
             input: str | None = None) -> subprocess.CompletedProcess:
        return run(["ip", "netns", "exec", self.ns, *argv], check=check, timeout=timeout, input=input)

    def _add_addresses(self) -> None:
        for address in self.v4:
            self.ip("addr", "replace", f"{address}/24", "dev", "eth0")
        for address in self.v6:
            self.ip("addr", "replace", f"{address}/32", "dev", "eth0", "nodad")

    # -- faults

    def unreachable(self, *addresses: str) -> None:
        """From this host, `addresses` get "No route to host" (EHOSTUNREACH) at once."""
        for address in addresses:
            bits = 128 if ":" in address else 32
            flag = ["-6"] if ":" in address else ["-4"]
            run(["ip", "-n", self.ns, *flag, "route", "add", "unreachable", f"{address}/{bits}"])

    def reachable(self, *addresses: str) -> None:
        """Undo `unreachable`."""
        for address in addresses:
            bits = 128 if ":" in address else 32
            flag = ["-6"] if ":" in address else ["-4"]
            run(["ip", "-n", self.ns, *flag, "route", "del", "unreachable", f"{address}/{bits}"])

    def silent_drop(self, *addresses: str) -> None:
        """From this host, packets to `addresses` go to a MAC nobody owns: connect() times out."""
        for address in addresses:
            self.ip("neigh", "replace", address, "lladdr", DEAD_MAC, "dev", "eth0", "nud", "permanent")

    def undo_silent_drop(self, *addresses: str) -> None:
        for address in addresses:
            self.ip("neigh", "del", address, "dev", "eth0", check=False)

    def link_down(self) -> None:
        """Unplug this host (its peers see ND/ARP failures). Linux flushes the IPv6 addresses; link_up re-adds them."""
        self.ip("link", "set", "eth0", "down")

    def link_up(self) -> None:
        self.ip("link", "set", "eth0", "up")
        self._add_addresses()

    # -- sockets from the test process

    def socket(self, family: int, kind: int = socket.SOCK_STREAM) -> socket.socket:
        return in_netns(self.ns, lambda: socket.socket(family, kind))  # type: ignore[return-value]

    def connect(self, address: str, port: int = 25, timeout: float = 5) -> socket.socket:
        """A TCP connection from this host (raises ConnectionRefusedError, OSError(ENETUNREACH), ...)."""
        sock = self.socket(socket.AF_INET6 if ":" in address else socket.AF_INET)
        sock.settimeout(timeout)
        try:
            sock.connect((address, port))
        except BaseException:
            sock.close()
            raise
        return sock

    def banner(self, address: str, port: int = 25, timeout: float = 5) -> str:
        """The first reply line a server at address:port sends to this host."""
        with self.connect(address, port, timeout) as sock:
            data = b""
            end = time.monotonic() + timeout
            while b"\r\n" not in data and time.monotonic() < end:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                data += chunk
            try:
                sock.sendall(b"QUIT\r\n")
            except OSError:
                pass
            return data.split(b"\r\n", 1)[0].decode("latin-1")

    def __repr__(self) -> str:
        return f"Host({self.name}, v4={self.v4}, v6={self.v6})"


class Lab:
    """A bridge namespace plus hosts; `close()` kills every process and deletes every namespace it created."""

    _counter = 0
    _open: list["Lab"] = []

    def __init__(self, workdir: Path | None = None):
        Lab._counter += 1
        self.tag = f"{RUN}-{Lab._counter}"
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix=f"{self.tag}-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.hosts: dict[str, Host] = {}
        self.procs: list[Proc] = []
        self.closers: list[Callable[[], None]] = []
        self.namespaces: list[str] = []
        self.bridge = f"{self.tag}-br"
        Lab._open.append(self)
        self._add_ns(self.bridge)
        run(["ip", "-n", self.bridge, "link", "add", "br0", "type", "bridge"])
        # The bridge is a switch, not a host: no IPv6 addresses or router solicitations of its own.
        run(["ip", "netns", "exec", self.bridge, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"], check=False)
        run(["ip", "-n", self.bridge, "link", "set", "br0", "up"])

    def _add_ns(self, ns: str) -> None:
        run(["ip", "netns", "add", ns])
        self.namespaces.append(ns)
        run(["ip", "-n", ns, "link", "set", "lo", "up"])

    def host(self, name: str, v4: Iterable[str] = (), v6: Iterable[str] = ()) -> Host:
        """A host on the segment. IPv4-only when v6 is empty (IPv6 disabled on eth0), IPv6-only when v4 is empty."""
        if name in self.hosts:
            raise LabError(f"host {name} exists")
        for address in [*v4, *v6]:
            ip = ipaddress.ip_address(address)
            if not any(ip in ipaddress.ip_network(net) for net in
                       ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32")):
                raise LabError(f"{address} is not a documentation address")
        ns = f"{self.tag}-{name}"
        self._add_ns(ns)
        peer = f"p{len(self.hosts)}"
        run(["ip", "link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name", peer, "netns", self.bridge])
        run(["ip", "-n", self.bridge, "link", "set", peer, "master", "br0", "up"])
        host = Host(self, name, ns, list(v4), list(v6))
        if not host.v6:
            run(["ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.eth0.disable_ipv6=1"])
        else:
            # No router solicitations / SLAAC noise; addresses are static.
            run(["ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.eth0.accept_ra=0"], check=False)
        host._add_addresses()
        host.ip("link", "set", "eth0", "up")
        self.hosts[name] = host
        return host

    def spawn(self, host: Host, name: str, argv: list[str]) -> Proc:
        proc = Proc(name, host.ns, argv, self.workdir)
        self.procs.append(proc)
        return proc

    def close(self) -> None:
        for closer in reversed(self.closers):
            try:
                closer()
            except Exception:
                pass
        self.closers.clear()
        for proc in self.procs:
            try:
                proc.stop(timeout=3)
            except Exception:
                pass
        for ns in self.namespaces:
            _kill_ns_processes(ns)
            run(["ip", "netns", "del", ns], check=False)
        self.namespaces.clear()
        if self in Lab._open:
            Lab._open.remove(self)


def _kill_ns_processes(ns: str) -> None:
    """SIGKILL, by pid, every process still inside one of our lab namespaces (they were all started by a lab)."""
    pids = run(["ip", "netns", "pids", ns], check=False).stdout.split()
    for pid in pids:
        try:
            os.kill(int(pid), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass


def clean_stale(prefix: str = PREFIX) -> list[str]:
    """Delete namespaces named `<prefix><pid>-...` whose pid is no longer running (aborted runs). Returns them."""
    removed = []
    listing = run(["ip", "netns", "list"], check=False).stdout
    for line in listing.splitlines():
        name = line.split()[0] if line.split() else ""
        m = re.fullmatch(re.escape(prefix) + r"(\d+)-.+", name)
        if not m:
            continue
        pid = int(m.group(1))
        if pid == os.getpid():
            continue
        try:
            os.kill(pid, 0)
            continue  # that run is still alive
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        _kill_ns_processes(name)
        run(["ip", "netns", "del", name], check=False)
        removed.append(name)
    return removed


@atexit.register
def _close_all_labs() -> None:
    for lab in list(Lab._open):
        lab.close()


# ---------------------------------------------------------------------------------------------------------------
# DNS: unbound as an authoritative-style server for the lab's zones


@dataclass
class Record:
    name: str
    rtype: str
    data: str

    def local_data(self) -> str:
        name = self.name if self.name.endswith(".") else self.name + "."
        return f'local-data: "{name} 60 IN {self.rtype} {self.data}"'


def zone(text: str) -> list[Record]:
    """Records from lines `NAME TYPE DATA` (a line starting with whitespace reuses the previous name; `;` comments).
    The order is kept: unbound runs with rrset-roundrobin off, so answers come in this order."""
    records, last = [], None
    for raw in text.splitlines():
        line = raw.split(";", 1)[0].rstrip()
        if not line.strip():
            continue
        parts = line.split()
        if raw[:1] in (" ", "\t"):
            name, rest = last, parts
        else:
            name, rest = parts[0], parts[1:]
        if name is None or len(rest) < 2:
            raise LabError(f"bad zone line {raw!r}")
        last = name
        if rest[0].upper() == "IN":
            rest = rest[1:]
        records.append(Record(name, rest[0].upper(), " ".join(rest[1:])))
    return records


class DNSServer:
    """unbound in the `dns` host (192.0.2.53 and 2001:db8::53), answering only from local-data for `zones`."""

    def __init__(self, lab: Lab, records: list[Record], zones: Iterable[str] = ("test.",)):
        self.lab = lab
        self.records = records
        self.zones = list(zones)
        self.host = lab.host("dns", v4=[DNS_V4], v6=[DNS_V6])
        self.conf = lab.workdir / "unbound.conf"
        self.proc: Proc | None = None

    def render(self) -> str:
        lines = [
            "server:",
            f"    interface: {DNS_V4}",
            f"    interface: {DNS_V6}",
            "    port: 53",
            "    do-ip4: yes", "    do-ip6: yes", "    do-udp: yes", "    do-tcp: yes",
            "    access-control: 0.0.0.0/0 allow", "    access-control: ::/0 allow",
            '    username: ""', '    chroot: ""', f'    directory: "{self.lab.workdir}"', '    pidfile: ""',
            "    use-syslog: no", '    logfile: ""', "    verbosity: 1", "    num-threads: 1",
            '    module-config: "iterator"',
            # Fixed answer order (the scenarios assert attempt order) and no recursion anywhere.
            "    rrset-roundrobin: no", "    minimal-responses: yes",
            '    local-zone: "." refuse',
        ]
        for name in self.zones:
            lines.append(f'    local-zone: "{name}" static')
        lines += [f"    {record.local_data()}" for record in self.records]
        lines += ["remote-control:", "    control-enable: no"]
        return "\n".join(lines) + "\n"

    def start(self) -> "DNSServer":
        unbound = shutil.which("unbound") or "/usr/sbin/unbound"
        self.conf.write_text(self.render())
        checker = shutil.which("unbound-checkconf") or "/usr/sbin/unbound-checkconf"
        if os.path.exists(checker):
            check = run([checker, str(self.conf)], check=False)
            if check.returncode != 0:
                raise LabError(f"unbound config rejected: {check.stdout}{check.stderr}\n{self.render()}")
        self.proc = self.lab.spawn(self.host, "unbound", [unbound, "-d", "-c", str(self.conf)])
        first = self.records[0]
        for server in (DNS_V4, DNS_V6):
            wait_until(lambda s=server: self._answers(s, first.name, first.rtype), what=f"unbound on {server}")
        return self

    def _answers(self, server: str, name: str, rtype: str) -> bool:
        if self.proc is not None and not self.proc.running():
            raise LabError("unbound exited:\n" + self.proc.text())
        try:
            rcode, answers = dns_query(self.host, server, name, rtype, timeout=0.3)
        except OSError:
            return False
        return rcode == 0 and len(answers) > 0


_QTYPES = {"A": 1, "NS": 2, "CNAME": 5, "SOA": 6, "MX": 15, "TXT": 16, "AAAA": 28}


def dns_query(host: Host, server: str, name: str, rtype: str, timeout: float = 1.0) -> tuple[int, list[str]]:
    """One UDP query from `host` to `server`: (rcode, answers in order). A/AAAA answers as address text, other
    types as "TYPE<n>". Enough for a readiness probe and to check the answer order."""
    qid = random.randrange(65536)
    question = b"".join(bytes([len(label)]) + label.encode() for label in name.rstrip(".").split(".")) + b"\0"
    packet = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0) + question + struct.pack(">HH", _QTYPES[rtype], 1)
    family = socket.AF_INET6 if ":" in server else socket.AF_INET
    with host.socket(family, socket.SOCK_DGRAM) as sock:
        sock.sendto(packet, (server, 53))
        end = time.monotonic() + timeout
        while True:
            sock.settimeout(max(0.01, end - time.monotonic()))
            try:
                data = sock.recv(4096)
            except socket.timeout as exc:
                raise OSError("no DNS answer") from exc
            if len(data) >= 12 and struct.unpack(">H", data[:2])[0] == qid:
                flags, qdcount, ancount = struct.unpack(">HHH", data[2:8])
                offset = 12
                for _ in range(qdcount):
                    offset = _skip_name(data, offset) + 4
                answers = []
                for _ in range(ancount):
                    offset = _skip_name(data, offset)
                    atype, _, _, length = struct.unpack(">HHIH", data[offset:offset + 10])
                    rdata = data[offset + 10:offset + 10 + length]
                    offset += 10 + length
                    if atype == 1 and length == 4:
                        answers.append(socket.inet_ntop(socket.AF_INET, rdata))
                    elif atype == 28 and length == 16:
                        answers.append(socket.inet_ntop(socket.AF_INET6, rdata))
                    else:
                        answers.append(f"TYPE{atype}")
                return flags & 0xF, answers


def _skip_name(data: bytes, offset: int) -> int:
    while True:
        length = data[offset]
        if length & 0xC0 == 0xC0:
            return offset + 2
        if length == 0:
            return offset + 1
        offset += 1 + length


# ---------------------------------------------------------------------------------------------------------------
# dualmta instances


_binary_copy: Path | None = None


def server_binary() -> Path:
    """A private copy of the binary (a concurrent `swift build` replacing it must not give ETXTBSY mid-run)."""
    global _binary_copy
    if _binary_copy is None:
        if not BIN.is_file():
            raise LabError(f"dualmta binary not found at {BIN} (swift build, or set DUALMTA_BIN)")
        directory = Path(tempfile.mkdtemp(prefix=f"{RUN}-bin-"))
        atexit.register(shutil.rmtree, directory, True)
        _binary_copy = directory / "dualmta"
        shutil.copy2(BIN, _binary_copy)
    return _binary_copy


class Dualmta:
    """`dualmta serve -c CONF` in a lab host, listening on port 25 of the host's families."""

    def __init__(self, lab: Lab, host: Host, hostname: str, extra_text: str = "", **settings: str | None):
        self.lab = lab
        self.host = host
        self.name = f"dualmta@{host.name}"
        self.dir = lab.workdir / host.name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.spool = self.dir / "spool"
        self.conf = self.dir / "dualmta.conf"
        families = host.families
        listen = ", ".join(([ "[::]:25"] if "ipv6" in families else []) + (["0.0.0.0:25"] if "ipv4" in families
                                                                              else []))
        dns = ", ".join(([DNS_V4] if "ipv4" in families else []) + ([f"[{DNS_V6}]:53"] if "ipv6" in families
                                                                     else []))
        self.settings: dict[str, str | None] = {
            "hostname": hostname,
            "listen": listen,
            "spool_dir": str(self.spool),
            "local_domains": hostname,
            "relay_networks": "192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24, [2001:db8::]/32",
            "inet_protocols": ", ".join(sorted(families)),
            "dns_servers": dns,
            "connect_timeout": "2s",
            "smtp_reply_timeout": "5s",
            "retry_schedule": "2s",
            "mx_port": "25",
            "message_size_limit": "1M",
            "command_timeout": "30s",
            "log_format": "text",
        }
        self.settings.update(settings)
        self.extra_text = extra_text
        self.proc: Proc | None = None

    def render(self) -> str:
        lines = [f"{key} = {value}" for key, value in self.settings.items() if value is not None]
        return "\n".join(lines) + "\n" + self.extra_text

    def write_config(self) -> Path:
        self.conf.write_text(self.render())
        return self.conf

    def start(self, timeout: float = DEADLINE) -> "Dualmta":
        self.write_config()
        self.proc = self.lab.spawn(self.host, self.name, [str(server_binary()), "serve", "-c", str(self.conf)])
        try:
            self.proc.wait_line(r"\sready(\s|$)", timeout)
        except (LabError, TimeoutError) as exc:
            raise LabError(f"{self.name} did not start: {exc}") from None
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()

    # -- CLI with the same config, in the same namespace

    def cli(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
        return self.host.exec([str(server_binary()), *args, "-c", str(self.conf)], timeout=timeout)

    def route(self, target: str) -> str:
        out = self.cli("route", target)
        if out.returncode != 0:
            raise LabError(f"dualmta route {target} -> {out.returncode}: {out.stderr}{out.stdout}")
        return out.stdout

    # -- logs

    def text(self) -> str:
        return self.proc.text() if self.proc else ""

    def lines(self) -> list[LogLine]:
        if self.proc is None:
            return []
        with self.proc.cond:
            raw = list(self.proc.lines)
        return [line for line in map(parse_log_line, raw) if line is not None]

    def events(self, event: str | None = None, **match: str) -> list[LogLine]:
        return [line for line in self.lines()
                if (event is None or line.event == event)
                and all(line.fields.get(k) == v for k, v in match.items())]

    def wait_event(self, event: str, timeout: float = DEADLINE, **match: str) -> LogLine:
        def found():
            lines = self.events(event, **match)
            if not lines and any("no outbound transport" in line.get("reason", "") for line in self.events("waiting")):
                # A build without the outbound engine: say so now instead of timing out.
                raise AssertionError(f"{self.name}: this dualmta has no outbound SMTP engine (\"waiting ... no "
                                     f"outbound transport\"); build one that has it. Log:\n{self.text()}")
            return lines
        return self._wait(found, timeout, f"{event} {match}")[0]

    def _wait(self, predicate, timeout, what):
        try:
            return wait_until(predicate, timeout, what=f"{self.name}: {what}")
        except TimeoutError as exc:
            raise AssertionError(f"{exc}; log:\n{self.text()}") from None

    def attempts(self, queue_id: str) -> list[LogLine]:
        """The per-attempt `delivery` lines (those with an addr=) of one message, in log order."""
        return [line for line in self.events("delivery", id=queue_id) if "addr" in line.fields]

    # -- spool

    def maildir(self, domain: str, user: str) -> list[Path]:
        base = self.spool / "mailboxes" / domain / user
        return sorted(p for sub in ("new", "cur") for p in (base / sub).glob("*") if p.is_file())

    def queue_files(self) -> list[Path]:
        d = self.spool / "queue"
        return sorted(p for p in d.iterdir() if p.is_file()) if d.is_dir() else []


# ---------------------------------------------------------------------------------------------------------------
# An SMTP sink (asyncio, in-process, listening inside a lab host)


@dataclass
class SinkMessage:
    peer: str
    local: str
    helo: str
    mail_from: str
    rcpts: list[str]
    data: bytes


@dataclass
class SinkSession:
    peer: str
    local: str
    commands: list[str] = field(default_factory=list)


class Sink:
    """Accepts mail on port 25 of every address of `host`; records every session and message with the peer address.
    `rcpt_reply(rcpt) -> "250 ..."|"550 ..."` decides RCPT answers (default: accept)."""

    def __init__(self, lab: Lab, host: Host, name: str = "sink",
                 rcpt_reply: Callable[[str], str] | None = None, port: int = 25):
        self.lab = lab
        self.host = host
        self.name = name
        self.port = port
        self.rcpt_reply = rcpt_reply or (lambda rcpt: "250 2.1.5 Ok")
        self.sessions: list[SinkSession] = []
        self.messages: list[SinkMessage] = []
        self.lock = threading.Lock()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True, name=f"sink-{host.name}")
        self.servers: list[asyncio.base_events.Server] = []
        self.tasks: set[asyncio.Task] = set()  # the open sessions, touched only on the loop's thread

    def start(self) -> "Sink":
        socks = []
        for address in self.host.addresses:
            family = socket.AF_INET6 if ":" in address else socket.AF_INET
            sock = self.host.socket(family)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((address, self.port))
            sock.listen(64)
            sock.setblocking(False)
            socks.append(sock)
        self.thread.start()

        async def serve() -> None:
            for sock in socks:
                self.servers.append(await asyncio.start_server(self._session, sock=sock))

        asyncio.run_coroutine_threadsafe(serve(), self.loop).result(5)
        self.lab.closers.append(self.stop)
        return self

    def stop(self) -> None:
        if not self.loop.is_running():
            return

        async def close() -> None:
            for server in self.servers:
                server.close()
            # Sessions still open (an MTA's parked connection) end here, inside the loop: a session coroutine left
            # for the garbage collector after the loop stopped would raise "Event loop is closed" from its finally.
            tasks = list(self.tasks)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        try:
            asyncio.run_coroutine_threadsafe(close(), self.loop).result(5)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self.tasks.add(task)
        try:
            await self._converse(reader, writer)
        finally:
            self.tasks.discard(task)

    async def _converse(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")[0]
        local = writer.get_extra_info("sockname")[0]
        session = SinkSession(peer, local)
        with self.lock:
            self.sessions.append(session)
        helo, mail_from, rcpts = "", "", []

        async def reply(text: str) -> None:
            writer.write(text.encode() + b"\r\n")
            await writer.drain()

        try:
            await reply(f"220 {self.name} ESMTP lab sink")
            while True:
                raw = await asyncio.wait_for(reader.readline(), 30)
                if not raw:
                    break
                line = raw.decode("latin-1").rstrip("\r\n")
                session.commands.append(line)
                verb = line[:4].upper()
                if verb in ("EHLO", "HELO"):
                    helo = line[5:].strip()
                    await reply(f"250-{self.name}\r\n250 8BITMIME" if verb == "EHLO" else f"250 {self.name}")
                elif verb == "MAIL":
                    mail_from, rcpts = _angle(line), []
                    await reply("250 2.1.0 Ok")
                elif verb == "RCPT":
                    rcpt = _angle(line)
                    answer = self.rcpt_reply(rcpt)
                    if answer.startswith("2"):
                        rcpts.append(rcpt)
                    await reply(answer)
                elif verb == "DATA":
                    if not rcpts:
                        await reply("554 5.5.1 No valid recipients")
                        continue
                    await reply("354 End data with <CR><LF>.<CR><LF>")
                    data = b""
                    while True:
                        chunk = await asyncio.wait_for(reader.readline(), 30)
                        if not chunk or chunk == b".\r\n":
                            break
                        data += chunk[1:] if chunk.startswith(b"..") else chunk
                    with self.lock:
                        self.messages.append(SinkMessage(peer, local, helo, mail_from, list(rcpts), data))
                    await reply("250 2.0.0 Ok: queued by sink")
                elif verb == "RSET":
                    mail_from, rcpts = "", []
                    await reply("250 2.0.0 Ok")
                elif verb == "NOOP":
                    await reply("250 2.0.0 Ok")
                elif verb == "QUIT":
                    await reply("221 2.0.0 Bye")
                    break
                else:
                    await reply("502 5.5.2 Command not implemented")
        except (asyncio.TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()

    def wait_messages(self, count: int, timeout: float = DEADLINE) -> list[SinkMessage]:
        def enough():
            with self.lock:
                return list(self.messages) if len(self.messages) >= count else None
        return wait_until(enough, timeout, what=f"{count} message(s) at sink {self.host.name}")


def _angle(line: str) -> str:
    m = re.search(r"<([^>]*)>", line)
    return m.group(1) if m else ""


# ---------------------------------------------------------------------------------------------------------------
# Clients


def swaks(client: Host, server: str, to: str, sender: str, header_subject: str, port: int = 25,
          body: str = "lab message") -> tuple[str, str]:
    """Submit one message with swaks from `client`; returns (queue id from the 250 reply, transcript)."""
    tool = shutil.which("swaks")
    if tool is None:
        raise LabError("swaks is not installed")
    out = client.exec([tool, "--server", server, "--port", str(port), "--to", to, "--from", sender,
                       "--helo", f"{client.name}.client.test", "--header", f"Subject: {header_subject}",
                       "--body", body, "--timeout", "20"], timeout=60)
    m = re.search(r"<[-~]\s+250[ -].*queued as (\S+)", out.stdout)
    if out.returncode != 0 or not m:
        raise LabError(f"swaks failed ({out.returncode}):\n{out.stdout}{out.stderr}")
    return m.group(1), out.stdout


def smtp_submit(client: Host, server: str, to: str, sender: str, subject: str, port: int = 25) -> str:
    """Submit one message with smtplib over a socket opened in `client`'s namespace; returns the queue id."""
    import smtplib

    class NetnsSMTP(smtplib.SMTP):
        def _get_socket(self, host, port, timeout):
            return client.connect(host, port, timeout=timeout)

    message = (f"From: <{sender}>\r\nTo: <{to}>\r\nSubject: {subject}\r\n"
               f"Message-ID: <{subject}@{client.name}.client.test>\r\n\r\nlab message {subject}\r\n")
    with NetnsSMTP(timeout=20, local_hostname=f"{client.name}.client.test") as smtp:
        smtp.connect(server, port)
        smtp.ehlo()
        smtp.mail(sender)
        code, text = smtp.rcpt(to)
        if code != 250:
            raise LabError(f"RCPT {to} -> {code} {text!r}")
        code, text = smtp.data(message.encode())
        m = re.search(rb"queued as (\S+)", text)
        if code != 250 or not m:
            raise LabError(f"DATA -> {code} {text!r}")
        return m.group(1).decode()


# ---------------------------------------------------------------------------------------------------------------
# Assertion helpers shared by the scenarios


def attempt_tuples(mta: Dualmta, queue_id: str) -> list[tuple[str, str, str, str]]:
    """(mx, addr, family, result) of each attempt line of one message, in log order, for readable diffs."""
    return [(line.get("mx"), line.get("addr"), line.get("family"), line.get("result"))  # type: ignore[misc]
            for line in mta.attempts(queue_id)]


_PLAN_LINE = re.compile(r"^\s+\d+\.\s+(\S+)\s+pref\s+(\d+)\s+(ipv[46])\s+(\S+)")


def plan_attempts(route_text: str) -> list[tuple[str, int, str, str]]:
    """(mx, pref, family, address) from `dualmta route` output; the address without brackets or port."""
    out = []
    for line in route_text.splitlines():
        m = _PLAN_LINE.match(line)
        if m:
            endpoint = m.group(4)
            if endpoint.startswith("["):
                address = endpoint[1:endpoint.index("]")]
            else:
                address = endpoint.rsplit(":", 1)[0]
            out.append((m.group(1), int(m.group(2)), m.group(3), address))
    return out


def received_headers(path: Path) -> list[str]:
    import email
    import email.policy
    message = email.message_from_bytes(path.read_bytes(), policy=email.policy.compat32)
    return [" ".join(value.split()) for value in message.get_all("Received", [])]


def wait_done(mta: Dualmta, queue_id: str, timeout: float = 30) -> LogLine:
    """The `removed id=ID` line: every recipient of the message reached a final state."""
    return mta.wait_event("removed", timeout=timeout, id=queue_id)


if __name__ == "__main__":
    # `python3 Tests/Lab/lab.py` (as root): remove namespaces left behind by aborted lab runs.
    for name in clean_stale():
        print(f"removed stale namespace {name}")
