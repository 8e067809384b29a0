"""The live view: `edgecell run MODEL SOURCE --serve [HOST:]PORT` shows the newest annotated frame,
the result in plain words, a short history and the run's state on a local web page.

It is a sink of the run loop: `LiveView.publish(record, image, overlay)` per frame, which only swaps
references (see `state`); the server (`server`, standard library only) runs on its own threads.
A display-less Raspberry Pi beside a microscope or an X-ray cart's screen needs no GUI OpenCV,
no desktop and no internet: the page's files ship in this package."""

from __future__ import annotations

import os
import secrets
import socket
import threading
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from edgecell.errors import EdgecellError
from edgecell.live.server import LiveServer, is_loopback
from edgecell.live.state import LiveState

DEFAULT_HOST = "127.0.0.1"
TOKEN_ENV = "EDGECELL_SERVE_TOKEN"


@dataclass(frozen=True)
class ServeAddress:
    host: str
    port: int

    @property
    def needs_token(self) -> bool:
        return not is_loopback(self.host)


def parse_serve_address(value: str) -> ServeAddress:
    """'8080' -> 127.0.0.1:8080; '0.0.0.0:8080'; '[::]:8080'; 'pi.local:8080'."""
    text = str(value).strip()
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = DEFAULT_HOST, text
    host = host.strip("[]") or DEFAULT_HOST
    if not port.isdigit() or int(port) > 65535:
        raise EdgecellError(f"--serve {value!r}: expected [HOST:]PORT, e.g. --serve 8080 (this machine only) "
                            "or --serve 0.0.0.0:8080 (other devices, with a token)")
    return ServeAddress(host, int(port))


class LiveView:
    """The live web page as a sink of a run (`pipeline.Sink`: `write`, `close`), or a context
    manager around any loop that calls `publish`."""

    wants_overlay = False  # drawn here, on a viewer's thread, only for frames a viewer gets

    def __init__(self, address: str | ServeAddress, *, out: Path | None = None, run_info: dict | None = None,
                 token: str | None = None, draw: Callable[[np.ndarray, object], np.ndarray] | None = None):
        """`draw(image, result)` makes the overlay when the run did not (`pipeline.annotate` with the
        model bound), on a viewer's thread and only for frames a viewer gets."""
        self.draw = draw
        self.address = address if isinstance(address, ServeAddress) else parse_serve_address(address)
        if token is None and self.address.needs_token:
            token = os.environ.get(TOKEN_ENV) or secrets.token_urlsafe(16)
        self.token = token  # a token given here is asked for even on localhost
        self.state = LiveState(run_info, out)
        try:
            self.server = LiveServer((self.address.host, self.address.port), self.state, self.token)
        except OSError as exc:
            raise EdgecellError(f"--serve {self.address.host}:{self.address.port}: cannot listen there "
                                f"({exc.strerror or exc}); pick another port or host") from None
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="edgecell-live", daemon=True)

    @property
    def url(self) -> str:
        host = self.address.host
        if host in ("0.0.0.0", "::"):
            host = socket.gethostname()
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}/" + (f"?token={self.token}" if self.token else "")

    def banner(self) -> str:
        """The line printed at start: where to look, and who can."""
        if self.token is None:
            return (f"live view: {self.url} (this machine only; --serve 0.0.0.0:{self.port} shows it to "
                    "other devices, with a token)")
        source = f"from {TOKEN_ENV}" if os.environ.get(TOKEN_ENV) == self.token else "new for this run"
        return (f"live view: {self.url} (open to the network on {self.address.host}:{self.port}: every "
                f"request needs this token, {source})")

    def start(self) -> "LiveView":
        """Serve, and start the helper process that draws and encodes the stream (`encoder`)."""
        from edgecell.live.encoder import Encoder

        try:
            self.state.encoder = Encoder()
        except OSError:
            self.state.encoder = None  # the viewer's thread draws instead
        self._thread.start()
        return self

    def publish(self, record: dict, image: np.ndarray | None = None,
                overlay: np.ndarray | Callable[[], np.ndarray] | None = None) -> None:
        self.state.publish(record, image, overlay)

    def observe(self, frames: Iterable) -> Iterator:
        """The run's frames, passed on unchanged; a camera's or stream's dropped frames and
        reconnects (`sources.Frame`) go to the page on the way."""
        live_source = self.state.run_info.get("live_source", False)
        for frame in frames:
            if live_source:
                self.state.note_source(frame.dropped, frame.reconnects)
            yield frame

    def write(self, record, image: np.ndarray | None, overlay: np.ndarray | None) -> None:
        """The run loop's sink call (`pipeline.Sink`): a Record, its frame and the overlay if one was
        drawn. The frame is copied (a sink must not hold the loop's arrays); drawing waits for a viewer."""
        image = None if image is None else image.copy()
        result = getattr(record, "result", None)
        draw = None
        if overlay is None and result is not None and image is not None:
            draw = (record.task, result)
            if self.draw is not None:
                overlay = partial(self.draw, image, result)  # for "keep this frame" (full resolution)
        self.state.publish(record, image, overlay, draw)  # its dict is made by a viewer, if one asks

    def close(self) -> None:
        self.state.finish()
        self.server.stopping.set()
        if self._thread.is_alive():  # shutdown() waits for serve_forever, which never ran otherwise
            self.server.shutdown()
            self._thread.join(timeout=2)
        self.server.server_close()
        if self.state.encoder is not None:
            self.state.encoder.close()

    def __enter__(self) -> "LiveView":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()


def opencv_has_gui() -> bool:
    """False for the headless OpenCV builds (the default install): their build says 'GUI: NONE'."""
    import cv2

    for line in cv2.getBuildInformation().splitlines():
        key, _, value = line.strip().partition(":")
        if key.strip() == "GUI":
            return value.strip().upper() not in ("NONE", "NO", "")
    return True


def check_display_options(*, show: bool, serve: str | None) -> None:
    """`--show` and `--serve` checked before the model loads: one line for what cannot work."""
    if serve:
        parse_serve_address(serve)
    if show:
        check_show()


def check_show() -> None:
    """One clear line at start when `--show` cannot open a window, instead of a failure per image."""
    if not opencv_has_gui():
        raise EdgecellError("--show needs an OpenCV with windows, and this one is the headless build; "
                            "use --serve 8080 and open http://127.0.0.1:8080/ in a browser (works "
                            "without a desktop), or pip install opencv-python for windows")
    if os.name == "posix" and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")) \
            and not os.uname().sysname == "Darwin":
        raise EdgecellError("--show needs a desktop (no DISPLAY here); use --serve 0.0.0.0:8080 and open "
                            "the printed address in a browser on another device")


def start_live_view(serve: str, *, out: Path | None, model, gate=None, source: str = "", kind: str = "",
                    print_line: Callable[[str], None] = print) -> LiveView:
    """`--serve`: the live view of a run of `model` (a loaded Model) on `source` (of `kind`: camera,
    url, video, folder, image), started and announced."""
    info = model.info
    run_info = {"model": info.name or Path(model.path).name, "task": info.task, "precision": info.precision,
                "backend": model.session.backend, "source": f"{kind} {source}".strip(),
                "live_source": kind in ("camera", "url"),
                "gate": (gate.info.name or Path(gate.path).name) if gate is not None else None}
    from edgecell.pipeline import annotate

    view = LiveView(serve, out=out, run_info=run_info, draw=partial(annotate, model)).start()
    print_line(view.banner())
    return view
