"""Open every page of the built book in headless Chromium and fail on what a reader would see.

    python tests/check_book.py _build/html --toc _toc.yml [--screenshots DIR]

A page fails when it is missing (every `_toc.yml` entry must have its HTML), when an image
does not load, when it shows a Python traceback or error output, when a local file it
needs (CSS, JS, image) fails to load, when a figure has no caption or a Sphinx figure
number ("Fig. 3" is not the paper's Figure 3), when it shows an absolute path of the build
machine, when a link inside the book points to a missing page or anchor, when it does not
say which profile built it, and, in a `smoke` build, when it lacks the banner saying its
numbers mean nothing. Requests to other hosts are listed too: the book is meant to work
offline. Chromium is driven over the DevTools protocol (websocket-client, installed with
Jupyter); `make check-book` runs this after a `smoke` build.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from base64 import b64decode
from pathlib import Path

import websocket
import yaml

CHROMIUM = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", "--remote-debugging-port=0", "--remote-allow-origins=*")
WIDTH = 1280
# Folders of a build machine that must not show in a page (a reader's machine has others).
MACHINE_PATH = re.compile(r"(?<![\w.~-])/(?:work|tmp|home|root|Users|mnt|private|var/folders)/"
                          r"[^\s\"'<>)`]*")
SMOKE_WORD = "smoke"  # the banner of a smoke build names the profile
# Every image, loaded again and awaited: lazy images below the fold count too.
PAGE_CHECK = """(async () => {
  const imgs = await Promise.all([...document.images].map(img => new Promise(done => {
    const src = img.currentSrc || img.src, probe = new Image();
    probe.onload = () => done({src, ok: probe.naturalWidth > 0});
    probe.onerror = () => done({src, ok: false});
    probe.src = src;
  })));
  const article = document.querySelector("article") || document.body;
  const figures = [...article.querySelectorAll(".cell_output img, figure img")].map(img => {
    const cap = img.closest("figure") && img.closest("figure").querySelector("figcaption");
    return {src: img.getAttribute("src"), caption: cap ? cap.innerText.trim() : null};
  });
  const text = document.body ? document.body.innerText : "";
  const errors = [...document.querySelectorAll(".output.traceback, .output.error, .cell_output .traceback")];
  const attrs = [...document.querySelectorAll("[href], [src]")]
      .flatMap(e => [e.getAttribute("href"), e.getAttribute("src")]).filter(Boolean);
  const banner = document.querySelector(".bd-header-announcement");
  const profile = document.querySelector('meta[name="ddbook-profile"]');
  return {title: document.title, images: imgs, figures, text, attrs,
          links: [...document.querySelectorAll("a[href]")].map(a => a.href),
          banner: banner ? banner.innerText.trim() : null,
          profile: profile ? profile.content : null,
          traceback: /Traceback \\(most recent call last\\)/.test(text) || errors.length > 0,
          error_text: errors.map(e => e.innerText.slice(0, 300)),
          raw_math: /\\$\\$|\\\\\\(|\\\\\\[/.test(
              [...document.querySelectorAll(".math")].map(e => e.innerText).join(" ")),
          chars: text.length, height: document.documentElement.scrollHeight};
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


def machine_paths(texts: list[str], roots: tuple[str, ...] = ()) -> list[str]:
    """Absolute paths of a build machine found in `texts`: the usual home, scratch and work
    folders, and the given `roots` (e.g. the book's own folder) wherever they appear."""
    found = {m.group(0) for text in texts for m in MACHINE_PATH.finditer(text)}
    found |= {root for text in texts for root in roots if root and root in text}
    return sorted(found)


def broken_links(links: list[str], html: Path) -> list[str]:
    """The links (absolute URLs, as a browser resolves them) that point into the built book
    `html` at a file that does not exist, or at an anchor its target page lacks."""
    broken, anchors = [], {}
    for link in links:
        url = urllib.parse.urlsplit(link)
        if url.scheme != "file":
            continue  # other hosts: listed as remote requests, not checked here
        path = Path(urllib.parse.unquote(url.path))
        if path.is_dir():
            path = path / "index.html"
        inside = path.resolve().is_relative_to(html.resolve())
        if not path.is_file():
            broken.append(link if inside else f"{link} (outside the book)")
            continue
        fragment = urllib.parse.unquote(url.fragment)
        if fragment and path.suffix == ".html":
            if path not in anchors:
                anchors[path] = set(re.findall(r'\bid="([^"]+)"', path.read_text(errors="replace")))
            if fragment not in anchors[path]:
                broken.append(link)
    return sorted(set(broken))


def page_problems(check: dict, *, profile: str | None, html: Path,
                  roots: tuple[str, ...] = ()) -> list[str]:
    """What a reader would see wrong in one page's `check` (PAGE_CHECK's result plus the
    failed requests); `profile` is the build's (from the root page)."""
    status = []
    broken = [i["src"] for i in check["images"] if not i["ok"]]
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
    uncaptioned = [f["src"] for f in check["figures"] if not f["caption"]]
    if uncaptioned:
        status.append(f"figure(s) without a caption {uncaptioned}")
    numbered = [f["caption"][:40] for f in check["figures"]
                if f["caption"] and re.match(r"Fig(ure|\.) ?\d", f["caption"])]
    if numbered:
        status.append(f"Sphinx figure number(s), not the paper's: {numbered}")
    paths = machine_paths([check["text"], *check["attrs"]], roots)
    if paths:
        status.append(f"shows path(s) of the build machine {paths[:3]}")
    links = broken_links(check["links"], html)
    if links:
        status.append(f"broken link(s) {links[:5]}")
    if check["profile"] is None:
        status.append("does not say which profile built it (no ddbook-profile meta tag)")
    elif check["profile"] != profile:
        status.append(f"built with profile {check['profile']!r}, the book with {profile!r}")
    if profile == "smoke" and SMOKE_WORD not in (check["banner"] or "").lower():
        status.append("a smoke build's page without the smoke banner")
    return status


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
        self.call("Emulation.setDeviceMetricsOverride", width=WIDTH, height=1400,
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

    def screenshot(self, path: Path, height: int) -> None:
        """The whole page, `WIDTH` pixels wide (as a reader scrolls through it)."""
        self.call("Emulation.setDeviceMetricsOverride", width=WIDTH, height=height,
                  deviceScaleFactor=1, mobile=False)
        time.sleep(0.3)  # relayout at the taller viewport
        try:
            data = self.call("Page.captureScreenshot", format="png")["data"]
        finally:
            self.call("Emulation.setDeviceMetricsOverride", width=WIDTH, height=1400,
                      deviceScaleFactor=1, mobile=False)
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
                        help="save a full-page PNG of every page into this folder")
    args = parser.parse_args(argv)
    html = args.html.resolve()
    # The book's own folder, wherever it was built, must not show in its pages either.
    roots = (str(html.parent.parent),) if html.parent.name == "_build" else ()
    pages = toc_pages(args.toc)
    problems: list[str] = []
    missing = [p for p in pages if not (html / f"{p}.html").is_file()]
    problems += [f"{p}: page missing ({html / p}.html)" for p in missing]
    if args.screenshots:
        args.screenshots.mkdir(parents=True, exist_ok=True)
    browser = Browser()
    profile = None
    try:
        for page in [p for p in pages if p not in missing] + ["index"]:
            check = browser.open((html / f"{page}.html").as_uri())
            profile = profile or check["profile"]  # the root page's: the build's profile
            status = page_problems(check, profile=profile, html=html, roots=roots)
            if args.screenshots:
                browser.screenshot(args.screenshots / f"{page.replace('/', '__')}.png",
                                   min(check["height"], 16000))
            note = f"  (remote requests: {check['remote']})" if check["remote"] else ""
            print(f"{'FAIL' if status else 'ok  '} {page}: {check['title']!r}, "
                  f"{len(check['images'])} image(s){note}")
            problems += [f"{page}: {s}" for s in status]
    finally:
        browser.close()
    if problems:
        print("\n".join(["", f"{len(problems)} problem(s):", *problems]), file=sys.stderr)
        return 1
    print(f"all {len(pages)} pages of {args.toc} render (profile {profile})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
