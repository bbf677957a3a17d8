"""Full, read-only and corrupt spools (rows D01, D03, D04, D06, Q01-Q06; docs/rules.md, "The queue").

The D rows put the spool on a small tmpfs mounted for the test (root only; unmounted at teardown, lazily if a
process still holds it) and fill it from the test: `statvfs` is what dualmta checks at MAIL (f_bavail), and a write
that hits ENOSPC mid-DATA must leave nothing behind. The Q rows plant damaged queue files in the spool of a stopped
server; the restart must move them to corrupt/, deliver the others, and never crash.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
import zlib
from pathlib import Path

import pytest

from conftest import DEADLINE, ON_CI, Server, Spool, simple_message, unique_tag, wait_until
from mtalog import events, outbound_settings

LOCAL = "u@lab.example"


@pytest.fixture
def small_fs(tmp_path):
    """small_fs(size='4m', inodes=None) -> mount point of a fresh tmpfs. Request it BEFORE start_server in the test's
    arguments, so the servers are stopped before the unmount."""
    if os.geteuid() != 0:
        if ON_CI:
            pytest.fail("the disk tests need root (mount) on CI")
        pytest.skip("needs root to mount a small tmpfs")
    mounts: list[Path] = []

    def _mount(size: str = "4m", inodes: int | None = None) -> Path:
        mp = tmp_path / f"fs{len(mounts)}"
        mp.mkdir()
        options = f"size={size},mode=0700" + (f",nr_inodes={inodes}" if inodes else "")
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mp)], capture_output=True, text=True)
        if r.returncode != 0:
            message = f"cannot mount tmpfs: {r.stderr.strip()}"
            if ON_CI:
                pytest.fail(message)
            pytest.skip(message)
        mounts.append(mp)
        return mp

    yield _mount
    for mp in reversed(mounts):
        if subprocess.run(["umount", str(mp)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mp)], capture_output=True)


def available(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def fill_to(path: Path, leave: int, name: str = "filler") -> Path:
    """Grows (or creates) path/name until only about `leave` bytes are available on its filesystem."""
    filler = path / name
    with open(filler, "ab") as f:
        grow = available(path) - leave
        if grow > 0:
            os.posix_fallocate(f.fileno(), f.seek(0, os.SEEK_END), grow)
    return filler


def mail_reply(srv: Server, sender: str = "a@r.example") -> tuple[int, str | None]:
    with srv.session() as c:
        return c.cmd(f"MAIL FROM:<{sender}>".encode()).short()


def wait_mail_reply(srv: Server, want: tuple[int, str | None], what: str) -> int:
    """Polls MAIL on fresh connections until it gets `want` (the free-space check is cached for up to 1 s).
    Returns the number of connections it took."""
    tries = [0]

    def ok() -> bool:
        tries[0] += 1
        return mail_reply(srv) == want
    wait_until(ok, DEADLINE, what, interval=0.1)
    return tries[0]


def deliver_one(srv: Server) -> str:
    """A message that must be accepted and delivered now."""
    subject = unique_tag("ok")
    with srv.session() as c:
        c.transaction("a@r.example", [LOCAL], simple_message(subject)).expect(250)
    return subject


def test_d01_less_free_than_one_and_a_half_messages_gives_452_at_mail(small_fs, start_server):
    mp = small_fs("4m")
    srv = start_server(spool=mp / "spool", message_size_limit="1M")
    spool = Spool(srv.spool)
    filler = fill_to(mp, 1024 * 1024)  # 1 MiB free < 1.5 x 1 MiB
    tries = wait_mail_reply(srv, (452, "4.3.1"), "452 4.3.1 at MAIL on a full spool")
    for _ in range(5):
        assert mail_reply(srv) == (452, "4.3.1")
    refusals = 5 + 1
    # Not one error line per refused connection (the check is cached and is the server's state, not the client's).
    storage_lines = [line for line in srv.log_text().splitlines()
                     if re.search(r"storage|space", line, re.I) and "listening" not in line]
    assert len(storage_lines) <= max(2, (tries + refusals) // 2), storage_lines

    filler.unlink()
    wait_mail_reply(srv, (250, "2.1.0"), "MAIL accepted once space returned")
    deliver_one(srv)
    spool.settle(0, 1)
    srv.assert_alive()


def test_d03_enospc_while_writing_data(small_fs, start_server):
    """The disk fills after the 354: the '.' is answered 451 4.3.0 (or 452 4.3.1), nothing partial stays in
    incoming/ or queue/, and the next message after space returns gets 250 and is delivered."""
    mp = small_fs("4m")
    srv = start_server(spool=mp / "spool", message_size_limit="1M")
    spool = Spool(srv.spool)
    c = srv.session()
    c.cmd(b"MAIL FROM:<a@r.example>").expect(250)
    c.cmd(f"RCPT TO:<{LOCAL}>".encode()).expect(250)
    c.cmd(b"DATA").expect(354)
    c.send(simple_message("d03-first-part", b"a" * 900 + b"\r\n"))
    filler = fill_to(mp, 64 * 1024)
    body = (b"b" * 900 + b"\r\n") * 990  # ~890 kB, under the size limit, far over the free space
    c.send(body + b".\r\n", timeout=30)
    reply = c.read_reply()
    reply.expect_any((451, "4.3.0"), (452, "4.3.1"))
    print(f"D03: end of data on a full disk -> {reply.text}")
    c.cmd(b"RSET").expect(250)  # the session goes on
    c.close()
    spool.settle(0, 0)
    assert not list((srv.spool / "queue").iterdir())

    filler.unlink()
    deliver_one(srv)
    spool.settle(0, 1)
    srv.assert_alive()


def test_d04_inode_exhaustion(small_fs, start_server):
    """No inode left: the transaction fails with a temporary error (452 at MAIL, or 451/452 at the end of data),
    nothing is left behind; after inodes are freed mail flows again."""
    mp = small_fs("8m", inodes=64)
    srv = start_server(spool=mp / "spool")
    spool = Spool(srv.spool)
    hog = mp / "hog"
    hog.mkdir()
    made = 0
    while True:
        try:
            (hog / str(made)).touch()
        except OSError:
            break
        made += 1
        assert made < 1000
    with srv.session() as c:
        reply = c.cmd(b"MAIL FROM:<a@r.example>")
        if reply.code == 250:
            c.cmd(f"RCPT TO:<{LOCAL}>".encode()).expect(250)
            r = c.cmd(b"DATA")
            if r.code == 354:
                c.send(simple_message("d04") + b".\r\n")
                r = c.read_reply()
            r.expect_any((451, "4.3.0"), (452, "4.3.1"))
            print(f"D04: no inodes -> MAIL {reply.code}, then {r.text}")
        else:
            reply.expect(452, "4.3.1")
            print("D04: no inodes -> MAIL 452 4.3.1")
    spool.settle(0, 0)
    for p in hog.iterdir():
        p.unlink()
    wait_until(lambda: mail_reply(srv)[0] == 250, DEADLINE, "MAIL accepted after inodes were freed", interval=0.1)
    deliver_one(srv)
    spool.settle(0, 1)
    srv.assert_alive()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def test_d06_read_only_spool(small_fs, start_server):
    """remount,ro under a running server: new mail gets a temporary error, the queue runner retries a queued message
    at its back-off pace (no tight loop: CPU < 10 % over 5 s), and after remount,rw everything resumes."""
    mp = small_fs("16m")
    closed_port = 9  # discard on loopback: nothing listens, connect is refused at once
    srv = start_server(spool=mp / "spool",
                       **outbound_settings(routes=f"remote.example=[127.0.0.1]:{closed_port}", retry_schedule="1s"))
    spool = Spool(srv.spool)
    with srv.session() as c:
        c.transaction("a@r.example", ["r@remote.example"], simple_message("d06-remote")).expect(250)
    wait_until(lambda: events(srv, "deferred"), DEADLINE, "the remote message deferred")
    assert subprocess.run(["mount", "-o", "remount,ro", str(mp)]).returncode == 0
    try:
        with srv.session() as c:
            reply = c.cmd(b"MAIL FROM:<a@r.example>")
            if reply.code == 250:
                c.cmd(f"RCPT TO:<{LOCAL}>".encode()).expect(250)
                r = c.cmd(b"DATA")
                if r.code == 354:
                    c.send(simple_message("d06-ro") + b".\r\n")
                    r = c.read_reply()
                r.expect_any((451, "4.3.0"), (452, "4.3.1"))
                print(f"D06: read-only spool -> MAIL {reply.code}, then {r.text}")
            else:
                reply.expect_any((451, "4.3.0"), (452, "4.3.1"), (421, None))
        attempts_before = len(events(srv, "delivery"))
        before = cpu_seconds(srv.proc.pid)
        started = time.monotonic()
        time.sleep(5)  # the measurement window itself, not a wait for a condition
        used = (cpu_seconds(srv.proc.pid) - before) / (time.monotonic() - started)
        attempts = len(events(srv, "delivery")) - attempts_before
        assert used < 0.10, f"{used:.0%} CPU on a read-only spool"
        assert attempts <= 6, f"{attempts} delivery attempts in 5 s on a read-only spool"
        srv.assert_alive()
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(mp)])
    deliver_one(srv)
    wait_until(lambda: spool.maildir_files(), DEADLINE, "delivery after remount,rw")
    # The local message leaves the queue just after its Maildir rename; the remote one must stay (not lost).
    wait_until(lambda: len(spool.queued_ids()) == 1, DEADLINE, "only the remote message left in the queue")
    assert not list((srv.spool / "corrupt").iterdir())
    srv.assert_alive()


# ---------------------------------------------------------------------------------------------------------------
# Q01-Q06: damaged queue files planted in a stopped server's spool


def _recrc(env: bytes) -> bytes:
    """Recomputes the END checksum (CRC-32 of every byte before its 8 hex digits; Spool/EnvelopeCodec.swift)."""
    m = re.search(rb"END size=\d+ crc32=([0-9a-f]{8})\n?$", env)
    assert m, env[-80:]
    head = env[:m.start(1)]
    return head + b"%08x" % (zlib.crc32(head) & 0xFFFFFFFF) + env[m.end(1):]


def test_q01_to_q06_damaged_queue_files_go_to_corrupt(start_server, tmp_path):
    """Messages are queued while lab.example is not local (so they wait), the server is stopped, some queue files are
    damaged, and the restart (lab.example local again) must quarantine exactly the damaged ones, deliver the good
    ones once, and stay up."""
    spool_dir = tmp_path / "spool"
    # A short retry schedule: the restart must not wait for a next-attempt time set by the first run.
    first = start_server(spool=spool_dir, local_domains="elsewhere.example", retry_schedule="1s")
    names = ["good1", "good2", "truncated", "zero", "random", "version", "env-symlink", "msg-symlink", "mode666",
             "foreign-owner", "sparse-2g", "bad-rcpt"]
    subjects = {n: unique_tag(f"q-{n}") for n in names}
    ids: dict[str, str] = {}
    for n in names:
        with first.session() as c:
            ids[n] = c.transaction("a@r.example", [LOCAL], simple_message(subjects[n])).queue_id()
    Spool(spool_dir).settle(len(names), 0)
    assert first.stop() == 0

    q = spool_dir / "queue"
    env = {n: q / f"{ids[n]}.env" for n in names}
    msg = {n: q / f"{ids[n]}.msg" for n in names}
    env["truncated"].write_bytes(env["truncated"].read_bytes()[:-25])                 # Q01: no END record
    env["zero"].write_bytes(b"")                                                      # Q02
    env["random"].write_bytes(os.urandom(400))                                        # Q02
    env["version"].write_bytes(_recrc(re.sub(rb"^DUALMTA-ENV \d+", b"DUALMTA-ENV 7", env["version"].read_bytes())))
    env["env-symlink"].unlink()                                                       # Q04
    env["env-symlink"].symlink_to("/etc/passwd")
    msg["msg-symlink"].unlink()
    msg["msg-symlink"].symlink_to("/etc/passwd")
    env["mode666"].chmod(0o666)                                                       # Q05
    os.chown(msg["foreign-owner"], 65534, 65534)
    os.truncate(msg["sparse-2g"], 2 * 1024 ** 3)                                      # Q06: sparse, never read
    bad = env["bad-rcpt"].read_bytes()                                                # Q03: valid framing
    assert b"addr=u@lab.example" in bad
    env["bad-rcpt"].write_bytes(_recrc(bad.replace(b"addr=u@lab.example", b"addr=u@@lab..example")))
    passwd_before = Path("/etc/passwd").read_bytes()

    srv = start_server(spool=spool_dir)
    spool = Spool(spool_dir)
    wait_until(lambda: len(spool.maildir_files()) >= 2, DEADLINE, "the good messages delivered")
    damaged = [n for n in names if not n.startswith("good") and n != "bad-rcpt"]
    corrupt = spool_dir / "corrupt"
    wait_until(lambda: all(any(p.name.startswith(ids[n]) for p in corrupt.iterdir()) for n in damaged), DEADLINE,
               "every damaged entry in corrupt/")
    delivered = [d.rest for d in spool.delivered()]
    for n in names:
        found = sum(1 for raw in delivered if subjects[n].encode() in raw)
        assert found == (1 if n.startswith("good") else 0), f"{n}: delivered {found} times"
    in_corrupt = {p.name for p in corrupt.iterdir()}
    for n in damaged:
        assert f"{ids[n]}.reason" in in_corrupt, f"{n}: no reason file in corrupt/: {sorted(in_corrupt)}"
        assert not env[n].exists() and not env[n].is_symlink(), f"{n}: still queued"
    # Q03: quarantined, or failed at delivery (5.1.x) - but never delivered (checked above) and no crash.
    assert Path("/etc/passwd").read_bytes() == passwd_before
    assert (corrupt / f"{ids['msg-symlink']}.msg").is_symlink(), "the symlink itself was moved, not followed"
    srv.assert_alive()
