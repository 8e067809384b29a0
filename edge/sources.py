"""Where images come from: a file, a folder (recursive, sorted), a video file, a camera index or
an RTSP/HTTP URL, all through OpenCV. Live sources keep only the newest frame (a slow model never
builds an unbounded queue) and a camera that drops is reopened with back-off while the run goes on.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from edgecell.errors import EdgecellError, SourceError
from edgecell.images import IMAGE_SUFFIXES, decode_image, is_dicom

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")
URL_PREFIXES = ("rtsp://", "rtmp://", "http://", "https://")


@dataclass
class Frame:
    """One image to process, or the reason it could not be read (`image` is None then)."""

    name: str
    index: int
    image: np.ndarray | None = None
    error: str | None = None
    dropped: int = 0  # live sources: frames skipped so far to stay on the newest (the live view shows it)
    reconnects: int = 0  # live sources: times the source was reopened so far


def list_images(folder: Path) -> list[Path]:
    """Image files under `folder`, sorted; suffix-less files too when they are DICOM (PACS exports)."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")
                  and (p.suffix.lower() in IMAGE_SUFFIXES or (not p.suffix and _is_dicom_file(p))))


def _is_dicom_file(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            return is_dicom(f.read(132))
    except OSError:
        return False


def describe_source(source: str | int) -> str:
    """'image' | 'folder' | 'video' | 'camera' | 'url'.

    A path that exists is always a path, whatever its name: a folder called `2024` is a folder,
    not camera 2024. Only a number that names nothing on disk is a camera index; an int (what
    `--camera N` gives) is always a camera."""
    if isinstance(source, int):
        return "camera"
    path = Path(source)
    if path.is_dir():
        return "folder"
    if not path.exists():
        if source.isdigit():
            return "camera"
        if source.lower().startswith(URL_PREFIXES):
            return "url"
    if path.suffix.lower() in VIDEO_SUFFIXES:
        return "video"
    return "image"


def count_frames(source: str | int) -> int | None:
    """Number of frames if known in advance (for a progress bar)."""
    kind = describe_source(source)
    if kind == "folder":
        return len(list_images(Path(source)))
    if kind == "image":
        return 1
    if kind == "video":
        import cv2

        cap = cv2.VideoCapture(source)
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if cap.isOpened() else 0
        cap.release()
        return n or None
    return None


def iter_frames(source: str | int, *, max_frames: int | None = None, fps: float | None = None,
                reconnect_seconds: float = 30.0) -> Iterator[Frame]:
    """Yield frames from any source. Unreadable images come as Frames with `error` set, so a batch
    goes on; a source that cannot be opened at all raises SourceError."""
    kind = describe_source(source)
    if kind == "image":
        if not Path(source).exists():
            raise SourceError(f"{source}: no such file or folder; give an image, a folder, a video, "
                              "a camera index (0) or an rtsp:// URL")
        frames: Iterator[Frame] = _image_frames([Path(source)])
    elif kind == "folder":
        files = list_images(Path(source))
        if not files:
            raise SourceError(f"{source}: folder has no images ({', '.join(IMAGE_SUFFIXES)})")
        frames = _image_frames(files)
    elif kind == "video":
        frames = _video_frames(source)
    else:
        frames = _live_frames(int(source) if kind == "camera" else source, reconnect_seconds)
    interval = 1.0 / fps if fps else 0.0
    last = 0.0
    for n, frame in enumerate(frames):
        if max_frames is not None and n >= max_frames:
            break
        if interval:
            wait = last + interval - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            last = time.monotonic()
        yield frame


def _image_frames(files: list[Path]) -> Iterator[Frame]:
    for i, path in enumerate(files):
        try:
            yield Frame(str(path), i, image=decode_image(path))
        except EdgecellError as exc:
            yield Frame(str(path), i, error=str(exc))


def _video_frames(path: str) -> Iterator[Frame]:
    import cv2

    if not Path(path).is_file():
        raise SourceError(f"{path}: no such video file")
    cap = cv2.VideoCapture(path)
    if not cap.isOpened():
        raise SourceError(f"{path}: OpenCV cannot open this video; expected {', '.join(VIDEO_SUFFIXES)}")
    i = 0
    try:
        while True:
            ok, bgr = cap.read()
            if not ok:
                break
            yield Frame(f"{path}#{i}", i, image=cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
            i += 1
    finally:
        cap.release()
    if i == 0:
        raise SourceError(f"{path}: video has no readable frames (corrupt, or a codec OpenCV lacks)")


class LatestFrameReader:
    """Reads a live source on a thread and keeps only the newest frame; reopens the source with
    exponential back-off (0.5 s doubling to 8 s) when it drops, for up to `reconnect_seconds`."""

    def __init__(self, target: int | str, reconnect_seconds: float = 30.0):
        import cv2

        self._cv2 = cv2
        self.target = target
        self.reconnect_seconds = reconnect_seconds
        self._cap = cv2.VideoCapture(target)
        if not self._cap.isOpened():
            what = f"camera {target}" if isinstance(target, int) else str(target)
            raise SourceError(f"{what}: cannot be opened; check the index with `ls /dev/video*` "
                              "or the URL, and that no other program holds the camera")
        self._lock = threading.Condition()
        self._frame: np.ndarray | None = None
        self._seq = 0
        self._stopped = False
        self.gave_up = False
        self.reconnects = 0
        self.dropped = 0  # frames read but never handed out, because a newer one came first
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        delay, down_since = 0.5, None
        while not self._stopped:
            ok, bgr = self._cap.read() if self._cap is not None else (False, None)
            if ok:
                delay, down_since = 0.5, None
                with self._lock:
                    self._frame, self._seq = bgr, self._seq + 1
                    self._lock.notify_all()
                continue
            down_since = down_since or time.monotonic()
            if time.monotonic() - down_since > self.reconnect_seconds:
                with self._lock:
                    self.gave_up = True
                    self._lock.notify_all()
                return
            time.sleep(delay)
            delay = min(delay * 2, 8.0)
            if self._cap is not None:
                self._cap.release()
            self._cap = self._cv2.VideoCapture(self.target)
            self.reconnects += 1

    def frames(self) -> Iterator[np.ndarray]:
        seen = 0
        while True:
            with self._lock:
                while self._seq == seen and not self.gave_up:
                    self._lock.wait(timeout=1.0)
                if self._seq == seen and self.gave_up:
                    return
                self.dropped += self._seq - seen - 1
                seen, bgr = self._seq, self._frame
            yield self._cv2.cvtColor(bgr, self._cv2.COLOR_BGR2RGB)

    def close(self) -> None:
        self._stopped = True
        self._thread.join(timeout=2)
        if self._cap is not None:
            self._cap.release()


def _live_frames(target: int | str, reconnect_seconds: float) -> Iterator[Frame]:
    reader = LatestFrameReader(target, reconnect_seconds)
    name = f"camera{target}" if isinstance(target, int) else str(target)
    try:
        for i, image in enumerate(reader.frames()):
            yield Frame(f"{name}#{i}", i, image=image, dropped=reader.dropped, reconnects=reader.reconnects)
    finally:
        reader.close()
    if reader.gave_up:
        raise SourceError(f"{name}: source lost and not back after {reconnect_seconds:.0f} s of retries; "
                          "results so far are kept")
