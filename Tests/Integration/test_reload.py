"""SIGHUP reloads the config of a running daemon: listeners are diffed (a new one is bound, a removed one closed)
while a session opened before the HUP finishes its transaction; local domains, routes and the TLS certificate
change for new work; a config that does not validate is logged with file:line and the running one stays. Real
daemon, real sockets on loopback; a submission listener and its users file are added and changed by HUPs too."""

from __future__ import annotations

import signal
import smtplib
import socket
import ssl
import subprocess

import pytest

from conftest import DEADLINE, RawClient, free_port, require_tool, simple_message, unique_tag, wait_until
from mtalog import maildir, outbound_settings, wait_event
from peers import peers  # noqa: F401  (fixture)
from test_tls import PASSWORD, USER, no_verify, users_file


def hang_up(srv, count: int, **settings: str | None) -> None:
    """Rewrites the server's config file with `settings` changed and sends SIGHUP; waits for reload number
    `count` to be logged (reloaded or reload-failed)."""
    for key, value in settings.items():
        srv.settings[key] = value
    srv.conf.write_text(srv.render_config())
    srv.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: len([line for line in srv.lines if " reloaded " in line or " reload-failed " in line]) >= count,
               what=f"reload #{count} in the log")


def refused(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=DEADLINE):
            return False
    except ConnectionRefusedError:
        return True


def make_certificate(directory, name: str):
    openssl = require_tool("openssl")
    cert, key = directory / f"{name}-cert.pem", directory / f"{name}-key.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-subj", f"/CN={name}", "-days", "1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    return cert, key


def served_certificate(port: int) -> bytes:
    """The DER certificate the server presents after STARTTLS on 127.0.0.1:port."""
    client = RawClient("127.0.0.1", port)
    try:
        client.read_reply().expect(220)
        client.cmd(b"EHLO reload.example").expect(250)
        client.cmd(b"STARTTLS").expect(220)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        with context.wrap_socket(client.sock, server_hostname="reload.example") as tls:
            return tls.getpeercert(binary_form=True)
    finally:
        client.close()


def test_hup_rebinds_listeners_while_an_open_session_finishes(start_server, tmp_path):
    srv = start_server()
    old_port, new_port = srv.port, free_port()
    # A session opened before the HUP, in the middle of a transaction.
    early = srv.session("127.0.0.1")
    early.cmd(b"MAIL FROM:<a@lab.example>").expect(250)
    early.cmd(b"RCPT TO:<u@lab.example>").expect(250)

    hang_up(srv, 1, listen=f"[::1]:{old_port}, 127.0.0.1:{new_port}", local_domains="lab.example, new.example")
    line = wait_event(srv, "reloaded")[0]
    assert (line["listeners_added"], line["listeners_removed"], line["listeners_failed"]) == ("1", "1", "0"), line.line
    assert srv.running(), srv.log_text()
    assert not any(" stopping" in line for line in srv.lines)

    # The open session goes on to the end on the closed listener's connection.
    early.cmd(b"DATA").expect(354)
    early.send(simple_message("before-hup") + b".\r\n")
    early.read_reply().expect(250)
    early.cmd(b"QUIT").expect(221)
    early.close()
    wait_until(lambda: maildir(srv.spool, "lab.example", "u"), what="the early session's message")

    # New connections: the removed listener refuses, the new one and the kept IPv6 one answer with the new policy.
    assert refused("127.0.0.1", old_port)
    for host, port in (("127.0.0.1", new_port), ("::1", old_port)):
        with RawClient(host, port) as client:
            client.read_reply().expect(220)
            client.cmd(b"EHLO reload.example").expect(250)
            client.transaction("a@lab.example", ["v@new.example"], simple_message(unique_tag("new"))).expect(250)
    wait_until(lambda: len(maildir(srv.spool, "new.example", "v")) == 2, what="both messages to the new local domain")

    # A config that does not validate: logged with file and line, and everything running stays as it was.
    hang_up(srv, 2, listen="[::1]:{port}, nonsense")
    failed = wait_event(srv, "reload-failed")[0]
    assert f"{srv.conf}:" in failed["reason"] and "listen" in failed["reason"], failed.line
    with RawClient("127.0.0.1", new_port) as client:
        client.read_reply().expect(220)
        client.cmd(b"EHLO reload.example").expect(250)
        client.cmd(b"MAIL FROM:<a@lab.example>").expect(250)
        client.cmd(b"RCPT TO:<w@new.example>").expect(250)
    assert srv.running()
    assert srv.stop() == 0


def test_hup_changes_routes_and_the_tls_certificate(start_server, tmp_path, peers):  # noqa: F811
    first, second = peers(name="first-sink"), peers(name="second-sink")
    cert_a, key_a = make_certificate(tmp_path, "cert-a.example")
    cert_b, key_b = make_certificate(tmp_path, "cert-b.example")
    srv = start_server(**outbound_settings(routes=f"remote.example=[127.0.0.1]:{first.port}",
                                           tls_cert_file=str(cert_a), tls_key_file=str(key_a)))
    assert served_certificate(srv.port) == ssl.PEM_cert_to_DER_cert(cert_a.read_text())
    with srv.session() as client:
        client.transaction("a@lab.example", ["bob@remote.example"], simple_message(unique_tag("r1"))).expect(250)
    first.wait_messages(1, DEADLINE)

    hang_up(srv, 1, routes=f"remote.example = [127.0.0.1]:{second.port}", tls_cert_file=str(cert_b),
            tls_key_file=str(key_b))
    wait_event(srv, "reloaded")
    assert served_certificate(srv.port) == ssl.PEM_cert_to_DER_cert(cert_b.read_text())
    with srv.session() as client:
        client.transaction("a@lab.example", ["bob@remote.example"], simple_message(unique_tag("r2"))).expect(250)
    second.wait_messages(1, DEADLINE)
    assert len(first.messages) == 1

    # A key that does not match the certificate: the reload fails and the running certificate stays.
    hang_up(srv, 2, tls_key_file=str(key_a))
    wait_event(srv, "reload-failed")
    assert served_certificate(srv.port) == ssl.PEM_cert_to_DER_cert(cert_b.read_text())


def test_hup_adds_a_submission_listener_and_reads_a_new_users_file(start_server, tmp_path):
    srv = start_server()
    port = free_port()
    first_users = users_file(tmp_path)
    hang_up(srv, 1, submission_listen=f"127.0.0.1:{port}", submission_users_file=str(first_users))
    line = wait_event(srv, "reloaded")[0]
    assert (line["listeners_added"], line["listeners_failed"]) == ("1", "0"), line.line
    with smtplib.SMTP("127.0.0.1", port, timeout=DEADLINE) as client:
        client.starttls(context=no_verify())
        client.login(USER, PASSWORD)

    # Another users file without that user: after the HUP the same login is refused.
    other = tmp_path / "other-users"
    other.write_text("# nobody yet\n")
    hang_up(srv, 2, submission_users_file=str(other))
    assert len([entry for entry in srv.lines if " reloaded " in entry]) == 2, srv.log_text()
    with smtplib.SMTP("127.0.0.1", port, timeout=DEADLINE) as client:
        client.starttls(context=no_verify())
        with pytest.raises(smtplib.SMTPAuthenticationError):
            client.login(USER, PASSWORD)
