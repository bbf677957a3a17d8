"""The web console (`http_listen`) in a real browser: Debian's chromium, driven headless through chromedriver with
Python selenium. The daemon holds a prepared story on loopback: one message whose first attempt on [::1] fails (the
peer there says 421 at the greeting) and is then delivered over IPv4, with a second recipient the peer rejects (so a
bounce goes back to the sender's domain) and a local copy. The subject, a header and the peer's reply carry markup;
the pages must show it as text and run no script. Screenshots are written under the test's tmp dir.
Also: the JSON API against the CLI's --json, the HTTP limits over a raw socket."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import socket
import time
import subprocess
import urllib.error
import urllib.request

import pytest

from conftest import DEADLINE, LOCAL_DOMAIN, Server, ServerStartError, default_settings, free_port
from dnslab import lab_dns  # noqa: F401  (fixture)
from mtalog import events, outbound_settings, story, submit, wait_event, wait_queue_empty
from peers import Behaviour, peers  # noqa: F401  (fixture)

HOSTILE_SUBJECT = "<script>window.__pwned='subject'</script>\"><img src=x onerror=\"window.__pwned='img'\">"
HOSTILE_REPLY = "550 5.1.1 <script>window.__pwned='reply'</script> no such user"
IPV6_COLOUR = "#2563eb"
IPV4_COLOUR = "#ea580c"


def chromium_paths() -> tuple[str, str] | None:
    browser = shutil.which("chromium")
    driver = shutil.which("chromedriver") or ("/usr/bin/chromedriver" if os.path.exists("/usr/bin/chromedriver")
                                              else None)
    return (browser, driver) if browser and driver else None


@pytest.fixture
def browser(tmp_path):
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        if os.environ.get("CI") == "true":
            pytest.fail("python selenium is missing (scripts/test installs it)")
        pytest.skip("python selenium is missing")
    paths = chromium_paths()
    if paths is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium and chromium-driver are missing (scripts/test installs them)")
        pytest.skip("chromium and chromium-driver are missing")
    options = webdriver.ChromeOptions()
    options.binary_location = paths[0]
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1400,1000", f"--user-data-dir={tmp_path / 'chromium-profile'}",
                 "--no-first-run", "--disable-background-networking", "--disable-component-update"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=paths[1]), options=options)
    driver.set_page_load_timeout(DEADLINE)
    yield driver
    driver.quit()


def screenshot(driver, tmp_path, name: str) -> str:
    path = tmp_path / f"console-{name}.png"
    assert driver.save_screenshot(str(path)), path
    print(f"screenshot: {path}")
    return str(path)


@pytest.fixture
def story_server(start_server, peers, lab_dns):  # noqa: F811
    """The prepared story; returns (server, console base URL, original id, report id, double-bounce notice id).
    The bounce to alice@src.test is refused too (550), so it ends in a double-bounce notice to the postmaster."""
    port = free_port()
    peers("::1", port, [Behaviour(greeting="421 4.3.2 not now")], name="v6-busy")
    good = peers("127.0.0.1", port, [Behaviour(rcpt=lambda rcpt: HOSTILE_REPLY if rcpt.startswith("carol")
                                               else "550 5.1.1 alice has left" if rcpt.startswith("alice")
                                               else "250 2.1.5 Ok")], name="v4-peer")
    http_port = free_port()
    srv = start_server(**outbound_settings(
        routes=f"remote.example=dual.example.test:{port}, src.test=[127.0.0.1]:{port}",
        dns_servers=lab_dns.server, allow_loopback_mx="yes", http_listen=f"127.0.0.1:{http_port}"))
    srv.wait_log(r"http-listening")
    qid = submit(srv, "alice@src.test", ["bob@remote.example", "carol@remote.example", f"dana@{LOCAL_DOMAIN}"],
                 subject=HOSTILE_SUBJECT, extra_headers=b"X-Eight-Bit: caf\xe9 \xff<b>bold</b>\r\n"
                 b"X-Encoded: =?utf-8?q?=3Cscript=3Ewindow.=5F=5Fpwned=3D'2047'=3C/script=3E?=\r\n")
    bounce = wait_event(srv, "bounce", id=qid)[0]
    double = wait_event(srv, "double-bounce", id=bounce["ndr"])[0]
    wait_event(srv, "removed", id=double["notice"])
    wait_queue_empty(srv)
    good.wait_messages(1, DEADLINE)
    attempts = [(a["family"], a["result"]) for a in events(srv, "delivery", id=qid) if "family" in a.fields]
    assert attempts[0] == ("ipv6", "failed") and ("ipv4", "sent") in attempts, story(srv, qid)
    return srv, f"http://127.0.0.1:{http_port}", qid, bounce["ndr"], double["notice"]


def get(url: str) -> tuple[int, dict, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=DEADLINE) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def assert_no_script_ran(driver, live: bool = False) -> None:
    """No hostile script ran and no hostile element exists; on a live page the only script is the console's own,
    allowed by the hash in the Content-Security-Policy, and it did run."""
    assert driver.execute_script("return window.__pwned === undefined"), driver.execute_script(
        "return window.__pwned")
    scripts = driver.find_elements("tag name", "script")
    assert len(scripts) == (1 if live else 0), [s.get_attribute("innerHTML")[:80] for s in scripts]
    if live:
        source = scripts[0].get_attribute("innerHTML")
        digest = base64.b64encode(hashlib.sha256(source.encode()).digest()).decode()
        assert driver.execute_script("return document.body.dataset.live") == "on"
        _, headers, _ = get(driver.current_url)
        assert f"script-src 'sha256-{digest}'" in headers["Content-Security-Policy"], headers
    assert driver.find_elements("tag name", "img") == []


def test_message_page_shows_the_time_line_the_report_and_escapes_everything(story_server, browser, tmp_path):
    srv, base, qid, report, notice = story_server
    browser.get(f"{base}/message/{qid}")
    assert browser.title.startswith(f"Message {qid}")
    rows = browser.find_elements("css selector", "#timeline g.row")
    assert [(r.get_attribute("data-addr"), r.get_attribute("data-family")) for r in rows] == \
        [("::1", "ipv6"), ("127.0.0.1", "ipv4")]
    marks = browser.find_elements("css selector", "#timeline circle.mark")
    by_seq = sorted(marks, key=lambda m: int(m.get_attribute("data-seq")))
    assert [m.get_attribute("data-family") for m in by_seq][0] == "ipv6"
    assert by_seq[0].get_attribute("data-result") == "failed"
    assert by_seq[0].get_attribute("stroke") == IPV6_COLOUR and by_seq[0].get_attribute("fill") == "#fff"
    sent = [m for m in marks if m.get_attribute("data-result") == "sent"]
    assert sent and all(m.get_attribute("fill") == IPV4_COLOUR for m in sent)
    # The hostile values are on the page as text.
    assert "window.__pwned='reply'" in browser.find_element("id", "journal").text
    assert_no_script_ran(browser, live=True)
    path = screenshot(browser, tmp_path, "message")
    assert os.path.getsize(path) > 1000

    # From the message to its report, and back through the report's "report on" link.
    chain = browser.find_elements("css selector", "#chain li")
    assert [(li.get_attribute("data-id"), li.get_attribute("data-depth")) for li in chain] == \
        [(qid, "0"), (report, "1"), (notice, "2")]
    browser.find_element("css selector", f"#chain li[data-id='{report}'] a").click()
    assert browser.title.startswith(f"Message {report}")
    assert browser.find_element("id", "gone").is_displayed()
    screenshot(browser, tmp_path, "report")
    browser.find_element("css selector", "a.report-of").click()
    assert browser.title.startswith(f"Message {qid}")
    # The double-bounce notice names the bounce it is about, and its page links back to it.
    browser.get(f"{base}/message/{notice}")
    assert browser.find_element("css selector", "a.report-of").text == report


def test_overview_queue_and_mailbox_pages(story_server, browser, tmp_path):
    srv, base, qid, _, _ = story_server
    browser.get(base + "/")
    listeners = browser.find_elements("css selector", "#listeners tr td:nth-child(3)")
    assert {cell.text for cell in listeners} >= {"ipv6", "ipv4"}
    deadline = time.monotonic() + DEADLINE
    while not browser.find_elements("id", "selfcheck"):  # the self-check runs off the start path
        assert time.monotonic() < deadline, "the self-check never reached the overview"
        time.sleep(0.1)
        browser.get(base + "/")
    lines = [li.text for li in browser.find_elements("css selector", "#selfcheck li.listener")]
    assert any("serves ipv6" in line for line in lines) and any("serves ipv4" in line for line in lines), lines
    bars = {g.get_attribute("data-family"): (int(g.get_attribute("data-attempts")), int(g.get_attribute("data-sent")))
            for g in browser.find_elements("css selector", "#families g.family")}
    assert bars["ipv6"] == (2, 0) and bars["ipv4"][1] == 1, bars  # only bob's copy was sent
    screenshot(browser, tmp_path, "overview")
    browser.get(base + "/queue")
    assert browser.find_element("id", "empty").text == "The queue is empty."
    assert_no_script_ran(browser, live=True)
    # Live refresh: a new message makes the page reload itself (the marker set on this page instance vanishes).
    browser.execute_script("window.__marker = 1")
    submit(srv, "alice@src.test", [f"dana@{LOCAL_DOMAIN}"], subject="live refresh")
    deadline = time.monotonic() + DEADLINE
    while browser.execute_script("return window.__marker === 1"):
        assert time.monotonic() < deadline, "the queue page did not refresh after new journal events"
        time.sleep(0.1)
    browser.get(base + "/mailboxes")
    browser.find_element("link text", f"dana@{LOCAL_DOMAIN}").click()
    subjects = browser.find_elements("css selector", "#messages td a")
    assert sorted(a.text for a in subjects) == sorted([HOSTILE_SUBJECT, "live refresh"])
    [subject_link] = [a for a in subjects if a.text == HOSTILE_SUBJECT]
    subject_link.click()
    headers = {row.find_element("tag name", "th").text: row.find_element("tag name", "td").text
               for row in browser.find_elements("css selector", "#headers tr")}
    assert headers["Subject"] == HOSTILE_SUBJECT
    assert "\ufffd<b>bold</b>" in headers["X-Eight-Bit"]
    assert headers["X-Encoded"] == "<script>window.__pwned='2047'</script>"  # RFC 2047 decoded, shown as text
    assert_no_script_ran(browser)
    screenshot(browser, tmp_path, "mailbox-message")
    browser.find_element("id", "raw").click()
    assert HOSTILE_SUBJECT in browser.find_element("tag name", "pre").text
    assert_no_script_ran(browser)


def test_json_api_is_the_cli_json(story_server):
    srv, base, qid, report, notice = story_server
    status, headers, body = get(f"{base}/api/trace/{qid}")
    assert status == 200 and headers["Content-Type"] == "application/json"
    cli = srv.cli("trace", "--json", qid)
    assert cli.returncode == 0, cli.stderr
    assert json.loads(body) == json.loads(cli.stdout)
    status, _, body = get(f"{base}/api/message/{qid}")
    message = json.loads(body)
    assert status == 200 and message["queued"] is False
    assert [e["event"] for e in message["history"]][0] == "received"
    status, _, body = get(f"{base}/api/queue")
    assert status == 200 and json.loads(body) == json.loads(srv.cli("queue", "list", "--json").stdout)
    status, _, body = get(f"{base}/api/mailboxes")
    assert {"domain": LOCAL_DOMAIN, "user": "dana", "messages": 1} in json.loads(body)
    status, _, body = get(f"{base}/api/mailboxes/{LOCAL_DOMAIN}/dana")
    [entry] = json.loads(body)
    assert entry["subject"] == HOSTILE_SUBJECT
    status, _, body = get(f"{base}/api/events?since=0")
    feed = json.loads(body)
    mine = [e for e in feed["events"] if e["id"] in (qid, report)]
    assert [e["event"] for e in mine if e["id"] == qid][0] == "received"
    assert {e["id"] for e in mine} == {qid, report}
    assert [e["event"] for e in feed["events"] if e["id"] == report].count("double-bounce") == 1
    later = json.loads(get(f"{base}/api/events?since={feed['cursor'] + 1}")[2])
    assert later["events"] == [] and later["cursor"] == feed["cursor"] + 1
    assert get(f"{base}/api/events?since=yesterday")[0] == 400
    status, headers, body = get(f"{base}/metrics")
    assert status == 200 and b"dualmta_queue_messages 0" in body
    [name] = [p.name for p in (srv.spool / "mailboxes" / LOCAL_DOMAIN / "dana" / "new").iterdir()]
    status, headers, body = get(f"{base}/mailboxes/{LOCAL_DOMAIN}/dana/new/{name}/eml")
    assert status == 200 and headers["Content-Type"] == "message/rfc822"
    assert headers["Content-Disposition"].startswith('attachment; filename="') and body.startswith(b"Return-Path:")
    assert get(f"{base}/api/message/NOTANID")[0] == 404
    assert get(f"{base}/mailboxes/..%2F..%2Fetc/passwd")[0] == 404


def raw_exchange(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as s:
        s.sendall(data)
        received = b""
        while chunk := s.recv(65536):
            received += chunk
        return received


def test_http_refusals_over_the_wire(start_server):
    http_port = free_port()
    srv = start_server(http_listen=f"127.0.0.1:{http_port}")
    srv.wait_log(r"http-listening")
    assert raw_exchange(http_port, b"POST /queue HTTP/1.1\r\nHost: x\r\n\r\n").startswith(b"HTTP/1.1 405 ")
    assert raw_exchange(http_port, b"GET / HTTP/1.1\r\n" + b"X-A: b\r\n" * 60 + b"\r\n").startswith(b"HTTP/1.1 431 ")
    assert raw_exchange(http_port, b"EHLO me\r\n\r\n").startswith(b"HTTP/1.1 400 ")
    assert raw_exchange(http_port, b"GET /nothing HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 404 ")
    head = raw_exchange(http_port, b"HEAD / HTTP/1.1\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ") and head.endswith(b"\r\n\r\n")
    assert b"Content-Security-Policy: default-src 'none'" in head
    srv.assert_alive()


def hold_port(port: int) -> socket.socket | None:
    """Listens on 127.0.0.1:port; None when something else already does (then it is taken all the same)."""
    holder = socket.socket()
    try:
        holder.bind(("127.0.0.1", port))
        holder.listen(1)
        return holder
    except OSError:
        holder.close()
        return None


def test_default_port_taken_warns_and_runs_without_the_console(start_server):
    holder = hold_port(8025)
    try:
        srv = start_server(http_listen=None)
        line = srv.wait_log(r"http-disabled")
        assert "127.0.0.1:8025" in line, line
        srv.assert_alive()
    finally:
        if holder:
            holder.close()


def test_a_configured_console_address_that_cannot_be_bound_is_fatal(tmp_path):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        taken = holder.getsockname()[1]
        settings = default_settings(tmp_path / "spool")
        settings["http_listen"] = f"127.0.0.1:{taken}"
        server = Server(tmp_path, tmp_path / "spool", settings, free_port(), "fatal")
        with pytest.raises(ServerStartError) as failure:
            server.start()
        assert f"http_listen 127.0.0.1:{taken}" in str(failure.value), str(failure.value)


def post(url: str, token: str | None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, method="POST", data=b"")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=DEADLINE) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def test_actions_need_the_token_and_act_like_the_cli(start_server, browser, tmp_path):
    token = "lab-token-0123456789"
    http_port = free_port()
    srv = start_server(**outbound_settings(routes=f"remote.example=[127.0.0.1]:{free_port()}", retry_schedule="1h",
                                           http_listen=f"127.0.0.1:{http_port}", http_token=token))
    srv.wait_log(r"http-listening")
    qid = submit(srv, "alice@src.test", ["bob@remote.example"])
    wait_event(srv, "deferred", id=qid)
    base = f"http://127.0.0.1:{http_port}"

    def held() -> bool:
        return json.loads(srv.cli("queue", "show", "--json", qid).stdout)["held"]

    # A queued message's page: envelope with expires, the pending recipient, the refused IPv4 attempt.
    browser.get(f"{base}/message/{qid}")
    envelope = {row.find_element("tag name", "th").text: row.find_element("tag name", "td").text
                for row in browser.find_elements("css selector", "#envelope tr")}
    assert envelope["Sender"] == "alice@src.test" and envelope["Expires"].endswith("Z"), envelope
    cells = [td.text for td in browser.find_elements("css selector", "#recipients tr td")]
    assert cells[:2] == ["bob@remote.example", "pending"], cells
    [mark] = browser.find_elements("css selector", "#timeline circle.mark")
    assert (mark.get_attribute("data-family"), mark.get_attribute("data-result")) == ("ipv4", "failed")
    assert_no_script_ran(browser, live=True)
    screenshot(browser, tmp_path, "queued-message")

    # The queue filter, in the API and on the page.
    assert [m["id"] for m in json.loads(get(f"{base}/api/queue?domain=REMOTE.example&state=pending")[2])] == [qid]
    assert json.loads(get(f"{base}/api/queue?rcpt=nobody*")[2]) == []
    assert get(f"{base}/queue?state=lost")[0] == 400
    status, _, page = get(f"{base}/queue?sender=alice@*&sort=next")
    assert status == 200 and f'data-id="{qid}"'.encode() in page

    assert post(f"{base}/api/message/{qid}/hold", None)[0] == 401
    assert post(f"{base}/api/message/{qid}/hold", token + "x")[0] == 401
    assert not held()
    status, body = post(f"{base}/api/message/{qid}/hold", token)
    assert status == 200 and json.loads(body)["ok"] is True, body
    assert held()
    assert get(f"{base}/api/message/{qid}/hold")[0] == 404  # GET never acts
    status, body = post(f"{base}/api/message/{qid}/release", token)
    assert status == 200 and not held(), body
    status, body = post(f"{base}/api/message/{qid}/delete", token)
    assert status == 200 and json.loads(body)["output"] == f"{qid}: deleted\n", body
    wait_queue_empty(srv)
    assert post(f"{base}/api/message/{qid}/hold", token)[0] == 404


def test_connection_flood_gets_503_and_the_slots_come_back(start_server):
    """32 clients that send half a request head hold every slot; the next connection is answered 503 at once and
    closed; once the holders hang up, the console answers again. The SMTP side keeps working throughout."""
    http_port = free_port()
    srv = start_server(http_listen=f"127.0.0.1:{http_port}")
    srv.wait_log(r"http-listening")
    holders = []
    try:
        for _ in range(32):
            s = socket.create_connection(("127.0.0.1", http_port), timeout=DEADLINE)
            s.sendall(b"GET / HT")
            holders.append(s)
        # The accept queue admits connections in order; poll until the 33rd is refused (all 32 admitted).
        deadline = time.monotonic() + DEADLINE
        while True:
            reply = raw_exchange(http_port, b"GET / HTTP/1.1\r\n\r\n")
            if reply.startswith(b"HTTP/1.1 503 "):
                break
            assert time.monotonic() < deadline, reply[:80]
            time.sleep(0.02)
        with srv.session() as c:
            c.cmd(b"QUIT")
    finally:
        for s in holders:
            s.close()
    deadline = time.monotonic() + DEADLINE
    while not raw_exchange(http_port, b"GET / HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 200 "):
        assert time.monotonic() < deadline, "the console did not free its slots after the clients hung up"
        time.sleep(0.02)
    srv.assert_alive()


def test_paper_test1_story_on_the_time_line(start_server, lab_dns, browser, tmp_path):  # noqa: F811
    """The paper's Test 1 on loopback (fault rules as in test_faults.py: mx10's three AAAA unreachable, its two A
    refused, mx20 reached over IPv6): the message page draws the six attempts, one row per address in the order
    tried, five rings then the filled IPv6 mark of mx20."""
    from test_faults import rules
    port = free_port("::1", "127.0.0.21")
    start_server(spool=tmp_path / "mx20", port=port, listen=f"[::1]:{port}, 127.0.0.21:{port}",
                 hostname="mx20.paper1.example.test", local_domains="paper1.example.test")
    http_port = free_port()
    sender = start_server(**outbound_settings(
        dns_servers=lab_dns.server, mx_port=str(port), allow_loopback_mx="yes", bind_address6="::1",
        http_listen=f"127.0.0.1:{http_port}",
        fault=rules("outbound connect family=ipv6 mx=mx10.paper1.example.test unreachable",
                    "outbound connect family=ipv4 mx=mx10.paper1.example.test refuse")))
    sender.wait_log(r"http-listening")
    qid = submit(sender, "alice@src.test", ["user@paper1.example.test"], subject="paper test 1")
    wait_event(sender, "removed", id=qid)
    browser.get(f"http://127.0.0.1:{http_port}/message/{qid}")
    rows = browser.find_elements("css selector", "#timeline g.row")
    assert [(r.get_attribute("data-addr"), r.get_attribute("data-family")) for r in rows] == [
        ("2001:db8:10::1", "ipv6"), ("2001:db8:10::2", "ipv6"), ("2001:db8:10::3", "ipv6"),
        ("127.0.0.11", "ipv4"), ("127.0.0.12", "ipv4"), ("::1", "ipv6")], story(sender, qid)
    marks = sorted(browser.find_elements("css selector", "#timeline circle.mark"),
                   key=lambda m: int(m.get_attribute("data-seq")))
    assert [(m.get_attribute("data-family"), m.get_attribute("data-result")) for m in marks] == \
        [("ipv6", "failed")] * 3 + [("ipv4", "failed")] * 2 + [("ipv6", "sent")]
    assert marks[-1].get_attribute("fill") == IPV6_COLOUR
    screenshot(browser, tmp_path, "paper-test1")
