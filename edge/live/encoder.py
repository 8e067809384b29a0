"""Drawing the overlay and encoding the stream's JPEG in a helper process.

Why not a thread: measured on the 2-core development machine (benchmarks/live_view.py, paired
blocks), a viewer thread that drew and encoded 15 frames a second inside the run's process cost
the run 26 % of its frames per second although it used 5 % of a core: the task's drawing is many
short OpenCV calls, each a hand-over of Python's GIL, and every hand-over makes the run's thread wait
(the "convoy" effect). A helper process has its own GIL. The frame travels through shared memory
(one copy, no pickling of pixels); the task result (small) and the JPEG (tens of KB) through a pipe.
The helper is `python -m edgecell.live.encoder`, started once with the live view; if it cannot
start or dies, the viewer thread draws and encodes itself (slower for the run, never wrong)."""

from __future__ import annotations

import os
import pickle
import struct
import subprocess
import sys
import threading
from multiprocessing import shared_memory
from typing import Any

import numpy as np

HEADER = struct.Struct(">I")


def _write(stream, obj) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(HEADER.pack(len(data)) + data)
    stream.flush()


def _read(stream):
    head = stream.read(HEADER.size)
    if len(head) < HEADER.size:
        raise EOFError("encoder closed")
    n = HEADER.unpack(head)[0]
    data = stream.read(n)
    if len(data) < n:
        raise EOFError("encoder closed")
    return pickle.loads(data)


class Encoder:
    """The helper process and the shared buffer a frame is copied into (grown when a frame is larger)."""

    def __init__(self):
        self._proc = subprocess.Popen([sys.executable, "-m", "edgecell.live.encoder"], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self._lock = threading.Lock()
        self._shm: shared_memory.SharedMemory | None = None

    def encode(self, image: np.ndarray, task: str | None, result: Any) -> bytes:
        """The JPEG of `image` with `task`'s overlay of `result` drawn on it (none if task is None)."""
        with self._lock:
            if self._shm is None or self._shm.size < image.nbytes:
                self._release()
                self._shm = shared_memory.SharedMemory(create=True, size=max(image.nbytes, 1 << 20))
            view = np.ndarray(image.shape, image.dtype, buffer=self._shm.buf)
            np.copyto(view, image)
            del view
            _write(self._proc.stdin, (self._shm.name, image.shape, image.dtype.str, task, result))
            ok, payload = _read(self._proc.stdout)
        if not ok:
            raise RuntimeError(payload)
        return payload

    def _release(self) -> None:
        if self._shm is not None:
            self._shm.close()
            self._shm.unlink()
            self._shm = None

    def close(self) -> None:
        with self._lock:
            try:
                self._proc.stdin.close()
            except OSError:
                pass
            try:
                self._proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._release()


def _attach(name: str) -> shared_memory.SharedMemory:
    """Open the run's buffer without adopting it: before Python 3.13 an attached segment is
    registered with this process's resource tracker, which would unlink it when the helper ends."""
    if sys.version_info >= (3, 13):
        return shared_memory.SharedMemory(name=name, track=False)
    from multiprocessing import resource_tracker

    shm = shared_memory.SharedMemory(name=name)
    resource_tracker.unregister(shm._name, "shared_memory")  # noqa: SLF001 - the documented workaround
    return shm


def serve(stdin, stdout) -> None:
    """The helper's loop: (shared-memory name, shape, dtype, task, result) in, (ok, JPEG or error) out."""
    from edgecell.live.state import encode_jpeg
    from edgecell.tasks import get_task

    attached: dict[str, shared_memory.SharedMemory] = {}
    while True:
        try:
            name, shape, dtype, task, result = _read(stdin)
        except EOFError:
            break
        try:
            if name not in attached:
                for old in attached.values():
                    old.close()
                attached = {name: _attach(name)}
            image = np.ndarray(shape, np.dtype(dtype), buffer=attached[name].buf)
            picture = get_task(task).annotate(image, result) if task and result is not None else image
            reply = (True, encode_jpeg(picture))
            del image, picture
        except Exception as exc:  # noqa: BLE001 - any failure goes back to the viewer as text
            reply = (False, f"{type(exc).__name__}: {exc}")
        _write(stdout, reply)
    for shm in attached.values():
        shm.close()


if __name__ == "__main__":
    out = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # a stray print must not corrupt the replies
    serve(sys.stdin.buffer, out)
