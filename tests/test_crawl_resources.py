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
