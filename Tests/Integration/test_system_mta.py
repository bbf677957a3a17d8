"""dualmta as the system MTA behind cron, mutt and scripts: which config `sendmail`/`mailq` use when called from
anywhere, submission by a user who does not own the spool (through the daemon), and sendmail options that must not
warn. Real binary, real daemon on loopback, a real second Unix user (created here, removed afterwards; root only).
"""

from __future__ import annotations

import email
import email.policy
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest

from conftest import HOSTNAME, ON_CI, server_binary, wait_until
from mtalog import maildir, wait_event


def clean_env(**extra: str) -> dict[str, str]:
    """The caller's environment without DUALMTA_CONFIG (cron runs jobs with almost nothing set)."""
    env = {k: v for k, v in os.environ.items() if k != "DUALMTA_CONFIG"}
    env.update(extra)
    return env


def wait_delivered(srv, user: str, count: int = 1, domain: str = "lab.example") -> list[Path]:
    def files() -> list[Path] | None:
        found = maildir(srv.spool, domain, user)
        return found if len(found) >= count else None
    return wait_until(files, what=f"{count} message(s) in {user}@{domain}'s Maildir")


@pytest.fixture
def sendmail_link(tmp_path: Path) -> Path:
    """`ln -s dualmta sendmail` in a directory of its own, as a packager would install it."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "sendmail").symlink_to(server_binary())
    (bindir / "mailq").symlink_to(server_binary())
    return bindir


def test_cron_style_sendmail_without_config_refuses_and_creates_no_spool(tmp_path, sendmail_link):
    assert not Path("/etc/dualmta/dualmta.conf").exists(), "this test needs a machine without /etc/dualmta"
    jobdir = tmp_path / "job"
    jobdir.mkdir()
    run = subprocess.run([str(sendmail_link / "sendmail"), "-i", "root"], input=b"Subject: x\n\nx\n",
                         capture_output=True, timeout=30, cwd=jobdir, env=clean_env())
    assert run.returncode == 78, (run.returncode, run.stderr)
    assert b"no config" in run.stderr and b"DUALMTA_CONFIG" in run.stderr, run.stderr
    assert list(jobdir.iterdir()) == [], "sendmail created files in the job's directory"
    # mailq and `queue list` refuse the same way.
    for argv in ([str(sendmail_link / "mailq")], [str(server_binary()), "queue", "list"]):
        listing = subprocess.run(argv, capture_output=True, timeout=30, cwd=jobdir, env=clean_env())
        assert listing.returncode == 78, (argv, listing.returncode, listing.stderr)
    assert list(jobdir.iterdir()) == []


def test_cron_style_sendmail_with_dualmta_config_reaches_the_daemon(mta, tmp_path, sendmail_link):
    jobdir = tmp_path / "job"
    jobdir.mkdir()
    # What cron runs (`sendmail -FCronDaemon -i -B8BITMIME -oem root`) and what mutt adds (-oi, -N, -R, -V).
    args = ["-FCron Daemon", "-i", "-B8BITMIME", "-oem", "-oi", "-N", "failure,delay", "-R", "hdrs", "-V", "env-1",
            "root"]
    run = subprocess.run(["./sendmail", *args], input="Subject: cron \u00e9\n\nx\n".encode(), capture_output=True,
                         timeout=30, cwd=sendmail_link, env=clean_env(DUALMTA_CONFIG=str(mta.conf)))
    assert run.returncode == 0, run.stderr
    assert run.stderr == b"", f"a warning on every cron run: {run.stderr!r}"
    assert not (sendmail_link / "spool").exists() and not (jobdir / "spool").exists()
    # An unqualified recipient is a user of this host (`hostname`, always a local domain).
    (path,) = wait_delivered(mta, "root", domain=HOSTNAME)
    message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert message["From"].addresses[0].display_name == "Cron Daemon", message["From"]
    assert message["Subject"] == "cron \u00e9"
    # mailq -C FILE works like sendmail -C FILE.
    listing = subprocess.run([str(sendmail_link / "mailq"), "-C", str(mta.conf)], capture_output=True, timeout=30,
                             cwd=jobdir, env=clean_env())
    assert listing.returncode == 0, listing.stderr


def test_send_logs_its_own_accepted_line(start_server, tmp_path):
    log = tmp_path / "mail.log"
    srv = start_server(log_file=str(log))
    run = subprocess.run([str(server_binary()), "send", "-c", str(srv.conf), "-f", "a@lab.example", "u@lab.example"],
                         input=b"Subject: logged\n\nx\n", capture_output=True, timeout=30, cwd=str(tmp_path))
    assert run.returncode == 0, run.stderr
    wait_delivered(srv, "u")
    lines = [line for line in log.read_text().splitlines() if " accepted " in line and "proto=LOCAL" in line]
    assert len(lines) == 1, log.read_text()
    assert "from=<a@lab.example>" in lines[0] and "nrcpt=1" in lines[0], lines[0]


@pytest.fixture
def other_user():
    """A throw-away Unix user that does not own the spool (root only; removed at teardown)."""
    if os.geteuid() != 0:
        if ON_CI:
            pytest.fail("the non-owner submission test runs as root on CI (it creates a user)")
        pytest.skip("needs root to create a second user")
    name = "dmta" + uuid.uuid4().hex[:8]
    subprocess.run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", name], check=True,
                   capture_output=True)
    try:
        yield pwd.getpwnam(name)
    finally:
        subprocess.run(["userdel", name], capture_output=True)


@pytest.fixture
def public_dir():
    """A directory any user can read, for the binary and the config the other user runs."""
    directory = Path(tempfile.mkdtemp(prefix="dualmta-public-"))
    directory.chmod(0o755)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def run_as(user: pwd.struct_passwd, argv: list[str], data: bytes, cwd: Path, env: dict[str, str]):
    def drop() -> None:
        os.setgroups([])
        os.setgid(user.pw_gid)
        os.setuid(user.pw_uid)
    return subprocess.run(argv, input=data, capture_output=True, timeout=60, cwd=str(cwd), env=env,
                          preexec_fn=drop)


def test_a_user_who_does_not_own_the_spool_sends_through_the_daemon(mta, other_user, public_dir):
    binary = public_dir / "dualmta"
    shutil.copy2(server_binary(), binary)
    binary.chmod(0o755)
    (public_dir / "sendmail").symlink_to(binary)
    conf = public_dir / "dualmta.conf"
    shutil.copy2(mta.conf, conf)
    conf.chmod(0o644)
    env = clean_env(DUALMTA_CONFIG=str(conf), HOME="/")

    run = run_as(other_user, [str(public_dir / "sendmail"), "-oi", "-oem", "-B8BITMIME", "u@lab.example"],
                 "Subject: from a plain user\n\nhell\u00f6\n".encode(), public_dir, env)
    assert run.returncode == 0, run.stderr
    assert run.stderr == b"", run.stderr
    (path,) = wait_delivered(mta, "u")
    raw = path.read_bytes()
    assert f"from local user {other_user.pw_name}".encode() in raw, raw[:400]
    # The daemon accepted it over SMTP on its loopback listener, and wrote the spool as its owner.
    assert "hell\u00f6\n".encode() in raw
    wait_event(mta, "accepted", proto="ESMTP")
    assert not any(p.stat().st_uid == other_user.pw_uid for p in mta.spool.rglob("*"))

    # With the daemon stopped: a clear error and a temporary-failure status, not "mkdir: Permission denied".
    mta.stop()
    run = run_as(other_user, [str(public_dir / "sendmail"), "-oi", "u@lab.example"], b"Subject: later\n\nx\n",
                 public_dir, env)
    assert run.returncode == 75, (run.returncode, run.stderr)
    assert b"the MTA is not running" in run.stderr and b"ermission denied" not in run.stderr, run.stderr
