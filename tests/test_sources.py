import struct
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgecell.errors import SourceError
from edgecell.sources import LatestFrameReader, describe_source, iter_frames


def _video(path: Path, frames: int = 6) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    for i in range(frames):
        writer.write(np.full((48, 64, 3), i * 20, np.uint8))
    writer.release()
    return path


def test_describe_source():
    assert describe_source("0") == "camera"
    assert describe_source("rtsp://cam/stream") == "url"
    assert describe_source("clip.mp4") == "video"
    assert describe_source("smear.jpg") == "image"


def test_folder_is_recursive_sorted_and_keeps_going_past_bad_files(tmp_path, real_jpeg):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "2.jpg").write_bytes(real_jpeg.read_bytes())
    (tmp_path / "1.jpg").write_bytes(b"")
    (tmp_path / "3.jpg").write_bytes(real_jpeg.read_bytes())
    frames = list(iter_frames(str(tmp_path)))
    assert [Path(f.name).relative_to(tmp_path).as_posix() for f in frames] == ["1.jpg", "3.jpg", "b/2.jpg"]
    assert frames[0].image is None and "0 bytes" in frames[0].error
    assert frames[1].image is not None and frames[2].image is not None


def test_max_frames_stops_early(tmp_path):
    assert len(list(iter_frames(str(_video(tmp_path / "v.avi", 6)), max_frames=4))) == 4


def test_video_frames_are_rgb(tmp_path):
    frames = list(iter_frames(str(_video(tmp_path / "v.avi", 3))))
    assert len(frames) == 3 and frames[2].image.shape == (48, 64, 3)


def test_empty_folder_is_source_error(tmp_path):
    with pytest.raises(SourceError, match="no images"):
        list(iter_frames(str(tmp_path)))


def test_camera_that_does_not_exist_is_one_clear_error():
    with pytest.raises(SourceError, match="camera 97: cannot be opened"):
        LatestFrameReader(97, reconnect_seconds=0.1)


def test_live_source_that_drops_is_reopened(tmp_path):
    # a video file read as a live stream "drops" at its end; the reader reopens it and goes on
    reader = LatestFrameReader(str(_video(tmp_path / "v.avi", 3)), reconnect_seconds=5)
    try:
        got = []
        for image in reader.frames():
            got.append(image)
            if len(got) == 5:
                break
        assert len(got) == 5 and reader.reconnects >= 1
    finally:
        reader.close()


def test_live_source_counts_the_frames_it_skips(tmp_path):
    reader = LatestFrameReader(str(_video(tmp_path / "v.avi", 12)), reconnect_seconds=5)
    try:
        frames = reader.frames()
        next(frames)
        with reader._lock:  # the camera goes on while the consumer is busy: wait for 10 more frames
            reader._lock.wait_for(lambda: reader._seq >= 11, timeout=30)
            read = reader._seq
        next(frames)
        assert reader.dropped >= read - 2 >= 9
    finally:
        reader.close()


def test_live_source_that_vanishes_gives_up_after_retries(tmp_path):
    video = _video(tmp_path / "v.avi", 2)
    reader = LatestFrameReader(str(video), reconnect_seconds=1.0)
    video.unlink()
    frames = list(reader.frames())
    reader.close()
    assert reader.gave_up and len(frames) <= 2


def test_existing_folder_named_with_digits_is_a_folder_not_a_camera(tmp_path, real_jpeg, monkeypatch):
    (tmp_path / "2024").mkdir()
    (tmp_path / "2024" / "a.jpg").write_bytes(real_jpeg.read_bytes())
    monkeypatch.chdir(tmp_path)
    assert describe_source("2024") == "folder"
    frames = list(iter_frames("2024"))
    assert [Path(f.name).name for f in frames] == ["a.jpg"] and frames[0].image is not None


def test_existing_file_named_with_digits_is_an_image(tmp_path, real_jpeg, monkeypatch):
    (tmp_path / "7").write_bytes(real_jpeg.read_bytes())
    monkeypatch.chdir(tmp_path)
    assert describe_source("7") == "image"
    assert describe_source("8") == "camera"  # nothing called 8 here: a camera index


def test_folder_run_reports_a_20000x20000_bmp_and_goes_on(tmp_path, real_jpeg):
    header = b"BM" + struct.pack("<IHHI", 118, 0, 0, 54) + struct.pack("<IiiHHIIiiII", 40, 20000, 20000, 1, 24,
                                                                          0, 0, 2835, 2835, 0, 0)
    (tmp_path / "a_bomb.bmp").write_bytes(header + bytes(64))
    (tmp_path / "b_smear.jpg").write_bytes(real_jpeg.read_bytes())
    frames = list(iter_frames(str(tmp_path)))
    assert frames[0].image is None and "20000x20000" in frames[0].error and "\n" not in frames[0].error
    assert frames[1].image is not None


def test_camera_index_given_as_int_is_a_camera_even_beside_a_folder_of_that_name(tmp_path, monkeypatch):
    (tmp_path / "0").mkdir()
    monkeypatch.chdir(tmp_path)
    assert describe_source(0) == "camera" and describe_source("0") == "folder"
