"""The browser tests' harness (scripts/browser-tests.py): real distlog
processes on ephemeral ports, plain HTTP, and a headless Chromium driven by
Selenium with its console log, color scheme and window size."""

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

from selenium import webdriver
from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.environ.get("DISTLOG_BIN") or os.path.join(ROOT, "target", "debug", "distlog")
SHOTS = os.environ.get("SCREENSHOT_DIR") or os.path.join(ROOT, "target", "ui-screenshots")
LAPTOP = (1366, 900)
PHONE = (390, 844)
XSS = '<img src=x onerror=alert(1)>'
TOKEN = "console-test-token-0123456789abcdef0123456789"

work = tempfile.mkdtemp(prefix="distlog-browser.")
processes = []
started = time.monotonic()


def log(message):
    print(f"[browser {time.monotonic() - started:5.1f} s] {message}", flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method, url, body=None, headers=None):
    """(status, parsed JSON or bytes) of one request; never raises on a status."""
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            status, data, kind = response.status, response.read(), response.headers.get("content-type", "")
    except urllib.error.HTTPError as error:
        status, data, kind = error.code, error.read(), error.headers.get("content-type", "")
    return status, (json.loads(data) if kind.startswith("application/json") else data)


def append(url, value, token=None):
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = "Bearer " + token
    status, body = http("POST", url + "/", json.dumps(value).encode(), headers)
    assert status == 201, (status, body)
    return body["offset"]


def start_node(name, port, *flags, data_of=None):
    data = os.path.join(work, data_of or name)
    out = open(os.path.join(work, name + ".log"), "w")
    process = subprocess.Popen(
        [BIN, "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", data, "--fsync", "never", *flags],
        stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
    )
    processes.append(process)
    return process


def wait_until(what, seconds, check, interval=0.02):
    deadline = time.monotonic() + seconds
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {seconds} s waiting for {what}")
        time.sleep(interval)


def wait_healthy(url):
    def up():
        try:
            return http("GET", url + "/healthz")[0] == 200
        except OSError:
            return False
    wait_until(url + " to answer", 10, up)


def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--no-first-run", "--disable-extensions", "--hide-scrollbars"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=shutil.which("chromedriver") or "/usr/bin/chromedriver")
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_window_size(*LAPTOP)
    return driver


def scheme(driver, dark):
    driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {
        "features": [{"name": "prefers-color-scheme", "value": "dark" if dark else "light"}],
    })


def viewport(driver, size):
    width, height = size
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600,
    })


def screenshots(driver, name):
    os.makedirs(SHOTS, exist_ok=True)
    for size, size_name in ((LAPTOP, "laptop"), (PHONE, "phone")):
        viewport(driver, size)
        time.sleep(0.1)
        wide = js(driver, "return document.documentElement.scrollWidth")
        assert wide <= size[0], f"{name}: the page is {wide} px wide in a {size[0]} px window"
        for dark in (False, True):
            scheme(driver, dark)
            time.sleep(0.15)
            driver.save_screenshot(os.path.join(SHOTS, f"{name}-{size_name}-{'dark' if dark else 'light'}.png"))
    viewport(driver, LAPTOP)
    scheme(driver, False)


def text(driver, css):
    return driver.find_element(By.CSS_SELECTOR, css).text


def js(driver, script, *args):
    return driver.execute_script(script, *args)


def console_errors(driver, allowed):
    """Browser log entries at SEVERE, except network failures of `allowed` URL parts."""
    bad = []
    for entry in driver.get_log("browser"):
        if entry["level"] != "SEVERE":
            continue
        if entry.get("source") == "network" and any(part in entry["message"] for part in allowed):
            continue
        bad.append(entry["message"])
    return bad


def no_alert(driver):
    try:
        alert = driver.switch_to.alert
    except NoAlertPresentException:
        return True
    message = alert.text
    alert.dismiss()
    raise AssertionError(f"an alert opened: {message!r}")



def first_record(driver):
    """The offset of the first record on the record browser's page, or None."""
    return js(driver, "const li = document.querySelector('#record-list li.record'); return li ? Number(li.dataset.offset) : null")


def tail_offsets(driver):
    return js(driver, "return [...document.querySelectorAll('#tail-list li.record')].map(li => Number(li.dataset.offset))")


def stop_all():
    for process in processes:
        if process.poll() is None:
            process.terminate()
    for process in processes:
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
    shutil.rmtree(work, ignore_errors=True)


def dump_node_logs(out):
    for name in sorted(os.listdir(work)):
        if name.endswith(".log"):
            with open(os.path.join(work, name)) as f:
                lines = [line for line in f if not line.startswith("  ")]
                print(f"---- {name} (last lines)\n" + "".join(lines[-15:]), file=out)
