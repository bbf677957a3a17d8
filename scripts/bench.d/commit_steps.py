#!/usr/bin/env python3
"""What one spool commit costs, step by step, and the accept rate around it (issue 17, "one fsync round").

Two modes, both against release binaries given on the command line (a throwaway measurement, not part of CI):

  steps BINARY [--messages N] [--sessions S]
      Runs BINARY under `strace -f -T -ttt -y` (only the calls a commit makes), sends N messages of 1 KiB from S
      smtp-source sessions (default 1), relayed to a local smtp-sink, and prints per step the median and mean time of the calls
      (write of the envelope, sync_file_range, each file's fsync/fdatasync, the renames, the fsync of queue/) and
      of the whole commit: from the envelope's open to the end of the fsync of queue/ that covers it. Also "files
      round": from the start of the first file sync to the end of the last one (less than their sum when they
      overlap). strace slows every call a little, so the spans are upper bounds; the sync times are the device's. (It
      slows file creation most: about 1 ms per create under strace here, 0.04 ms under `perf trace`.)

  spans BINARY [--messages N] [--directory DIR]
      The same lone session without strace: `perf record` of a few syscall tracepoints, and per commit on the commit
      thread round one (write-back start → first rename, hand-off to the sync lanes included), round two (the fsync
      of queue/) and both. These are the numbers to trust; `steps` tells which call costs what. DIR puts the spool
      on another file system (e.g. a journaling ext4 on a loop device).

  rate BINARY_A [BINARY_B] [--sessions S] [--messages N] [--rounds R] [--pin]
      Alternates A and B (A B A B ...), each run a fresh spool: smtp-source -s S -m N -l 1024 relayed to smtp-sink,
      accept rate = N / (smtp-source's wall time), as scripts/bench.d/bench.py measures "accept msg/s". --pin puts
      smtp-source and smtp-sink on CPU 0 and the MTA on CPU 1.

Everything listens on 127.0.0.1 only. Exit status 0 unless it cannot run.
"""

import argparse
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

TRACED = "openat,write,fsync,fdatasync,sync_file_range,rename,renameat,renameat2,linkat"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, deadline):
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)  # polling for the listener, inside the deadline
    return False


class Setup:
    """A smtp-sink and a config for one dualmta, under one temporary directory."""

    def __init__(self, root):
        self.root = root
        self.sink_port = free_port()
        self.sink = subprocess.Popen(PIN_LOAD + ["smtp-sink", "-u", "nobody", f"127.0.0.1:{self.sink_port}", "1000"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def config(self, name):
        port = free_port()
        spool = os.path.join(self.root, name + "-spool")
        shutil.rmtree(spool, ignore_errors=True)
        path = os.path.join(self.root, name + ".conf")
        with open(path, "w") as f:
            f.write("hostname = bench.localdomain\n"
                    f"listen = 127.0.0.1:{port}\n"
                    f"spool_dir = {spool}\n"
                    "local_domains = localhost\n"
                    "relay_networks = 127.0.0.0/8\n"
                    f"routes = *=[127.0.0.1]:{self.sink_port}\n"
                    "smtp_tls = none\n"
                    "delivery_concurrency = 20\n"
                    "max_connections_per_client = 1000\n")
        return path, port, spool

    def close(self):
        self.sink.terminate()
        self.sink.wait(10)


PIN_LOAD = []   # `taskset -c 0` with --pin: smtp-source and smtp-sink on one CPU
PIN_MTA = []    # `taskset -c 1` with --pin: the MTA alone on the other


def run_load(port, sessions, messages):
    t0 = time.monotonic()
    rc = subprocess.call(PIN_LOAD + ["smtp-source", "-4", "-s", str(sessions), "-m", str(messages), "-l", "1024",
                          "-f", "bench@client.example", "-t", "rcpt@relay.example", "-M", "client.example",
                          f"127.0.0.1:{port}"], stdout=subprocess.DEVNULL)
    elapsed = time.monotonic() - t0
    if rc != 0:
        raise RuntimeError(f"smtp-source exited {rc}")
    return messages / elapsed


def cpu_seconds(pid):
    """utime + stime of a process (all its threads) from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_mta(command, port, log):
    proc = subprocess.Popen(command, stdout=log, stderr=log)
    if not wait_port(port, time.monotonic() + 30):
        proc.kill()
        raise RuntimeError("dualmta did not start")
    return proc


def stop_mta(proc):
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# --- steps ---------------------------------------------------------------------------------------------------

LINE = re.compile(r"^(\d+)\s+(\d+\.\d+)\s+(.*)$")
CALL = re.compile(r"^(\w+)\((.*)\)\s+=\s+(-?\d+)(?:<[^>]*>)?.*?<(\d+\.\d+)>$")
RESUMED = re.compile(r"^<\.\.\. (\w+) resumed>(.*)$")


def parse(text):
    """(pid, start time, end time, name, argument text, result) per completed call."""
    pending = {}
    calls = []
    for raw in text.splitlines():
        m = LINE.match(raw)
        if not m:
            continue
        pid, at, rest = int(m.group(1)), float(m.group(2)), m.group(3)
        if rest.endswith("<unfinished ...>"):
            pending[pid] = (at, rest[: -len(" <unfinished ...>")])
            continue
        r = RESUMED.match(rest)
        if r and pid in pending:
            at, head = pending.pop(pid)
            rest = head + r.group(2)
        c = CALL.match(rest)
        if not c:
            continue
        duration = float(c.group(4))
        calls.append((pid, at, at + duration, c.group(1), c.group(2), int(c.group(3))))
    return calls


def steps(args):
    if shutil.which("strace") is None:
        sys.exit("strace is needed")
    root = tempfile.mkdtemp(prefix="commit-steps.")
    setup = Setup(root)
    try:
        conf, port, spool = setup.config("steps")
        trace = os.path.join(root, "trace.txt")
        with open(os.path.join(root, "mta.log"), "ab") as log:
            proc = start_mta(["strace", "-f", "-T", "-ttt", "-y", "-e", f"trace={TRACED}", "-o", trace,
                              args.binary, "serve", "-c", conf], port, log)
            try:
                run_load(port, args.sessions, args.messages)
            finally:
                stop_mta(proc)
        report_steps(parse(open(trace, errors="replace").read()), os.path.realpath(spool))
    finally:
        setup.close()
        shutil.rmtree(root, ignore_errors=True)


def report_steps(calls, spool):
    incoming, queue = spool + "/incoming/", spool + "/queue"
    per_id = {}

    def entry(qid):
        return per_id.setdefault(qid, {"open": None, "steps": {}, "syncs": [], "committed": None})

    def add(qid, step, duration):
        entry(qid)["steps"].setdefault(step, []).append(duration)

    id_of = re.compile(r"/(?:incoming|queue)/([A-Za-z0-9]+)\.(msg|env)")
    for pid, start, end, name, argtext, result in calls:
        m = id_of.search(argtext)
        if name == "openat" and m and m.group(2) == "env" and incoming in argtext and "O_CREAT" in argtext:
            entry(m.group(1))["open"] = start
            add(m.group(1), "open env", end - start)
        elif name == "write" and m and incoming in argtext:
            add(m.group(1), f"write {m.group(2)}", end - start)
        elif name == "sync_file_range" and m:
            add(m.group(1), f"sync_file_range {m.group(2)}", end - start)
        elif name in ("fsync", "fdatasync") and m and incoming in argtext:
            add(m.group(1), f"{name} {m.group(2)}", end - start)
            entry(m.group(1))["syncs"].append((start, end))
        elif name.startswith("rename") and m and incoming in argtext:
            add(m.group(1), f"rename {m.group(2)}", end - start)
            if m.group(2) == "env":
                entry(m.group(1))["committed"] = end
        elif name in ("fsync", "fdatasync") and f"<{queue}>" in argtext:
            for qid, e in per_id.items():
                if e["committed"] is not None and e["committed"] <= start and "dir" not in e:
                    e["dir"] = (start, end)
    spans, rounds, dirs = [], [], []
    rows = {}
    for qid, e in per_id.items():
        if e["open"] is None or "dir" not in e or not e["syncs"]:
            continue
        spans.append(e["dir"][1] - e["open"])
        rounds.append(max(s[1] for s in e["syncs"]) - min(s[0] for s in e["syncs"]))
        dirs.append(e["dir"][1] - e["dir"][0])
        for step, values in e["steps"].items():
            rows.setdefault(step, []).append(sum(values))
    if not spans:
        sys.exit("no complete commit found in the trace")

    def line(label, values):
        print(f"  {label:28s} n={len(values):4d}  median {statistics.median(values) * 1e3:7.3f} ms"
              f"  mean {statistics.fmean(values) * 1e3:7.3f} ms")

    batches = {}
    for e in per_id.values():
        if "dir" in e and e["syncs"]:
            batches.setdefault(e["dir"], []).extend(e["syncs"])
    sizes = [len(syncs) // 2 for syncs in batches.values()]
    print(f"commits measured: {len(spans)} in {len(batches)} batches (messages per batch: median "
          f"{statistics.median(sizes)}, max {max(sizes)})")
    line("files round per batch", [max(s[1] for s in v) - min(s[0] for s in v) for v in batches.values()])
    for step in sorted(rows):
        line(step, rows[step])
    line("fsync queue/", dirs)
    line("files round (first→last sync)", rounds)
    line("whole commit", spans)


# --- spans ---------------------------------------------------------------------------------------------------

SPAN_EVENTS = ",".join("syscalls:" + e for e in (
    "sys_enter_sync_file_range", "sys_enter_rename", "sys_enter_fsync", "sys_exit_fsync"))


def spans(args):
    """The commit's two waits without strace: perf records syscall tracepoints of the MTA (cheap, no ptrace stops),
    and on the commit thread a commit runs from its first sync_file_range (write-back start, after the envelope is
    written) to its first rename (round one, including the hand-off to the sync lanes) and on to the end of the next
    fsync (queue/, round two)."""
    if shutil.which("perf") is None:
        sys.exit("perf is needed")
    root = tempfile.mkdtemp(prefix="commit-spans.", dir=args.directory)
    setup = Setup(root)
    try:
        conf, port, _ = setup.config("spans")
        data = os.path.join(root, "perf.data")
        with open(os.path.join(root, "mta.log"), "ab") as log:
            proc = start_mta([args.binary, "serve", "-c", conf], port, log)
            recorder = subprocess.Popen(["perf", "record", "-q", "-m", "4096", "-e", SPAN_EVENTS, "-p",
                                         str(proc.pid), "-o", data], stderr=subprocess.DEVNULL)
            try:
                time.sleep(1)  # perf attaches asynchronously; a few missed commits at the start do not matter
                run_load(port, 1, args.messages)
            finally:
                recorder.send_signal(signal.SIGINT)
                recorder.wait(60)
                stop_mta(proc)
        script = subprocess.run(["perf", "script", "-i", data, "-F", "tid,time,event"], capture_output=True,
                                text=True, check=True).stdout
        report_spans(script)
    finally:
        setup.close()
        shutil.rmtree(root, ignore_errors=True)


def report_spans(script):
    per_thread = {}
    for raw in script.splitlines():
        m = re.match(r"\s*(\d+)\s+([\d.]+):\s+syscalls:(\w+)", raw)
        if m:
            per_thread.setdefault(int(m.group(1)), []).append((float(m.group(2)), m.group(3)))
    round_one, round_two, whole = [], [], []
    for events in per_thread.values():
        index = 0
        while index < len(events):
            if events[index][1] != "sys_enter_sync_file_range":
                index += 1
                continue
            start = events[index][0]
            rename = next((n for n in range(index, len(events)) if events[n][1] == "sys_enter_rename"), None)
            if rename is None:
                break
            sync = next((n for n in range(rename, len(events)) if events[n][1] == "sys_enter_fsync"), None)
            if sync is None or sync + 1 >= len(events) or events[sync + 1][1] != "sys_exit_fsync":
                break
            round_one.append(events[rename][0] - start)
            round_two.append(events[sync + 1][0] - events[sync][0])
            whole.append(events[sync + 1][0] - start)
            index = sync + 2
    if not whole:
        sys.exit("no complete commit found")

    def line(label, values):
        print(f"  {label:44s} n={len(values):4d}  median {statistics.median(values) * 1e3:7.3f} ms"
              f"  mean {statistics.fmean(values) * 1e3:7.3f} ms")

    line("round 1: write-back start to first rename", round_one)
    line("round 2: fsync of queue/", round_two)
    line("write-back start to the end of round 2", whole)


# --- rate ----------------------------------------------------------------------------------------------------


def rate(args):
    root = tempfile.mkdtemp(prefix="commit-rate.")
    setup = Setup(root)
    results = {b: [] for b in args.binaries}
    cpus = {b: [] for b in args.binaries}
    try:
        for round_number in range(args.rounds):
            for index, binary in enumerate(args.binaries):
                conf, port, _ = setup.config(f"mta{index}")
                with open(os.path.join(root, f"mta{index}.log"), "ab") as log:
                    proc = start_mta(PIN_MTA + [binary, "serve", "-c", conf], port, log)
                    try:
                        before = cpu_seconds(proc.pid)
                        value = run_load(port, args.sessions, args.messages)
                        cpu = (cpu_seconds(proc.pid) - before) * 1000 / args.messages
                    finally:
                        stop_mta(proc)
                results[binary].append(value)
                cpus[binary].append(cpu)
                print(f"round {round_number + 1} {binary}: {value:.0f} msg/s, {cpu:.2f} ms CPU/msg", flush=True)
    finally:
        setup.close()
        shutil.rmtree(root, ignore_errors=True)
    for binary, values in results.items():
        print(f"{binary}: median {statistics.median(values):.0f} msg/s  runs {[round(v) for v in values]}; "
              f"CPU median {statistics.median(cpus[binary]):.2f} ms/msg (accepting; the relay to the sink that runs "
              f"meanwhile included)")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="mode", required=True)
    s = sub.add_parser("steps")
    s.add_argument("binary")
    s.add_argument("--messages", type=int, default=300)
    s.add_argument("--sessions", type=int, default=1)
    p = sub.add_parser("spans")
    p.add_argument("binary")
    p.add_argument("--messages", type=int, default=500)
    p.add_argument("--directory", default=None, help="where the spool goes (default: the system's temp dir)")
    r = sub.add_parser("rate")
    r.add_argument("binaries", nargs="+")
    r.add_argument("--sessions", type=int, default=1)
    r.add_argument("--messages", type=int, default=1000)
    r.add_argument("--rounds", type=int, default=3)
    r.add_argument("--pin", action="store_true", help="load generator and sink on CPU 0, the MTA on CPU 1")
    args = parser.parse_args()
    if getattr(args, "pin", False):
        PIN_LOAD.extend(["taskset", "-c", "0"])
        PIN_MTA.extend(["taskset", "-c", "1"])
    {"steps": steps, "spans": spans, "rate": rate}[args.mode](args)


if __name__ == "__main__":
    main()
