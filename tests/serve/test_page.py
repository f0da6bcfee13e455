"""The chat page at `/` in a real browser: Debian's headless Chromium loads it from a running
`elastic serve`, the test types a question and sends it through the page's own form (DevTools
protocol over a websocket, `websocket-client` from .venv), then checks the streamed answer and that
the routing map was drawn, and saves a screenshot.
Run: .venv/bin/python tests/serve/test_page.py [--elastic build/bin/elastic] [--screenshot FILE]."""
import base64
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

import websocket

from serving import Server, check, elastic_binary

elastic = elastic_binary(sys.argv)
shot = sys.argv[sys.argv.index("--screenshot") + 1] if "--screenshot" in sys.argv else None
browser = shutil.which("chromium-headless-shell") or shutil.which("chromium")
check(browser is not None, "a headless Chromium is installed (make setup: chromium-headless-shell)")


class DevTools:
    def __init__(self, ws_url):
        self.ws = websocket.create_connection(ws_url, timeout=60)
        self.ids = itertools.count(1)

    def call(self, method, **params):
        i = next(self.ids)
        self.ws.send(json.dumps({"id": i, "method": method, "params": params}))
        while True:
            m = json.loads(self.ws.recv())
            if m.get("id") == i:
                if "error" in m:
                    raise RuntimeError("%s: %s" % (method, m["error"]))
                return m["result"]

    def eval(self, expr):
        r = self.call("Runtime.evaluate", expression=expr, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in r:
            raise RuntimeError("page error: %s" % r["exceptionDetails"])
        return r["result"].get("value")


with Server(elastic, ["--parallel", "2"]) as s:
    profile = tempfile.mkdtemp(prefix="elastic-chromium-")
    chrome = subprocess.Popen([browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                               "--remote-debugging-port=0", "--user-data-dir=" + profile, "--window-size=1280,800",
                               "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    try:
        port_file = os.path.join(profile, "DevToolsActivePort")
        deadline = time.time() + 60
        while not os.path.exists(port_file) and time.time() < deadline:
            time.sleep(0.1)
        check(os.path.exists(port_file), "Chromium started with its DevTools port")
        port = int(open(port_file).read().split()[0])
        targets = json.load(urllib.request.urlopen("http://127.0.0.1:%d/json/list" % port, timeout=10))
        page = next(t for t in targets if t.get("type") == "page")
        dt = DevTools(page["webSocketDebuggerUrl"])
        dt.call("Page.enable")
        dt.call("Page.navigate", url=s.url + "/")
        deadline = time.time() + 30
        while dt.eval("document.readyState") != "complete" or not dt.eval("!!document.getElementById('q')"):
            if time.time() > deadline:
                check(False, "the page loads within 30 s")
            time.sleep(0.1)
        check(dt.eval("document.title") == "elastic serve", "the page is served at /")
        question = "What is the capital of France?"
        dt.eval("document.getElementById('q').value = %s; document.getElementById('f').requestSubmit(); true" % json.dumps(question))
        deadline = time.time() + 120
        while dt.eval("(document.querySelector('.assistant') || {dataset: {}}).dataset.done") not in ("1", "error"):
            if time.time() > deadline:
                check(False, "the answer finishes within 120 s")
            time.sleep(0.2)
        answer = dt.eval("document.querySelector('.assistant').textContent")
        check(dt.eval("document.querySelector('.assistant').dataset.done") == "1" and answer.strip(),
              "the streamed answer is shown: %r" % answer)
        if s.real:
            check("Paris" in answer, "the answer names Paris")
        cells = int(dt.eval("document.getElementById('map').dataset.rendered"))
        _, models = s.get("/v1/models")
        info = json.loads(models)["data"][0]["elastic"]
        check(cells == info["layers"] * info["kv_heads"], "the routing map drew %d cells (%d layers x %d KV heads)" %
              (cells, info["layers"], info["kv_heads"]))
        check("Ω_MSR" in dt.eval("document.getElementById('mapinfo').textContent"), "the map's caption gives Ω_MSR")
        if shot:
            png = base64.b64decode(dt.call("Page.captureScreenshot", format="png")["data"])
            with open(shot, "wb") as f:
                f.write(png)
            print("screenshot:", shot)
    finally:
        # Debian's chromium-headless-shell is a shell script that runs the browser as its child, so
        # ending only the process we started would leave the browser running: end its whole group.
        def signal_group(sig):
            try:
                os.killpg(chrome.pid, sig)
            except ProcessLookupError:
                pass
        signal_group(signal.SIGTERM)
        try:
            chrome.wait(20)
        except subprocess.TimeoutExpired:
            pass
        deadline = time.time() + 10
        while time.time() < deadline:  # the browser's own processes may outlive the script
            try:
                os.killpg(chrome.pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        signal_group(signal.SIGKILL)
        chrome.wait()
        shutil.rmtree(profile, ignore_errors=True)
print("test_page: all passed")
