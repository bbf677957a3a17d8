#!/usr/bin/env python3
"""Side-by-side benchmark of dualmta against Postfix on one machine, in one run (issues 7 and 17).

Started by scripts/bench, which installs Postfix and builds dualmta in release mode first. Everything runs on
loopback under one temporary directory: two smtp-sink relay targets, and two pairs of MTAs, one pair running at a
time: dualmta and a private Postfix instance (its own config and queue directories) relaying everything to their
sink, and the same two configured to queue every message on hold (the accept-only rows). Runs alternate between
the two MTAs (A B A B ...), so slow drift of a shared, busy machine hits both alike. Measured per run:

  acceptance  messages/s from smtp-source's start (first connect) to its exit (last 250)
  relay       messages/s from the same start to the last message counted by the MTA's smtp-sink
  cpu         CPU milliseconds of the MTA per message, accept + relay (Postfix: master plus every child,
              reaped ones included through the master's cutime/cstime)
  memory      peak resident (sum of VmRSS; for Postfix over all its processes) sampled every 0.25 s

each with every process on both CPUs (shared) and pinned (smtp-source and smtp-sink on CPU 0, the MTA on CPU 1:
the MTA's own capacity per core); then idle connections held and memory per connection, the time a new session
waits for its 220 while they are held, the issue-2 load (smtp-source -s 20 -m 5000 -l 4096) and the disk's own
fsync rate. A benchmark reports: this script exits 0 unless it cannot run at all, and every process it starts is
stopped at the end.

Also the helper process for the idle-connection test: `bench.py hold HOST PORT COUNT SECONDS`.
"""

import argparse
import json
import os
import selectors
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

SENDER = "bench@client.example"
RECIPIENT = "rcpt@relay.example"
CLK_TCK = os.sysconf("SC_CLK_TCK")

# (kind, size in bytes, sessions) -> messages per run; --scale multiplies them. 1 KiB at 20 and 200 sessions is the
# size of the issue's own measurements (1,500 messages), a few seconds per run on the reference VM.
MESSAGE_COUNTS = {
    ("relay", 1024, 1): 800,
    ("relay", 1024, 20): 1500,
    ("relay", 1024, 200): 1500,
    ("accept", 1024, 1): 800,
    ("accept", 1024, 20): 1500,
    ("relay", 102400, 1): 80,
    ("relay", 102400, 20): 250,
    ("relay", 102400, 200): 400,
}


def plan_cells(pinned_too, extras):
    """The measured cells, in order: the issue's rows (1 KiB over 127.0.0.1, shared and pinned), then extras.

    Accept-only comes first, before any run has deleted a file: on ext4 without a journal a new inode costs a scan
    past every inode freed in the last minute or more, so files deleted just before a run would slow its file
    creation (the relay rows delete as fast as they create, which is their steady state)."""
    cells = []
    for kind, sessions_list in (("accept", (1, 20)), ("relay", (1, 20, 200))):
        for pinned in ((False, True) if pinned_too else (False,)):
            for sessions in sessions_list:
                cells.append((kind, 1024, sessions, "127.0.0.1", pinned))
    if extras:
        cells.append(("relay", 1024, 20, "::1", False))
        for sessions in (1, 20, 200):
            cells.append(("relay", 102400, sessions, "127.0.0.1", False))
    return cells


def log(message):
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


# --- /proc readers -------------------------------------------------------------------------------------------


def proc_stat(pid):
    """(ppid, utime+stime, cutime+cstime) in clock ticks, or None when the process is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    # fields[0] is state (field 3); utime is field 14 -> index 11.
    return int(fields[1]), int(fields[11]) + int(fields[12]), int(fields[13]) + int(fields[14])


def status_kb(pid, key):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def pss_kb(pid):
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def children_of(parent):
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = proc_stat(int(name))
            if st and st[0] == parent:
                out.append(int(name))
    return out


def filesystem_of(path):
    """`TYPE on MOUNTPOINT (DEVICE), with|without a journal` for the filesystem holding path (/proc/self/mounts,
    /proc/fs/jbd2): the spool's filesystem decides much of the per-message cost (docs/performance.md)."""
    best = None
    with open("/proc/self/mounts") as f:
        for line in f:
            device, mount, fstype = line.split()[:3]
            if (path == mount or path.startswith(mount.rstrip("/") + "/")) and (best is None or len(mount) > len(best[1])):
                best = (device, mount, fstype)
    if best is None:
        return "unknown filesystem"
    device, mount, fstype = best
    text = f"{fstype} on {mount}"
    if fstype.startswith("ext") and device.startswith("/dev/") and os.path.isdir("/proc/fs/jbd2"):
        # A mounted ext3/4 with a journal has a jbd2 entry named after its device ("vda-8", "loop0-8").
        name = os.path.basename(os.path.realpath(device))
        journaled = any(entry.rsplit("-", 1)[0] == name for entry in os.listdir("/proc/fs/jbd2"))
        text += f" ({name}), " + ("with a journal" if journaled else "without a journal")
    return text


def wait_port(host, port, deadline):
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    while time.monotonic() < deadline:
        try:
            with socket.socket(family, socket.SOCK_STREAM) as s:
                s.settimeout(1)
                s.connect((host, port))
                s.recv(512)
                return True
        except OSError:
            time.sleep(0.1)
    return False


def free_port(avoid):
    """A port free on both 127.0.0.1 and ::1, below the ephemeral range."""
    for port in range(26000, 32000, 7):
        if port in avoid:
            continue
        ok = True
        for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
            with socket.socket(family, socket.SOCK_STREAM) as s:
                try:
                    s.bind((host, port))
                except OSError:
                    ok = False
        if ok:
            return port
    raise RuntimeError("no free port pair")


# --- the processes under test ----------------------------------------------------------------------------------

STARTED = []  # every Popen we start, for cleanup


def spawn(args, **kw):
    p = subprocess.Popen(args, **kw)
    STARTED.append(p)
    return p


class Sink:
    """An smtp-sink whose running counter (-c) is read with a timestamp per change."""

    def __init__(self, port):
        self.port = port
        self.proc = spawn(
            ["smtp-sink", "-c", "-u", "nobody", f"127.0.0.1:{port}", "1024"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self.count = 0
        self.changed = []  # (monotonic time, count)
        self.lock = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        rest = b""
        while True:
            chunk = self.proc.stdout.read1(65536)
            if not chunk:
                return
            now = time.monotonic()
            rest += chunk
            *records, rest = rest.split(b"\r")
            for rec in reversed(records):
                for field in rec.split():
                    if field.startswith(b"mesg="):
                        n = int(field[5:])
                        with self.lock:
                            if n != self.count:
                                self.count = n
                                self.changed.append((now, n))
                                self.lock.notify_all()
                        break
                else:
                    continue
                break

    def wait_for(self, target, deadline):
        """Time the counter reached target, or None at the deadline."""
        with self.lock:
            while self.count < target:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.lock.wait(min(left, 0.5))
            for t, n in self.changed:
                if n >= target:
                    return t
        return None


class DualMTA:
    name = "dualmta"

    def __init__(self, binary, root, port, sink_port, hold=False):
        self.binary, self.port, self.hold = binary, port, hold
        tag = "dualmta-hold" if hold else "dualmta"
        self.spool = os.path.join(root, f"{tag}-spool")
        self.conf = os.path.join(root, f"{tag}.conf")
        self.logpath = os.path.join(root, f"{tag}.log")
        with open(self.conf, "w") as f:
            f.write(
                "hostname = dualmta-bench.localdomain\n"
                f"listen = [::1]:{port}, 127.0.0.1:{port}\n"
                f"spool_dir = {self.spool}\n"
                "local_domains = localhost\n"
                "relay_networks = 127.0.0.0/8, [::1]/128\n"
                f"routes = *=[127.0.0.1]:{sink_port}\n"
                "smtp_tls = none\n"
                "delivery_concurrency = 20\n"
                # The idle test holds 10,000 sessions and then probes with one more.
                "max_connections = 10100\n"
                "max_connections_per_client = 10100\n"
                # Accept-only runs: every message is queued on hold, like Postfix's HOLD action below.
                f"hold_incoming = {'yes' if hold else 'no'}\n")
        self.proc = None

    def start(self):
        logf = open(self.logpath, "ab")
        self.proc = spawn([self.binary, "serve", "-c", self.conf], stdout=logf, stderr=logf,
                          cwd=os.path.dirname(self.conf))
        if not wait_port("127.0.0.1", self.port, time.monotonic() + 20):
            raise RuntimeError(f"dualmta did not start; see {self.logpath}")

    def pids(self):
        return [self.proc.pid]

    def cpu_ticks(self):
        st = proc_stat(self.proc.pid)
        return st[1] + st[2] if st else 0

    def queue_size(self):
        n = 0
        for sub in ("queue", "incoming"):
            try:
                n += sum(1 for e in os.listdir(os.path.join(self.spool, sub)) if e.endswith(".msg"))
            except OSError:
                pass
        return n

    def hwm_kb(self):
        return status_kb(self.proc.pid, "VmHWM")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Postfix:
    name = "postfix"

    def __init__(self, root, port, sink_port, hold=False):
        self.port, self.hold = port, hold
        self.dir = os.path.join(root, "postfix-hold" if hold else "postfix")
        self.etc = os.path.join(self.dir, "etc")
        self.queue = os.path.join(self.dir, "queue")
        data = os.path.join(self.dir, "data")
        for d in (self.etc, self.queue, data):
            os.makedirs(d)
        shutil.chown(data, "postfix")
        # The Debian master.cf, minus the pipe transports, with chroot off (the queue is in a temp dir) and the
        # smtpd service on our port; process limits stay at their defaults (100).
        skip = {"maildrop", "uucp", "ifmail", "bsmtp", "scalemail-backend", "mailman"}
        out, keep = [], False
        with open("/etc/postfix/master.cf.proto") as f:
            for line in f:
                if line.startswith("#") or not line.strip():
                    continue
                if not line[0].isspace():
                    cols = line.split()
                    keep = cols[0] not in skip
                    if keep:
                        if cols[0] == "smtp" and cols[1] == "inet":
                            cols[0] = str(port)
                        if len(cols) >= 8 and cols[4] == "y":
                            cols[4] = "n"
                        line = "\t".join(cols) + "\n"
                if keep:
                    out.append(line)
        with open(os.path.join(self.etc, "master.cf"), "w") as f:
            f.writelines(out)
        with open(os.path.join(self.etc, "main.cf"), "w") as f:
            f.write(
                "compatibility_level = 3.6\n"
                f"queue_directory = {self.queue}\n"
                f"data_directory = {data}\n"
                "mail_owner = postfix\n"
                "setgid_group = postdrop\n"
                "myhostname = postfix-bench.localdomain\n"
                "mydestination =\n"
                "inet_interfaces = loopback-only\n"
                "inet_protocols = all\n"
                "mynetworks = 127.0.0.0/8 [::1]/128\n"
                f"relayhost = [127.0.0.1]:{sink_port}\n"
                f"maillog_file = {self.dir}/maillog\n"
                f"maillog_file_prefixes = {self.dir}\n"
                # dualmta logs client addresses and does no reverse DNS; without this, every ::1 session would
                # wait for a PTR query to the system resolver (/etc/hosts often has no ::1 line).
                "smtpd_peername_lookup = no\n"
                "smtputf8_enable = no\n"
                + ("smtpd_client_restrictions = check_client_access static:HOLD\n" if hold else "")
                + "biff = no\n")
        self.master = None

    def postfix(self, *args):
        return subprocess.run(["postfix", "-c", self.etc, *args], capture_output=True, text=True)

    def start(self):
        r = self.postfix("start")
        if r.returncode != 0:
            raise RuntimeError(f"postfix start failed: {r.stderr.strip()} (see {self.dir}/maillog)")
        deadline = time.monotonic() + 20
        pidfile = os.path.join(self.queue, "pid", "master.pid")
        while time.monotonic() < deadline and self.master is None:
            try:
                with open(pidfile) as f:
                    self.master = int(f.read().split()[0])
            except (OSError, ValueError, IndexError):
                time.sleep(0.1)
        if self.master is None or not wait_port("127.0.0.1", self.port, deadline):
            raise RuntimeError(f"postfix did not start; see {self.dir}/maillog")

    def pids(self):
        return [self.master] + children_of(self.master)

    def cpu_ticks(self):
        total = 0
        for pid in self.pids():
            st = proc_stat(pid)
            if st:
                total += st[1] + st[2]
        return total

    def queue_size(self):
        n = 0
        for sub in ("maildrop", "incoming", "active", "deferred", "hold"):
            for _, _, files in os.walk(os.path.join(self.queue, sub)):
                n += len(files)
        return n

    def stop(self):
        if self.master is None:
            return
        self.postfix("stop")
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and os.path.exists(f"/proc/{self.master}"):
            time.sleep(0.1)
        if os.path.exists(f"/proc/{self.master}"):
            self.postfix("abort")
        self.master = None


class MemorySampler:
    """Peaks of the summed VmRSS and Pss of an MTA's processes, sampled while a run is in progress."""

    def __init__(self, mta):
        self.mta, self.peak_kb, self.peak_pss_kb, self.stop_flag = mta, 0, 0, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while True:
            pids = self.mta.pids()
            self.peak_kb = max(self.peak_kb, sum(status_kb(p, "VmRSS") for p in pids))
            self.peak_pss_kb = max(self.peak_pss_kb, sum(pss_kb(p) for p in pids))
            if self.stop_flag.wait(0.25):
                return

    def finish(self):
        self.stop_flag.set()
        self.thread.join()
        return self.peak_kb, self.peak_pss_kb


# --- measurements --------------------------------------------------------------------------------------------


ALL_CPUS = frozenset(os.sched_getaffinity(0))
LOAD_CPU, MTA_CPU = frozenset({0}), frozenset({1})


def set_affinity(pids, cpus):
    """Every thread of every process in pids on cpus (a process's affinity is per thread; new threads and
    children inherit it from their creator)."""
    for pid in pids:
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                os.sched_setaffinity(int(tid), cpus)
            except OSError:
                pass  # the thread ended meanwhile


def settle_cpu(mta, deadline):
    """Wait until the MTA has used no CPU for 0.2 s (work it does after the last 250, e.g. waking the queue
    runner for a held message), so its CPU row includes that work."""
    last = mta.cpu_ticks()
    while time.monotonic() < deadline:
        time.sleep(0.2)
        now = mta.cpu_ticks()
        if now == last:
            return
        last = now


def one_run(mta, sink, cell, count, drain_timeout):
    """One smtp-source load against one MTA; acceptance, relay, CPU and memory of that run.

    cell: kind ("relay": the MTA relays to its sink while it accepts; "accept": it queues every message on hold),
    size, sessions, host, pinned (smtp-source and the sink on CPU 0, every thread of the MTA on CPU 1)."""
    kind, size, sessions, host, pinned = cell
    family_flag = "-6" if ":" in host else "-4"
    if pinned:
        set_affinity(mta.pids(), MTA_CPU)
        set_affinity([sink.proc.pid], LOAD_CPU)
    target = sink.count + count
    cpu0 = mta.cpu_ticks()
    sampler = MemorySampler(mta)
    t0 = time.monotonic()
    src = spawn(["smtp-source", family_flag, "-s", str(sessions), "-m", str(count), "-l", str(size),
                 "-f", SENDER, "-t", RECIPIENT, "-M", "client.example", f"{host}:{mta.port}"],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                preexec_fn=(lambda: os.sched_setaffinity(0, LOAD_CPU)) if pinned else None)
    try:
        _, err = src.communicate(timeout=drain_timeout)
    except subprocess.TimeoutExpired:
        src.kill()
        _, err = src.communicate()
    t1 = time.monotonic()
    STARTED.remove(src)
    result = {"mta": mta.name, "kind": kind, "host": host, "sessions": sessions, "size": size, "count": count,
              "pinned": pinned, "accept_s": t1 - t0, "source_rc": src.returncode,
              "source_err": err.decode(errors="replace")[-300:]}
    result["accept_rate"] = count / (t1 - t0) if src.returncode == 0 else None
    result["relay_rate"] = None
    if kind == "relay":
        t_last = sink.wait_for(target, t1 + drain_timeout)
        result["relay_rate"] = count / (t_last - t0) if t_last else None
        # Let the queue empty (envelope clean-up after delivery) so the next run starts from the same state.
        deadline = time.monotonic() + 10
        while mta.queue_size() > 0 and time.monotonic() < deadline:
            time.sleep(0.05)
    else:
        settle_cpu(mta, time.monotonic() + 3)
    result["cpu_ms_per_msg"] = (mta.cpu_ticks() - cpu0) / CLK_TCK * 1000 / count
    result["peak_rss_kb"], result["peak_pss_kb"] = sampler.finish()
    if pinned:
        set_affinity(mta.pids(), ALL_CPUS)
        set_affinity([sink.proc.pid], ALL_CPUS)
    return result


def fsync_rate(directory, threads, seconds=3.0):
    """Small files (1 KiB) created, written and fsynced per second (each thread its own files)."""
    counts = [0] * threads
    stop = time.monotonic() + seconds
    payload = b"x" * 1024

    def worker(i):
        n = 0
        while time.monotonic() < stop:
            path = os.path.join(directory, f"fsync-{i}-{n}")
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.write(fd, payload)
                os.fsync(fd)
            finally:
                os.close(fd)
            n += 1
        counts[i] = n
        # Removed after the timed window: an unlink between fsyncs adds a journal commit of its own (the
        # MTAs remove a queue file only after delivery, off the acceptance path).
        for k in range(n):
            os.unlink(os.path.join(directory, f"fsync-{i}-{k}"))

    ts = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    t0 = time.monotonic()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return sum(counts) / (time.monotonic() - t0)


def banner_time(host, port, timeout):
    """Seconds from connect() to a complete 220 line, or None."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    t0 = time.monotonic()
    try:
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect((host, port))
            data = b""
            while b"\n" not in data:
                chunk = s.recv(512)
                if not chunk:
                    return None
                data += chunk
            return time.monotonic() - t0 if data.startswith(b"220") else None
    except OSError:
        return None


def hold_main(host, port, count, seconds):
    """Helper process: open `count` sessions, wait for each 220, print how many got one, hold until stdin EOF."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sel = selectors.DefaultSelector()
    socks, greeted, started, inflight = [], 0, 0, 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and (started < count or inflight > 0):
        while started < count and inflight < 256:
            s = socket.socket(family, socket.SOCK_STREAM)
            s.setblocking(False)
            err = s.connect_ex((host, port))
            if err not in (0, 115):  # EINPROGRESS
                s.close()
                started = count
                break
            sel.register(s, selectors.EVENT_READ, b"")
            socks.append(s)
            started += 1
            inflight += 1
        for key, _ in sel.select(timeout=0.2):
            s = key.fileobj
            try:
                chunk = s.recv(512)
            except OSError:
                chunk = b""
            data = key.data + chunk
            if not chunk or b"\n" in data:
                sel.unregister(s)
                inflight -= 1
                if chunk and data.startswith(b"220"):
                    greeted += 1
            else:
                sel.modify(s, selectors.EVENT_READ, data)
    print(f"held {greeted} of {started}", flush=True)
    sys.stdin.read()
    for s in socks:
        s.close()


def idle_test(mta, count, seconds, host="127.0.0.1"):
    before = sum(status_kb(p, "VmRSS") for p in mta.pids())
    before_pss = sum(pss_kb(p) for p in mta.pids())
    holder = spawn([sys.executable, os.path.abspath(__file__), "hold", host, str(mta.port), str(count),
                    str(seconds)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    line = holder.stdout.readline().split()
    held = int(line[1]) if len(line) >= 2 else 0
    time.sleep(0.5)
    after = sum(status_kb(p, "VmRSS") for p in mta.pids())
    after_pss = sum(pss_kb(p) for p in mta.pids())
    probes = []
    for _ in range(5):
        probes.append(banner_time(host, mta.port, 5.0))
        if probes[-1] is None:
            break  # one 5-second timeout says enough
    holder.stdin.close()
    holder.wait(30)
    STARTED.remove(holder)
    ok = [p for p in probes if p is not None]
    return {"mta": mta.name, "asked": count, "held": held, "rss_before_kb": before, "rss_held_kb": after,
            "pss_before_kb": before_pss, "pss_held_kb": after_pss,
            "kb_per_conn": (after - before) / held if held else None,
            "pss_kb_per_conn": (after_pss - before_pss) / held if held else None,
            "new_220_ms": statistics.median(ok) * 1000 if len(ok) == len(probes) else None,
            "new_220_max_ms": max(ok) * 1000 if ok else None, "probes_failed": len(probes) - len(ok)}


# --- reporting -----------------------------------------------------------------------------------------------


def summary(values):
    vals = [v for v in values if v is not None]
    if not vals:
        return None, None, None, 0
    return statistics.median(vals), min(vals), max(vals), len(vals)


def fmt(v, digits=1):
    if v is None:
        return "-"
    if abs(v) >= 100:
        return f"{v:.0f}"
    return f"{v:.{digits}f}"


def cell(values, digits=1):
    med, lo, hi, n = summary(values)
    if med is None:
        return "-", None
    spread = f"{fmt(med, digits)} ({fmt(lo, digits)}-{fmt(hi, digits)})"
    missing = len(values) - n
    return spread + (f" [{missing} failed]" if missing else ""), med


def cell_label(key):
    kind, size, sessions, host, pinned = key
    where = "pinned" if pinned else "shared"
    return f"{kind:<6} {size // 1024:>3} KiB {sessions:>3} sess {host:<9} {where}"


# The issue-17 targets: (kind, size, sessions, what, wanted). what: "rate" = dualmta/Postfix msg/s at least wanted;
# "cpu" = dualmta/Postfix CPU per message at most wanted.
TARGETS = [
    ("relay", 1024, 20, "rate", 1.5), ("relay", 1024, 1, "rate", 1.2), ("relay", 1024, 200, "rate", 3.0),
    ("relay", 1024, 1, "cpu", 0.5), ("relay", 1024, 20, "cpu", 0.5),
    ("accept", 1024, 1, "rate", 1.2), ("accept", 1024, 20, "rate", 1.5),
]


def build_table(runs, idle, disk, issue2, notes):
    keys = []
    for r in runs:
        k = (r["kind"], r["size"], r["sessions"], r["host"], r["pinned"])
        if k not in keys:
            keys.append(k)

    def values(key, mta, field):
        kind, size, sessions, host, pinned = key
        return [r[field] for r in runs if r["mta"] == mta and r["kind"] == kind and r["size"] == size
                and r["sessions"] == sessions and r["host"] == host and r["pinned"] == pinned]

    def rate_field(key):
        return "relay_rate" if key[0] == "relay" else "accept_rate"

    def medians(key):
        out = {}
        for mta in ("dualmta", "postfix"):
            out[mta] = (summary(values(key, mta, rate_field(key)))[0],
                        summary(values(key, mta, "cpu_ms_per_msg"))[0])
        return out

    def ratio(a, b):
        return a / b if a is not None and b else None

    lines = ["## Summary (medians; ratio = dualmta / Postfix; relay = end to end, accept = queued on hold)", "",
             "| load | size | sessions | host | CPUs | n | dualmta msg/s | Postfix msg/s | ratio "
             "| dualmta CPU ms/msg | Postfix CPU ms/msg | CPU ratio |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for key in keys:
        kind, size, sessions, host, pinned = key
        m = medians(key)
        (dr, dc), (pr, pc) = m["dualmta"], m["postfix"]
        n = next(r["count"] for r in runs if (r["kind"], r["size"], r["sessions"], r["host"], r["pinned"]) == key)
        where = "pinned: load on CPU 0, MTA on CPU 1" if pinned else "shared (2)"
        lines.append(f"| {kind} | {size // 1024} KiB | {sessions} | {host} | {where} | {n} | {fmt(dr)} | {fmt(pr)} "
                     f"| {fmt(ratio(dr, pr), 2)} | {fmt(dc, 2)} | {fmt(pc, 2)} | {fmt(ratio(dc, pc), 2)} |")

    lines += ["", "## Targets (127.0.0.1, 1 KiB)", ""]
    for kind, size, sessions, what, wanted in TARGETS:
        for pinned in (False, True):
            key = (kind, size, sessions, "127.0.0.1", pinned)
            if key not in keys:
                continue
            m = medians(key)
            index = 0 if what == "rate" else 1
            got = ratio(m["dualmta"][index], m["postfix"][index])
            if got is None:
                verdict = "no result"
            elif what == "rate":
                verdict = "met" if got >= wanted else "missed"
            else:
                verdict = "met" if got <= wanted else "missed"
            label = "msg/s ratio" if what == "rate" else "CPU/msg ratio"
            sign = ">=" if what == "rate" else "<="
            lines.append(f"- {kind} {sessions} sess ({'pinned' if pinned else 'shared'}): {label} {fmt(got, 2)} "
                         f"(target {sign} {wanted}): {verdict}")

    lines += ["", "## Every cell, median (min-max) of the runs", "", "```"]
    header = f"{'row':<44} {'dualmta median (min-max)':>28} {'postfix median (min-max)':>28} {'ratio d/p':>9}"
    lines += [header, "-" * len(header)]

    def row(label, dvals, pvals, digits=1):
        dtext, dmed = cell(dvals, digits)
        ptext, pmed = cell(pvals, digits)
        r = f"{dmed / pmed:.2f}" if dmed is not None and pmed else "-"
        lines.append(f"{label:<44} {dtext:>28} {ptext:>28} {r:>9}")

    sections = [("accept msg/s (smtp-source start to exit)", "accept_rate", 1),
                ("relay msg/s (start to the sink's last message)", "relay_rate", 1),
                ("CPU ms per message (lower is better)", "cpu_ms_per_msg", 2),
                ("peak RSS MB, sum over processes (lower is better)", "peak_rss_kb", 1),
                ("peak PSS MB, sum over processes (lower is better)", "peak_pss_kb", 1)]
    for title, field, digits in sections:
        lines.append(f"== {title}")
        for key in keys:
            if field == "relay_rate" and key[0] != "relay":
                continue

            def pick(mta):
                return [v / 1024 if (v is not None and field.endswith("_kb")) else v
                        for v in values(key, mta, field)]
            row(cell_label(key), pick("dualmta"), pick("postfix"), digits)
    if idle:
        lines.append("== idle connections (from a separate process, 127.0.0.1)")
        d, p = idle.get("dualmta"), idle.get("postfix")

        def g(x, k, scale=1.0):
            return [x[k] * scale] if x and x.get(k) is not None else [None]
        row("sessions held (asked: %s / %s)" % (d and d["asked"], p and p["asked"]), g(d, "held"), g(p, "held"), 0)
        row("RSS while held, MB (sum of processes)", g(d, "rss_held_kb", 1 / 1024), g(p, "rss_held_kb", 1 / 1024))
        row("PSS while held, MB (sum of processes)", g(d, "pss_held_kb", 1 / 1024), g(p, "pss_held_kb", 1 / 1024))
        row("RSS per held session, KiB", g(d, "kb_per_conn"), g(p, "kb_per_conn"))
        row("PSS per held session, KiB", g(d, "pss_kb_per_conn"), g(p, "pss_kb_per_conn"))
        row("new session's 220 while held, ms (median)", g(d, "new_220_ms"), g(p, "new_220_ms"), 2)
        row("new session's 220 while held, ms (max)", g(d, "new_220_max_ms"), g(p, "new_220_max_ms"), 2)
        for x in (d, p):
            if x and x["probes_failed"]:
                lines.append(f"   {x['mta']}: a new session got no 220 within 5 s while {x['held']} were held "
                             "('-' above)")
    if issue2:
        lines.append("== issue 2: smtp-source -s 20 -m 5000 -l 4096, 127.0.0.1")
        row("accept msg/s", [x["accept_rate"] for x in issue2 if x["mta"] == "dualmta"],
            [x["accept_rate"] for x in issue2 if x["mta"] == "postfix"])
        row("seconds for 5000", [x["accept_s"] for x in issue2 if x["mta"] == "dualmta"],
            [x["accept_s"] for x in issue2 if x["mta"] == "postfix"])
    lines.append("== disk (the spool's filesystem): new 1 KiB files written and fsynced per second")
    lines.append(f"   1 thread: {fmt(disk.get(1))}/s   8 threads: {fmt(disk.get(8))}/s")
    lines += ["```", "", "## Notes", ""] + [f"- {n}" for n in notes]
    return "\n".join(lines)


# --- main ----------------------------------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--binary", required=True)
    ap.add_argument("--runs", type=int, default=3, help="runs per MTA and cell (default 3)")
    ap.add_argument("--scale", type=float, default=1.0, help="multiply the per-run message counts")
    ap.add_argument("--budget", type=float, default=900, help="seconds for all measurements (default 900)")
    ap.add_argument("--out", default="/tmp/dualmta-bench-results.txt")
    ap.add_argument("--idle", type=int, default=10000, help="idle sessions to open against dualmta")
    ap.add_argument("--idle-postfix", type=int, default=1000, help="idle sessions to open against Postfix")
    ap.add_argument("--no-issue2", action="store_true", help="skip smtp-source -s 20 -m 5000 -l 4096")
    ap.add_argument("--no-extras", action="store_true",
                    help="only the 1 KiB rows over 127.0.0.1 (no ::1, 100 KiB, idle sessions, issue-2 load)")
    ap.add_argument("--no-pinned", action="store_true", help="skip the pinned (taskset) rows")
    ap.add_argument("--workdir", help="directory to hold the temporary directory (spools, queues, sinks' logs); "
                    "default: the system's temp directory")
    ap.add_argument("--only", help="comma list of cells KIND/SIZEK/SESSIONS, e.g. relay/1/20,accept/1/1 "
                    "(development)")
    args = ap.parse_args()

    start = time.monotonic()
    notes = []

    def left():
        return args.budget - (time.monotonic() - start)

    pinned_too = not args.no_pinned
    if pinned_too and not {0, 1} <= ALL_CPUS:
        pinned_too = False
        notes.append(f"pinned rows skipped: this process may run on CPUs {sorted(ALL_CPUS)} only, not 0 and 1")
    cells = plan_cells(pinned_too, not args.no_extras)
    if args.only:
        wanted = set(args.only.split(","))
        cells = [c for c in cells if f"{c[0]}/{c[1] // 1024}/{c[2]}" in wanted]

    root = tempfile.mkdtemp(prefix="dualmta-bench.", dir=args.workdir)
    os.chmod(root, 0o755)  # Postfix's unprivileged daemons must reach their queue below it
    mtas, sinks = [], []

    def on_signal(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    try:
        log(f"work directory {root} ({filesystem_of(root)})")

        used = set()
        ports = {}
        for k in ("dualmta", "postfix", "dualmta_hold", "postfix_hold", "sink_d", "sink_p"):
            ports[k] = free_port(used)
            used.add(ports[k])
        sink_d, sink_p = Sink(ports["sink_d"]), Sink(ports["sink_p"])
        sinks += [sink_d, sink_p]
        sink_of = {"dualmta": sink_d, "postfix": sink_p}
        binary = os.path.abspath(args.binary)
        relaying = (DualMTA(binary, root, ports["dualmta"], ports["sink_d"]),
                    Postfix(root, ports["postfix"], ports["sink_p"]))
        holding = (DualMTA(binary, root, ports["dualmta_hold"], ports["sink_d"], hold=True),
                   Postfix(root, ports["postfix_hold"], ports["sink_p"], hold=True))
        mtas += [*relaying, *holding]

        # One pair runs at a time: the holding pair for accept cells, then the relaying pair for relay cells.
        active = None

        def use(pair):
            nonlocal active
            if active is pair:
                return
            if active is not None:
                for mta in active:
                    mta.stop()
            for mta in pair:
                mta.start()
            log(f"dualmta pid {pair[0].proc.pid} on port {pair[0].port}, postfix master pid {pair[1].master} on "
                f"port {pair[1].port}" + (" (queueing on hold)" if pair[0].hold else ""))
            for mta in pair:  # warm-up, not recorded
                one_run(mta, sink_of[mta.name], ("relay" if not mta.hold else "accept", 1024, 5, "127.0.0.1",
                                                  False), 20, 30)
            active = pair

        runs = []
        reserve = (150 if not args.no_issue2 else 60) if not args.no_extras else 0
        for kind, size, sessions, host, pinned in cells:
            count = max(sessions, int(MESSAGE_COUNTS[(kind, size, sessions)] * args.scale))
            use(relaying if kind == "relay" else holding)
            for r in range(args.runs):
                if left() < reserve:
                    notes.append(f"time budget reached: skipped the rest from {kind} {size} B/{sessions} sess/"
                                 f"{host}{' pinned' if pinned else ''} run {r}")
                    break
                for mta in active:
                    res = one_run(mta, sink_of[mta.name], (kind, size, sessions, host, pinned), count, 60)
                    runs.append(res)
                    log(f"{mta.name:8} {cell_label((kind, size, sessions, host, pinned))} n={count:<4} "
                        f"accept {fmt(res['accept_rate'])}/s relay {fmt(res['relay_rate'])}/s "
                        f"cpu {fmt(res['cpu_ms_per_msg'], 2)} ms/msg rss {res['peak_rss_kb'] // 1024}MB"
                        + (f" smtp-source rc={res['source_rc']}: {res['source_err'].strip()[-120:]}"
                           if res["source_rc"] else ""))
            else:
                continue
            break

        idle = {}
        issue2 = []
        if not args.no_extras:
            use(relaying)
            dual, pf = relaying
            if left() > 30:
                idle["dualmta"] = idle_test(dual, args.idle, 60)
                log(f"idle dualmta: {idle['dualmta']}")
                time.sleep(1)
                idle["postfix"] = idle_test(pf, args.idle_postfix, 8)
                log(f"idle postfix: {idle['postfix']}")
            else:
                notes.append("time budget reached: idle-connection test skipped")
            if not args.no_issue2:
                for mta in (dual, pf):
                    if left() < 40:
                        notes.append(f"time budget reached: issue-2 load skipped for {mta.name}")
                        continue
                    res = one_run(mta, sink_of[mta.name], ("relay", 4096, 20, "127.0.0.1", False), 5000,
                                  max(30, left() - 20))
                    issue2.append(res)
                    log(f"issue 2 {mta.name}: {fmt(res['accept_rate'])} msg/s, {res['accept_s']:.1f} s")
        dual_hwm = relaying[0].hwm_kb() if relaying[0].proc and relaying[0].proc.poll() is None else 0
        if active is not None:
            for mta in active:
                mta.stop()

        # The disk's own limit is measured last: it creates and deletes thousands of files, and on ext4 without a
        # journal (this VM) the inode allocator then skips every inode freed in the last minute or more (its
        # "recently deleted" check), which slowed file creation in the MTA rows that followed it (issue 7).
        disk = {}
        for threads in (1, 8):
            disk[threads] = fsync_rate(root, threads)
            log(f"disk: {disk[threads]:.0f} fsynced small files/s with {threads} thread(s)")

        notes += [
            f"spools and queues on {filesystem_of(root)}.",
            "relay rows: each MTA relays to its own smtp-sink while it accepts; msg/s = messages / (smtp-source "
            "start -> the sink counting the last one); CPU covers accept + relay until the queue is empty.",
            "accept rows: each MTA queues every message on hold (dualmta hold_incoming = yes, Postfix "
            "check_client_access static:HOLD); msg/s = messages / (smtp-source start -> its exit, the last 250); "
            "CPU until the MTA is idle again; held messages stay queued (deleting them would slow the next run's "
            "file creation on a journal-less ext4), so each accept run adds to a queue of up to a few thousand.",
            "pinned rows: smtp-source and smtp-sink on CPU 0, every thread of the MTA (Postfix: every process) on "
            "CPU 1, so the MTA's own capacity per core; shared rows: everything on both CPUs.",
            "CPU = utime + stime from /proc; Postfix = master + all children (reaped ones too).",
            "peak RSS sums VmRSS over the MTA's processes (Postfix: up to ~100 processes share libraries, so the "
            "sum overstates it; PSS, which splits shared pages between processes, is the fairer memory row).",
            f"dualmta VmHWM at the end: {dual_hwm // 1024} MB." if dual_hwm else "",
            "Postfix: Debian master.cf with chroot off, default process limits (100), relayhost = the sink.",
            "dualmta: routes = *=[127.0.0.1]:sink, delivery_concurrency = 20, max_connections(_per_client) = 10100.",
            "numbers from a 2-core VM; runs alternate, so both MTAs meet the same conditions; read small ratio "
            "differences (about 10 %) as noise.",
        ]
        notes = [n for n in notes if n]
        table = build_table(runs, idle, disk, issue2, notes)
        print("\n" + table)
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            f.write(table + "\n")
        with open(os.path.splitext(args.out)[0] + ".json", "w") as f:
            json.dump({"runs": runs, "idle": idle, "disk": disk, "issue2": issue2}, f, indent=1)
        log(f"table written to {args.out} (raw runs: {os.path.splitext(args.out)[0]}.json); "
            f"{time.monotonic() - start:.0f} s")
        return 0
    except KeyboardInterrupt:
        log("interrupted")
        return 0
    finally:
        # The MTAs first, politely (dualmta: SIGTERM; Postfix: postfix stop), then whatever we started is left.
        for mta in mtas:
            try:
                mta.stop()
            except Exception as e:  # noqa: BLE001 - clean-up must go on
                log(f"stopping {mta.name}: {e}")
        for p in list(STARTED):
            if p.poll() is None:
                p.kill()
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                pass
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "hold":
        hold_main(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]))
        sys.exit(0)
    sys.exit(main())
