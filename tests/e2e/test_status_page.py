"""The exporter's HTML status page (GET /), fetched raw and rendered by headless Chromium.

Page contract: a self-contained HTML document (no external assets, no script files), one
<tr data-node="NAME"> per node holding the node name as text, with class "at-cap" on rows of
nodes at their cap and "near-cap" on rows of nodes at 90% or more of it.

Chromium renders the page twice: `--screenshot` takes a SHOT_SIZE PNG, and a DevTools session
over --remote-debugging-pipe records every network request the page makes and reads the DOM
as the browser parsed it with JavaScript disabled. (`--dump-dom` cannot be used for the
latter: with --blink-settings=scriptEnabled=false headless Chromium prints nothing at all.)
"""
from __future__ import annotations

import fcntl
import json
import os
import select
import shutil
import signal
import struct
import subprocess
import time
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests

from harness import EXAMPLES, start_exporter, wait_for

CHROMIUM = shutil.which("chromium") or "chromium"
CHROMIUM_TIMEOUT_S = 60
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--window-size=1280,900",
]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# The screenshot: as wide as the DevTools window (so the layout is the same), tall enough
# to show the node table, the legend, the spawner menu and the prepull loop of the
# example data. docs/status-page.png is this screenshot (IMAGECAP_SCREENSHOT_OUT).
SHOT_SIZE = (1280, 1400)
SHOT_FLAGS = [f for f in CHROMIUM_FLAGS if not f.startswith("--window-size=")] + [
    f"--window-size={SHOT_SIZE[0]},{SHOT_SIZE[1]}"]
# Nublado's saved answer for the example nodes: one image the cap keeps out of the menu.
NUBLADO_FILE = EXAMPLES / "nublado-prepulls.json"
MENU_HIDDEN = ("Weekly 2024_11", "ghcr.io/lsst-sqre/sciplat-lab:w_2024_11@sha256:"
               "9eb2b2844817e5c19132b064c90d7d1d3ea32aac7e4ce3362791d2c3a217199f", "nublado-worker-1")


def example_nodes() -> list[str]:
    items = json.loads((EXAMPLES / "nodes.json").read_text())["items"]
    return [n["metadata"]["name"] for n in items]


# ---------------------------------------------------------------- HTML inspection


class PageParser(HTMLParser):
    """Collects node rows, asset references and inline styles of an HTML document."""

    ASSET_ATTRS = {"src", "href", "srcset", "poster", "data", "background", "action", "formaction"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.rows: dict[str, dict] = {}  # data-node -> {"classes": set, "text": str}
        self.duplicates: list[str] = []
        self._open_rows: list[str | None] = []
        self.refs: list[tuple[str, str, str]] = []  # (tag, attr, value)
        self.script_srcs: list[str] = []
        self.styles: list[str] = []
        self._in_style = False
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = {k: (v or "") for k, v in attrs}
        for k, v in a.items():
            if k in self.ASSET_ATTRS:
                self.refs.append((tag, k, v))
        if "style" in a:
            self.styles.append(a["style"])
        if tag == "script" and "src" in a:
            self.script_srcs.append(a["src"])
        if tag == "style":
            self._in_style = True
        if tag == "tr":
            if self._open_rows:  # a <tr> ends the row before it (</tr> may be left out)
                self._open_rows.pop()
            node = a.get("data-node")
            self._open_rows.append(node)
            if node is not None:
                if node in self.rows:
                    self.duplicates.append(node)
                self.rows[node] = {"classes": set(a.get("class", "").split()), "text": ""}

    def handle_endtag(self, tag):
        if tag == "style":
            self._in_style = False
        if tag == "tr" and self._open_rows:
            self._open_rows.pop()

    def handle_data(self, data):
        if self._in_style:
            self.styles.append(data)
        self.text.append(data)
        for node in self._open_rows:
            if node is not None:
                self.rows[node]["text"] += data


def parse(html: str) -> PageParser:
    p = PageParser()
    p.feed(html)
    p.close()
    return p


def is_external(url: str) -> bool:
    """True for absolute or protocol-relative http(s) URLs: anything fetched from elsewhere."""
    u = url.strip().lower()
    return u.startswith(("http://", "https://", "//"))


def check_self_contained(page: PageParser):
    assert not page.script_srcs, f"page loads script files: {page.script_srcs}"
    # Hyperlinks (<a href>) are not loaded by the browser; every other reference is an asset.
    external = [(t, k, v) for t, k, v in page.refs if t != "a" and is_external(v)]
    assert not external, f"page references external assets: {external}"
    for css in page.styles:
        low = css.lower()
        assert "@import" not in low, f"stylesheet imports another: {css[:200]}"
        for part in low.split("url(")[1:]:
            assert not is_external(part.strip(" '\")")), f"stylesheet loads an external url: {part[:200]}"


def check_rows(page: PageParser, nodes: list[str], where: str):
    assert set(page.rows) == set(nodes), f"{where}: rows {sorted(page.rows)}, nodes {sorted(nodes)}"
    assert not page.duplicates, f"{where}: more than one row for {page.duplicates}"
    for node in nodes:
        assert node in page.rows[node]["text"], f"{where}: row of {node} does not name it"
    rows = {n: r["classes"] for n, r in page.rows.items()}
    assert "at-cap" in rows["nublado-worker-1"], f"{where}: nublado-worker-1 (50/50) classes {rows}"
    assert "near-cap" in rows["nublado-worker-4"], f"{where}: nublado-worker-4 (46/50) classes {rows}"
    assert "at-cap" not in rows["nublado-worker-4"], f"{where}: {rows}"
    for node in ("nublado-worker-2", "nublado-worker-3", "control-plane-1", "nublado-gpu-1"):
        assert not rows[node] & {"at-cap", "near-cap"}, f"{where}: {node} classes {rows[node]}"


# ---------------------------------------------------------------- Chromium


def _stop_group(proc: subprocess.Popen):
    """Ends the Chromium started here and its renderer children (its own process group)."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout=10)


def run_chromium(args: list[str], log: Path) -> int:
    with open(log, "ab") as out:
        proc = subprocess.Popen([CHROMIUM, *args], stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            return proc.wait(timeout=CHROMIUM_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"chromium {args[-1]} did not finish in {CHROMIUM_TIMEOUT_S}s")
        finally:
            _stop_group(proc)


def _high_fd(fd: int) -> int:
    high = fcntl.fcntl(fd, fcntl.F_DUPFD, 10)
    os.close(fd)
    return high


class DevTools:
    """Chromium driven through the DevTools protocol over --remote-debugging-pipe (fds 3/4)."""

    def __init__(self, profile: Path, log: Path):
        self._to_chrome_r, self._to_chrome_w = os.pipe()
        self._from_chrome_r, self._from_chrome_w = os.pipe()
        # The child's ends move above fd 9 so that the 3</4> redirections below cannot
        # clobber one with the other.
        self._to_chrome_r = _high_fd(self._to_chrome_r)
        self._from_chrome_w = _high_fd(self._from_chrome_w)
        self._log = open(log, "ab")
        argv = ["bash", "-c", f'exec "$@" 3<&{self._to_chrome_r} 4>&{self._from_chrome_w}', "bash",
                CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--remote-debugging-pipe",
                "about:blank"]
        self.proc = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True,
                                     pass_fds=(self._to_chrome_r, self._from_chrome_w))
        os.close(self._to_chrome_r)
        os.close(self._from_chrome_w)
        self._buf = b""
        self._next_id = 0
        self.events: list[dict] = []
        self.deadline = time.monotonic() + CHROMIUM_TIMEOUT_S

    def _read_message(self) -> dict:
        while b"\0" not in self._buf:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no DevTools answer within {CHROMIUM_TIMEOUT_S}s")
            ready, _, _ = select.select([self._from_chrome_r], [], [], left)
            if ready:
                chunk = os.read(self._from_chrome_r, 1 << 20)
                if not chunk:
                    raise RuntimeError("chromium closed the DevTools pipe")
                self._buf += chunk
        msg, self._buf = self._buf.split(b"\0", 1)
        return json.loads(msg)

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        self._next_id += 1
        msg = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._to_chrome_w, json.dumps(msg).encode() + b"\0")
        while True:
            reply = self._read_message()
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]
            self.events.append(reply)

    def wait_event(self, method: str, session: str) -> dict:
        def match(e):
            return e.get("method") == method and e.get("sessionId") == session
        for i, e in enumerate(self.events):
            if match(e):
                return self.events.pop(i)
        while True:
            e = self._read_message()
            if match(e):
                return e
            self.events.append(e)

    def close(self):
        try:
            if self.proc.poll() is None:
                self.send("Browser.close")
                self.proc.wait(timeout=10)
        except Exception:  # noqa: BLE001 - stopped by signal below
            pass
        _stop_group(self.proc)
        os.close(self._to_chrome_w)
        os.close(self._from_chrome_r)
        self._log.close()


# What the page's inline styles make of it: evaluated after the first load, so a
# Content-Security-Policy that blocked them would show here.
STYLE_PROBE = """JSON.stringify((() => {
  const box = e => { const r = e.getBoundingClientRect(), c = getComputedStyle(e);
    return {text: e.textContent.trim(), cells: [...(e.cells || [])].map(c => c.textContent.trim()),
            width: r.width, height: r.height, bottom: r.bottom,
            color: c.color, shown: c.display !== 'none' && c.visibility === 'visible'}; };
  const all = sel => [...document.querySelectorAll(sel)].map(box);
  return {
    bodyMargin: getComputedStyle(document.body).marginTop,
    barWidths: [...document.querySelectorAll('.bar span:not(.hidden)')].map(e => e.getBoundingClientRect().width),
    menuTitle: all('h2#menu'),
    menuStates: all('#menu-states tr[data-menu-state]'),
    menuHidden: all('#menu-hidden tr[data-menu-image]'),
    loop: all('#loop-pairs tr[data-source]'),
    unlistable: all('tr[data-node="nublado-worker-1"] li .state'),
    hiddenBar: all('tr[data-node="nublado-worker-1"] .bar span.hidden'),
    legend: all('#states li'),
    stateColours: Object.fromEntries([...document.querySelectorAll('#states .state')].map(
      e => [e.textContent, getComputedStyle(e).color])),
  };
})())"""


def render(url: str, profile: Path, log: Path) -> tuple[list[str], str, dict]:
    """Loads `url` with scripts enabled recording every request, then again with JavaScript
    disabled; returns (requested URLs, the DOM of the second load as HTML, what the
    styles of the first load gave: STYLE_PROBE)."""
    dt = DevTools(profile, log)
    try:
        target = dt.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        s = dt.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        dt.send("Page.enable", session=s)
        dt.send("Network.enable", session=s)
        dt.send("Page.navigate", {"url": url}, session=s)
        dt.wait_event("Page.loadEventFired", s)
        requested = [e["params"]["request"]["url"] for e in dt.events
                     if e.get("method") == "Network.requestWillBeSent" and e.get("sessionId") == s]
        styled = json.loads(dt.send("Runtime.evaluate", {"expression": STYLE_PROBE, "returnByValue": True},
                                    session=s)["result"]["value"])

        dt.send("Emulation.setScriptExecutionDisabled", {"value": True}, session=s)
        dt.send("Page.navigate", {"url": url}, session=s)
        dt.wait_event("Page.loadEventFired", s)
        root = dt.send("DOM.getDocument", {"depth": -1}, session=s)["root"]
        dom = dt.send("DOM.getOuterHTML", {"nodeId": root["nodeId"]}, session=s)["outerHTML"]
        return requested, dom, styled
    finally:
        dt.close()


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == PNG_SIGNATURE, "not a PNG"
    assert data[12:16] == b"IHDR", "PNG does not start with IHDR"
    return struct.unpack(">II", data[16:24])


# ---------------------------------------------------------------- the test


def check_visible(boxes: list[dict], what: str, within: int):
    assert boxes, f"{what}: not on the rendered page"
    for b in boxes:
        assert b["shown"] and b["width"] > 0 and b["height"] > 0, f"{what}: not visible: {b}"
        assert b["bottom"] <= within, f"{what}: below the screenshot's {within}px: {b}"


def check_menu_and_unlistable(styled: dict):
    """The spawner menu and the `unlistable` state of the example data, as Chromium lays
    them out: present, visible, inside the screenshot, `unlistable` in a colour of its own."""
    height = SHOT_SIZE[1]
    check_visible(styled["menuTitle"], "the Spawner menu heading", height)
    assert styled["menuTitle"][0]["text"] == "Spawner menu", styled["menuTitle"]
    check_visible(styled["menuStates"], "the menu's counts", height)
    counts = {b["cells"][0]: b["cells"][1] for b in styled["menuStates"]}
    # The example: r27_0_0 shown, w_2024_11 hidden by the cap, w_2024_10 pulling.
    assert counts == {"shown": "1", "hidden by the cap": "1", "maybe hidden by the cap": "0",
                      "pulling": "1"}, counts
    check_visible(styled["menuHidden"], "the images left out of the menu", height)
    (row,) = styled["menuHidden"]
    name, image, nodes = MENU_HIDDEN
    assert row["cells"] == [name, "hidden by the cap", image, nodes], row
    check_visible(styled["loop"], "the prepull loop pairs", height)
    assert {b["cells"][0]: b["cells"][1] for b in styled["loop"]} == {
        "config": "1", "pattern": "1", "nublado": "1"}, styled["loop"]
    # nublado-worker-1 is at its cap; every wanted image it misses is smaller than its
    # smallest listed one.
    check_visible(styled["unlistable"], "the unlistable states of nublado-worker-1", height)
    assert {b["text"] for b in styled["unlistable"]} == {"unlistable"}, styled["unlistable"]
    check_visible(styled["legend"], "the legend of the missing states", height)
    (legend,) = [b["text"] for b in styled["legend"] if b["text"].startswith("unlistable:")]
    assert "never" in legend and "every pass" in legend, legend
    colours = styled["stateColours"]
    assert set(colours) == {"absent", "unlistable", "hidden", "unverifiable"}, colours
    assert len(set(colours.values())) == 4, f"states share a colour: {colours}"


def screenshot(url: str, tmp: Path) -> Path:
    """Chromium's screenshot of `url`, SHOT_SIZE large; returns its path."""
    shot = tmp / "status.png"
    rc = run_chromium([*SHOT_FLAGS, f"--user-data-dir={tmp / 'profile-shot'}",
                       f"--screenshot={shot}", url], tmp / "chromium-screenshot.log")
    assert rc == 0, (tmp / "chromium-screenshot.log").read_text(errors="replace")[-2000:]
    assert shot.exists(), "chromium wrote no screenshot"
    data = shot.read_bytes()
    assert len(data) > 10_000, f"screenshot is only {len(data)} bytes"
    width, height = png_size(data)
    assert (width, height) == SHOT_SIZE, (width, height)
    return shot


def check_status_page(url: str, tmp: Path) -> Path:
    """Checks the status page at `url`, served with Nublado's answer for the example
    nodes; returns the screenshot's path."""
    nodes = example_nodes()
    assert len(nodes) == 6

    # The file source is read once the server runs: wait for its menu.
    r = wait_for("the spawner menu on the page",
                 lambda: (p := requests.get(url, timeout=10)).ok and 'id="menu"' in p.text and p)
    assert r.status_code == 200, r.status_code
    assert r.headers.get("content-type", "").startswith("text/html"), r.headers.get("content-type")
    raw = parse(r.text)
    check_self_contained(raw)
    for node in nodes:
        assert node in r.text, f"{node} is not on the page"
    check_rows(raw, nodes, "served HTML")

    shot = screenshot(url, tmp)

    requested, dom_html, styled = render(url, tmp / "profile-dom", tmp / "chromium-devtools.log")
    # The served Content-Security-Policy lets the page's own styles apply: the
    # stylesheet's 1.5rem margin (24px, not the browser's 8px) and bars drawn by their
    # inline widths.
    assert styled["bodyMargin"] == "24px", styled
    assert styled["barWidths"] and any(w > 0 for w in styled["barWidths"]), styled
    check_menu_and_unlistable(styled)
    origin = urlsplit(url)[:2]
    foreign = [u for u in requested if urlsplit(u)[:2] != origin and not u.startswith("data:")]
    assert not foreign, f"the page made requests elsewhere: {foreign}"
    dom = parse(dom_html)
    for node in nodes:
        assert node in dom_html, f"{node} is not in the rendered DOM"
    check_rows(dom, nodes, "rendered DOM")
    return shot


def keep_screenshot(shot: Path):
    """Copies `shot` to IMAGECAP_SCREENSHOT_OUT when set (a file, or a directory to hold
    status-page.png): docs/status-page.png is made this way."""
    out = os.environ.get("IMAGECAP_SCREENSHOT_OUT")
    if out:
        dst = Path(out)
        if dst.is_dir():
            dst = dst / "status-page.png"
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, dst)


def test_status_page(workdir, procs):
    ex = start_exporter(workdir, extra=["--nublado-file", str(NUBLADO_FILE)])
    procs.append(ex)
    check_status_page(ex.url + "/", workdir)


def test_status_page_with_saved_agent_answers_shows_hidden_images(workdir, procs):
    """`serve --agents-file` (what `make run` serves): the page shows the images the
    cap hides on nublado-worker-1, as the report of `check --agents-file` does."""
    ex = start_exporter(workdir, extra=["--nublado-file", str(NUBLADO_FILE),
                                        "--agents-file", str(EXAMPLES / "agents.json")])
    procs.append(ex)

    def hidden_shown():
        r = ex.get("/")
        return r.status_code == 200 and "13 hidden" in r.text and r.text

    text = wait_for("the saved answers on the page", hidden_shown)
    page = parse(text)
    check_rows(page, example_nodes(), "served HTML")
    row = page.rows["nublado-worker-1"]["text"]
    assert "hidden" in row and "unlistable" not in row, row
    assert 'class="hidden"' in text, "the hidden segment of the bar"
    m = ex.metrics()
    assert 'imagecap_node_hidden_images{node="nublado-worker-1"} 13' in m
    # As Chromium lays it out (what the README's screenshot shows): the bar's hidden
    # segment is drawn, inside the screenshot.
    shot = screenshot(ex.url + "/", workdir)
    _, _, styled = render(ex.url + "/", workdir / "profile-dom", workdir / "chromium-devtools.log")
    check_visible(styled["hiddenBar"], "the hidden segment of nublado-worker-1's bar", SHOT_SIZE[1])
    check_visible(styled["menuHidden"], "the images left out of the menu", SHOT_SIZE[1])
    keep_screenshot(shot)


def test_status_page_without_nublado_has_no_menu(workdir, procs):
    """No Nublado source: no menu section; the size rule still proves `unlistable`."""
    ex = start_exporter(workdir)
    procs.append(ex)
    r = ex.get("/")
    assert r.status_code == 200, r.status_code
    assert "Spawner menu" not in r.text and "data-menu" not in r.text, r.text
    assert "spawner menu by the cap" not in r.text
    page = parse(r.text)
    check_rows(page, example_nodes(), "served HTML")
    assert "unlistable" in page.rows["nublado-worker-1"]["text"], page.rows["nublado-worker-1"]
    # The prepull loop is the configuration's own: pairs of config and pattern.
    assert '<tr data-source="config"><td>config</td><td class="num">1</td></tr>' in r.text
