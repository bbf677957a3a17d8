"""Outbound connection reuse end to end: a real dualmta daemon relays to a Python sink that counts its TCP
connections (peers.py) or to a second dualmta with STARTTLS. Several messages to one next hop go over one connection
(`conn=reused` in the delivery lines, no new EHLO), the parked session is closed with QUIT at a reload and at shutdown,
and `smtp_connection_cache = no` gives every message its own connection again.
"""

from __future__ import annotations

import json
import signal
import urllib.request

from conftest import DEADLINE, free_port, wait_until
from mtalog import events, maildir, outbound_settings, story, submit, wait_event, wait_queue_empty
from peers import peers  # noqa: F401  (fixture)

SENDER = "alice@src.example"
COUNT = 8


def relay_to_sink(start_server, peers, **overrides):
    dest = peers(name="dest")
    # Long idle time: nothing in these tests may depend on how fast the machine is.
    settings = {"smtp_connection_cache_time": "60s", **overrides}
    srv = start_server(**outbound_settings(routes=f"remote.example=[127.0.0.1]:{dest.port}", **settings))
    return srv, dest


def send_one_after_another(srv, count: int) -> list[str]:
    ids = []
    for n in range(count):
        qid = submit(srv, SENDER, [f"r{n}@remote.example"])
        wait_event(srv, "removed", id=qid)
        ids.append(qid)
    return ids


def test_messages_to_one_hop_share_one_connection(start_server, peers):
    srv, dest = relay_to_sink(start_server, peers)
    ids = send_one_after_another(srv, COUNT)
    assert len(dest.wait_messages(COUNT, DEADLINE)) == COUNT
    assert dest.tcp_connections == 1, dest.describe()
    ehlos = [c for s in dest.sessions for c in s.commands if c.upper().startswith("EHLO")]
    assert len(ehlos) == 1, dest.describe()
    conns = [[a["conn"] for a in events(srv, "delivery", id=qid)] for qid in ids]
    assert conns == [["new"]] + [["reused"]] * (COUNT - 1), story(srv, *ids)
    assert all(s.ended in ("", "next-transaction") for s in dest.sessions), dest.describe()
    wait_queue_empty(srv)


def test_shutdown_ends_the_parked_session_with_quit(start_server, peers):
    srv, dest = relay_to_sink(start_server, peers)
    send_one_after_another(srv, 2)
    srv.stop()
    dest.wait(lambda p: p.sessions[-1].ended == "quit", DEADLINE, "QUIT from the stopping daemon")
    assert dest.tcp_connections == 1, dest.describe()
    assert events(srv, "connection-cache", reason="shutdown"), srv.log_text()


def test_reload_closes_the_parked_sessions_and_starts_an_empty_cache(start_server, peers):
    srv, dest = relay_to_sink(start_server, peers)
    send_one_after_another(srv, 2)
    srv.conf.write_text(srv.render_config())
    srv.proc.send_signal(signal.SIGHUP)
    wait_event(srv, "reloaded")
    dest.wait(lambda p: p.sessions[-1].ended == "quit", DEADLINE, "QUIT after the reload")
    assert events(srv, "connection-cache", reason="shutdown"), srv.log_text()
    [after] = send_one_after_another(srv, 1)
    assert [a["conn"] for a in events(srv, "delivery", id=after)] == ["new"], story(srv, after)
    assert dest.tcp_connections == 2, dest.describe()


def test_cache_off_gives_every_message_its_own_connection(start_server, peers):
    srv, dest = relay_to_sink(start_server, peers, smtp_connection_cache="no")
    ids = send_one_after_another(srv, 3)
    dest.wait(lambda p: len([s for s in p.sessions if s.ended == "quit"]) == 3, DEADLINE, "three QUITs")
    assert dest.tcp_connections == 3, dest.describe()
    assert [a["conn"] for qid in ids for a in events(srv, "delivery", id=qid)] == ["new"] * 3


def test_expired_session_is_closed_with_quit(start_server, peers):
    srv, dest = relay_to_sink(start_server, peers, smtp_connection_cache_time="300ms")
    send_one_after_another(srv, 1)
    dest.wait(lambda p: p.sessions[-1].ended == "quit", DEADLINE, "QUIT once the idle time passed")
    wait_event(srv, "connection-cache", reason="expired")


def test_a_tls_session_is_reused_inside_tls(start_server, tmp_path):
    """Relay → a second dualmta with STARTTLS: one handshake for all messages, every delivery line says TLS."""
    final = start_server(spool=tmp_path / "final-spool", hostname="mx.dest.example", local_domains="dest.example")
    relay = start_server(spool=tmp_path / "relay-spool",
                         **outbound_settings(routes=f"dest.example=[127.0.0.1]:{final.port}", smtp_tls="may",
                                             smtp_connection_cache_time="60s"))
    ids = []
    for n in range(3):
        qid = submit(relay, SENDER, ["bob@dest.example"], subject=f"tls-reuse-{n}")
        wait_event(relay, "removed", id=qid)
        ids.append(qid)
    lines = [a for qid in ids for a in events(relay, "delivery", id=qid)]
    assert [a["conn"] for a in lines] == ["new", "reused", "reused"], story(relay, *ids)
    assert all(a["tls"].startswith("TLSv1.") for a in lines), story(relay, *ids)
    wait_until(lambda: len(maildir(final.spool, "dest.example", "bob")) == 3, what="three messages in bob's Maildir")
    assert len(events(final, "tls")) == 1, final.log_text()
    assert len(events(final, "accepted")) == 3, final.log_text()


def test_console_lists_the_parked_connection(start_server, peers):
    port = free_port()
    srv, dest = relay_to_sink(start_server, peers, http_listen=f"127.0.0.1:{port}")
    send_one_after_another(srv, 2)
    assert dest.tcp_connections == 1, dest.describe()

    def parked():
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/connections", timeout=DEADLINE) as reply:
            return json.loads(reply.read())

    # The session parks right after its last delivery line; poll until the cache holds it.
    wait_until(lambda: parked() == [{"address": f"127.0.0.1:{dest.port}", "family": "ipv4", "parked": 1}],
               what="one parked connection in /api/connections")
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=DEADLINE) as reply:
        page = reply.read().decode()
    assert f"<tr><td>127.0.0.1:{dest.port}</td><td class=\"ipv4\">ipv4</td><td>1</td></tr>" in page, page
