"""What the live view knows about the run: the newest frame, a short history and the run's state.

The run loop only swaps references here (`publish` takes a lock for a few microseconds and never
waits on a viewer): annotation and JPEG encoding happen on the viewers' threads, once per frame
that a viewer actually gets, so a slow or stalled viewer never slows or queues the run. Memory is
bounded: the newest frame, the last few frames sent to a viewer (so "keep this frame" keeps what
the person saw) and a fixed-length history of small summaries."""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgecell.live.words import describe, source_label

HISTORY = 20  # recent results on the page
SENT_KEPT = 6  # frames recently sent to a viewer that "keep this frame" can still save
STREAM_LONG_SIDE = 1280  # the stream is scaled down to this; "keep" saves the full resolution
JPEG_QUALITY = 80
FPS_WINDOW_S = 3.0


class Published:
    """A record as the run handed it over (a dict, or a `pipeline.Record`) and when. Its dict and
    its plain words are made on first use, on a viewer's thread: the run pays for neither."""

    __slots__ = ("raw", "time", "_dict", "_entry")

    def __init__(self, raw: Any, when: float):
        self.raw, self.time = raw, when
        self._dict: dict | None = None
        self._entry: dict | None = None

    @property
    def ok(self) -> bool:
        return bool(self.raw.get("ok", False) if isinstance(self.raw, dict) else self.raw.ok)

    def as_dict(self) -> dict:
        if self._dict is None:
            self._dict = self.raw if isinstance(self.raw, dict) else self.raw.to_dict()
        return self._dict

    def entry(self) -> dict:
        """For the history and the page: source, time, headline, level, flags, details, figures."""
        if self._entry is None:
            record = self.as_dict()
            self._entry = {"source": source_label(str(record.get("source", ""))), "time": self.time,
                           **describe(record).to_dict()}
        return self._entry


@dataclass
class Snapshot:
    """One frame as the run produced it; the JPEG is made on first request, by a viewer thread."""

    seq: int
    published: Published
    image: np.ndarray | None
    overlay: np.ndarray | Callable[[], np.ndarray] | None
    captured: float  # time.time() when the run published it
    draw: tuple[str, Any] | None = None  # (task, result): the helper process draws the overlay from these
    _jpeg: bytes | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def record(self) -> dict:
        return self.published.as_dict()

    def overlay_image(self) -> np.ndarray | None:
        if callable(self.overlay):
            self.overlay = self.overlay()
        return self.overlay if self.overlay is not None else self.image

    def jpeg(self, encoder=None) -> bytes | None:
        """The stream picture (overlay, else the frame), scaled down, encoded once: by the helper
        process (`encoder`) when there is one, else on this thread."""
        with self._lock:
            if self._jpeg is None:
                if encoder is not None and self.image is not None:
                    if isinstance(self.overlay, np.ndarray):
                        self._jpeg = encoder.encode(self.overlay, None, None)
                    else:
                        self._jpeg = encoder.encode(self.image, *(self.draw or (None, None)))
                    return self._jpeg
                picture = self.overlay_image()
                if picture is None:
                    return None
                self._jpeg = encode_jpeg(picture)
            return self._jpeg


def encode_jpeg(rgb: np.ndarray, long_side: int = STREAM_LONG_SIDE, quality: int = JPEG_QUALITY) -> bytes:
    import cv2

    if rgb.ndim == 2:
        rgb = np.stack([rgb] * 3, axis=-1)
    h, w = rgb.shape[:2]
    scale = long_side / max(h, w)
    if scale < 1:
        rgb = cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buf.tobytes()


class LiveState:
    """Thread-safe holder between the run loop (one writer) and the viewers (many readers)."""

    def __init__(self, run_info: dict | None = None, out: Path | None = None):
        self.run_info = dict(run_info or {})
        self.out = Path(out) if out else None
        self._cond = threading.Condition()
        self._newest: Snapshot | None = None
        self._sent: deque[Snapshot] = deque(maxlen=SENT_KEPT)
        self._history: deque[Published] = deque(maxlen=HISTORY)
        self._times: deque[float] = deque()
        self.frames = 0
        self.failures = 0
        self.dropped: int | None = None  # None: the source does not say (the page then shows nothing)
        self.reconnects: int | None = None
        self.viewers = 0
        self.finished = False
        self.started = time.time()
        self._device_cache: tuple[float, dict] = (0.0, {})
        self.encoder = None  # encoder.Encoder once the live view starts (None: draw on the viewer's thread)

    def jpeg(self, snap: Snapshot) -> bytes | None:
        """The snapshot's JPEG through the helper process; if the helper fails, on this thread
        from then on (the page keeps working, only the run pays more)."""
        encoder = self.encoder
        if encoder is not None:
            try:
                return snap.jpeg(encoder)
            except (OSError, EOFError, RuntimeError, ValueError):
                self.encoder = None
        return snap.jpeg()

    # ------------------------------------------------------------------ the run loop's side
    def publish(self, record: Any, image: np.ndarray | None = None,
                overlay: np.ndarray | Callable[[], np.ndarray] | None = None,
                draw: tuple[str, Any] | None = None) -> None:
        """The newest record (a dict or a `pipeline.Record`), its frame and its overlay (an array, or
        a callable that draws it, so that only frames a viewer gets are drawn). Never blocks on a
        viewer, and leaves the record's dict and words to the viewers."""
        now = time.time()
        entry = Published(record, now)
        with self._cond:
            self.frames += 1
            self.failures += 0 if entry.ok else 1
            self._times.append(now)
            while self._times and now - self._times[0] > FPS_WINDOW_S:
                self._times.popleft()
            self._newest = Snapshot(self.frames, entry, image, overlay, now, draw)
            self._history.appendleft(entry)
            self._cond.notify_all()

    def note_source(self, dropped: int, reconnects: int) -> None:
        with self._cond:
            self.dropped, self.reconnects = dropped, reconnects

    def finish(self) -> None:
        with self._cond:
            self.finished = True
            self._cond.notify_all()

    # ------------------------------------------------------------------ the viewers' side
    def wait_newer(self, seq: int, timeout: float) -> Snapshot | None:
        """The newest snapshot if it is newer than `seq`, waiting up to `timeout` seconds."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while (self._newest is None or self._newest.seq <= seq) and not self.finished:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)
            if self._newest is None or self._newest.seq <= seq:
                return None
            return self._newest

    def mark_sent(self, snap: Snapshot) -> None:
        with self._cond:
            if snap not in self._sent:
                self._sent.append(snap)

    def newest(self) -> Snapshot | None:
        with self._cond:
            return self._newest

    def find(self, seq: int | None) -> Snapshot | None:
        """A frame a viewer was sent (by its number), else the newest."""
        with self._cond:
            for snap in self._sent:
                if snap.seq == seq:
                    return snap
            return self._newest

    def history(self) -> list[dict]:
        with self._cond:
            entries = list(self._history)
        return [entry.entry() for entry in entries]

    def viewer(self, delta: int) -> None:
        with self._cond:
            self.viewers += delta

    def status(self) -> dict:
        """The run's state for the page and for `GET /api/status`."""
        now = time.time()
        with self._cond:
            times = [t for t in self._times if now - t <= FPS_WINDOW_S]
            fps = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 and times[-1] > times[0] else 0.0
            newest = self._newest
            out = {
                **self.run_info,
                "state": "finished" if self.finished else "running",
                "frames": self.frames, "failures": self.failures, "dropped_frames": self.dropped,
                "reconnects": self.reconnects, "fps": round(fps, 2), "viewers": self.viewers,
                "seq": newest.seq if newest else 0,
                "last_frame_age_s": round(now - newest.captured, 2) if newest else None,
                "uptime_s": round(now - self.started, 1),
                "can_keep": self.out is not None,
            }
        out.update(self._device())
        return out

    def _device(self) -> dict:
        """Temperature and throttling, read at most every 5 s (vcgencmd is a process start)."""
        stamp, cached = self._device_cache
        if time.monotonic() - stamp > 5.0:
            from edgecell.device import temperature_c, throttled

            cached = {"temperature_c": temperature_c(), "throttled": throttled()}
            self._device_cache = (time.monotonic(), cached)
        return cached

    # ------------------------------------------------------------------ keep this frame
    def keep(self, seq: int | None) -> dict:
        """Save a frame a viewer saw (full resolution), its overlay and its record into
        OUT/kept/. File names come from the frame's own number and the clock, never the request."""
        from edgecell.images import write_image_atomic
        from edgecell.sinks import write_json_atomic

        if self.out is None:
            raise LookupError("no output folder: start the run with --out DIR to keep frames")
        snap = self.find(seq)
        if snap is None or snap.image is None:
            raise LookupError("no frame to keep yet")
        folder = self.out / "kept"
        stem = f"frame_{snap.seq:06d}_{time.strftime('%Y%m%d-%H%M%S', time.localtime(snap.captured))}"
        written = [write_image_atomic(folder / f"{stem}.png", snap.image)]
        overlay = snap.overlay_image()
        if overlay is not None and overlay is not snap.image:
            written.append(write_image_atomic(folder / f"{stem}_overlay.png", overlay))
        written.append(write_json_atomic(folder / f"{stem}.json", snap.record))
        return {"seq": snap.seq, "asked": seq, "files": [p.name for p in written], "folder": str(folder)}

