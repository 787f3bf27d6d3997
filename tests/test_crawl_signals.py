"""Stopping `pingo crawl` with a signal sent to the CLI alone (not its process group).

The crawl runs Scrapy in a child process; whatever happens to the CLI, that child and its
browsers must end with it and store nothing once the CLI (and its job lock) is gone. Real CLI,
real crawl process, real Chromium, real signals; the demo site serves real photos slowly so
the crawl is mid-way when the signal lands. (Signals to the whole group: tests/test_chaos.py.)
"""

from __future__ import annotations

import json
import signal
import subprocess

import pytest
from chaos_driver import SUBSET, crawl_then_signal, prepare_images

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return prepare_images(SUBSET, tmp_path_factory.mktemp("signal-photos"))


def test_sigkill_to_the_cli_ends_its_crawl_at_once(tmp_path, photos):
    """The crawl process used to notice a dead parent only by polling (every 2 s), then stop
    gracefully, storing images meanwhile with nobody holding the job lock."""
    code, at_exit, after, left, _ = crawl_then_signal(tmp_path / "project", photos, signal.SIGKILL)
    assert code == -signal.SIGKILL
    assert left == [], f"alive 10 s after the CLI was killed: {left}"
    assert after == at_exit, f"{after - at_exit} images stored after the CLI was killed"


def test_sigint_to_the_cli_records_the_run_as_interrupted(tmp_path, photos):
    """Ctrl-C is a stop a person asked for, not a crash: the run says `interrupted` (and by
    which signal), the exit status is 130, and nothing runs on after the CLI exits."""
    code, at_exit, after, left, driver = crawl_then_signal(
        tmp_path / "project", photos, signal.SIGINT
    )
    assert code == 130
    assert left == [] and after == at_exit
    out = subprocess.run(
        driver.cli("status", "--json"),
        cwd=driver.root,
        env=driver.env,
        capture_output=True,
        text=True,
        check=True,
    )
    run = json.loads(out.stdout)["runs"][0]
    assert (run["job"], run["status"]) == ("crawl", "interrupted"), run
    assert "SIGINT" in run["error"], run
