"""smtp_tls_policy end to end: one daemon, three destinations on loopback with different outbound TLS policies.
A STARTTLS peer that records the SNI name (reached through a host-name route resolved by the lab DNS), and a peer
that offers STARTTLS but breaks every handshake. The delivery log line names the policy that applied."""

from __future__ import annotations

import socket
import ssl
import subprocess
import threading
from pathlib import Path

import pytest

from conftest import DEADLINE, require_tool, simple_message, unique_tag
from dnslab import lab_dns  # noqa: F401  (fixture)
from mtalog import events, outbound_settings, story, wait_event
from test_tls import BrokenTLSPeer


class StartTLSPeer:
    """A small SMTP server on [::1] that offers STARTTLS with a throw-away certificate, records the SNI name of each
    handshake, and accepts mail only over TLS."""

    def __init__(self, directory: Path):
        openssl = require_tool("openssl")
        cert, key = directory / "peer-cert.pem", directory / "peer-key.pem"
        subprocess.run([openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                        "-subj", "/CN=peer.test", "-days", "1", "-keyout", str(key), "-out", str(cert)],
                       check=True, capture_output=True, timeout=60)
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(str(cert), str(key))
        self.server_names: list[str | None] = []
        self.tls_messages = 0
        self.context.sni_callback = lambda sock, name, ctx: self.server_names.append(name)
        self.sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        self.sock.bind(("::1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._session, args=(conn,), daemon=True).start()

    def _session(self, conn: socket.socket) -> None:
        conn.settimeout(DEADLINE)
        try:
            reader = conn.makefile("rb")
            conn.sendall(b"220 peer.test ESMTP\r\n")
            for line in reader:
                command = line.strip().upper()
                if command.startswith(b"EHLO"):
                    conn.sendall(b"250-peer.test\r\n250-8BITMIME\r\n250 STARTTLS\r\n")
                elif command == b"STARTTLS":
                    conn.sendall(b"220 2.0.0 go ahead\r\n")
                    stream = self.context.wrap_socket(conn, server_side=True)
                    return self._continue(stream, stream.makefile("rb"))
                elif command.startswith(b"QUIT"):
                    conn.sendall(b"221 bye\r\n")
                    return
                else:
                    conn.sendall(b"530 5.7.0 STARTTLS first\r\n")
        except (OSError, ssl.SSLError):
            pass
        finally:
            conn.close()

    def _continue(self, stream, reader) -> None:
        in_data = False
        for line in reader:
            if in_data:
                if line == b".\r\n":
                    in_data = False
                    self.tls_messages += 1
                    stream.sendall(b"250 2.0.0 queued over TLS\r\n")
                continue
            command = line.strip().upper()
            if command.startswith(b"EHLO"):
                stream.sendall(b"250-peer.test\r\n250 8BITMIME\r\n")
            elif command == b"DATA":
                in_data = True
                stream.sendall(b"354 go\r\n")
            elif command.startswith(b"QUIT"):
                stream.sendall(b"221 bye\r\n")
                return
            else:
                stream.sendall(b"250 ok\r\n")

    def stop(self) -> None:
        self.sock.close()


def test_two_destinations_with_different_tls_policies(start_server, tmp_path, lab_dns):  # noqa: F811
    secure = StartTLSPeer(tmp_path)
    broken = BrokenTLSPeer()
    try:
        srv = start_server(**outbound_settings(
            dns_servers=lab_dns.server, allow_loopback_mx="yes", smtp_tls="may",
            # The domain entries win over the address entry; [127.0.0.1] covers any other name routed there.
            smtp_tls_policy="secure.example = encrypt, [127.0.0.1]=none, strict.example=encrypt",
            routes=(f"secure.example=dual.example.test:{secure.port}, plain.example=[127.0.0.1]:{broken.port}, "
                    f"strict.example=[127.0.0.1]:{broken.port}")))
        ids = {}
        with srv.session() as client:
            for domain in ("secure", "plain", "strict"):
                ids[domain] = client.transaction("alice@lab.example", [f"bob@{domain}.example"],
                                                 simple_message(unique_tag(domain))).queue_id()

        # encrypt over STARTTLS, with the MX host name as SNI.
        sent = wait_event(srv, "delivery", id=ids["secure"], result="sent")[0]
        assert sent["tls_policy"] == "encrypt" and sent["tls"].startswith("TLSv1."), sent.line
        assert secure.tls_messages == 1 and secure.server_names == ["dual.example.test"], secure.server_names

        # none: the broken peer's STARTTLS is never tried, the mail goes in plaintext without a fallback.
        plain = wait_event(srv, "delivery", id=ids["plain"], result="sent")[0]
        assert plain["tls_policy"] == "none" and plain.get("tls") is None and plain.get("tls_fallback") is None, \
            plain.line
        assert broken.plain_messages == 1

        # encrypt to the broken peer: deferred (4.7.5), never sent in plaintext.
        final = wait_event(srv, "recipient", id=ids["strict"])[0]
        assert final["result"] == "deferred" and final["status"] == "4.7.5", story(srv, ids["strict"])
        attempts = events(srv, "delivery", id=ids["strict"])
        assert attempts and all(e["tls_policy"] == "encrypt" for e in attempts), story(srv, ids["strict"])
        assert broken.starttls >= 1 and broken.plain_messages == 1
    finally:
        secure.stop()
        broken.stop()


def test_a_bad_policy_is_a_config_error_with_file_and_line(tmp_path):
    from conftest import server_binary
    conf = tmp_path / "bad.conf"
    conf.write_text("hostname = mx.lab.example\nsmtp_tls_policy = example.net=maybe\n")
    run = subprocess.run([str(server_binary()), "config", "check", "-c", str(conf)], capture_output=True, timeout=30)
    assert run.returncode == 78 and f"{conf}:2: smtp_tls_policy".encode() in run.stderr, run.stderr
