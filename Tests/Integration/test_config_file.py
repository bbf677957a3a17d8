"""The config file as an administrator writes it: CRLF line ends (an editor on Windows), a byte-order mark, bytes
that are not UTF-8, a file that cannot be read. Each is checked with the real binary: `config check`, `config show`
and `serve`, which must agree."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from conftest import RawClient, Server, free_port, require_tool, server_binary


def dualmta(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(server_binary()), *args], capture_output=True, text=True, timeout=30)


def test_crlf_config_file_is_read_line_by_line(tmp_path: Path):
    port = free_port()
    text = ("\ufeff# lab, saved by a Windows editor\r\n"
            f"listen = 127.0.0.1:{port}\r\n"
            "relay_networks = 127.0.0.1/32\r\n"
            f"spool_dir = {tmp_path / 'spool'}\r\n"
            "dns_servers = 127.0.0.1:9\r\n"
            "hostname = crlf.lab.example")  # no newline at the end
    srv = Server(tmp_path, tmp_path / "spool", {}, port, "crlf")
    srv.render_config = lambda: text
    srv.conf.write_text(text)
    assert srv.conf.read_bytes().count(b"\r\n") == 5 and srv.conf.read_bytes().startswith(b"\xef\xbb\xbf")
    check = dualmta("config", "check", "-c", str(srv.conf))
    assert check.returncode == 0, check.stderr
    show = dualmta("config", "show", "-c", str(srv.conf))
    assert show.returncode == 0, show.stderr
    settings = dict(line.split(" = ", 1) for line in show.stdout.splitlines() if " = " in line)
    assert settings["listen"] == f"127.0.0.1:{port}"
    assert settings["relay_networks"] == "127.0.0.1/32"
    assert settings["hostname"] == "crlf.lab.example"
    # serve reads the file the same way: it listens where the file says, and only there.
    try:
        srv.start()
        # The web console listens too (http_listen's default, unset here); the SMTP listeners are the file's.
        smtp = [line for line in srv.listening if "service=smtp" in line]
        assert len(smtp) == 1 and f"127.0.0.1:{port}" in smtp[0], srv.listening
        with RawClient("127.0.0.1", port) as c:
            assert "crlf.lab.example" in c.read_reply().expect(220).text
    finally:
        srv.stop()


def test_bad_bytes_are_errors_with_file_and_line(tmp_path: Path):
    conf = tmp_path / "bad.conf"
    conf.write_bytes(b"# ok\r\nhostname = mx\x01.lab.example\r\n")
    check = dualmta("config", "check", "-c", str(conf))
    assert check.returncode == 78
    assert f"{conf}:2: control character in \"hostname = mx\\x01.lab.example\"" in check.stderr
    conf.write_bytes(b"# ok\nlisten = 127.0.0.1:25\nhostname = caf\xe9.example\n")
    check = dualmta("config", "check", "-c", str(conf))
    assert check.returncode == 78
    assert f"{conf}:3: invalid UTF-8 in \"hostname = caf\\xe9.example\"" in check.stderr


def test_unreadable_file_names_the_reason(tmp_path: Path):
    missing = dualmta("config", "check", "-c", str(tmp_path / "missing.conf"))
    assert missing.returncode == 78
    assert "cannot read the file: open: No such file or directory" in missing.stderr
    directory = dualmta("config", "check", "-c", str(tmp_path))
    assert directory.returncode == 78
    assert "cannot read the file: read: Is a directory" in directory.stderr


@pytest.mark.parametrize("lines,line_number,message", [
    (["command_timeout = 0"], 2, "command_timeout: must be more than zero"),
    (["listen = 127.0.0.1:0"], 2, "port 0 is not a port to listen on"),
    (["listen = 0.0.0.0:{p}, 127.0.0.1:{p}"], 2, "overlaps 0.0.0.0:{p}"),
    (["listen = 127.0.0.1:{p}", "metrics_listen = 127.0.0.1:{p}"], 3, "is listed twice (also in listen)"),
    (["listen = 127.0.0.1:{p}, 127.0.0.1:{p}"], 2, "listen: 127.0.0.1:{p} is listed twice"),
    (["tls_cert_file = {d}/missing-cert.pem", "tls_key_file = {d}/missing-key.pem"], 2,
     "tls_cert_file: cannot read {d}/missing-cert.pem: open: No such file or directory"),
], ids=["timeout-0", "port-0", "wildcard-overlap", "metrics-on-listener", "twice", "missing-tls-files"])
def test_config_check_refuses_what_serve_would(tmp_path: Path, lines: list[str], line_number: int, message: str):
    port = free_port()
    fill = {"p": str(port), "d": str(tmp_path)}
    body = [line.format(**fill) for line in lines]
    if not any(line.startswith("listen") for line in body):
        body.append(f"listen = 127.0.0.1:{port}")
    conf = tmp_path / "bad.conf"
    conf.write_text("# validation\n" + "\n".join(body) + f"\nspool_dir = {tmp_path / 'spool'}\n")
    check = dualmta("config", "check", "-c", str(conf))
    assert check.returncode == 78, check.stdout + check.stderr
    assert f"{conf}:{line_number}: " in check.stderr and message.format(**fill) in check.stderr, check.stderr
    serve = subprocess.run([str(server_binary()), "serve", "-c", str(conf)], capture_output=True, text=True,
                           timeout=30)
    assert serve.returncode == 78 and check.stderr.strip() in serve.stderr, serve.stderr


def test_open_relay_networks_warn(tmp_path: Path):
    conf = tmp_path / "open.conf"
    conf.write_text(f"listen = 127.0.0.1:{free_port()}\nrelay_networks = 0.0.0.0/0, [::]/0\n")
    check = dualmta("config", "check", "-c", str(conf))
    assert check.returncode == 0, check.stderr
    assert "warning: relay_networks 0.0.0.0/0 lets every ipv4 client relay: this is an open relay" in check.stdout
    assert "warning: relay_networks [::]/0 lets every ipv6 client relay" in check.stdout


def test_tls_pair_that_does_not_match_is_refused(tmp_path: Path):
    """Readable but unusable TLS files (a key from another certificate) fail `config check` as they fail `serve`."""
    openssl = require_tool("openssl")
    for name in ("a", "b"):
        made = subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                               f"/CN={name}.lab.example", "-keyout", str(tmp_path / f"{name}.key"), "-out",
                               str(tmp_path / f"{name}.crt")], capture_output=True, timeout=60)
        assert made.returncode == 0, made.stderr
    conf = tmp_path / "tls.conf"
    conf.write_text(f"listen = 127.0.0.1:{free_port()}\nspool_dir = {tmp_path / 'spool'}\n"
                    f"tls_cert_file = {tmp_path / 'a.crt'}\ntls_key_file = {tmp_path / 'b.key'}\n")
    check = dualmta("config", "check", "-c", str(conf))
    assert check.returncode == 78 and f"{conf}:3: tls_cert_file and tls_key_file:" in check.stderr, check.stderr
    assert "key values mismatch" in check.stderr
    conf.write_text(conf.read_text().replace("b.key", "a.key"))
    assert dualmta("config", "check", "-c", str(conf)).returncode == 0
