"""`dualmta queue list` (text and --json) shows a relayed message that waits for the outbound engine."""

from __future__ import annotations

import json
import re

from conftest import Spool, simple_message, unique_tag


def test_queue_list_shows_pending_remote_recipient(mta):
    empty = mta.cli("queue", "list", "--json")
    assert empty.returncode == 0, empty.stderr
    assert json.loads(empty.stdout) == []

    c = mta.session("127.0.0.1")
    qid = c.transaction("a@r.example", ["someone@remote.example"], simple_message(unique_tag("q"))
                        ).expect(250).queue_id()
    c.cmd(b"QUIT").expect(221)
    Spool(mta.spool).settle(queued=1)

    text = mta.cli("queue", "list")
    assert text.returncode == 0, text.stderr
    out = text.stdout.decode()
    assert qid in out and re.search(r"\bpending\b\s+<?someone@remote\.example>?", out), out

    js = mta.cli("queue", "list", "--json")
    assert js.returncode == 0, js.stderr
    entries = json.loads(js.stdout)
    (entry,) = [e for e in entries if e.get("id") == qid]
    assert entry["sender"] in ("a@r.example", "<a@r.example>"), entry
    rcpts = [(r["address"].strip("<>"), r["state"]) for r in entry["recipients"]]
    assert rcpts == [("someone@remote.example", "pending")], entry
    assert len(entries) == 1, entries
    mta.assert_alive()
