"""What the live view (`edgecell run ... --serve`) costs a run (issue 19 targets).

    python -m edgecell.benchmarks.live_view [--frames 1500] [--repeats 3] [--pairs 20] [--rss-frames 50000] [--json]

0. Paired, in one process (the figure to quote on a shared CPU): `measure_paired`.

1. Video run speed: `edgecell run cells VIDEO` on a video made from the shipped smears (the stage
   panning across them), as subprocesses, the variants interleaved repeat by repeat so that a shared
   CPU slows all alike: without --serve; with --serve and one viewer reading at full speed over a
   WebSocket (a tablet beside the cart); with --serve and a headless Chromium showing the page on the
   same machine (a kiosk screen); with --serve and a viewer that connects and then never reads
   (stalled). Frames per second from the run's own summary ("N of N inputs in X s"), median of the
   repeats; target: one viewer within 5 % of no --serve, a stalled viewer no change.
2. Frame to screen: in the Chromium runs the page records, for each frame it paints, the time from
   the run publishing the record (after inference) to the paint (same clock, same machine); the
   capture -> record part is the record's own total_ms, reported beside it.
3. Resident memory over many frames with a viewer connected: in one process, a LiveView gets
   --rss-frames real records and frames (the shipped smears, overlays drawn on demand) as fast as
   it takes them while a WebSocket viewer reads; RSS after the first 1,000 frames and at the end.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from edgecell.benchmarks import stats

VARIANTS = ("no_serve", "viewer", "browser", "stalled")


# ----------------------------------------------------------------------------- a WebSocket viewer

def ws_connect(port: int, headers: str = "", timeout: float = 10.0) -> socket.socket:
    """Open the live view's /ws as a browser would (returns the socket after the 101 answer)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{headers}\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        byte = sock.recv(1)
        if not byte:
            raise ConnectionError("closed during the handshake")
        head += byte
    if not head.startswith(b"HTTP/1.1 101"):
        sock.close()
        raise ConnectionRefusedError(head.split(b"\r\n")[0].decode())
    return sock


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


def ws_message(sock: socket.socket) -> tuple[int, bytes]:
    """(opcode, payload) of the next server message (servers never mask)."""
    b0, b1 = _recv_exact(sock, 2)
    n = b1 & 0x7F
    if n == 126:
        n = struct.unpack(">H", _recv_exact(sock, 2))[0]
    elif n == 127:
        n = struct.unpack(">Q", _recv_exact(sock, 8))[0]
    return b0 & 0x0F, _recv_exact(sock, n)


def ws_frame(sock: socket.socket) -> dict:
    """The next frame message, skipping status heartbeats: its JSON head plus "jpeg" bytes."""
    while True:
        opcode, payload = ws_message(sock)
        if opcode == 0x8:
            raise ConnectionError("the run ended")
        if opcode == 0x2:
            n = struct.unpack(">I", payload[:4])[0]
            head = json.loads(payload[4:4 + n])
            head["jpeg"] = payload[4 + n:]
            return head


def _connect_retrying(port: int, deadline: float) -> socket.socket | None:
    while time.monotonic() < deadline:
        try:
            return ws_connect(port)
        except OSError:
            time.sleep(0.05)
    return None


def _viewer(port: int, stop: threading.Event, stalled: bool, got: list) -> None:
    sock = _connect_retrying(port, time.monotonic() + 120)
    if sock is None:
        return
    try:
        while not stop.is_set():
            if stalled:
                stop.wait(0.5)
                continue
            got.append(ws_frame(sock)["seq"])
    except OSError:
        pass
    finally:
        sock.close()


# ----------------------------------------------------------------------------- the video

def make_video(path: Path, frames: int) -> Path:
    """640 x 480 frames panning across the shipped smears, side by side (a stage moving)."""
    import cv2
    import numpy as np

    from edgecell.images import decode_image
    from edgecell.resources import shipped_samples
    from edgecell.sources import list_images

    smears = [cv2.resize(decode_image(p), (640, 480)) for p in list_images(shipped_samples("bccd"))]
    strip = np.concatenate(smears + smears[:1], axis=1)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30, (640, 480))
    span = strip.shape[1] - 640
    for i in range(frames):
        x = (i * 8) % span
        writer.write(cv2.cvtColor(np.ascontiguousarray(strip[:, x:x + 640]), cv2.COLOR_RGB2BGR))
    writer.release()
    return path


# ----------------------------------------------------------------------------- one run

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_once(video: Path, variant: str, threads: int | None, browser=None) -> dict:
    """One `edgecell run cells VIDEO` in a subprocess; its fps from the summary line."""
    port = _free_port()
    cmd = [sys.executable, "-m", "edgecell", "run", "cells", str(video)]
    if threads:
        cmd += ["--threads", str(threads)]
    if variant != "no_serve":
        cmd += ["--serve", f"127.0.0.1:{port}"]
    stop, got = threading.Event(), []
    viewer = None
    if variant in ("viewer", "stalled"):
        viewer = threading.Thread(target=_viewer, args=(port, stop, variant == "stalled", got), daemon=True)
        viewer.start()
    # its own session: its own scheduler autogroup, as a device's run is not sharing a CPU share
    # with the viewer program (a tablet) or the browser (it competes as a kiosk would, for cores)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "COLUMNS": "200"}, start_new_session=True)
    if variant == "browser":
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        browser.open(f"http://127.0.0.1:{port}/")
    out, err = proc.communicate(timeout=3600)
    stop.set()
    if viewer is not None:
        viewer.join(timeout=5)
    match = re.search(r"(\d+) of (\d+) inputs in ([\d.]+) s", out)
    if proc.returncode != 0 or not match:
        raise RuntimeError(f"{variant}: run failed ({proc.returncode}): {err[-500:]}")
    n, seconds = int(match.group(1)), float(match.group(3))
    row = {"variant": variant, "frames": n, "seconds": seconds, "fps": n / seconds}
    if variant == "viewer":
        row["frames_viewed"] = len(got)
    if variant == "browser":
        delays = browser.evaluate("window.edgecellDelays || []")
        row["frames_painted"] = browser.evaluate("Number(document.getElementById('shown').dataset.count)")
        row["publish_to_paint_ms"] = stats.summarize([1e3 * d for d in delays]) if delays else None
    return row


# ----------------------------------------------------------------------------- paired, in one process

class _KeepOpen:
    """The live view as a sink that outlives each block's run_frames (which closes its sinks)."""

    def __init__(self, live):
        self.live = live

    def write(self, record, image, overlay) -> None:
        self.live.write(record, image, overlay)

    def close(self) -> None:
        pass


def measure_paired(video: Path, viewer: str, pairs: int = 20, block: int = 50) -> dict:
    """The same run loop (`pipeline.run_frames`, the cells model) over the same `block` decoded
    frames of the video (decoding left out: the live view's share looks larger, not smaller), blocks
    that alternate between no live view and a live view with a viewer (`reading` or `stalled`,
    in its own process and session, as a tablet would be); fps ratio of each adjacent pair, so that
    the shared CPU's drift cancels out. An idle server thread costs nothing, so a block without the
    sink is a run without --serve."""
    from functools import partial
    from itertools import islice

    from edgecell.live import LiveView, ServeAddress
    from edgecell.model import load_model
    from edgecell.pipeline import annotate, run_frames
    from edgecell.resources import shipped_models
    from edgecell.sources import iter_frames

    model = load_model(shipped_models()["cells"], "auto")
    block_frames = list(islice(iter_frames(str(video)), block))  # every block runs the same frames
    ratios, fps = [], {"without": [], "with": []}
    with LiveView(ServeAddress("127.0.0.1", 0), draw=partial(annotate, model)) as live:
        client = subprocess.Popen([sys.executable, "-c", "import sys; from edgecell.benchmarks.live_view import "
                                   "view_forever; view_forever(int(sys.argv[1]), sys.argv[2] == 'stalled')",
                                   str(live.port), viewer], start_new_session=True)
        try:
            for _ in run_frames(model, block_frames, sinks=[_KeepOpen(live)]):
                pass  # warm-up, and the viewer connects
            for pair in range(pairs):
                pair_fps = {}
                for variant in (("without", "with") if pair % 2 else ("with", "without")):
                    sinks = [_KeepOpen(live)] if variant == "with" else []
                    started = time.perf_counter()
                    for _ in run_frames(model, block_frames, sinks=sinks):
                        pass
                    pair_fps[variant] = block / (time.perf_counter() - started)
                    fps[variant].append(pair_fps[variant])
                ratios.append(pair_fps["with"] / pair_fps["without"])
        finally:
            client.kill()
            client.wait()
    return {"viewer": viewer, "pairs": pairs, "block_frames": block,
            "fps_without_median": round(stats.median(fps["without"]), 2),
            "fps_with_median": round(stats.median(fps["with"]), 2),
            "ratio_median": round(stats.median(ratios), 4), "ratio_p10": round(stats.percentile(ratios, 10), 4),
            "ratio_p90": round(stats.percentile(ratios, 90), 4)}


def view_forever(port: int, stalled: bool) -> None:
    """A viewer in its own process (see `measure_paired`), until killed."""
    _viewer(port, threading.Event(), stalled, [])


# ----------------------------------------------------------------------------- memory

def measure_rss(frames: int) -> dict:
    """RSS of one process publishing `frames` real frames into a LiveView with a viewer reading."""
    import psutil

    from edgecell.live import LiveView, ServeAddress
    from edgecell.model import load_model
    from edgecell.pipeline import Record, annotate, predict
    from edgecell.resources import shipped_models, shipped_samples
    from edgecell.sources import iter_frames

    model = load_model(shipped_models()["cells"], "auto")
    items = []
    for frame in iter_frames(str(shipped_samples("bccd"))):
        result, timings = predict(model, frame.image)
        items.append((Record(frame.name, ok=True, task="cells", result=result, timings=timings).to_dict(),
                      frame.image, result))
    proc = psutil.Process()
    samples = []
    with tempfile.TemporaryDirectory() as tmp, LiveView(ServeAddress("127.0.0.1", 0), out=Path(tmp)) as view:
        stop, got = threading.Event(), []
        viewer = threading.Thread(target=_viewer, args=(view.port, stop, False, got), daemon=True)
        viewer.start()
        while not got:
            view.publish(*items[0][:2])
            time.sleep(0.01)
        started = time.perf_counter()
        for i in range(frames):
            record, image, result = items[i % len(items)]
            view.publish(dict(record, source=f"video.mp4#{i}"), image.copy(),
                         lambda image=image, result=result: annotate(model, image, result))
            if i % 1000 == 0:
                samples.append((i, proc.memory_info().rss))
            time.sleep(0.001)  # about a fast model's pace; the viewer is capped at its stream rate
        samples.append((frames, proc.memory_info().rss))
        elapsed = time.perf_counter() - started
        stop.set()
        viewer.join(timeout=5)
    base = next(rss for i, rss in samples if i >= 1000)
    return {"frames": frames, "seconds": round(elapsed, 1), "frames_viewed": len(got),
            "rss_mb_at_1000": round(base / 2**20, 1), "rss_mb_at_end": round(samples[-1][1] / 2**20, 1),
            "growth_mb": round((samples[-1][1] - base) / 2**20, 2),
            "max_mb_after_1000": round(max(rss for i, rss in samples if i >= 1000) / 2**20, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=1500, help="video length (frames)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="inference threads (default: the backend's)")
    parser.add_argument("--rss-frames", type=int, default=50000, help="0 to skip the memory part")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--pairs", type=int, default=20, help="paired in-process blocks per viewer (0: skip)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    variants = [v for v in args.variants.split(",") if v]
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        video = make_video(Path(tmp) / "stage.mp4", args.frames)
        report_paired = [measure_paired(video, viewer, args.pairs) for viewer in ("reading", "stalled")] \
            if args.pairs else []
        for row in report_paired:
            print(json.dumps(row), file=sys.stderr, flush=True)
        browser = None
        if "browser" in variants:
            from edgecell.benchmarks.chromium import Chromium

            browser = Chromium(Path(tmp) / "profile")
        try:
            for rep in range(args.repeats):
                order = variants[rep % len(variants):] + variants[:rep % len(variants)]
                for variant in order:
                    row = run_once(video, variant, args.threads, browser)
                    row["repeat"] = rep
                    rows.append(row)
                    print(json.dumps(row), file=sys.stderr, flush=True)
        finally:
            if browser is not None:
                browser.close()
    fps = {v: stats.median([r["fps"] for r in rows if r["variant"] == v]) for v in variants} if rows else {}
    report = {"fps_median": {v: round(f, 2) for v, f in fps.items()},
              "vs_no_serve": {v: round(fps[v] / fps["no_serve"] - 1, 4) for v in variants if "no_serve" in fps},
              "paired": report_paired, "runs": rows}
    if args.rss_frames:
        report["rss"] = measure_rss(args.rss_frames)
    print(json.dumps(report, indent=None if args.json else 2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
