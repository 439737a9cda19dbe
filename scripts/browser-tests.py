"""The web console (/ui) in a real browser: Debian's Chromium driven by
Selenium against real distlog processes on ephemeral ports.

Run by scripts/browser-tests.sh (which makes the virtualenv). Checks, each
printed as it passes:
  - a 3-node cluster's console shows 3 members and the leader; a killed
    member turns red (state "down") within 2 s;
  - a record appended over HTTP shows in the live tail within 1 s; pausing
    and resuming, or the node restarting under the page, misses and repeats
    nothing;
  - jumping to an offset, and to a time (GET /?from_timestamp=, SKIPPED
    with a message where the node does not serve it yet);
  - a record {"x":"<img src=x onerror=alert(1)>"} shows as text: no alert,
    no <img> in the record lists;
  - the append form writes (a same-origin POST), a binary record shows as
    hex and base64, control offsets as gaps;
  - a --follow replica says what it is and sends writers to its leader;
  - a cluster's named log shows in the Logs card with its replicas and leader;
  - live data moves nothing (Chromium's layout-shift score), and no page
    is wider than the window, laptop or phone;
  - with --token-file, the page asks for a token, keeps it in
    sessionStorage and works once signed in;
  - no error in the browser console (the failed GET /consumers of a node
    without consumer positions is expected, and so are the 401s that make
    the page ask for a token).
Screenshots (light and dark, 1366x900 and 390x844) go to
$SCREENSHOT_DIR (default target/ui-screenshots).
"""

import base64
import json
import os
import signal
import sys
import time

from selenium.common.exceptions import TimeoutException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "browser"))
from harness import (  # noqa: E402
    BIN, SHOTS, TOKEN, XSS, append, browser, console_errors, dump_node_logs, first_record, free_port, http, js,
    log, no_alert, screenshots, start_node, stop_all, tail_offsets, text, wait_healthy, wait_until, work,
)


def check_standalone(driver):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    node = start_node("standalone", port)
    wait_healthy(url)
    first = append(url, {"hello": "console", "n": 18446744073709551615, "nested": {"list": [1, 2.5, True, None]}})
    xss = append(url, {"x": XSS})
    binary = http("POST", url + "/", bytes(range(40)), {"Content-Type": "application/octet-stream"})
    assert binary[0] == 201, binary
    for i in range(30):
        append(url, {"i": i, "kind": "filler"})

    driver.get(url + "/ui")
    wait_until("the role badge", 5, lambda: text(driver, "#node-role") == "standalone")
    wait_until("the tail to be live", 5, lambda: text(driver, "#tail-state") == "live")
    log("standalone: the page shows a standalone node and the tail is live")
    check_still_while_live(driver, url)
    check_tail(driver, url)
    check_record_browser(driver, url, first, xss)
    check_time_jump(driver, url)
    check_append_form(driver, url)

    wait_until("a rate on the chart", 6, lambda: text(driver, "#rate-records") not in ("", "–"))
    js(driver, "window.scrollTo(0, 0)")
    screenshots(driver, "standalone")
    errors = console_errors(driver, ["/consumers"])
    assert not errors, errors
    no_alert(driver)
    log("standalone: no errors in the browser console")
    check_replica(driver, url)
    driver.get(url + "/ui")
    check_reconnect(driver, node, port)


def check_tail(driver, url):
    t0 = time.monotonic()
    marker = append(url, {"marker": "tail-1"})
    wait_until("the record in the live tail", 1.0, lambda: marker in tail_offsets(driver))
    log(f"live tail: record {marker} shown {time.monotonic() - t0:.2f} s after its append (limit 1 s)")

    # Pause, append three, resume: exactly those three arrive, in order.
    driver.find_element(By.ID, "tail-toggle").click()
    wait_until("the tail to pause", 2, lambda: text(driver, "#tail-state") == "paused")
    count = int(text(driver, "#tail-count"))
    while_paused = [append(url, {"while_paused": i}) for i in range(3)]
    time.sleep(0.3)
    assert int(text(driver, "#tail-count")) == count, "records arrived while paused"
    driver.find_element(By.ID, "tail-toggle").click()
    wait_until("the records appended while paused", 2, lambda: int(text(driver, "#tail-count")) == count + 3)
    shown = tail_offsets(driver)
    assert shown[-3:] == while_paused and len(shown) == len(set(shown)), shown
    log("live tail: pause and resume missed and repeated nothing")

    # A burst: 5000 records in one batch are all counted, the list keeps the last 200.
    count = int(text(driver, "#tail-count"))
    batch = "".join(json.dumps({"burst": i}) + "\n" for i in range(5000)).encode()
    status, body = http("POST", url + "/", batch, {"Content-Type": "application/x-ndjson"})
    assert status == 201, (status, body)
    t0 = time.monotonic()
    wait_until("the burst to be counted", 10, lambda: int(text(driver, "#tail-count")) == count + 5000)
    shown = tail_offsets(driver)
    assert len(shown) <= 200 and shown[-1] == body["last_offset"], (len(shown), shown[-1:], body)
    log(f"live tail: a burst of 5000 records counted in {time.monotonic() - t0:.2f} s, the last 200 shown")


def check_record_browser(driver, url, first, xss):
    field = driver.find_element(By.ID, "offset-input")
    field.clear()
    field.send_keys(str(xss) + Keys.ENTER)
    wait_until("the page from the offset", 3, lambda: first_record(driver) == xss)
    log(f"record browser: jumped to offset {xss}")

    # The XSS record is text; nothing became an element.
    record = driver.find_element(By.CSS_SELECTOR, f'#record-list li[data-offset="{xss}"]')
    assert XSS in record.text, f"record {xss} shows {record.text!r}, not the text {XSS!r}"
    assert not driver.find_elements(By.CSS_SELECTOR, "#record-list img, #tail-list img, main img")
    no_alert(driver)
    log("record browser: the <img onerror> record shows as text, with no element and no alert")

    # Binary as hex and base64; the big number exactly as appended.
    binary_item = driver.find_element(By.CSS_SELECTOR, f'#record-list li[data-offset="{xss + 1}"]')
    assert "00000000  00 01 02 03" in binary_item.text, binary_item.text
    assert base64.b64encode(bytes(range(40))).decode() in binary_item.text
    js(driver, "document.getElementById('page-first').click()")
    wait_until("the oldest page", 3, lambda: first_record(driver) == first)
    assert "18446744073709551615" in text(driver, f'#record-list li[data-offset="{first}"]')
    link = driver.find_element(By.CSS_SELECTOR, f'#record-list li[data-offset="{first}"] header a')
    assert link.get_attribute("href") == f"{url}/{first}", link.get_attribute("href")
    log("record browser: binary as hex and base64, 2^64-1 kept exactly, a link per record")

    # Page forwards (the arrow keys, with nothing focused) and backwards (the button).
    js(driver, "document.activeElement.blur()")
    driver.find_element(By.TAG_NAME, "body").send_keys(Keys.ARROW_RIGHT)
    wait_until("the next page", 3, lambda: first_record(driver) == first + 20)
    js(driver, "document.getElementById('page-prev').click()")
    wait_until("the previous page", 3, lambda: first_record(driver) == first)
    log("record browser: pages forwards and backwards")


def check_append_form(driver, url):
    """The form's writes are same-origin POSTs, which the Origin check accepts."""
    box = driver.find_element(By.ID, "append-body")
    box.clear()
    box.send_keys('{"from": "the form"}')
    driver.find_element(By.ID, "append-send").click()
    wait_until("the append answer", 3, lambda: "Appended at" in text(driver, "#append-result"))
    offset = int(text(driver, "#append-result a").lstrip("#"))
    assert http("GET", f"{url}/{offset}")[1]["value"] == {"from": "the form"}
    driver.find_element(By.CSS_SELECTOR, 'input[name=kind][value=ndjson]').click()
    box.clear()
    box.send_keys('{"batch": 1}\n{"batch": 2}')
    driver.find_element(By.ID, "append-send").click()
    wait_until("the batch answer", 3, lambda: " to #" in text(driver, "#append-result"))
    log("append form: one record and an NDJSON batch written from the page (same-origin POST)")

    status, body = http("POST", url + "/", b'{"a":1}', {"Origin": "http://evil.example", "Content-Type": "application/json"})
    assert status == 403 and body["code"] == "cross_origin", (status, body)
    log("another origin's write is still refused (403 cross_origin)")


def check_reconnect(driver, node, port):
    """The node restarts under the page: the tail reconnects with Last-Event-ID and shows
    every record once, those appended before it reconnected included."""
    url = f"http://127.0.0.1:{port}"
    wait_until("the tail to be live", 5, lambda: text(driver, "#tail-state") == "live")
    before = append(url, {"reconnect": "before"})
    wait_until("the record before the restart", 1, lambda: before in tail_offsets(driver))
    node.send_signal(signal.SIGTERM)
    node.wait(timeout=15)
    wait_until("the tail to notice", 5, lambda: text(driver, "#tail-state") in ("reconnecting", "disconnected"))
    start_node("standalone-restarted", port, data_of="standalone")
    wait_healthy(url)
    after = [append(url, {"reconnect": "after", "i": i}) for i in range(3)]
    wait_until("the records appended across the restart", 5, lambda: tail_offsets(driver)[-3:] == after)
    shown = tail_offsets(driver)
    assert len(shown) == len(set(shown)) and shown[-4:] == [before] + after, shown
    assert int(text(driver, "#tail-count")) == len(shown), (text(driver, "#tail-count"), shown)
    errors = console_errors(driver, ["/consumers", "ERR_CONNECTION_REFUSED", "ERR_EMPTY_RESPONSE"])
    assert not errors, errors
    log("live tail: across a node restart it reconnected and missed and repeated nothing")


def check_replica(driver, leader):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    start_node("replica", port, "--follow", leader)
    wait_healthy(url)
    driver.get(url + "/ui")
    wait_until("the role badge", 5, lambda: text(driver, "#node-role") == "replica")
    assert "read-only replica" in text(driver, "#cluster-note")
    assert leader in text(driver, "#cluster-facts")
    box = driver.find_element(By.ID, "append-body")
    box.send_keys('{"to": "a replica"}')
    driver.find_element(By.ID, "append-send").click()
    wait_until("the replica's answer", 3, lambda: "does not take writes" in text(driver, "#append-result"))
    assert leader + "/ui" in text(driver, "#append-result")
    screenshots(driver, "replica")
    errors = console_errors(driver, ["/consumers"])
    assert not errors, errors
    log("replica: the page says it is a read-only replica of its leader, and sends writers there")


def check_still_while_live(driver, url):
    """Live data (tail, polls, rates) moves nothing on the page: the layout shift
    Chromium measures while 40 records arrive over 2 s stays under 0.01 (0.1 is
    what Web Vitals calls good)."""
    # The live tail and the cards around it in view: shifts outside the viewport do not count.
    js(driver, "document.getElementById('tail').scrollIntoView({block: 'center'})")
    js(driver, """
        window.__shift = 0;
        new PerformanceObserver((list) => {
            for (const entry of list.getEntries()) if (!entry.hadRecentInput) window.__shift += entry.value;
        }).observe({type: 'layout-shift'});
    """)
    for i in range(40):
        append(url, {"live": i, "padding": "x" * (i * 10)})
        time.sleep(0.05)
    time.sleep(1.2)
    shift = js(driver, "return window.__shift")
    assert shift < 0.01, f"layout shift {shift} while live data arrived"
    log(f"no layout jumps: layout shift {shift:.4f} while 40 records arrived (limit 0.01)")


def check_time_jump(driver, url):
    before = append(url, {"time": "before"})
    before_stamp = http("GET", f"{url}/{before}")[1]["timestamp"]
    # The time field's precision is a second: the target is the first record of a new second.
    wait_until("the next second", 1.5, lambda: time.time() * 1000 // 1000 > before_stamp // 1000, 0.01)
    target = append(url, {"time": "target"})
    stamp = http("GET", f"{url}/{target}")[1]["timestamp"]
    status, answer = http("GET", f"{url}/?from_timestamp={stamp}&limit=1")
    served = status == 200 and answer.get("records") and answer["records"][0]["offset"] == target
    if not served:
        print("=" * 70)
        print("SKIPPED: jump to a time: this node does not serve GET /?from_timestamp= yet")
        print(f"         (it answered {status} with offset "
              f"{answer['records'][0]['offset'] if status == 200 and answer.get('records') else None}, not {target});")
        print("         the console's time jump waits for that API (branch 'time').")
        print("=" * 70)
        return
    local = js(driver, """
        const d = new Date(arguments[0]);
        const p = (n) => String(n).padStart(2, '0');
        return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
    """, stamp)
    assert before_stamp // 1000 < stamp // 1000
    js(driver, "const f = document.getElementById('time-input'); f.value = arguments[0];", local)
    driver.find_element(By.CSS_SELECTOR, "#jump-time button").click()
    wait_until("the page from the time", 3, lambda: first_record(driver) == target)
    log(f"record browser: jumped to a time ({local}: the first record of that second, offset {target})")


def check_cluster(driver):
    ports = [free_port() for _ in range(3)]
    urls = [f"http://127.0.0.1:{p}" for p in ports]
    nodes = [start_node(f"member{i}", ports[i], "--peers", ",".join(urls), "--advertise-url", urls[i])
             for i in range(3)]
    for url in urls:
        wait_healthy(url)

    def leader():
        status, body = http("GET", urls[0] + "/cluster")
        if status == 200 and body["leader_url"] and len(body["members"]) == 3:
            return body["leader_url"]
        return None
    leader_url = wait_until("a leader", 15, leader, 0.1)
    leader_index = urls.index(leader_url)
    append(leader_url, {"cluster": "hello"})
    driver.get(leader_url + "/ui")
    rows = "#members tbody tr"
    wait_until("3 members, all up", 5, lambda: len(driver.find_elements(By.CSS_SELECTOR, rows)) == 3 and all(
        r.get_attribute("data-state") == "up" for r in driver.find_elements(By.CSS_SELECTOR, rows)))
    leaders = driver.find_elements(By.CSS_SELECTOR, "#members .badge.lead")
    assert len(leaders) == 1, len(leaders)
    assert text(driver, "#node-role") == "cluster leader"
    log("cluster: 3 members shown, one leader")
    written = [append(leader_url, {"event": "order", "id": 1000 + i, "items": [{"sku": "A-1", "qty": i + 1}]})
               for i in range(3)]
    wait_until("the cluster's records in the live tail", 2, lambda: tail_offsets(driver) == written)
    log("cluster: records appended to the leader arrive in its live tail")
    status, created = http("PUT", leader_url + "/logs/orders", b'{"replicas": 3}', {"Content-Type": "application/json"})
    assert status == 201, (status, created)
    log_row = '#logs-table tr[data-log="orders"]'
    wait_until("the named log in the Logs card, led", 5, lambda: driver.find_elements(By.CSS_SELECTOR, log_row) and
               text(driver, log_row + " td:nth-child(4)") not in ("", "–"))
    assert text(driver, log_row + " td:nth-child(3)") == "3", text(driver, log_row)
    log(f"cluster: the named log shows in the Logs card: {text(driver, log_row)}")
    screenshots(driver, "cluster")

    victim = (leader_index + 1) % 3
    _, cluster = http("GET", leader_url + "/cluster")
    victim_id = next(m["id"] for m in cluster["members"] if m["url"] == urls[victim])
    row = f'#members tr[data-member="{victim_id}"]'
    nodes[victim].send_signal(signal.SIGKILL)
    killed = time.monotonic()
    wait_until("the killed member to turn red", 2.0,
               lambda: driver.find_element(By.CSS_SELECTOR, row).get_attribute("data-state") == "down")
    took = time.monotonic() - killed
    wait_until("the leader's word for it", 2, lambda: "voter unreachable" in text(driver, row))
    color = js(driver, "return getComputedStyle(document.querySelector(arguments[0] + ' td')).color", row)
    log(f"cluster: killed member {victim_id} shown down (red, {color}) {took:.2f} s after the kill (limit 2 s)")
    screenshots(driver, "cluster-member-down")
    errors = console_errors(driver, ["/consumers"])
    assert not errors, errors


def check_tokens(driver):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    tokens = os.path.join(work, "token-file")
    with open(tokens, "w") as f:
        f.write(f"operator {TOKEN}\n")
    start_node("tokens", port, "--token-file", tokens)
    wait_healthy(url)
    append(url, {"secret": "visible after sign-in"}, token=TOKEN)
    driver.get(url + "/ui")
    wait_until("the sign-in box", 5, lambda: driver.find_element(By.ID, "signin").is_displayed())
    screenshots(driver, "signin")
    driver.find_element(By.ID, "signin-token").send_keys(TOKEN)
    driver.find_element(By.ID, "signin-save").click()
    wait_until("the page after sign-in", 5, lambda: text(driver, "#node-role") == "standalone")
    wait_until("the records", 5, lambda: "visible after sign-in" in text(driver, "#record-list"))
    assert js(driver, "return sessionStorage.getItem('distlog.token')") == TOKEN
    wait_until("the tail to be live", 5, lambda: text(driver, "#tail-state") == "live")
    marker = append(url, {"marker": "with a token"}, token=TOKEN)
    wait_until("the record in the live tail", 1.0, lambda: marker in tail_offsets(driver))
    box = driver.find_element(By.ID, "append-body")
    box.clear()
    box.send_keys('{"signed": "in"}')
    driver.find_element(By.ID, "append-send").click()
    wait_until("the append answer", 3, lambda: "Appended at" in text(driver, "#append-result"))
    errors = console_errors(driver, ["/consumers", "401 (Unauthorized)"])
    assert not errors, errors
    log("tokens: the page asked for a token, kept it in sessionStorage, read, tailed and appended with it")


def main():
    if not os.access(BIN, os.X_OK):
        sys.exit(f"no distlog binary at {BIN} (set DISTLOG_BIN)")
    driver = browser()
    failed = False
    try:
        check_standalone(driver)
        check_tokens(driver)
        check_cluster(driver)
    except (AssertionError, TimeoutException) as error:
        failed = True
        os.makedirs(SHOTS, exist_ok=True)
        driver.save_screenshot(os.path.join(SHOTS, "failure.png"))
        print(f"FAILED: {error}", file=sys.stderr)
        for entry in driver.get_log("browser"):
            print(f"  browser log: {entry['level']} {entry['message']}", file=sys.stderr)
        dump_node_logs(sys.stderr)
    finally:
        driver.quit()
        stop_all()
    if failed:
        sys.exit(1)
    log(f"all browser checks passed; screenshots in {SHOTS}")


if __name__ == "__main__":
    main()
