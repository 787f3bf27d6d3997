"""Issue 10's resource faults in the crawler: browsers that outlive their crawl or their
start, and image checks that never end. Real Chromium, real processes and signals."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

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


@pytest.mark.browser
def test_a_browser_whose_set_up_fails_is_not_left_running(spec, tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # this test's profile folders
    before = browser_processes(os.getpid())
    endless = BrowserSpec(
        spec.driver_name,
        spec.driver_executable_path,
        spec.driver_arguments,
        spec.browser_executable_path,
        page_load_timeout=float("inf"),
    )
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
        end = i + 2 + struct.unpack(">H", data[i + 2 : i + 4])[0]
        if data[i + 1] == 0xDA:  # a scan: its entropy-coded data runs to the next marker
            while not (
                data[end] == 0xFF and data[end + 1] != 0 and not 0xD0 <= data[end + 1] <= 0xD7
            ):
                end += 1
            scans.append((i, end))
        i = end
    ac = next((s, e) for s, e in scans if data[s + 5 + 2 * data[s + 4]] > 0)  # Ss > 0: an AC scan
    return data[:i] + data[ac[0] : ac[1]] * repeats + data[i:]


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


def test_a_stop_signal_to_the_crawls_group_does_not_kill_a_check_in_progress():
    """Found by the chaos rounds: SIGTERM to `pingo crawl`'s group killed image-check
    workers (just started, or mid-decode); the body was refused as not_image ("the decoder
    crashed") and its URL never fetched again: a good photo lost for good."""
    import signal
    import threading
    import time

    from conftest import png_bytes

    from crawler.imagecheck import ImageChecker

    checker = ImageChecker(min_side=16, max_pixels=40_000_000, timeout=120.0)
    try:
        assert checker.check(png_bytes(), "image/png")[0] == "ok"
        (worker,) = checker._all
        # a signal to the crawl's process group never reaches it, even while it starts
        assert os.getsid(worker.process.pid) != os.getsid(0)
        verdicts = []
        slow = threading.Thread(
            target=lambda: verdicts.append(checker.check(scan_bomb(repeats=400), "image/jpeg"))
        )
        slow.start()
        time.sleep(0.3)  # the decode takes about a second
        worker.process.send_signal(signal.SIGTERM)
        slow.join(120)
        assert verdicts and verdicts[0][0] == "ok", verdicts
    finally:
        checker.close()


# ---- browsers of a killed crawl --------------------------------------------------------------


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _alive(pids: dict[int, str]) -> list[int]:
    from crawler.browser import _start_time

    return [pid for pid, started in pids.items() if _start_time(pid) == started]


@pytest.mark.browser
def test_a_sigkilled_crawl_leaves_no_browser_running_and_the_next_crawl_removes_its_folders(
    project, tmp_path, monkeypatch
):
    import shutil
    import signal
    import subprocess
    import sys
    import time

    from crawler_fixtures.helpers import crawl_toml

    from crawler.demo_images import ensure_demo_images
    from crawler.demo_site import make_server
    from crawler.run import crawl

    # This test's browser folders, apart from other crawls'; a short path, as Chromium puts
    # a Unix socket (at most 107 bytes of path) under $TMPDIR.
    tmp = Path(tempfile.mkdtemp(prefix="pingo-t-", dir="/tmp"))
    monkeypatch.setenv("TMPDIR", str(tmp))
    monkeypatch.setattr(tempfile, "tempdir", None)
    images = ensure_demo_images(tmp_path / "cache", count=20, size=32)
    with make_server(images, image_delay=0.3).start() as slow:
        project.write(crawl_toml(slow.url, {"circle": 20}, concurrency=1, max_drivers=2))
        cli = subprocess.Popen(
            [sys.executable, "-m", "pingo.cli", "--config", str(project.path), "-q", "crawl"],
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        browsers: dict[int, str] = {}
        try:
            deadline = time.monotonic() + 90
            crawler_pid = None
            while time.monotonic() < deadline and cli.poll() is None:
                tree = process_tree(cli.pid)
                crawler_pid = next((p for p in tree if "crawler.run" in _cmdline(p)), None)
                if crawler_pid and any(p.startswith("/image/") for p in slow.site.requests):
                    browsers = {
                        p: s for p, s in process_tree(crawler_pid).items() if "chrom" in _cmdline(p)
                    }
                    if len(browsers) >= 4:  # both drivers and their browsers
                        break
                time.sleep(0.1)
            assert cli.poll() is None and browsers, "the crawl ended before it could be killed"
            folders = sorted(tmp.glob("pingo-chrome-*"))
            assert len(folders) == 2
            os.kill(crawler_pid, signal.SIGKILL)  # the crawl process only, as the OOM killer would
            deadline = time.monotonic() + 10
            while _alive(browsers) and time.monotonic() < deadline:
                time.sleep(0.1)
            survivors = _alive(browsers)
            assert not survivors, "browser processes outlived their crawl: " + ", ".join(
                _cmdline(p)[:80] for p in survivors
            )
            assert all(f.exists() for f in folders)  # the kernel cannot remove those
        finally:
            for pid in _alive(browsers):
                os.kill(pid, signal.SIGKILL)
            if cli.poll() is None:  # the CLI ends by itself once its crawl process is gone
                os.killpg(cli.pid, signal.SIGKILL)
            cli.wait()
        # The next crawl removes them before it starts (and carries on with the work).
        project.write(crawl_toml(slow.url, {"circle": 20}, concurrency=4, max_drivers=1))
        crawl(project.config, limit=1)
    try:
        assert not any(f.exists() for f in folders)
        assert list(tmp.glob("pingo-chrome-*")) == []  # its own browser's folder went at its end
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
