"""Reads an `strace -f -y -s N -ttt -o FILE` trace of dualmta and checks the commit protocol's syscall order.

Pure functions over text: no processes, no files. test_durability_strace.py unit-tests them with small hand-written
traces (good and bad orders) and runs them on a trace of the real daemon under concurrent load.

Ordering uses the position of lines in the trace, not the timestamps: strace prints each stop as it handles it, and
a syscall interrupted by another thread's stop is printed as `name(args <unfinished ...>` at its entry and
`<... name resumed>rest) = result` at its exit. So every call has an entry position and an exit position, and "A
finished before B started" is `A.end < B.start` even across threads.

The rules (docs/durability.md says why each one matters):

1. A file renamed or linked into queue/ or into a Maildir new/ was fsynced (or fdatasynced) after its last write and
   before the rename started.
2. Before the `250 ... queued as ID` reply is written, queue/ was fsynced after the last rename of ID's files into
   queue/ (one directory fsync may cover a whole group-commit batch).
3. An envelope update (a temporary in queue/ renamed over `ID.env`) is followed by an fsync of queue/ by the same
   thread before that thread renames, links or unlinks anything else.
4. A message renamed into a Maildir new/ (its file name carries the queue id) is followed by an fsync of that new/
   before the queue entry is removed (unlink of `queue/ID.env`) or its envelope replaced.
5. No file is created under a name a reader trusts: nothing is opened with O_CREAT in a Maildir new/ or cur/, nor
   as `queue/ID.msg` or `queue/ID.env` (those names only ever appear by rename).
6. The commit point comes last: when a message's data and envelope are moved into queue/ from outside it (a
   commit), the data's move ended before the envelope's move started, so `queue/ID.env` never names missing data.

Rule 1 does not care which thread synced a file: the commit syncs the data file and the envelope at once on two
threads (one device round), and what counts is that each sync ended before its file's rename started.
"""

from __future__ import annotations

import codecs
import os
import re
from dataclasses import dataclass, field

# ---------------------------------------------------------------------------------------------------------------
# Parsing


@dataclass
class Call:
    """One system call: where its entry and exit were printed, who made it, its arguments and its result."""
    start: int
    end: int
    pid: int
    name: str
    args: list[str]
    result: str

    @property
    def ok(self) -> bool:
        return re.match(r"^\d+", self.result) is not None


_PREFIX = re.compile(r"^(?:\[pid\s+)?(\d+)\]?\s+(?:\d+(?:\.\d+)?|\d\d:\d\d:\d\d(?:\.\d+)?)\s+(.*)$")
_UNFINISHED = " <unfinished ...>"
_RESUMED = re.compile(r"^<\.\.\. (\w+) resumed>\s?(.*)$")


def parse(text: str) -> list[Call]:
    """The calls of a trace, in the order their exits were printed. Signals, exits and calls that never returned
    (the process died inside them) are dropped; a line that fits no known shape raises ValueError."""
    pending: dict[int, tuple[int, str]] = {}
    calls: list[Call] = []
    for index, raw in enumerate(text.splitlines()):
        line = raw.rstrip()
        if not line:
            continue
        m = _PREFIX.match(line)
        if not m:
            raise ValueError(f"line {index + 1}: no pid and time prefix: {line!r}")
        pid, rest = int(m.group(1)), m.group(2)
        if rest.startswith(("+++", "---")):
            continue
        resumed = _RESUMED.match(rest)
        if resumed:
            if pid not in pending:
                raise ValueError(f"line {index + 1}: resumed call with no unfinished start: {line!r}")
            start, head = pending.pop(pid)
            if not head.startswith(resumed.group(1) + "("):
                raise ValueError(f"line {index + 1}: {resumed.group(1)} resumed, but {head!r} was unfinished")
            rest, start_at = head + resumed.group(2), start
        elif rest.endswith(_UNFINISHED):
            pending[pid] = (index, rest[: -len(_UNFINISHED)])
            continue
        else:
            start_at = index
        call = _split_call(rest, index)
        if call is not None:
            name, args, result = call
            calls.append(Call(start_at, index, pid, name, args, result))
    return calls


def _split_call(text: str, index: int) -> tuple[str, list[str], str] | None:
    """`name(a, b) = result` → (name, [a, b], result). None for a call cut short by the process's death (`= ?`)."""
    m = re.match(r"^(\w+)\(", text)
    if not m:
        raise ValueError(f"line {index + 1}: not a system call: {text!r}")
    args: list[str] = []
    depth = 0
    current = ""
    position = m.end()
    while position < len(text):
        char = text[position]
        if char == '"':
            closing = _string_end(text, position)
            current += text[position:closing]
            position = closing
            continue
        if char == "<" and current and (current[-1].isdigit() or current.endswith("AT_FDCWD")):
            # An fd's path from -y: taken whole, so a "," or ")" in a path cannot split it.
            closing = text.find(">", position)
            if closing < 0:
                raise ValueError(f"line {index + 1}: unterminated fd annotation: {text!r}")
            current += text[position:closing + 1]
            position = closing + 1
            continue
        if char in "([{":
            depth += 1
        elif char in ")]}":
            if depth == 0:
                break
            depth -= 1
        elif char == "," and depth == 0:
            args.append(current.strip())
            current = ""
            position += 1
            continue
        current += char
        position += 1
    else:
        raise ValueError(f"line {index + 1}: no closing parenthesis: {text!r}")
    if current.strip():
        args.append(current.strip())
    result = text[position + 1:].strip()
    if not result.startswith("="):
        raise ValueError(f"line {index + 1}: no result: {text!r}")
    result = result[1:].strip()
    if result.startswith("?"):
        return None
    return m.group(1), args, result


def _string_end(text: str, start: int) -> int:
    """Index just past the closing quote of the string starting at `start` (and a `...` truncation mark)."""
    position = start + 1
    while position < len(text):
        if text[position] == "\\":
            position += 2
            continue
        if text[position] == '"':
            position += 1
            if text.startswith("...", position):
                position += 3
            return position
        position += 1
    raise ValueError(f"unterminated string in {text!r}")


def fd_path(arg: str) -> str | None:
    """The path -y printed for an fd argument (`12</spool/queue>` → `/spool/queue`), None without one."""
    m = re.match(r"^(?:-?\d+|AT_FDCWD)<(.*)>$", arg)
    return m.group(1) if m else None


def string_value(arg: str) -> bytes:
    """The bytes of a quoted strace string (escapes decoded, a truncation mark dropped)."""
    m = re.match(r'^"(.*)"(?:\.\.\.)?$', arg, re.S)
    if not m:
        raise ValueError(f"not a string argument: {arg!r}")
    return codecs.escape_decode(m.group(1).encode("latin-1"))[0]


def _path_at(directory_arg: str | None, name_arg: str) -> str:
    name = string_value(name_arg).decode("utf-8", "surrogateescape")
    if name.startswith("/") or directory_arg is None:
        return os.path.normpath(name)
    base = fd_path(directory_arg)
    if base is None:
        raise ValueError(f"relative name {name!r} with a directory fd lacking a -y path: {directory_arg!r}")
    return os.path.normpath(os.path.join(base, name))


# ---------------------------------------------------------------------------------------------------------------
# The events the rules look at


@dataclass
class Event:
    kind: str          # "write", "sync", "move" (rename/link), "unlink", "create", "reply"
    call: Call
    path: str = ""     # the file written/synced/unlinked/created, or a move's source
    target: str = ""   # a move's destination
    data: bytes = b""  # a reply's bytes


_FILE_WRITES = {"write", "pwrite64", "pwrite", "writev", "pwritev", "pwritev2"}
_SOCKET_WRITES = {"write", "writev", "sendto", "send", "sendmsg"}


def events(calls: list[Call]) -> list[Event]:
    """The successful calls that matter to the rules, as typed events."""
    out: list[Event] = []
    for call in calls:
        if not call.ok:
            continue
        name, args = call.name, call.args
        if name in ("fsync", "fdatasync"):
            path = fd_path(args[0])
            if path is not None:
                out.append(Event("sync", call, path))
        elif name in _SOCKET_WRITES | _FILE_WRITES:
            path = fd_path(args[0]) or ""
            if path.startswith(("socket:", "TCP", "UDP")):
                if name in ("write", "sendto", "send") and len(args) > 1 and args[1].startswith('"'):
                    out.append(Event("reply", call, path, data=string_value(args[1])))
            elif path.startswith("/") and name in _FILE_WRITES:
                out.append(Event("write", call, path))
        elif name in ("rename", "link"):
            out.append(Event("move", call, _path_at(None, args[0]), _path_at(None, args[1])))
        elif name in ("renameat", "renameat2", "linkat"):
            out.append(Event("move", call, _path_at(args[0], args[1]), _path_at(args[2], args[3])))
        elif name == "unlink":
            out.append(Event("unlink", call, _path_at(None, args[0])))
        elif name == "unlinkat":
            out.append(Event("unlink", call, _path_at(args[0], args[1])))
        elif name in ("openat", "open") and "O_CREAT" in " ".join(args):
            path = fd_path(call.result)
            if path is not None:
                out.append(Event("create", call, path))
    return out


# ---------------------------------------------------------------------------------------------------------------
# The check


@dataclass
class Report:
    """What the check saw, so a caller can insist that it saw enough (a check over nothing proves nothing)."""
    committed: set[str] = field(default_factory=set)      # ids whose `250 ... queued as ID` was checked
    moves_checked: int = 0                                 # renames/links into queue/ or new/ checked by rule 1
    envelope_updates: set[str] = field(default_factory=set)
    commit_points: set[str] = field(default_factory=set)   # ids whose commit order rule 6 checked
    maildir_deliveries: set[str] = field(default_factory=set)
    violations: list[str] = field(default_factory=list)


_QUEUED_AS = re.compile(rb"^250[ -].*queued as ([A-Za-z0-9]+)", re.M)


def check(trace: str, spool: str) -> Report:
    """Checks the six rules of the module docstring over a trace of a daemon whose spool is `spool`."""
    queue = os.path.normpath(os.path.join(spool, "queue"))
    mailboxes = os.path.normpath(os.path.join(spool, "mailboxes"))
    evs = events(parse(trace))
    report = Report()

    def into_queue(e: Event) -> bool:
        return e.kind == "move" and os.path.dirname(e.target) == queue

    def into_maildir(e: Event) -> bool:
        return (e.kind == "move" and e.target.startswith(mailboxes + "/")
                and os.path.basename(os.path.dirname(e.target)) == "new")

    def queue_id(path: str) -> str:
        return os.path.basename(path).split(".", 1)[0]

    # Rule 1: durable before it is moved into place.
    for move in (e for e in evs if into_queue(e) or into_maildir(e)):
        report.moves_checked += 1
        before = [e for e in evs if e.call.end < move.call.start and e.path == move.path]
        created = [e.call.start for e in before if e.kind == "create"]
        since = max(created) if created else -1
        writes = [e for e in before if e.kind == "write" and e.call.start > since]
        last_write_end = max((w.call.end for w in writes), default=since)
        syncs = [e for e in before if e.kind == "sync" and e.call.start > last_write_end]
        if not syncs:
            report.violations.append(
                f"rule 1: {move.path} moved to {move.target} by {move.call.name} (line {move.call.start + 1}) without "
                f"an fsync after its last write")

    # Rule 2: queue/ durable before the 250.
    for reply in (e for e in evs if e.kind == "reply"):
        for m in _QUEUED_AS.finditer(reply.data):
            qid = m.group(1).decode()
            report.committed.add(qid)
            renames = [e for e in evs if into_queue(e) and queue_id(e.target) == qid
                       and e.call.end < reply.call.start]
            if not renames:
                report.violations.append(f"rule 2: 250 for {qid} (line {reply.call.start + 1}) but no rename of "
                                         f"its files into queue/ before it")
                continue
            last = max(r.call.end for r in renames)
            if not any(e.kind == "sync" and e.path == queue and last < e.call.start
                       and e.call.end < reply.call.start for e in evs):
                report.violations.append(f"rule 2: 250 for {qid} (line {reply.call.start + 1}) without an fsync "
                                         f"of queue/ after its last rename (line {last + 1})")

    # Rule 3: an envelope update's own directory fsync.
    for move in (e for e in evs if into_queue(e) and os.path.dirname(e.path) == queue
                 and e.target.endswith(".env")):
        report.envelope_updates.add(queue_id(move.target))
        same_thread = [e for e in evs if e.call.pid == move.call.pid and e.call.start > move.call.end]
        next_change = min((e.call.start for e in same_thread if e.kind in ("move", "unlink")), default=None)
        if not any(e.kind == "sync" and e.path == queue
                   and (next_change is None or e.call.end < next_change) for e in same_thread):
            report.violations.append(f"rule 3: envelope update {move.target} (line {move.call.start + 1}) not "
                                     f"followed by an fsync of queue/ in the same thread")

    # Rule 4: the delivered copy is durable before the queue forgets it.
    committed_ids = {queue_id(e.target) for e in evs if into_queue(e)}
    for move in (e for e in evs if into_maildir(e)):
        parts = set(os.path.basename(move.target).split("."))
        ids = parts & committed_ids
        if len(ids) != 1:
            report.violations.append(f"rule 4: Maildir file {move.target} names no single queued id ({ids})")
            continue
        qid = ids.pop()
        report.maildir_deliveries.add(qid)
        envelope = os.path.join(queue, qid + ".env")
        changes = [e.call.start for e in evs if e.call.start > move.call.end
                   and ((e.kind == "unlink" and e.path == envelope) or (e.kind == "move" and e.target == envelope))]
        if not changes:
            report.violations.append(f"rule 4: {move.target} delivered, but the queue entry of {qid} was never "
                                     f"removed or updated afterwards")
            continue
        new_directory = os.path.dirname(move.target)
        if not any(e.kind == "sync" and e.path == new_directory and e.call.start > move.call.end
                   and e.call.end < min(changes) for e in evs):
            report.violations.append(f"rule 4: {new_directory} not fsynced between the delivery of {qid} "
                                     f"(line {move.call.start + 1}) and the change of its queue entry "
                                     f"(line {min(changes) + 1})")

    # Rule 6: in a commit, the envelope (the commit point) reaches queue/ after the data.
    commit_moves = [e for e in evs if into_queue(e) and os.path.dirname(e.path) != queue]
    for envelope_move in (e for e in commit_moves if e.target.endswith(".env")):
        qid = queue_id(envelope_move.target)
        report.commit_points.add(qid)
        data_moves = [e for e in commit_moves if e.target == os.path.join(queue, qid + ".msg")]
        if not any(d.call.end < envelope_move.call.start for d in data_moves):
            report.violations.append(f"rule 6: {envelope_move.target} committed (line {envelope_move.call.start + 1})"
                                     f" before its data was moved into queue/")

    # Rule 5: final names appear only by rename.
    for create in (e for e in evs if e.kind == "create"):
        directory = os.path.dirname(create.path)
        in_maildir = create.path.startswith(mailboxes + "/") and os.path.basename(directory) in ("new", "cur")
        in_queue = directory == queue and create.path.endswith((".msg", ".env"))
        if in_maildir or in_queue:
            report.violations.append(f"rule 5: {create.path} created in place (line {create.call.start + 1}), "
                                     f"not renamed there")
    return report
