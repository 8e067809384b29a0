"""The live view's HTTP server: the standard library's ThreadingHTTPServer, no other package.

Routes (all GET unless said):
  /                 the page (index.html, live.css, live.js ship in this package: no CDN, offline)
  /ws               WebSocket: one binary message per frame (4-byte length, JSON, JPEG), text status
  /stream.mjpg      the same newest frames as MJPEG, for other programs (VLC, a second screen)
  /frame.jpg        the newest frame as one JPEG
  /api/latest       the newest record (the JSONL line) with its plain words
  /api/status       the run's state (fps, dropped frames, model, backend, temperature, ...)
  /api/history      the recent results
  POST /api/keep    save the frame the viewer shows (full resolution) and its record into OUT/kept/

Each viewer has its own thread that waits for a frame newer than the one it last got and sends
only the newest, so a slow viewer skips frames and a stalled one times out; the run never waits.
Nothing can change the run's settings. Off localhost every request needs the token (query
`?token=`, which sets a cookie, or `Authorization: Bearer`); on localhost the Host header must
name this machine (no DNS rebinding), and the WebSocket and keep accept only same-origin pages."""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import socket
import struct
import sys
import threading
import time
from dataclasses import fields
from http import HTTPStatus
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from urllib.parse import parse_qs, urlsplit

from edgecell.live.state import LiveState, Snapshot
from edgecell.live.words import Words

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
COOKIE = "edgecell_live"
SEND_TIMEOUT_S = 20.0  # a viewer that takes longer than this for one frame is dropped
HEARTBEAT_S = 1.0
HISTORY_EVERY_S = 1.0  # the page's "recent results" list is refreshed at most this often  # status to every viewer at least this often (fps, "no new frame for N s")
MAX_STREAM_FPS = 15.0  # enough to follow a slide or a film being positioned
# Drawing the overlay and encoding the JPEG take CPU from the run (a Pi's cores, the GIL, a CPU
# share): after each frame a viewer waits until that frame's CPU time is at most this share of the
# wall time AND of the CPU the whole process used meanwhile (a busy run on a crowded CPU), but no
# longer than STREAM_MAX_WAIT_S; so a slow or crowded device slows the stream, not the run.
STREAM_CPU_SHARE = 0.05
STREAM_MAX_WAIT_S = 0.5
STATIC = {"/": ("index.html", "text/html; charset=utf-8"),
          "/live.css": ("live.css", "text/css; charset=utf-8"),
          "/live.js": ("live.js", "text/javascript; charset=utf-8")}
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; "
       "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _static(name: str) -> bytes:
    return resources.files("edgecell.live").joinpath("static", name).read_bytes()


class LiveServer(ThreadingHTTPServer):
    """The server with what its handlers share: the state, the token and the static files."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], state: LiveState, token: str | None):
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.state = state
        self.token = token
        self.files = {path: (_static(name), ctype) for path, (name, ctype) in STATIC.items()}
        self.stopping = threading.Event()
        super().__init__(address, LiveHandler)

    def handle_error(self, request, client_address) -> None:
        """One line, not a traceback in the run's console; the run and the other viewers go on."""
        exc = sys.exc_info()[1]
        if not isinstance(exc, (ConnectionError, TimeoutError)):
            print(f"edgecell: live view: {type(exc).__name__}: {exc} (answering {client_address[0]})",
                  file=sys.stderr)


class LiveHandler(BaseHTTPRequestHandler):
    server: LiveServer
    protocol_version = "HTTP/1.1"
    server_version = "edgecell-live"
    sys_version = ""

    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass  # the run's console is for results; a viewer's requests are not news

    # ------------------------------------------------------------------ access
    def _authorised(self) -> bool:
        """Token off localhost; on localhost, a Host header that names this machine."""
        token = self.server.token
        if token is None:
            host = urlsplit("//" + (self.headers.get("Host") or "")).hostname or ""
            return is_loopback(host)
        offered = self._query().get("token", [""])[0]
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            offered = offered or auth[7:].strip()
        cookie = SimpleCookie(self.headers.get("Cookie", ""))
        if not offered and COOKIE in cookie:
            offered = cookie[COOKIE].value
        return hmac.compare_digest(offered.encode(), token.encode())

    def _same_origin(self) -> bool:
        """A browser sends Origin on WebSocket and POST: it must be this server (another site's
        page must not read the stream or press "keep" through the viewer's browser)."""
        origin = self.headers.get("Origin")
        return origin is None or urlsplit(origin).netloc == self.headers.get("Host", "")

    def _query(self) -> dict[str, list[str]]:
        return parse_qs(urlsplit(self.path).query)

    def _deny(self) -> None:
        if self.server.token is None:
            return self._send_json({"error": "this live view answers only to this machine's own name "
                                             "(localhost / 127.0.0.1)"}, HTTPStatus.FORBIDDEN)
        if urlsplit(self.path).path.startswith("/api/"):
            return self._send_json({"error": "token required: add ?token=... (printed when the run "
                                             "started) or send Authorization: Bearer ..."}, HTTPStatus.UNAUTHORIZED)
        page = (b"<!doctype html><meta charset=utf-8><title>edgecell live view: token needed</title>"
                b"<body style='font:20px sans-serif;margin:2em'><h1>Token needed</h1><p>This live view is "
                b"open to the network, so it needs the token that <code>edgecell run</code> printed when it "
                b"started. Open the address it printed, which ends in <code>?token=...</code></p>")
        self._send(page, "text/html; charset=utf-8", HTTPStatus.UNAUTHORIZED)

    # ------------------------------------------------------------------ responses
    def _send(self, body: bytes, ctype: str, status: int = HTTPStatus.OK, headers: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Security-Policy", CSP)
        self.send_header("Referrer-Policy", "no-referrer")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_json(self, obj, status: int = HTTPStatus.OK) -> None:
        self._send(json.dumps(obj, separators=(",", ":")).encode(), "application/json", status)

    # ------------------------------------------------------------------ routes
    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        if not self._authorised():
            return self._deny()
        path = urlsplit(self.path).path
        state = self.server.state
        if self.server.token is not None and "token" in self._query():
            # the token came in the address: keep it in a cookie, show a clean address
            self.send_response(HTTPStatus.SEE_OTHER)
            self.send_header("Location", path)
            self.send_header("Set-Cookie", f"{COOKIE}={self.server.token}; HttpOnly; SameSite=Strict; Path=/")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if path in self.server.files:
            body, ctype = self.server.files[path]
            return self._send(body, ctype)
        if path == "/api/latest":
            snap = state.newest()
            if snap is None:
                return self._send_json({"error": "no result yet"}, HTTPStatus.NOT_FOUND)
            return self._send_json(_latest(snap))
        if path == "/api/status":
            return self._send_json(state.status())
        if path == "/api/history":
            return self._send_json(state.history())
        if path == "/frame.jpg":
            snap = state.newest()
            jpeg = state.jpeg(snap) if snap is not None else None
            if jpeg is None:
                return self._send_json({"error": "no frame yet"}, HTTPStatus.NOT_FOUND)
            return self._send(jpeg, "image/jpeg", headers={"X-Edgecell-Seq": str(snap.seq)})
        if path == "/ws":
            return self._websocket()
        if path == "/stream.mjpg":
            return self._mjpeg()
        self._send_json({"error": "not found"}, HTTPStatus.NOT_FOUND)

    def do_POST(self) -> None:
        if not self._authorised():
            return self._deny()
        if urlsplit(self.path).path != "/api/keep":
            return self._send_json({"error": "not found"}, HTTPStatus.NOT_FOUND)
        if not self._same_origin() or self.headers.get("Content-Type", "").split(";")[0] != "application/json":
            return self._send_json({"error": "keep accepts JSON from this page only"}, HTTPStatus.FORBIDDEN)
        declared = self.headers.get("Content-Length") or "0"
        if not declared.isdigit():
            return self._send_json({"error": "bad Content-Length"}, HTTPStatus.BAD_REQUEST)
        length = int(declared)
        if length > 1024:
            return self._send_json({"error": "request too large"}, HTTPStatus.REQUEST_ENTITY_TOO_LARGE)
        try:
            asked = json.loads(self.rfile.read(length) or b"{}").get("seq")
            seq = asked if isinstance(asked, int) and not isinstance(asked, bool) else None
        except (ValueError, AttributeError):
            return self._send_json({"error": 'expected {"seq": N}'}, HTTPStatus.BAD_REQUEST)
        try:
            kept = self.server.state.keep(seq)
        except LookupError as exc:
            return self._send_json({"error": str(exc)}, HTTPStatus.CONFLICT)
        except OSError as exc:
            return self._send_json({"error": f"could not save: {exc.strerror or exc}"}, HTTPStatus.INTERNAL_SERVER_ERROR)
        self._send_json(kept)

    # ------------------------------------------------------------------ streams
    def _frames(self):
        """Snapshots for one viewer: always the newest, at most MAX_STREAM_FPS and within
        STREAM_CPU_SHARE, None as a heartbeat when nothing new came for HEARTBEAT_S; ends when the
        server stops or the run has finished."""
        state, seq = self.server.state, 0
        state.viewer(+1)
        try:
            while not self.server.stopping.is_set():
                snap = state.wait_newer(seq, HEARTBEAT_S)
                if snap is None:
                    yield None
                    if state.finished:
                        return
                    continue
                wall, cpu, process = time.monotonic(), time.thread_time(), time.process_time()
                yield snap  # the caller draws, encodes and sends it here
                state.mark_sent(snap)
                seq = snap.seq
                _pace(wall, process, (time.thread_time() - cpu) / STREAM_CPU_SHARE)
        finally:
            state.viewer(-1)

    def _websocket(self) -> None:
        key = self.headers.get("Sec-WebSocket-Key")
        if self.headers.get("Upgrade", "").lower() != "websocket" or not key:
            return self._send_json({"error": "WebSocket upgrade expected"}, HTTPStatus.BAD_REQUEST)
        if not self._same_origin():
            return self._send_json({"error": "cross-origin WebSocket refused"}, HTTPStatus.FORBIDDEN)
        accept = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
        self.send_response(HTTPStatus.SWITCHING_PROTOCOLS)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept)
        self.end_headers()
        self.close_connection = True
        self.connection.settimeout(SEND_TIMEOUT_S)
        state, history_at = self.server.state, 0.0
        try:
            for snap in self._frames():
                if snap is None:
                    self.wfile.write(ws_frame(json.dumps({"status": state.status()}).encode(), text=True))
                    continue
                with_history = time.monotonic() - history_at >= HISTORY_EVERY_S
                history_at = time.monotonic() if with_history else history_at
                head = json.dumps(_frame_message(snap, state, with_history)).encode()
                self.wfile.write(ws_frame(struct.pack(">I", len(head)) + head + (state.jpeg(snap) or b"")))
            self.wfile.write(ws_frame(b"", opcode=0x8))  # close: the run ended
        except (OSError, ValueError):
            pass  # the viewer went away or stalled past SEND_TIMEOUT_S; the run goes on

    def _mjpeg(self) -> None:
        boundary = "edgecellframe"
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={boundary}")
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.close_connection = True
        self.connection.settimeout(SEND_TIMEOUT_S)
        try:
            for snap in self._frames():
                jpeg = self.server.state.jpeg(snap) if snap is not None else None
                if jpeg is None:
                    continue
                self.wfile.write(f"--{boundary}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n"
                                 f"X-Edgecell-Seq: {snap.seq}\r\n\r\n".encode() + jpeg + b"\r\n")
        except (OSError, ValueError):
            pass


def _pace(wall: float, process: float, budget_s: float) -> None:
    """Wait (see STREAM_CPU_SHARE) until `budget_s` of wall time and of process CPU time have
    passed since (`wall`, `process`), at least 1 / MAX_STREAM_FPS, at most STREAM_MAX_WAIT_S."""
    start_wait = max(1.0 / MAX_STREAM_FPS, budget_s)
    while True:
        waited = time.monotonic() - wall
        if waited >= STREAM_MAX_WAIT_S or (waited >= start_wait and time.process_time() - process >= budget_s):
            return
        time.sleep(min(0.02, max(0.001, start_wait - waited)))


def _latest(snap: Snapshot) -> dict:
    """`GET /api/latest`: the newest record (the JSONL line) with its plain words."""
    entry = snap.published.entry()
    return {"seq": snap.seq, "captured": snap.captured, "record": snap.record,
            "words": {f.name: entry[f.name] for f in fields(Words)}}


def _frame_message(snap: Snapshot, state: LiveState, with_history: bool) -> dict:
    """What the page gets with a frame: its number, source and plain words, the run's status and,
    at most every HISTORY_EVERY_S, the history (each message is Python work under the GIL, which
    the run's thread waits for: the full record and a fresh history per frame cost a fast run 20 %)."""
    entry = snap.published.entry()
    out = {"seq": snap.seq, "captured": snap.captured, "source": entry["source"],
           "words": {f.name: entry[f.name] for f in fields(Words)}, "status": state.status()}
    if with_history:
        out["history"] = state.history()
    return out


def ws_frame(payload: bytes, *, text: bool = False, opcode: int | None = None) -> bytes:
    """One unmasked, unfragmented WebSocket frame (RFC 6455 5.2: a server never masks)."""
    op = opcode if opcode is not None else (0x1 if text else 0x2)
    n = len(payload)
    if n < 126:
        head = struct.pack(">BB", 0x80 | op, n)
    elif n < 1 << 16:
        head = struct.pack(">BBH", 0x80 | op, 126, n)
    else:
        head = struct.pack(">BBQ", 0x80 | op, 127, n)
    return head + payload
