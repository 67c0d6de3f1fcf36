"""Open every page of the built book in headless Chromium and fail on what a reader would see.

    python tests/check_book.py _build/html --toc _toc.yml [--screenshots DIR]

A page fails when it is missing (every `_toc.yml` entry must have its HTML), when an image
does not load, when it shows a Python traceback or error output, or when a local file it
needs (CSS, JS, image) fails to load. Requests to other hosts are listed too: the book is
meant to work offline. Chromium is driven over the DevTools protocol (websocket-client,
installed with Jupyter); `make check-book` runs this after a `smoke` build.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from base64 import b64decode
from pathlib import Path

import websocket
import yaml

CHROMIUM = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", "--remote-debugging-port=0", "--remote-allow-origins=*")
# Every image, loaded again and awaited: lazy images below the fold count too.
PAGE_CHECK = """(async () => {
  const imgs = await Promise.all([...document.images].map(img => new Promise(done => {
    const src = img.currentSrc || img.src, probe = new Image();
    probe.onload = () => done({src, ok: probe.naturalWidth > 0});
    probe.onerror = () => done({src, ok: false});
    probe.src = src;
  })));
  const text = document.body ? document.body.innerText : "";
  const errors = [...document.querySelectorAll(".output.traceback, .output.error, .cell_output .traceback")];
  return {title: document.title, images: imgs,
          traceback: /Traceback \\(most recent call last\\)/.test(text) || errors.length > 0,
          error_text: errors.map(e => e.innerText.slice(0, 300)),
          raw_math: /\\$\\$|\\\\\\(|\\\\\\[/.test(
              [...document.querySelectorAll(".math")].map(e => e.innerText).join(" ")),
          chars: text.length};
})()"""


def toc_pages(toc: Path) -> list[str]:
    """Document names in `_toc.yml`: the root and every `file` entry, in order."""
    spec = yaml.safe_load(toc.read_text())
    pages = [spec["root"]]

    def walk(node):
        if isinstance(node, dict):
            if "file" in node:
                pages.append(node["file"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk({k: v for k, v in spec.items() if k != "root"})
    return [str(Path(p).with_suffix("")) for p in pages]


class Browser:
    """One headless Chromium and one tab, driven over the DevTools protocol."""

    def __init__(self) -> None:
        binary = next((shutil.which(c) for c in CHROMIUM if shutil.which(c)), None)
        if binary is None:
            sys.exit("no chromium found: apt-get install chromium (see .ci/run)")
        self.profile = tempfile.mkdtemp(prefix="check-book-")
        self.proc = subprocess.Popen([binary, *FLAGS, f"--user-data-dir={self.profile}",
                                      "about:blank"], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        port_file = Path(self.profile) / "DevToolsActivePort"
        for _ in range(300):
            if port_file.is_file() and port_file.read_text().strip():
                break
            time.sleep(0.1)
        port = port_file.read_text().split()[0]
        for _ in range(50):
            tabs = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list"))
            tabs = [t for t in tabs if t.get("type") == "page"]
            if tabs:
                break
            time.sleep(0.1)
        self.ws = websocket.create_connection(tabs[0]["webSocketDebuggerUrl"], timeout=60)
        self.next_id = 0
        self.events: list[dict] = []
        for method in ("Page.enable", "Network.enable", "Runtime.enable"):
            self.call(method)
        self.call("Emulation.setDeviceMetricsOverride", width=1280, height=1400,
                  deviceScaleFactor=1, mobile=False)

    def call(self, method: str, **params):
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self.events.append(msg)

    def wait_for(self, event: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(e.get("method") == event for e in self.events):
                return
            self.ws.settimeout(max(0.1, deadline - time.monotonic()))
            try:
                self.events.append(json.loads(self.ws.recv()))
            except websocket.WebSocketTimeoutException:
                break
        raise TimeoutError(f"no {event} within {timeout} s")

    def open(self, url: str) -> dict:
        """Load `url`, let its scripts settle, return the page check and failed requests."""
        self.events = []
        self.call("Page.navigate", url=url)
        self.wait_for("Page.loadEventFired")
        time.sleep(0.5)  # theme JS and MathJax typeset after load
        check = self.call("Runtime.evaluate", expression=PAGE_CHECK, awaitPromise=True,
                          returnByValue=True)["result"]["value"]
        requests = {e["params"]["requestId"]: e["params"]["request"]["url"]
                    for e in self.events if e.get("method") == "Network.requestWillBeSent"}
        check["failed"] = sorted({requests.get(e["params"]["requestId"], "?") + " ("
                                  + e["params"].get("errorText", "") + ")"
                                  for e in self.events
                                  if e.get("method") == "Network.loadingFailed"})
        check["remote"] = sorted({u for u in requests.values()
                                  if not u.startswith(("file:", "data:", "about:", "blob:"))})
        return check

    def screenshot(self, path: Path) -> None:
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(b64decode(data))

    def close(self) -> None:
        try:
            self.ws.close()
        finally:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            shutil.rmtree(self.profile, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("html", type=Path, help="the built book, e.g. _build/html")
    parser.add_argument("--toc", type=Path, default=Path("_toc.yml"))
    parser.add_argument("--screenshots", type=Path, default=None,
                        help="save a PNG of every page into this folder")
    args = parser.parse_args(argv)
    html = args.html.resolve()
    pages = toc_pages(args.toc)
    problems: list[str] = []
    missing = [p for p in pages if not (html / f"{p}.html").is_file()]
    problems += [f"{p}: page missing ({html / p}.html)" for p in missing]
    if args.screenshots:
        args.screenshots.mkdir(parents=True, exist_ok=True)
    browser = Browser()
    try:
        for page in [p for p in pages if p not in missing] + ["index"]:
            check = browser.open((html / f"{page}.html").as_uri())
            broken = [i["src"] for i in check["images"] if not i["ok"]]
            status = []
            if broken:
                status.append(f"broken image(s) {broken}")
            if check["traceback"]:
                status.append(f"shows a traceback/error {check['error_text'][:2]}")
            if check["failed"]:
                status.append(f"failed request(s) {check['failed']}")
            if check["raw_math"]:
                status.append("math left as raw TeX (MathJax did not render)")
            if check["chars"] < 200:
                status.append(f"almost empty ({check['chars']} characters)")
            if args.screenshots:
                browser.screenshot(args.screenshots / f"{page.replace('/', '__')}.png")
            note = f"  (remote requests: {check['remote']})" if check["remote"] else ""
            print(f"{'FAIL' if status else 'ok  '} {page}: {check['title']!r}, "
                  f"{len(check['images'])} image(s){note}")
            problems += [f"{page}: {s}" for s in status]
    finally:
        browser.close()
    if problems:
        print("\n".join(["", f"{len(problems)} problem(s):", *problems]), file=sys.stderr)
        return 1
    print(f"all {len(pages)} pages of {args.toc} render")
    return 0


if __name__ == "__main__":
    sys.exit(main())
