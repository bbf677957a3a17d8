"""run_as_user: started as root, the daemon binds its listeners (a port below 1024 here), loads TLS, recovers the
spool and hands it to the user, then runs as that user with no supplementary groups and no capabilities, read from
/proc/PID/status. Mail still flows (the spool and the Maildirs are written as the user)."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

from conftest import ON_CI, Server, ServerStartError, Spool, default_settings, server_binary, simple_message


def require_root() -> None:
    if os.geteuid() != 0:
        if ON_CI:
            pytest.fail("the privilege tests must run as root when CI=true")
        pytest.skip("needs root")


def proc_status(pid: int) -> dict[str, str]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return fields


def free_low_port() -> int:
    """A port below 1024 that is free on 127.0.0.1 (only root may bind it)."""
    for port in range(900, 1000):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    pytest.fail("no free port below 1024")


@pytest.fixture
def shared_dir():
    """A directory the user can reach (pytest's tmp_path is under a root-only 0700 directory)."""
    path = Path(tempfile.mkdtemp(prefix="dualmta-priv-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_root_drops_to_run_as_user(start_server, shared_dir: Path):
    require_root()
    nobody = pwd.getpwnam("nobody")
    port = free_low_port()
    srv = start_server(spool=shared_dir / "spool", port=port, listen=f"127.0.0.1:{port}", run_as_user="nobody")
    status = proc_status(srv.proc.pid)
    assert status["Uid"].split() == [str(nobody.pw_uid)] * 4, status["Uid"]
    assert status["Gid"].split() == [str(nobody.pw_gid)] * 4, status["Gid"]
    assert status["Groups"] == "", status["Groups"]
    for capability_set in ("CapEff", "CapPrm", "CapInh", "CapAmb"):
        assert int(status[capability_set], 16) == 0, f"{capability_set} = {status[capability_set]}"
    srv.wait_log(r"privileges-dropped.*user=nobody")
    # It listens on the low port it bound as root, and mail flows through the spool it now owns.
    with srv.connect("127.0.0.1") as c:
        c.read_reply().expect(220)
        c.cmd(b"EHLO priv.example").expect(250)
        c.transaction("a@remote.example", ["alice@lab.example"], simple_message("priv")).expect(250)
        # A remote recipient stays queued (no DNS in tests): the queue tools, run as root, act as the spool owner.
        queued = c.transaction("a@remote.example", ["bob@remote.example"], simple_message("held")).queue_id()
    spool = Spool(srv.spool)
    spool.settle(queued=1, delivered=1)
    held = srv.cli("queue", "hold", queued)
    assert held.returncode == 0, held.stderr
    # So does `dualmta send` (sendmail) run as root: the daemon takes the message and delivers it.
    sent = subprocess.run([str(server_binary()), "send", "-c", str(srv.conf), "-f", "root@lab.example",
                           "alice@lab.example"], input=b"Subject: from root\n\nhello\n", capture_output=True,
                          timeout=30)
    assert sent.returncode == 0, sent.stderr
    spool.settle(queued=1, delivered=2)
    for path in [srv.spool, *srv.spool.rglob("*")]:
        assert path.lstat().st_uid == nobody.pw_uid, f"{path} is not owned by nobody"
    assert "running-as-root" not in srv.log_text()
    # A restart recovers the spool the user owns (as root, before the drop): nothing is quarantined.
    srv.stop()
    srv.start()
    assert "queued=1" in srv.wait_log(r"spool-recovered"), srv.log_text()
    assert "quarantined=0" in srv.wait_log(r"spool-recovered")
    spool.settle(queued=1, delivered=2)


def test_root_without_run_as_user_warns(start_server):
    require_root()
    srv = start_server()
    line = srv.wait_log(r"running-as-root")
    assert "warning" in line
    assert proc_status(srv.proc.pid)["Uid"].split()[0] == "0"


def test_unknown_run_as_user_is_a_config_error(tmp_path: Path):
    conf = tmp_path / "c.conf"
    conf.write_text("# x\nrun_as_user = no-such-user-dualmta\n")
    check = subprocess.run([str(server_binary()), "config", "check", "-c", str(conf)], capture_output=True,
                           text=True, timeout=30)
    assert check.returncode == 78
    assert f'{conf}:2: run_as_user: no such user "no-such-user-dualmta"' in check.stderr


def as_nobody_with_bind_capability(shared_dir: Path) -> Path:
    """A wrapper that starts dualmta the way etc/dualmta.service does: as an unprivileged user whose only capability
    is binding ports below 1024 (an ambient capability), with no supplementary groups."""
    setpriv = shutil.which("setpriv")
    if not setpriv:
        if ON_CI:
            pytest.fail("setpriv (util-linux) is required when CI=true")
        pytest.skip("setpriv is not installed")
    binary = shared_dir / "dualmta"
    shutil.copy2(server_binary(), binary)
    nobody = pwd.getpwnam("nobody")
    wrapper = shared_dir / "as-nobody"
    wrapper.write_text(f"#!/bin/sh\nexec {setpriv} --reuid={nobody.pw_uid} --regid={nobody.pw_gid} --clear-groups "
                       f"--inh-caps=+net_bind_service --ambient-caps=+net_bind_service {binary} \"$@\"\n")
    wrapper.chmod(0o755)
    return wrapper


def test_started_as_the_user_like_the_systemd_unit(shared_dir: Path, monkeypatch):
    require_root()
    import conftest
    monkeypatch.setattr(conftest, "server_binary", lambda: as_nobody_with_bind_capability(shared_dir))
    nobody = pwd.getpwnam("nobody")
    spool = shared_dir / "spool"
    spool.mkdir()
    os.chown(spool, nobody.pw_uid, nobody.pw_gid)
    port = free_low_port()
    settings = default_settings(spool)
    settings.update(listen=f"127.0.0.1:{port}", run_as_user="nobody")
    srv = Server(shared_dir, spool, settings, port, "as-nobody")  # the config must be readable by nobody
    try:
        srv.start()
        status = proc_status(srv.proc.pid)
        assert status["Uid"].split() == [str(nobody.pw_uid)] * 4, status["Uid"]
        assert int(status["CapEff"], 16) == 1 << 10, status["CapEff"]  # CAP_NET_BIND_SERVICE only
        assert "running-as-root" not in srv.log_text()
        srv.wait_log(r"privileges .*not root")
        with srv.connect("127.0.0.1") as c:
            c.read_reply().expect(220)
        # As that user, another run_as_user cannot be honoured: the daemon refuses to start.
        srv.stop()
        srv.settings["run_as_user"] = "daemon"
        with pytest.raises(ServerStartError, match="cannot become daemon"):
            srv.start()
    finally:
        srv.stop()
