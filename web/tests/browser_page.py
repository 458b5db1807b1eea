#!/usr/bin/env python3
"""The browser page in headless Chromium, driven over WebDriver (chromedriver),
against a real `linkstream host --source testsrc`.

Standard library only: the WebDriver protocol is plain HTTP + JSON.

Checks (each prints one line; any failure exits non-zero):
  load       the page loads; after 5 s frames_decoded >= 120, decode_errors == 0
  index      the burned-in index read from the canvas pixels advances
  screenshot a PNG of the page saved to --out/browser-page.png
  input      200 synthetic key and mouse events arrive at the host exactly
             once, in order (the host's --print-input lines)
  midstream  a page opened mid-stream shows a picture within one keyframe
             request grant + 200 ms of its session starting
  reconnect  the host goes away and comes back on the same port: the page
             reconnects and shows frames again within 2 s
  tls        the same page over https/wss with --self-signed, Chromium given
             the certificate's SPKI fingerprint
  embed      web/examples/embed.html, a page of another origin (its own small
             HTTP server on another port, the module files beside it) using
             the viewer's JavaScript API against a host with a PSK: frames
             decoded, stats(), the connect/frame/disconnect events (the host
             stopped and restarted), bad arguments refused, and close()
             stopping everything (no frame, event, animation frame, timer or
             input after it; the host sees the viewer leave)
  measure    (with --measure) decode time and capture->displayed latency
             percentiles and the page's CPU, printed as JSON lines
"""

import argparse
import base64
import functools
import http.server
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request


def log(msg):
    print(msg, flush=True)


def fail(msg):
    print(f"FAIL: {msg}", flush=True)
    sys.exit(1)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class WebDriver:
    """A minimal W3C WebDriver client for one chromedriver."""

    def __init__(self, chromedriver, chromium):
        self.port = free_port()
        self.chromium = chromium
        self.proc = subprocess.Popen(
            [chromedriver, f"--port={self.port}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.time() + 20
        while time.time() < deadline:
            try:
                self.req("GET", "/status")
                return
            except (OSError, urllib.error.URLError):
                time.sleep(0.1)
        fail("chromedriver did not start")

    def req(self, method, path, body=None, timeout=60):
        data = json.dumps(body).encode() if body is not None else None
        r = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(r, timeout=timeout) as resp:
                return json.loads(resp.read() or b"{}").get("value")
        except urllib.error.HTTPError as e:
            raise RuntimeError(f"WebDriver {method} {path}: {e.code} {e.read()[:500]!r}")

    def session(self, extra_args=()):
        args = [
            "--headless=new",
            "--no-sandbox",
            "--disable-dev-shm-usage",
            "--window-size=1280,800",
            "--autoplay-policy=no-user-gesture-required",
            *extra_args,
        ]
        caps = {
            "capabilities": {
                "alwaysMatch": {
                    "browserName": "chrome",
                    "goog:chromeOptions": {"binary": self.chromium, "args": args},
                }
            }
        }
        v = self.req("POST", "/session", caps)
        return Session(self, v["sessionId"])

    def quit(self):
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()


class Session:
    def __init__(self, wd, sid):
        self.wd, self.sid = wd, sid

    def req(self, method, path, body=None):
        return self.wd.req(method, f"/session/{self.sid}{path}", body)

    def go(self, url):
        self.req("POST", "/url", {"url": url})

    def js(self, script, *args):
        return self.req("POST", "/execute/sync", {"script": script, "args": list(args)})

    def stats(self):
        return self.js("return window.linkstreamStats ? window.linkstreamStats() : null;")

    def screenshot(self, path):
        png = base64.b64decode(self.req("GET", "/screenshot"))
        with open(path, "wb") as f:
            f.write(png)
        return len(png)

    def close(self):
        try:
            self.req("DELETE", "")
        except Exception:
            pass


class Host:
    """`linkstream host` as a child process, its stderr captured to a file."""

    def __init__(self, binary, port, source, extra=(), seconds=None):
        self.err = tempfile.NamedTemporaryFile("w+", prefix="web-host-", suffix=".err", delete=False)
        args = [binary, "host", "--ws", f"127.0.0.1:{port}", "--source", source, "--print-input", *extra]
        if seconds:
            args += ["--seconds", str(seconds)]
        self.proc = subprocess.Popen(args, stdout=self.err, stderr=self.err)
        self.port = port
        deadline = time.time() + 30
        while time.time() < deadline:
            if self.proc.poll() is not None:
                fail(f"host exited at start:\n{self.text()}")
            if "open in a browser:" in self.text():
                return
            time.sleep(0.05)
        fail(f"host did not start:\n{self.text()}")

    def text(self):
        with open(self.err.name) as f:
            return f.read()

    def line(self, pattern):
        m = re.search(pattern, self.text())
        return m.group(1) if m else None

    def inputs(self):
        return re.findall(r"^input from viewer \d+: (.*)$", self.text(), re.M)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def wait_for(session, pred, timeout, step=0.05):
    """Poll the page's stats until pred(stats) or timeout; returns the last."""
    deadline = time.time() + timeout
    s = None
    while time.time() < deadline:
        s = session.stats()
        if s and pred(s):
            return s, True
        time.sleep(step)
    return s, False


def check_load(s, host):
    s.go(f"http://127.0.0.1:{host.port}/")
    st, ok = wait_for(s, lambda x: x["frames_decoded"] > 0, 15)
    if not ok:
        fail(f"no frame decoded within 15 s: {st}\nhost:\n{host.text()[-2000:]}")
    time.sleep(5)
    st = s.stats()
    log(
        f"load: after 5 s frames_decoded={st['frames_decoded']} decode_errors={st['decode_errors']} "
        f"displayed={st['frames_displayed']} dropped={st['frames_dropped']} codec={st['codec']} "
        f"{st['width']}x{st['height']}"
    )
    if st["frames_decoded"] < 120 or st["decode_errors"] != 0:
        fail(f"load: want frames_decoded >= 120 and decode_errors == 0: {st}")


def check_index(s):
    a = s.stats()
    time.sleep(1.0)
    b = s.stats()
    log(f"index: canvas_index {a['canvas_index']} -> {b['canvas_index']} (last_frame_index {b['last_frame_index']})")
    if a["canvas_index"] is None or b["canvas_index"] is None:
        fail(f"index: the burned-in index could not be read from the canvas: {a} {b}")
    if not b["canvas_index"] > a["canvas_index"] + 10:
        fail("index: the burned-in index did not advance by more than 10 frames in 1 s")
    if abs(b["last_frame_index"] - b["canvas_index"]) > 30:
        fail("index: the canvas shows a picture far from the newest received frame")


def check_screenshot(s, out):
    path = os.path.join(out, "browser-page.png")
    n = s.screenshot(path)
    with open(path, "rb") as f:
        if f.read(8) != b"\x89PNG\r\n\x1a\n":
            fail("screenshot: not a PNG")
    log(f"screenshot: {path} ({n} bytes)")


# 200 events: keys, mouse buttons and wheel, each with its expected Debug
# form on the host (session InputEvent).
def synthetic_events():
    evs = []
    for i in range(200):
        k = i % 4
        if k in (0, 1):
            letter = chr(ord("A") + (i // 4) % 26)
            down = k == 0
            evs.append(
                (
                    {"kind": "key", "type": "keydown" if down else "keyup", "code": f"Key{letter}"},
                    f"Key {{ code: {4 + ord(letter) - ord('A')}, down: {'true' if down else 'false'}, mods: 0 }}",
                )
            )
        elif k == 2:
            button = (i // 4) % 3
            down = (i // 4) % 2 == 0
            evs.append(
                (
                    {"kind": "mouse", "type": "mousedown" if down else "mouseup", "button": button},
                    f"MouseButton {{ button: {button}, down: {'true' if down else 'false'} }}",
                )
            )
        else:
            evs.append(({"kind": "wheel", "dy": i + 1}, f"Wheel {{ dx: 0, dy: {i + 1} }}"))
    return evs


DISPATCH = """
const evs = arguments[0];
const canvas = document.getElementById('screen');
for (const e of evs) {
  if (e.kind === 'key') {
    window.dispatchEvent(new KeyboardEvent(e.type, {code: e.code, key: e.code.slice(3).toLowerCase(), bubbles: true, cancelable: true}));
  } else if (e.kind === 'mouse') {
    canvas.dispatchEvent(new MouseEvent(e.type, {button: e.button, bubbles: true, cancelable: true}));
  } else {
    canvas.dispatchEvent(new WheelEvent('wheel', {deltaX: 0, deltaY: e.dy, deltaMode: 0, bubbles: true, cancelable: true}));
  }
}
return evs.length;
"""


def check_input(s, host):
    before_host = len(host.inputs())
    before = s.stats()["input_sent"]
    evs = synthetic_events()
    s.js(DISPATCH, [e for e, _ in evs])
    st, ok = wait_for(s, lambda x: x["input_sent"] >= before + 200, 10)
    if not ok:
        fail(f"input: the page sent {st['input_sent'] - before} of 200 events: {st}")
    deadline = time.time() + 10
    got = []
    while time.time() < deadline:
        got = host.inputs()[before_host:]
        if len(got) >= 200:
            break
        time.sleep(0.1)
    time.sleep(0.5)
    got = host.inputs()[before_host:]
    want = [w for _, w in evs]
    if got != want:
        for i, (g, w) in enumerate(zip(got, want)):
            if g != w:
                fail(f"input: event {i}: host got {g!r}, sent {w!r} ({len(got)} received)")
        fail(f"input: host got {len(got)} events, 200 were sent")
    log(f"input: 200 events sent by the page, the host received exactly those 200, in order (input_sent={st['input_sent']}, input_dropped={st['input_dropped']})")


def check_midstream(wd, host, grant_ms):
    s2 = wd.session()
    try:
        s2.go(f"http://127.0.0.1:{host.port}/")
        st, ok = wait_for(s2, lambda x: x["picture_after_connect_ms"] is not None, 15)
        if not ok:
            fail(f"midstream: no picture within 15 s: {st}")
        ms = st["picture_after_connect_ms"]
        bound = grant_ms + 200
        log(f"midstream: picture {ms:.0f} ms after the session started (bound: keyframe within {grant_ms} ms + 200 ms = {bound} ms; first picture {st['first_picture_ms']:.0f} ms after navigation)")
        if ms > bound:
            fail(f"midstream: {ms:.0f} ms > {bound} ms")
    finally:
        s2.close()


def check_reconnect(s, binary, host, source):
    before = s.stats()
    host.stop()
    st, ok = wait_for(s, lambda x: not x["connected"], 10)
    if not ok:
        fail(f"reconnect: the page did not notice the host going away: {st}")
    log(f"reconnect: page shows state {st['state']!r}")
    time.sleep(0.5)
    new = Host(binary, host.port, source)
    t0 = time.time()
    base = st["frames_displayed"]
    st, ok = wait_for(s, lambda x: x["connected"] and x["frames_displayed"] > base, 10)
    dt = time.time() - t0
    if not ok:
        fail(f"reconnect: no frames after the host came back: {st}")
    log(f"reconnect: frames shown again {dt * 1000:.0f} ms after the host was reachable (bound 2000 ms), reconnects {before['reconnects']} -> {st['reconnects']}")
    if dt > 2.0 or st["reconnects"] <= before["reconnects"]:
        fail("reconnect: too slow or not counted")
    return new


def check_tls(wd, binary, source):
    port = free_port()
    # With a PSK too: the page takes it from the printed URL's #psk=.
    psk = tempfile.NamedTemporaryFile("w", prefix="web-psk-", delete=False)
    psk.write(os.urandom(16).hex() + "\n")
    psk.close()
    host = Host(binary, port, source, extra=["--self-signed", "--psk-file", psk.name])
    try:
        spki = host.line(r"SPKI SHA-256 \(base64[^)]*\): (\S+)")
        if not spki:
            fail(f"tls: the host printed no SPKI fingerprint:\n{host.text()}")
        url = host.line(r"open in a browser: (https://\S+/#psk=[0-9a-f]+)")
        if not url:
            fail(f"tls: the host printed no https join URL with #psk=:\n{host.text()}")
        s = wd.session([f"--ignore-certificate-errors-spki-list={spki}"])
        try:
            s.go(url)
            st, ok = wait_for(s, lambda x: x["frames_decoded"] >= 30, 20)
            if not ok:
                fail(f"tls: no frames over wss: {st}\n{host.text()[-2000:]}")
            proto = s.js("return location.protocol;")
            log(f"tls: {proto} page with --self-signed (spki {spki}) and the PSK from {url.split('#')[0]}#psk=...: frames_decoded={st['frames_decoded']} decode_errors={st['decode_errors']}")
            if proto != "https:" or st["decode_errors"] != 0:
                fail("tls: not https or decode errors")
        finally:
            s.close()
    finally:
        host.stop()
        os.unlink(psk.name)


# ------------------------------------------------------------------ embed

EMBED_HTML = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples", "embed.html")
MODULE_FILES = ("linkstream_web.js", "linkstream_web_bg.wasm")


class QuietFiles(http.server.SimpleHTTPRequestHandler):
    extensions_map = {
        **http.server.SimpleHTTPRequestHandler.extensions_map,
        ".js": "text/javascript",
        ".wasm": "application/wasm",
    }

    def log_message(self, *args):
        pass


class StaticServer:
    """A tiny HTTP server for one directory: the embedding page's origin."""

    def __init__(self, directory):
        handler = functools.partial(QuietFiles, directory=directory)
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


# The page's record of events, the viewer's stats and whether it is closed,
# read in one script (so they are consistent with each other).
EMBED_STATE = """
const e = window.embed;
if (!e) return null;
return {seen: e.seen, stats: e.viewer ? e.viewer.stats() : null,
        closed: e.viewer ? e.viewer.closed : null, origin: location.origin,
        raf: window.__raf === undefined ? null : window.__raf,
        timeouts: window.__timeouts === undefined ? null : window.__timeouts};
"""

# Bad arguments: each must throw, with a message.
EMBED_BAD_ARGS = """
const V = window.embed.viewer.constructor;
const c = document.createElement('canvas');
const url = arguments[0];
const out = {};
const tryit = (name, f) => { try { f(); out[name] = null; } catch (e) { out[name] = String(e && e.message || e); } };
tryit('not a canvas', () => new V(document.createElement('div'), url, {}));
tryit('http url', () => new V(c, url.replace('ws:', 'http:'), {}));
tryit('psk not hex', () => new V(c, url, {psk: 'xyz'}));
tryit('psk a number', () => new V(c, url, {psk: 5}));
tryit('reconnect not a bool', () => new V(c, url, {reconnect: 'yes'}));
tryit('no such event', () => window.embed.viewer.addEventListener('frames', () => {}));
return out;
"""

# Count the page's animation frame requests and timers from now on.
EMBED_COUNT = """
window.__raf = 0; window.__timeouts = 0;
const raf = window.requestAnimationFrame.bind(window);
window.requestAnimationFrame = (cb) => { window.__raf++; return raf(cb); };
const st = window.setTimeout.bind(window);
window.setTimeout = (...a) => { window.__timeouts++; return st(...a); };
"""

# close(), with the stats and the event counts just before, and the
# counters reset.
EMBED_CLOSE = """
const e = window.embed;
const before = e.viewer.stats();
const frames = e.seen.frames, disconnects = e.seen.disconnect.length;
e.viewer.close();
e.viewer.close();
window.__raf = 0; window.__timeouts = 0;
return {before, frames, disconnects};
"""

# Input at the closed viewer's canvas (its key target): nothing may count it.
EMBED_INPUT = """
const c = document.getElementById('video');
c.dispatchEvent(new KeyboardEvent('keydown', {code: 'KeyA', bubbles: true, cancelable: true}));
c.dispatchEvent(new KeyboardEvent('keydown', {code: 'NoSuchKey', bubbles: true, cancelable: true}));
c.dispatchEvent(new WheelEvent('wheel', {deltaY: 3, bubbles: true, cancelable: true}));
c.dispatchEvent(new MouseEvent('mousedown', {button: 0, bubbles: true, cancelable: true}));
"""


def embed_wait(s, pred, timeout):
    deadline = time.time() + timeout
    st = None
    while time.time() < deadline:
        st = s.js(EMBED_STATE)
        if st and st["seen"]["errors"]:
            fail(f"embed: the page could not start: {st['seen']['errors']}")
        if st and st["stats"] and pred(st):
            return st, True
        time.sleep(0.05)
    return st, False


def check_embed(wd, binary, source, served_keys):
    port = free_port()
    psk = tempfile.NamedTemporaryFile("w", prefix="web-psk-", delete=False)
    key = os.urandom(16).hex()
    psk.write(key + "\n")
    psk.close()
    extra = ["--psk-file", psk.name]
    host = Host(binary, port, source, extra=extra)
    d = tempfile.mkdtemp(prefix="web-embed-")
    srv = None
    s = None
    try:
        # The module files, as the host serves them, beside the page.
        for name in MODULE_FILES:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/assets/{name}", timeout=10) as r:
                with open(os.path.join(d, name), "wb") as f:
                    f.write(r.read())
        shutil.copy(EMBED_HTML, os.path.join(d, "embed.html"))
        srv = StaticServer(d)
        stream = f"ws://127.0.0.1:{port}/stream"
        s = wd.session()
        s.go(f"http://localhost:{srv.port}/embed.html?stream={stream}#psk={key}")

        # Frames, stats() and the connect and frame events.
        st, ok = embed_wait(s, lambda x: x["stats"]["frames_decoded"] >= 60 and x["seen"]["frames"] >= 30, 20)
        if not ok:
            fail(f"embed: no frames within 20 s: {st}\nhost:\n{host.text()[-2000:]}")
        a = st
        time.sleep(0.5)
        b = s.js(EMBED_STATE)
        stats, seen = b["stats"], b["seen"]
        log(
            f"embed: page at {b['origin']} (host at http://127.0.0.1:{port}) with the PSK: "
            f"frames_decoded={stats['frames_decoded']} decode_errors={stats['decode_errors']} "
            f"frame events {seen['frames']} = frames_displayed {stats['frames_displayed']}, "
            f"connect events {[(c['url'], c['connects']) for c in seen['connect']]}"
        )
        if b["origin"] == f"http://127.0.0.1:{port}":
            fail("embed: the page is on the host's origin")
        if stats["decode_errors"] != 0 or not stats["connected"]:
            fail(f"embed: decode errors or not connected: {stats}")
        if set(stats) != served_keys:
            fail(f"embed: stats() has other fields than the served page's linkstreamStats(): {sorted(set(stats) ^ served_keys)}")
        if seen["frames"] != stats["frames_displayed"]:
            fail(f"embed: {seen['frames']} frame events for {stats['frames_displayed']} frames displayed")
        if [(c["type"], c["url"], c["connects"]) for c in seen["connect"]] != [("connect", stream, 1)]:
            fail(f"embed: want one connect event for {stream}: {seen['connect']}")
        f0, f1 = a["seen"]["lastFrame"], seen["lastFrame"]
        w, h = (int(x) for x in source.split(":")[1].split("@")[0].split("x"))
        if f1["type"] != "frame" or (f1["width"], f1["height"]) != (w, h) or f1["bytes"] <= 0:
            fail(f"embed: frame event: want type frame, {w}x{h}, bytes > 0: {f1}")
        if not f1["index"] > f0["index"]:
            fail(f"embed: the frame events' index did not advance: {f0['index']} -> {f1['index']}")
        if abs(f1["index"] - stats["last_frame_index"]) > 30:
            fail(f"embed: frame event index {f1['index']} far from last_frame_index {stats['last_frame_index']}")
        if not (f1["captureUs"] > 0 and f1["receivedMs"] <= f1["decodedMs"] <= f1["displayedMs"]):
            fail(f"embed: frame event timestamps out of order: {f1}")
        log(f"embed: last frame event {json.dumps(f1)}")

        bad = s.js(EMBED_BAD_ARGS, stream)
        for name, msg in bad.items():
            if not msg:
                fail(f"embed: {name}: accepted, want an error")
        log("embed: bad arguments refused: " + "; ".join(f"{k}: {v}" for k, v in bad.items()))

        # The host goes away: a disconnect event; it comes back: a second
        # connect event and frames again.
        host.stop()
        st, ok = embed_wait(s, lambda x: len(x["seen"]["disconnect"]) >= 1 and not x["stats"]["connected"], 10)
        if not ok:
            fail(f"embed: no disconnect event after the host stopped: {st}")
        dis = st["seen"]["disconnect"][0]
        if not (dis["type"] == "disconnect" and dis["established"] is True and dis["reason"]
                and isinstance(dis["reconnectInMs"], (int, float))):
            fail(f"embed: disconnect event: {dis}")
        log(f"embed: disconnect event {json.dumps(dis)}")
        host = Host(binary, port, source, extra=extra)
        base = st["seen"]["frames"]
        st, ok = embed_wait(s, lambda x: len(x["seen"]["connect"]) >= 2 and x["seen"]["frames"] > base + 10, 15)
        if not ok:
            fail(f"embed: no second connect event and frames after the host came back: {st}")
        if st["seen"]["connect"][1]["connects"] != 2 or st["stats"]["reconnects"] != 1:
            fail(f"embed: second connect event: {st['seen']['connect']}, reconnects {st['stats']['reconnects']}")
        log(f"embed: the host restarted: connect event {st['seen']['connect'][1]['connects']}, frames again")

        # close(): nothing runs any more.
        s.js(EMBED_COUNT)
        time.sleep(1.0)
        st = s.js(EMBED_STATE)
        if not (st["raf"] > 10 and st["timeouts"] >= 1):
            fail(f"embed: the animation frames and timers were not seen running before close(): raf {st['raf']} timeouts {st['timeouts']}")
        running = (st["raf"], st["timeouts"])
        left_before = len(re.findall(r"viewer \d+ left", host.text()))
        c = s.js(EMBED_CLOSE)
        before = c["before"]
        deadline = time.time() + 10
        while time.time() < deadline and len(re.findall(r"viewer \d+ left", host.text())) == left_before:
            time.sleep(0.05)
        if len(re.findall(r"viewer \d+ left", host.text())) == left_before:
            fail(f"embed: the host did not see the viewer leave after close():\n{host.text()[-1500:]}")
        time.sleep(1.5)
        s.js(EMBED_INPUT)
        time.sleep(0.3)
        st = s.js(EMBED_STATE)
        after, seen = st["stats"], st["seen"]
        if len(seen["disconnect"]) != c["disconnects"] + 1 or seen["disconnect"][-1]["reason"] != "closed" \
                or seen["disconnect"][-1]["reconnectInMs"] is not None:
            fail(f"embed: close() fired no disconnect event with reason 'closed': {seen['disconnect']}")
        same = ["frames_received", "bytes_received", "frames_decoded", "frames_displayed", "connects",
                "input_sent", "input_dropped", "input_unmapped", "fps", "kbps"]
        changed = {k: (before[k], after[k]) for k in same if before[k] != after[k]}
        if changed:
            fail(f"embed: counters moved after close(): {changed}")
        if seen["frames"] != c["frames"]:
            fail(f"embed: {seen['frames'] - c['frames']} frame events after close()")
        if st["raf"] != 0 or st["timeouts"] != 0:
            fail(f"embed: after close(): {st['raf']} animation frames, {st['timeouts']} timers requested")
        if not (st["closed"] is True and after["connected"] is False and after["state"] == "closed"):
            fail(f"embed: after close(): closed {st['closed']}, connected {after['connected']}, state {after['state']!r}")
        if before["fps"] <= 0:
            fail(f"embed: fps was {before['fps']} before close()")
        log(
            f"embed: close(): disconnect event 'closed', the host saw the viewer leave; in 1.8 s after it: "
            f"0 frames (received {after['frames_received']}), 0 frame events, 0 animation frames "
            f"(were {running[0]} in 1 s), 0 timers (were {running[1]}), input ignored, fps frozen at {after['fps']}"
        )
    finally:
        if s:
            s.close()
        if srv:
            srv.stop()
        host.stop()
        shutil.rmtree(d, ignore_errors=True)
        os.unlink(psk.name)


def cpu_ticks(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                parts = f.read().rsplit(")", 1)[1].split()
            total += int(parts[11]) + int(parts[12])
        except OSError:
            pass
    return total


def chromium_pids(driver_pid):
    """Chromium processes under chromedriver (all of them: renderer, GPU, browser)."""
    out = subprocess.run(["ps", "-e", "-o", "pid=,ppid="], capture_output=True, text=True).stdout
    children = {}
    for line in out.split("\n"):
        p = line.split()
        if len(p) == 2:
            children.setdefault(int(p[1]), []).append(int(p[0]))
    todo, seen = [driver_pid], []
    while todo:
        p = todo.pop()
        for c in children.get(p, []):
            seen.append(c)
            todo.append(c)
    return seen


def measure(wd, binary, source, seconds):
    port = free_port()
    host = Host(binary, port, source)
    s = wd.session()
    r = {}
    try:
        s.go(f"http://127.0.0.1:{port}/")
        wait_for(s, lambda x: x["frames_decoded"] > 30, 20)
        time.sleep(2)
        pids = chromium_pids(wd.proc.pid)
        hz = os.sysconf("SC_CLK_TCK")
        a, t0 = cpu_ticks(pids), time.time()
        s0 = s.stats()
        time.sleep(seconds)
        b, t1 = cpu_ticks(pids), time.time()
        st = s.stats()
        r = {
            "source": source,
            "seconds": round(t1 - t0, 2),
            "fps_displayed": round((st["frames_displayed"] - s0["frames_displayed"]) / (t1 - t0), 1),
            "decode_ms_p50": st["decode_ms_p50"],
            "decode_ms_p95": st["decode_ms_p95"],
            "latency_ms_p50": st["latency_ms_p50"],
            "latency_ms_p99": st["latency_ms_p99"],
            "latency_samples": st["latency_samples"],
            "chromium_cpu_pct": round(100.0 * (b - a) / hz / (t1 - t0), 1),
            "frames_dropped": st["frames_dropped"],
            "decode_errors": st["decode_errors"],
        }
    finally:
        s.close()
        host.stop()
    # What the host managed: frames captured and encoded over its whole run.
    r["host_summary"] = host.line(r"(captured \d+ \(dropped \d+\), encoded \d+[^\n]*)")
    if r["host_summary"] is None:
        r["host_tail"] = host.text()[-600:]
    r["loadavg_1min"] = os.getloadavg()[0]
    log("MEASURE " + json.dumps(r))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", required=True, help="the linkstream binary")
    ap.add_argument("--out", required=True, help="directory for the screenshot")
    ap.add_argument("--chromedriver", default="chromedriver")
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    ap.add_argument("--source", default="testsrc:1280x720@30")
    ap.add_argument("--grant-ms", type=int, default=1000,
                    help="the host's keyframe interval for a joining viewer (its keyframe grant period)")
    ap.add_argument("--measure", action="append", default=[], metavar="SOURCE",
                    help="only measure with this source (repeatable)")
    ap.add_argument("--measure-seconds", type=float, default=10)
    ap.add_argument("--only-embed", action="store_true",
                    help="only the embed check (and the served page's stats fields it compares with)")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    wd = WebDriver(a.chromedriver, a.chromium)
    host = None
    try:
        if a.measure:
            for src in a.measure:
                measure(wd, a.binary, src, a.measure_seconds)
            return
        host = Host(a.binary, free_port(), a.source)
        s = wd.session()
        if a.only_embed:
            try:
                s.go(f"http://127.0.0.1:{host.port}/")
                st, ok = wait_for(s, lambda x: x["connected"], 15)
                if not ok:
                    fail(f"the served page did not connect: {st}")
                served_keys = set(st)
            finally:
                s.close()
            check_embed(wd, a.binary, a.source, served_keys)
            log("browser page: embed check passed")
            return
        try:
            check_load(s, host)
            served_keys = set(s.stats())
            check_index(s)
            check_screenshot(s, a.out)
            check_input(s, host)
            check_midstream(wd, host, a.grant_ms)
            host = check_reconnect(s, a.binary, host, a.source)
        finally:
            s.close()
        check_tls(wd, a.binary, a.source)
        t0 = time.time()
        check_embed(wd, a.binary, a.source, served_keys)
        log(f"embed: {time.time() - t0:.1f} s")
        log("browser page: all checks passed")
    finally:
        if host:
            host.stop()
        wd.quit()


if __name__ == "__main__":
    main()
