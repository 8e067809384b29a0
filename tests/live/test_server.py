"""The live view's HTTP API and streams over plain sockets: the API, the token, same-origin
rules, viewers that come and go, and a viewer that reads slowly. Servers bind 127.0.0.1 only."""

from __future__ import annotations

import http.client
import json
import socket
from pathlib import Path

import pytest

from edgecell.benchmarks.live_view import ws_connect, ws_frame
from edgecell.live import parse_serve_address


def _get(view, path: str, headers: dict | None = None):
    conn = http.client.HTTPConnection("127.0.0.1", view.port, timeout=10)
    conn.request("GET", path, headers=headers or {})
    res = conn.getresponse()
    body = res.read()
    conn.close()
    return res, body


def _post_keep(view, body: bytes, headers: dict):
    conn = http.client.HTTPConnection("127.0.0.1", view.port, timeout=10)
    conn.request("POST", "/api/keep", body=body, headers=headers)
    res = conn.getresponse()
    out = json.loads(res.read())
    conn.close()
    return res.status, out


def test_serve_address_defaults_to_localhost():
    assert (parse_serve_address("8080").host, parse_serve_address("8080").needs_token) == ("127.0.0.1", False)
    address = parse_serve_address("0.0.0.0:8080")
    assert (address.host, address.port, address.needs_token) == ("0.0.0.0", 8080, True)
    assert parse_serve_address("[::1]:9000").needs_token is False


def test_latest_and_status_answer_with_the_newest_record(live, cells_frames):
    res, _ = _get(live, "/api/latest")
    assert res.status == 404
    for record, image, overlay in cells_frames:
        live.publish(record, image, overlay)
    res, body = _get(live, "/api/latest")
    latest = json.loads(body)
    assert res.status == 200 and latest["record"] == cells_frames[-1][0]
    assert latest["words"]["figures"][0][0] == "RBC"
    status = json.loads(_get(live, "/api/status")[1])
    assert (status["frames"], status["model"], status["state"]) == (len(cells_frames), "cells", "running")


def test_page_and_its_files_are_served_from_the_package(live):
    for path, kind in (("/", "text/html"), ("/live.js", "text/javascript"), ("/live.css", "text/css")):
        res, body = _get(live, path)
        assert res.status == 200 and res.getheader("Content-Type").startswith(kind) and body


def test_a_foreign_host_name_is_refused_on_localhost(live):
    res, _ = _get(live, "/api/status", {"Host": "attacker.example:8080"})
    assert res.status == 403


def test_token_is_required_when_set(live_with_token):
    assert _get(live_with_token, "/api/status")[0].status == 401
    assert _get(live_with_token, "/")[0].status == 401
    assert _get(live_with_token, "/api/status", {"Authorization": "Bearer wrong"})[0].status == 401
    assert _get(live_with_token, "/api/status", {"Authorization": "Bearer test-token-123"})[0].status == 200


def test_token_in_the_address_becomes_a_cookie(live_with_token):
    res, _ = _get(live_with_token, "/?token=test-token-123")
    assert res.status == 303 and res.getheader("Location") == "/"
    cookie = res.getheader("Set-Cookie").split(";")[0]
    assert _get(live_with_token, "/api/status", {"Cookie": cookie})[0].status == 200


def test_keep_saves_into_the_output_folder_only_from_this_page(live, cells_frames):
    record, image, overlay = cells_frames[0]
    live.publish(record, image, overlay)
    json_type = {"Content-Type": "application/json"}
    assert _post_keep(live, b'{"seq": 1}', {"Content-Type": "text/plain"})[0] == 403
    assert _post_keep(live, b'{"seq": 1}', {**json_type, "Origin": "http://evil.example"})[0] == 403
    status, kept = _post_keep(live, b'{"seq": "../../etc/passwd"}', json_type)
    assert status == 200 and kept["seq"] == 1
    folder = live.state.out / "kept"
    assert sorted(p.name for p in folder.iterdir()) == sorted(kept["files"])
    assert all(name.startswith("frame_000001_") for name in kept["files"])


def test_websocket_sends_frames_with_their_record(live, cells_frames):
    sock = ws_connect(live.port)
    record, image, overlay = cells_frames[0]
    live.publish(record, image, overlay)
    message = ws_frame(sock)
    sock.close()
    assert message["seq"] == 1 and message["source"] == Path(record["source"]).name
    assert message["words"]["figures"] == [[name, n] for name, n in record["result"]["counts"].items()]
    assert message["jpeg"][:2] == b"\xff\xd8" and message["status"]["viewers"] == 1


def test_websocket_from_another_site_is_refused(live):
    with pytest.raises(ConnectionRefusedError, match="403"):
        ws_connect(live.port, "Origin: http://evil.example\r\n")


def test_viewers_that_come_and_go_leave_nothing_behind(live, cells_frames):
    record, image, overlay = cells_frames[0]
    for i in range(40):
        sock = ws_connect(live.port)
        live.publish(record, image, overlay)
        if i % 2:
            ws_frame(sock)
        sock.close()
    live.publish(record, image, overlay)
    sock = ws_connect(live.port)
    assert ws_frame(sock)["seq"] == 41
    sock.close()
    for _ in range(100):  # bounded: each dropped viewer's thread notices within a heartbeat
        if json.loads(_get(live, "/api/status")[1])["viewers"] == 0:
            break
        live.state.wait_newer(10**9, timeout=0.1)
    assert json.loads(_get(live, "/api/status")[1])["viewers"] == 0


def test_a_slow_viewer_skips_to_the_newest_frame_and_never_holds_the_run(live, cells_frames):
    sock = ws_connect(live.port)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    published = 300
    for i in range(published):  # the run goes on while the viewer reads nothing
        record, image, overlay = cells_frames[i % len(cells_frames)]
        live.publish(record, image, overlay)
    seqs = []
    while not seqs or seqs[-1] < published:
        seqs.append(ws_frame(sock)["seq"])
    sock.close()
    assert len(seqs) < published / 10  # it got a few frames, each the newest when it was ready
    assert seqs == sorted(set(seqs)) and seqs[-1] == published


def test_mjpeg_stream_for_other_programs(live, cells_frames):
    record, image, overlay = cells_frames[0]
    live.publish(record, image, overlay)
    conn = http.client.HTTPConnection("127.0.0.1", live.port, timeout=10)
    conn.request("GET", "/stream.mjpg")
    res = conn.getresponse()
    assert res.getheader("Content-Type").startswith("multipart/x-mixed-replace")
    part = res.read(2000)
    conn.close()
    assert b"Content-Type: image/jpeg" in part and b"\xff\xd8" in part


def test_a_malformed_keep_request_is_refused_and_the_server_goes_on(live):
    conn = http.client.HTTPConnection("127.0.0.1", live.port, timeout=10)
    conn.putrequest("POST", "/api/keep")
    conn.putheader("Content-Type", "application/json")
    conn.putheader("Content-Length", "many")
    conn.endheaders()
    assert conn.getresponse().status == 400
    conn.close()
    assert _get(live, "/api/status")[0].status == 200
