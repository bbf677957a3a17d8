"""Local parts become Maildir directory names: they fold ASCII letters only, so two different addresses never share
a mailbox, and a local part that would be an unsafe directory name is refused at RCPT."""

from __future__ import annotations

from conftest import Server, Spool, simple_message


def send_utf8(mta: Server, rcpt: str, subject: str) -> None:
    with mta.session() as c:
        c.cmd(b"MAIL FROM:<a@remote.example> SMTPUTF8").expect(250)
        c.cmd(f"RCPT TO:<{rcpt}>".encode()).expect(250)
        c.cmd(b"DATA").expect(354)
        c.send(simple_message(subject) + b".\r\n")
        c.read_reply().expect(250)


def test_kelvin_sign_gets_its_own_maildir(mta: Server):
    send_utf8(mta, "\u212aelvin@lab.example", "kelvin-sign")
    send_utf8(mta, "Kelvin@lab.example", "ascii-kelvin")
    spool = Spool(mta.spool)
    spool.settle(delivered=2)
    users = {}
    for path in spool.maildir_files():
        user = path.parent.parent.name
        users.setdefault(user, []).append(path.read_bytes())
    assert sorted(users) == sorted(["kelvin", "\u212aelvin"]), users.keys()
    assert any(b"Subject: ascii-kelvin" in m for m in users["kelvin"]) and len(users["kelvin"]) == 1
    assert any(b"Subject: kelvin-sign" in m for m in users["\u212aelvin"])


def test_unsafe_local_parts_are_refused_at_rcpt(mta: Server):
    with mta.session() as c:
        c.cmd(b"MAIL FROM:<a@remote.example> SMTPUTF8").expect(250)
        for rcpt in ["a\u0085b@lab.example", "x\u2028y@lab.example", ".hidden@lab.example", "a/b@lab.example"]:
            c.cmd(f"RCPT TO:<{rcpt}>".encode()).expect_any((550, "5.1.1"), (501, "5.1.3"))
        c.cmd(b"QUIT").expect(221)
    Spool(mta.spool).settle()
    mta.wait_log(r"rejected")
