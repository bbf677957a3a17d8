"""STARTTLS in and out, and the submission service with AUTH (issue 5), against the real binary over loopback.

Server side: swaks --tls and smtplib starttls() over 127.0.0.1 and ::1 (Received says ESMTPS and names the cipher),
openssl s_client sees the generated certificate for the host name, the CVE-2011-0411 probe (P06), P08.
Submission: swaks AUTH PLAIN/LOGIN over STARTTLS relays, AUTH before STARTTLS, MAIL without AUTH,
a wrong password (535, never logged), msmtp, implicit TLS (swaks --tlsc).
Outbound: to a second dualmta with TLS, to a plain smtp-sink without, and to a peer whose handshake fails (O15).
"""

from __future__ import annotations

import base64
import re
import smtplib
import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path

import pytest

from conftest import (DEADLINE, HOSTNAME, RawClient, Server, Spool, free_port, parse_delivered, parse_received,
                      require_tool, server_binary, simple_message, unique_tag)
from mtalog import events, maildir, outbound_settings, story, wait_event, wait_queue_empty
from test_outbound import SmtpSink

FAMILIES = [pytest.param("127.0.0.1", id="ipv4"), pytest.param("::1", id="ipv6")]
USER = "alice"
PASSWORD = "correct horse battery staple"
CIPHER_COMMENT = r"^\(using TLSv1\.[23] with cipher \S+ \(\d+/\d+ bits\)\)"


def no_verify() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def swaks(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    exe = require_tool("swaks")
    return subprocess.run([exe, "--hide-informational", *args], capture_output=True, text=True, timeout=timeout)


def swaks_target(host: str, port: int) -> list[str]:
    return ["--server", host, "--port", str(port)] + (["-6"] if ":" in host else ["-4"])


def users_file(tmp_path: Path) -> Path:
    """A users file made by `dualmta passwd` (the password on stdin, as a script would give it)."""
    made = subprocess.run([str(server_binary()), "passwd", USER], input=PASSWORD + "\n", capture_output=True,
                          text=True, timeout=30)
    assert made.returncode == 0, made.stderr
    line = made.stdout.strip()
    assert line.startswith(f"{USER}:$y$"), line
    path = tmp_path / "users"
    path.write_text("# submission users\n" + line + "\n")
    return path


@pytest.fixture
def submission(start_server, tmp_path):
    """submission(**settings) -> (server, ports): an MX plus submission (STARTTLS) on both families and implicit TLS
    on 127.0.0.1. Relaying is granted by AUTH only: relay_networks names no loopback address."""
    def _start(**overrides):
        ports = {"submission": free_port(), "submissions": free_port()}
        settings = {
            "submission_listen": f"127.0.0.1:{ports['submission']}, [::1]:{ports['submission']}",
            "submissions_listen": f"127.0.0.1:{ports['submissions']}",
            "submission_users_file": str(users_file(tmp_path)),
            "relay_networks": "192.0.2.0/24",
        }
        settings.update(overrides)
        return start_server(**settings), ports
    return _start


def delivered_received(srv: Server, user: str = "u") -> tuple[str, object]:
    spool = Spool(srv.spool)
    files = maildir(srv.spool, "lab.example", user)
    assert len(files) == 1, spool.summary()
    d = parse_delivered(files[0])
    return d.received, parse_received(d.received)


# ---------------------------------------------------------------------------------------------------------------
# Server STARTTLS


@pytest.mark.parametrize("host", FAMILIES)
def test_swaks_starttls(mta: Server, host: str):
    run = swaks(*swaks_target(host, mta.port), "--tls", "--from", "a@r.example", "--to", "u@lab.example")
    assert run.returncode == 0, run.stdout + run.stderr
    Spool(mta.spool).settle(delivered=1)
    received, m = delivered_received(mta)
    assert m.group("proto") == "ESMTPS", received
    assert re.match(CIPHER_COMMENT, m.group("comments")), received
    accepted = wait_event(mta, "accepted")[0]
    assert accepted["proto"] == "ESMTPS" and accepted["tls"].startswith("TLSv1.") and accepted["cipher"], accepted.line


@pytest.mark.parametrize("host", FAMILIES)
def test_smtplib_starttls(mta: Server, host: str):
    sent = simple_message(unique_tag("starttls"))
    with smtplib.SMTP(host, mta.port, local_hostname="client.example", timeout=DEADLINE) as s:
        s.ehlo()
        assert s.has_extn("starttls")
        code, _ = s.starttls(context=no_verify())
        assert code == 220
        s.ehlo()
        assert not s.has_extn("starttls"), "STARTTLS offered again inside TLS (T6.2)"
        assert s.sendmail("a@r.example", ["u@lab.example"], sent) == {}
    Spool(mta.spool).settle(delivered=1)
    received, m = delivered_received(mta)
    assert m.group("proto") == "ESMTPS" and m.group("helo") == "client.example", received
    assert "using TLSv1." in m.group("comments"), received


def test_openssl_s_client_sees_the_generated_certificate(mta: Server, tmp_path: Path):
    openssl = require_tool("openssl")
    run = subprocess.run([openssl, "s_client", "-starttls", "smtp", "-connect", f"127.0.0.1:{mta.port}",
                          "-servername", HOSTNAME], input=b"QUIT\r\n", capture_output=True, timeout=30)
    out = run.stdout.decode(errors="replace")
    assert "-----BEGIN CERTIFICATE-----" in out, out + run.stderr.decode(errors="replace")
    pem = out[out.index("-----BEGIN CERTIFICATE-----"):out.index("-----END CERTIFICATE-----") + 25]
    info = subprocess.run([openssl, "x509", "-noout", "-subject", "-ext", "subjectAltName"], input=pem.encode(),
                          capture_output=True, timeout=30).stdout.decode()
    assert f"CN = {HOSTNAME}" in info and f"DNS:{HOSTNAME}" in info, info
    # Generated once into <spool>/state/ and reused by the next start.
    cert = mta.spool / "state" / "tls-cert.pem"
    before = cert.read_bytes()
    mta.stop()
    mta.start()
    assert cert.read_bytes() == before


def handshake(client: RawClient) -> ssl.SSLSocket:
    tls = no_verify().wrap_socket(client.sock, server_hostname=HOSTNAME, do_handshake_on_connect=False)
    tls.settimeout(DEADLINE)
    tls.do_handshake()
    return tls


def read_tls_reply(tls: ssl.SSLSocket) -> bytes:
    data = b""
    while not data.endswith(b"\r\n") or not data.split(b"\r\n")[-2][3:4] == b" ":
        chunk = tls.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


@pytest.mark.parametrize("injected", [b"RSET\r\n", b"EHLO x\r\nMAIL FROM:<a@b.example>\r\n"])
def test_starttls_command_injection_probe(mta: Server, injected: bytes):  # P06, CVE-2011-0411
    c = mta.session()
    c.send(b"STARTTLS\r\n" + injected)
    c.read_reply().expect(220, "2.0.0")
    assert c.buf == b"", f"more than the 220 came back in plaintext: {c.buf!r}"
    tls = handshake(c)
    tls.settimeout(1.0)
    with pytest.raises(socket.timeout):
        extra = tls.recv(4096)
        pytest.fail(f"a reply to the injected commands arrived inside TLS: {extra!r}")
    tls.settimeout(DEADLINE)
    tls.sendall(b"RCPT TO:<u@lab.example>\r\n")  # nothing injected survived: no EHLO, no MAIL
    assert read_tls_reply(tls).startswith(b"503 5.5.1")
    tls.sendall(b"EHLO client.example\r\n")
    ehlo = read_tls_reply(tls)
    assert ehlo.startswith(b"250") and b"STARTTLS" not in ehlo  # RFC 3207 §4.2: not offered again inside TLS
    tls.sendall(b"STARTTLS\r\n")  # P08
    assert read_tls_reply(tls).startswith(b"554 5.5.1")
    tls.close()
    line = mta.wait_log(r"discarded \d+ octets pipelined after STARTTLS")
    assert f"discarded {len(injected)} octets" in line and "warn" in line, line


def test_garbage_instead_of_a_handshake_is_logged_and_closed(mta: Server):
    c = mta.session()
    c.cmd(b"STARTTLS").expect(220)
    c.send(b"this is not a TLS record\r\n" * 4)
    c.read_until_closed()
    mta.wait_log(r"tls-handshake-failed")
    mta.assert_alive()


# ---------------------------------------------------------------------------------------------------------------
# Submission


def test_submission_requires_tls_then_auth(submission):
    srv, ports = submission()
    c = RawClient("127.0.0.1", ports["submission"])
    c.read_reply().expect(220)
    ehlo = c.cmd(b"EHLO client.example").expect(250)
    assert b"250 STARTTLS" in ehlo.lines[-1] and not any(b"AUTH" in line for line in ehlo.lines)
    c.cmd(b"AUTH PLAIN AGFsaWNlAHg=").expect(538, "5.7.11")
    c.cmd(b"MAIL FROM:<alice@lab.example>").expect(530, "5.7.0")
    c.cmd(b"STARTTLS").expect(220)
    tls = handshake(c)
    tls.sendall(b"EHLO client.example\r\n")
    ehlo = read_tls_reply(tls)
    assert b"250 AUTH PLAIN LOGIN" in ehlo and b"STARTTLS" not in ehlo, ehlo
    tls.sendall(b"MAIL FROM:<alice@lab.example>\r\n")
    assert read_tls_reply(tls).startswith(b"530 5.7.0")
    token = base64.b64encode(f"\0{USER}\0{PASSWORD}".encode()).decode()
    tls.sendall(f"AUTH PLAIN {token}\r\n".encode())
    assert read_tls_reply(tls).startswith(b"235 2.7.0")
    tls.sendall(f"AUTH PLAIN {token}\r\n".encode())
    assert read_tls_reply(tls).startswith(b"503 5.5.1")
    tls.close()


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
@pytest.mark.parametrize("host", FAMILIES)
def test_swaks_auth_over_starttls_relays(submission, tmp_path, mechanism: str, host: str):
    sink = SmtpSink(tmp_path)
    try:
        srv, ports = submission(**outbound_settings(routes=f"remote.example=[127.0.0.1]:{sink.port}"))
        subject = unique_tag("relay")
        run = swaks(*swaks_target(host, ports["submission"]), "--tls", "--auth", mechanism, "--auth-user", USER,
                    "--auth-password", PASSWORD, "--from", "alice@lab.example", "--to", "bob@remote.example",
                    "--h-Subject", subject)
        assert run.returncode == 0, run.stdout + run.stderr
        accepted = wait_event(srv, "accepted")[0]
        assert accepted["proto"] == "ESMTPSA" and accepted["user"] == USER and accepted["service"] == "submission"
        qid = accepted["id"]
        final = wait_event(srv, "recipient", id=qid)[0]
        assert final["result"] == "delivered", story(srv, qid)
        wait_queue_empty(srv)
        (dump,) = sink.files()
        text = dump.read_text(errors="replace")
        assert subject in text and f"(authenticated user {USER})" in text and "with ESMTPSA" in text, text[:800]
    finally:
        sink.stop()


def test_relay_without_auth_is_refused_on_the_mx(submission):
    srv, _ = submission()
    with srv.session() as c:
        c.cmd(b"MAIL FROM:<alice@lab.example>").expect(250)
        c.cmd(b"RCPT TO:<bob@remote.example>").expect(554, "5.7.1")


def test_wrong_password_is_refused_and_never_logged(submission):
    srv, ports = submission()
    secret = "Tr0ub4dor&3-not-the-password"
    started = time.monotonic()
    run = swaks(*swaks_target("127.0.0.1", ports["submission"]), "--tls", "--auth", "PLAIN", "--auth-user", USER,
                "--auth-password", secret, "--from", "alice@lab.example", "--to", "u@lab.example")
    assert run.returncode != 0
    assert "535 5.7.8" in run.stdout, run.stdout
    assert time.monotonic() - started >= 1.0, "a failed AUTH is answered after a delay"
    line = srv.wait_log(r"authentication failed for user alice")
    payload = base64.b64encode(f"\0{USER}\0{secret}".encode()).decode()
    log = srv.log_text()
    assert secret not in log and payload not in log and PASSWORD not in log, line
    assert not Spool(srv.spool).maildir_files()


def test_msmtp_sends_through_submission(submission, tmp_path):
    msmtp = require_tool("msmtp")
    srv, ports = submission()
    subject = unique_tag("msmtp")
    message = f"From: alice@lab.example\r\nTo: u@lab.example\r\nSubject: {subject}\r\n\r\nhello from msmtp\r\n"
    run = subprocess.run(
        [msmtp, "--host=::1", f"--port={ports['submission']}", "--tls=on", "--tls-starttls=on",
         "--tls-certcheck=off", "--auth=on", f"--user={USER}", f"--passwordeval=echo '{PASSWORD}'",
         "--from=alice@lab.example", "--domain=client.example", "u@lab.example"],
        input=message.encode(), capture_output=True, timeout=60)
    assert run.returncode == 0, run.stdout.decode(errors="replace") + run.stderr.decode(errors="replace")
    Spool(srv.spool).settle(delivered=1)
    received, m = delivered_received(srv)
    assert m.group("proto") == "ESMTPSA" and f"(authenticated user {USER})" in m.group("comments"), received
    assert m.group("addr") == "IPv6:::1", received


def test_implicit_tls_submissions_port(submission):
    srv, ports = submission()
    run = swaks(*swaks_target("127.0.0.1", ports["submissions"]), "--tlsc", "--auth", "LOGIN", "--auth-user", USER,
                "--auth-password", PASSWORD, "--from", "alice@lab.example", "--to", "u@lab.example")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "STARTTLS" not in run.stdout
    Spool(srv.spool).settle(delivered=1)
    received, m = delivered_received(srv)
    assert m.group("proto") == "ESMTPSA", received
    accepted = wait_event(srv, "accepted")[0]
    assert accepted["service"] == "submissions" and accepted["tls"].startswith("TLSv1.")


# ---------------------------------------------------------------------------------------------------------------
# Outbound STARTTLS


def test_outbound_tls_to_a_second_dualmta(start_server, tmp_path):
    dest = start_server(spool=tmp_path / "dest-spool", local_domains="remote.example")
    srv = start_server(spool=tmp_path / "src-spool",
                       **outbound_settings(routes=f"remote.example=[::1]:{dest.port}", smtp_tls="may"))
    with srv.session() as c:
        qid = c.transaction("alice@src.example", ["bob@remote.example"], simple_message(unique_tag("tls"))).queue_id()
    sent = wait_event(srv, "delivery", id=qid, result="sent")[0]
    assert sent["tls"].startswith("TLSv1.") and sent["cipher"], sent.line
    wait_queue_empty(srv)
    (path,) = maildir(dest.spool, "remote.example", "bob")
    m = parse_received(parse_delivered(path).received)
    assert m.group("proto") == "ESMTPS" and "using TLSv1." in m.group("comments")


def test_outbound_plain_peer_without_tls(start_server, tmp_path):
    sink = SmtpSink(tmp_path)  # smtp-sink offers no STARTTLS
    try:
        srv = start_server(**outbound_settings(routes=f"remote.example=[127.0.0.1]:{sink.port}", smtp_tls="may"))
        with srv.session() as c:
            qid = c.transaction("alice@src.example", ["bob@remote.example"], simple_message(unique_tag("p"))).queue_id()
        sent = wait_event(srv, "delivery", id=qid, result="sent")[0]
        assert sent.get("tls") is None, sent.line
        wait_queue_empty(srv)
    finally:
        sink.stop()


class BrokenTLSPeer:
    """Advertises STARTTLS, answers 220 to it, then sends garbage and closes (O15). A connection that does not ask
    for STARTTLS gets a plain, accepting SMTP dialogue. Counts both kinds."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.starttls = 0
        self.plain_messages = 0
        self.stopping = False
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while not self.stopping:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._session, args=(conn,), daemon=True).start()

    def _session(self, conn: socket.socket):
        conn.settimeout(DEADLINE)
        f = conn.makefile("rb")
        try:
            conn.sendall(b"220 broken.example ESMTP\r\n")
            in_data = False
            for line in f:
                if in_data:
                    if line == b".\r\n":
                        in_data = False
                        self.plain_messages += 1
                        conn.sendall(b"250 2.0.0 queued\r\n")
                    continue
                verb = line[:4].upper()
                if verb == b"EHLO":
                    conn.sendall(b"250-broken.example\r\n250-PIPELINING\r\n250 STARTTLS\r\n")
                elif line.upper().startswith(b"STARTTLS"):
                    self.starttls += 1
                    conn.sendall(b"220 2.0.0 go ahead\r\n")
                    conn.recv(4096)  # the ClientHello
                    conn.sendall(b"\x15\x03\x03garbage, not a ServerHello\r\n" * 3)
                    return
                elif verb == b"DATA":
                    in_data = True
                    conn.sendall(b"354 go\r\n")
                elif verb == b"QUIT":
                    conn.sendall(b"221 bye\r\n")
                    return
                else:
                    conn.sendall(b"250 ok\r\n")
        except OSError:
            pass
        finally:
            conn.close()

    def stop(self):
        self.stopping = True
        self.sock.close()


def test_outbound_recovers_from_a_failed_handshake(start_server):
    peer = BrokenTLSPeer()
    try:
        srv = start_server(**outbound_settings(routes=f"remote.example=[127.0.0.1]:{peer.port}", smtp_tls="may"))
        with srv.session() as c:
            qid = c.transaction("alice@src.example", ["bob@remote.example"], simple_message(unique_tag("b"))).queue_id()
        sent = wait_event(srv, "delivery", id=qid, result="sent")[0]
        assert sent.get("tls") is None and "handshake" in sent["tls_fallback"].lower(), sent.line
        assert peer.starttls == 1 and peer.plain_messages == 1
        assert [e["result"] for e in events(srv, "delivery", id=qid)] == ["sent"], story(srv, qid)
        wait_queue_empty(srv)
    finally:
        peer.stop()


def test_outbound_encrypt_defers_instead_of_plaintext(start_server, tmp_path):
    peer = BrokenTLSPeer()
    sink = SmtpSink(tmp_path)
    try:
        srv = start_server(**outbound_settings(
            routes=f"remote.example=[127.0.0.1]:{peer.port}, plain.example=[127.0.0.1]:{sink.port}",
            smtp_tls="encrypt"))
        with srv.session() as c:
            broken = c.transaction("alice@src.example", ["bob@remote.example"],
                                   simple_message(unique_tag("e"))).queue_id()
            plain = c.transaction("alice@src.example", ["bob@plain.example"],
                                  simple_message(unique_tag("f"))).queue_id()
        for qid, status in ((broken, "4.7.5"), (plain, "4.7.0")):
            final = wait_event(srv, "recipient", id=qid)[0]
            assert final["result"] == "deferred" and final["status"] == status, story(srv, qid)
        assert peer.plain_messages == 0 and not sink.files()
    finally:
        peer.stop()
        sink.stop()
