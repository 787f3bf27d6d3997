"""Issue 10's resource faults in the crawler: browsers that outlive their crawl or their
start, and image checks that never end. Real Chromium, real processes and signals."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from scrapy.settings import Settings

from crawler.browser import Browser, BrowserSpec, process_tree
from crawler.errors import BrowserError


def browser_processes(root: int) -> list[int]:
    """chromedriver and Chromium processes under ``root``."""
    found = []
    for pid in process_tree(root):
        try:
            name = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            continue
        if "chrom" in name:
            found.append(pid)
    return found


@pytest.fixture(scope="module")
def spec():
    try:
        return BrowserSpec.from_settings(Settings({"SELENIUM_PAGE_LOAD_TIMEOUT": 10}))
    except BrowserError as exc:
        pytest.skip(f"no local browser: {exc}")


@pytest.mark.browser
def test_a_browser_whose_set_up_fails_is_not_left_running(spec, tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # this test's profile folders
    before = browser_processes(os.getpid())
    endless = BrowserSpec(spec.driver_name, spec.driver_executable_path, spec.driver_arguments,
                          spec.browser_executable_path, page_load_timeout=float("inf"))
    with pytest.raises(BrowserError, match="page load timeout"):
        Browser.start(endless)  # the driver starts; setting an infinite timeout raises
    assert browser_processes(os.getpid()) == before
    assert not list(tmp_path.glob("pingo-chrome-*"))


# ---- image checks that would never end -------------------------------------------------------

def scan_bomb(side: int = 4000, repeats: int = 3000) -> bytes:
    """A small progressive JPEG with thousands of scans, each re-read over the whole image:
    ~2 ms a scan at 4000x4000, so 3000 scans (~75 kB) decode for seconds, 100 000 for minutes."""
    import io
    import struct

    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (side, side), 128).save(buf, "JPEG", progressive=True, quality=90)
    data = buf.getvalue()
    scans, i = [], 2
    while data[i + 1] != 0xD9:  # walk the markers up to EOI
        end = i + 2 + struct.unpack(">H", data[i + 2:i + 4])[0]
        if data[i + 1] == 0xDA:  # a scan: its entropy-coded data runs to the next marker
            while not (data[end] == 0xFF and data[end + 1] != 0 and not 0xD0 <= data[end + 1] <= 0xD7):
                end += 1
            scans.append((i, end))
        i = end
    ac = next((s, e) for s, e in scans if data[s + 5 + 2 * data[s + 4]] > 0)  # Ss > 0: an AC scan
    return data[:i] + data[ac[0]:ac[1]] * repeats + data[i:]


def test_a_body_that_decodes_for_too_long_is_refused_within_the_time_limit():
    import time

    from conftest import png_bytes
    from crawler.imagecheck import ImageChecker

    checker = ImageChecker(min_side=16, max_pixels=40_000_000, timeout=1.0)
    try:
        assert checker.check(png_bytes(), "image/png")[0] == "ok"
        (worker,) = checker._all
        start = time.monotonic()
        verdict = checker.check(scan_bomb(), "image/jpeg")
        took = time.monotonic() - start
        assert verdict[:2] == ("refused", "not_image") and "over 1s" in verdict[2]
        assert took < 4, f"the check took {took:.1f}s"
        assert worker.process.poll() is not None and checker.timeouts == 1  # killed, not waited for
        assert checker.check(png_bytes(), "image/png")[0] == "ok"  # a fresh worker carries on
        workers = list(checker._all)
    finally:
        checker.close()
    assert all(w.process.poll() is not None for w in workers)
