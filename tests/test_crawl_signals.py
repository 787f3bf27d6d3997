"""Stopping `pingo crawl` with a signal sent to the CLI alone (not its process group).

The crawl runs Scrapy in a child process; whatever happens to the CLI, that child and its
browsers must end with it and store nothing once the CLI (and its job lock) is gone. Real CLI,
real crawl process, real Chromium, real signals; the demo site serves real photos slowly so
the crawl is mid-way when the signal lands. (Signals to the whole group: tests/test_chaos.py.)
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time

import pytest

from chaos_driver import SUBSET, Driver, prepare_images, session_processes

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return prepare_images(SUBSET, tmp_path_factory.mktemp("signal-photos"))


def _rows(db) -> int:
    try:
        with sqlite3.connect(db) as conn:
            return conn.execute("SELECT count(*) FROM images").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def _crawl_then_signal(tmp_path, photos, signum):
    """Start a crawl, send ``signum`` to the CLI alone once 3 images are stored; return
    (exit status, rows at exit, rows 1.5 s later, processes left, the driver)."""
    from conftest import wait_for
    from crawler.demo_site import make_server

    with make_server(photos, image_delay=0.3).start() as site:
        driver = Driver(tmp_path / "project", site.url, ["one", "two", "zero"], seed=0)
        db = driver.data_dir / "pingo.db"
        child = subprocess.Popen(driver.cli("crawl", "--limit", "15"), cwd=driver.root,
                                 env=driver.env, start_new_session=True,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for(lambda: _rows(db) >= 3 or child.poll() is not None, "3 images are stored")
            assert child.poll() is None, "the crawl ended before it could be stopped"
            os.kill(child.pid, signum)
            code = child.wait(60)
            at_exit = _rows(db)
            time.sleep(1.5)  # well past what a parent watch by polling would take to act
            left = session_processes(child.pid)
            after = _rows(db)
        finally:
            for pid, _ in session_processes(child.pid):
                os.kill(pid, signal.SIGKILL)
    return code, at_exit, after, left, driver


def test_sigkill_to_the_cli_ends_its_crawl_at_once(tmp_path, photos):
    """The crawl process used to notice a dead parent only by polling (every 2 s), then stop
    gracefully, storing images meanwhile with nobody holding the job lock."""
    code, at_exit, after, left, _ = _crawl_then_signal(tmp_path, photos, signal.SIGKILL)
    assert code == -signal.SIGKILL
    assert left == [], f"alive 1.5 s after the CLI was killed: {left}"
    assert after == at_exit, f"{after - at_exit} images stored after the CLI was killed"


def test_sigint_to_the_cli_records_the_run_as_interrupted(tmp_path, photos):
    """Ctrl-C is a stop a person asked for, not a crash: the run says `interrupted` (and by
    which signal), the exit status is 130, and nothing runs on after the CLI exits."""
    code, at_exit, after, left, driver = _crawl_then_signal(tmp_path, photos, signal.SIGINT)
    assert code == 130
    assert left == [] and after == at_exit
    out = subprocess.run(driver.cli("status", "--json"), cwd=driver.root, env=driver.env,
                         capture_output=True, text=True, check=True)
    run = json.loads(out.stdout)["runs"][0]
    assert (run["job"], run["status"]) == ("crawl", "interrupted"), run
    assert "SIGINT" in run["error"], run
