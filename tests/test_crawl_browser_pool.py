"""The browser pool on real headless Chromium, driven directly (no Scrapy reactor)."""

from __future__ import annotations

import collections
import os
import signal

import pytest

from crawler.browser import BrowserSpec, process_tree
from crawler.demo_images import ensure_demo_images
from crawler.demo_site import make_server
from crawler.pool import BrowserPool, RenderFailed, RenderJob
from crawler.selenium_request import Scroll

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    images = ensure_demo_images(tmp_path_factory.mktemp("cache"), count=40, size=32)
    with make_server(images).start() as server:
        yield server


def make_pool(spec, **kw):
    counts = collections.Counter()
    pool = BrowserPool(spec, stat=lambda key, n=1: counts.update({key: n}), **kw)
    return pool, counts


def test_scrolls_until_enough_results_then_recycles_and_quits(site, spec):
    pool, counts = make_pool(spec, size=1, pages_per_browser=2)
    try:
        job = RenderJob(
            f"{site.url}/search?q=circle",
            wait_until="#results a.result",
            scroll=Scroll("#results a.result", want=30, pause=2.0),
        )
        first = pool.render_blocking(job)
        assert first.status == 200 and first.scroll_count >= 30 and first.scrolls >= 2
        assert first.body.count(b'class="result"') == first.scroll_count
        # Everything there is: scrolling stops when it adds nothing.
        everything = pool.render_blocking(
            RenderJob(
                f"{site.url}/search?q=square",
                wait_until="#results a.result",
                scroll=Scroll("#results a.result", want=1000, pause=1.0),
            )
        )
        assert everything.scroll_count == 40
        shot = pool.render_blocking(
            RenderJob(
                f"{site.url}/search?q=triangle",
                screenshot=True,
                script="document.title = 'changed by script'",
            )
        )
        assert shot.screenshot[:8] == b"\x89PNG\r\n\x1a\n" and b"changed by script" in shot.body
        assert counts["selenium/page_count"] == 3
        assert counts["selenium/browser_recycled"] == 1 and counts["selenium/browser_started"] == 2
        live = list(pool._all)
    finally:
        pool.quit_all()
    assert all(not process_tree(b.driver_pid) for b in live)  # nothing left running


def test_page_status_is_reported(site, spec):
    pool, _ = make_pool(spec, size=1)
    try:
        assert pool.render_blocking(RenderJob(f"{site.url}/search?q=circle+http500")).status == 500
    finally:
        pool.quit_all()


def test_a_killed_browser_is_replaced_and_the_page_retried(site, spec):
    pool, counts = make_pool(spec, size=1)
    try:
        pool.render_blocking(RenderJob(f"{site.url}/search?q=circle"))
        (browser,) = pool._all
        for pid in process_tree(browser.driver_pid):
            if pid != browser.driver_pid:
                os.kill(pid, signal.SIGKILL)  # the browser dies, chromedriver lives on
        again = pool.render_blocking(
            RenderJob(f"{site.url}/search?q=square", wait_until="#results a.result")
        )
        assert again.status == 200 and b'class="result"' in again.body
        assert counts["selenium/browser_crashed"] == 1 and again.attempts == 2
        assert browser not in pool._all
    finally:
        pool.quit_all()


def test_a_browser_that_cannot_start_fails_the_render_with_a_stat(site):
    broken = BrowserSpec(driver_executable_path="/bin/false", browser_executable_path="/bin/false")
    pool, counts = make_pool(broken, size=1, retries=1)
    with pytest.raises(RenderFailed, match="not rendered after 2 attempts"):
        pool.render_blocking(RenderJob(f"{site.url}/search?q=circle"))
    assert counts["selenium/browser_start_failed"] == 2
    assert counts["selenium/render_failed"] == 1


def test_a_hung_render_is_killed_by_the_watchdog_and_then_fails(images_for_hang, spec):
    import threading

    with make_server(images_for_hang, page_delay=6.0).start() as stuck:
        pool, counts = make_pool(spec, size=1, retries=1, deadline=2.0)
        stop = threading.Event()

        def watchdog():  # the reactor's LoopingCall does this in a crawl
            while not stop.wait(0.3):
                pool.kill_hung()

        thread = threading.Thread(target=watchdog)
        thread.start()
        try:
            with pytest.raises(RenderFailed):
                pool.render_blocking(RenderJob(f"{stuck.url}/search?q=circle"))
        finally:
            stop.set()
            thread.join()
            pool.quit_all()
    assert counts["selenium/browser_hung"] == 2 and counts["selenium/render_failed"] == 1


@pytest.fixture(scope="module")
def images_for_hang(tmp_path_factory):
    return ensure_demo_images(tmp_path_factory.mktemp("cache"), count=4, size=32)
