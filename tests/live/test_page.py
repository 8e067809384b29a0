"""The page in a real browser (headless Chromium from the distribution's package): it loads with no
network beyond this server, shows the counts of the newest record, follows the stream, and asks
for the token when one is set. Bounded waits only; the server binds 127.0.0.1."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from edgecell.benchmarks.chromium import Chromium, chromium_path

if chromium_path() is None:
    if os.environ.get("CI"):
        raise RuntimeError("CI needs chromium for the live-view page tests (.ci/run installs it)")
    pytest.skip("chromium is not installed (apt-get install chromium)", allow_module_level=True)

SHOWN = "document.getElementById('shown').dataset"


@pytest.fixture()
def browser(tmp_path: Path):
    chromium = Chromium(tmp_path / "profile")
    yield chromium
    chromium.close()


def test_page_shows_the_counts_of_the_newest_record(live, cells_frames, browser):
    for record, image, overlay in cells_frames:
        live.publish(record, image, overlay)
    browser.open(f"http://127.0.0.1:{live.port}/")
    browser.wait_for(f"{SHOWN}.seq === '{len(cells_frames)}'")
    counts = cells_frames[-1][0]["result"]["counts"]
    tiles = browser.evaluate("[...document.querySelectorAll('#headline .figure')].map(t => t.innerText)")
    assert [t.split() for t in tiles] == [[str(n), name] for name, n in counts.items()]
    assert browser.evaluate("document.getElementById('frame').naturalWidth") > 0


def test_page_loads_nothing_from_elsewhere(live, cells_frames, browser):
    live.publish(*cells_frames[0])
    browser.open(f"http://127.0.0.1:{live.port}/")
    browser.wait_for(f"{SHOWN}.seq === '1'")
    origins = browser.evaluate("[...new Set(performance.getEntriesByType('resource').map(e => new URL(e.name).origin))]")
    assert set(origins) <= {f"http://127.0.0.1:{live.port}", "null"}


def test_stream_follows_the_run(live, cells_frames, browser):
    live.publish(*cells_frames[0])
    browser.open(f"http://127.0.0.1:{live.port}/")
    browser.wait_for(f"{SHOWN}.seq === '1'")
    for record, image, overlay in cells_frames[1:]:
        live.publish(record, image, overlay)
    browser.wait_for(f"{SHOWN}.seq === '{len(cells_frames)}'")
    assert browser.evaluate("document.getElementById('source').textContent") == Path(cells_frames[-1][0]["source"]).name


def test_page_asks_for_the_token_and_works_with_it(live_with_token, cells_frames, browser):
    live_with_token.publish(*cells_frames[0])
    base = f"http://127.0.0.1:{live_with_token.port}/"
    browser.open(base)
    assert browser.wait_for("document.title").endswith("token needed")
    browser.open(base + "?token=test-token-123")
    browser.wait_for(f"{SHOWN}.seq === '1'")
    assert browser.evaluate("location.search") == ""
