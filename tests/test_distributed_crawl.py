"""Distributed crawling: several crawlers share one frontier in a real Redis (127.0.0.1:6379),
real SQLite, the real demo site and headless Chromium; browsers from a remote chromedriver."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter

import pytest
from conftest import REDIS_URL, storage_toml, wait_for
from crawler_fixtures.helpers import assert_inbox_consistent, crawl_toml, inbox_rows

from crawler.demo_images import ensure_demo_images
from crawler.demo_site import make_server
from crawler.run import crawl


def frontier(prefix: str, **kw):
    from crawler.frontier import SharedFrontier, redis_client

    return SharedFrontier(redis_client(REDIS_URL), prefix, **kw)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return ensure_demo_images(tmp_path_factory.mktemp("cache"), count=40, size=32)


def distributed_toml(url: str, classes: dict[str, int], prefix: str, **crawl_settings) -> str:
    settings = {
        "redis_url": REDIS_URL,
        "redis_key_prefix": prefix,
        "idle_timeout": 3.0,
        "concurrency": 3,
        **crawl_settings,
    }
    return crawl_toml(url, classes, **settings)


def crawl_side_by_side(config, n: int = 2) -> list:
    """Run ``n`` crawls at once in this process (each starts its own Scrapy child)."""
    summaries = []
    workers = [threading.Thread(target=lambda: summaries.append(crawl(config))) for _ in range(n)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return summaries


# ---- the shared frontier itself (Redis only) ---------------------------------------------


def test_selenium_requests_survive_the_shared_queue(redis_prefix):
    """scrapy-redis's queue, with pingo's JSON codec, keeps SeleniumRequest's render options."""
    from scrapy_redis.queue import PriorityQueue

    from crawler import queue_codec
    from crawler.frontier import redis_client
    from crawler.selenium_request import Scroll, SeleniumRequest
    from crawler.spider import ImageSearchSpider

    spider = ImageSearchSpider(plan=[], sources=[])
    queue = PriorityQueue(
        redis_client(REDIS_URL), spider, f"{redis_prefix}:requests", serializer=queue_codec
    )
    sent = SeleniumRequest(
        "http://127.0.0.1:1/search?q=cat",
        callback=spider.parse_results,
        errback=spider.results_failed,
        dont_filter=True,
        wait_time=10,
        wait_until="a.result",
        scroll=Scroll("a.result", 40, 5, 0.5),
        cb_kwargs={"class_name": "cat", "source_name": "demo", "keyword": "cat", "want": 40},
    )
    queue.push(sent)
    got = queue.pop()
    assert type(got) is SeleniumRequest
    assert (got.url, got.wait_until, got.scroll, got.cb_kwargs, got.dont_filter) == (
        sent.url,
        "a.result",
        Scroll("a.result", 40, 5, 0.5),
        sent.cb_kwargs,
        True,
    )
    assert got.callback == spider.parse_results and got.errback == spider.results_failed


def test_the_budget_holds_across_workers(redis_prefix):
    from crawler.spider import ClassPlan

    a, b = frontier(redis_prefix), frontier(redis_prefix)
    assert a.join([ClassPlan("cat", 5, ["cat"])], {"cat": [("demo", "cat")]}) is True
    assert b.join([ClassPlan("dog", 99, ["dog"])], {}) is False  # joins; its plan is unused
    assert a.classes() == ["cat"] and b.pop_query("cat") == ("demo", "cat")
    assert b.pop_query("cat") is None  # each query is rendered by one worker only

    # Admission: requests beyond what the class needs wait as leftovers.
    admitted = [a.admit("cat", f"req{i}".encode(), -10) for i in range(8)]
    assert admitted.count(True) == 5 and a.queue_length() == 5 and a.need("cat") == 0

    # Both workers store at once from many threads: exactly 5 charges succeed.
    results = []
    threads = [
        threading.Thread(target=lambda f=f: results.append(f.charge("cat", None)))
        for f in (a, b) * 10
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count(True) == 5 and a.left() == {"cat": 0}

    # The five requests end; one was a duplicate and gave its charge back: the class needs
    # one more, and exactly one parked leftover is admitted for it.
    a.refund("cat", None)
    for _ in range(5):
        a.finish(a.pop()[0], "cat")
    assert a.snapshot()["open"] == {"cat": 0} and a.need("cat") == 1
    assert a.admit_leftovers("cat", -10) == 1 and a.need("cat") == 0 and a.queue_length() == 1


def test_a_dead_workers_requests_go_back_to_the_queue(redis_prefix):
    from crawler.spider import ClassPlan

    dying = frontier(redis_prefix, worker_ttl=2.0)  # long enough to stay alive on a busy box
    dying.join([ClassPlan("cat", 5, ["cat"])], {})
    survivor = frontier(redis_prefix)
    survivor.join([], {})
    for i in range(3):
        assert dying.admit("cat", f"img{i}".encode(), -10)
    first, second = dying.pop(), dying.pop()
    assert dying.charge("cat", second[0])  # being stored when it died
    assert survivor.reap() == (0, 0)  # still alive
    time.sleep(2.5)  # no heartbeat: its alive key expires
    assert survivor.others_busy()
    assert survivor.reap() == (1, 1)
    # The uncharged request is back; the charged one left `open` (it may have been stored).
    assert sorted(survivor.server.zrange(survivor.queue_key, 0, -1)) == [first[1], b"img2"]
    assert survivor.snapshot()["open"] == {"cat": 2} and survivor.left() == {"cat": 4}
    assert survivor.snapshot()["workers"] == [survivor.worker_id]
    assert not survivor.others_busy()


def test_projects_on_one_redis_get_their_own_keys(tmp_path):
    from core.config import load_config
    from crawler.settings import build_settings

    prefixes = []
    for name in ("one", "two", "one"):
        folder = tmp_path / name
        folder.mkdir(exist_ok=True)
        (folder / "pingo.toml").write_text(
            crawl_toml("http://127.0.0.1:1", {"cat": 3}, redis_url=REDIS_URL)
        )
        config = load_config(folder / "pingo.toml")
        prefixes.append(build_settings(config, str(config.data_dir), None)["PINGO_REDIS_PREFIX"])
    assert prefixes[0] == prefixes[2] != prefixes[1]
    assert all(p.startswith("pingo:") for p in prefixes)


def test_bad_distributed_settings_are_refused(project, run_cli):
    project.write(crawl_toml("http://127.0.0.1:1", {"cat": 3}, redis_url="http://localhost"))
    result = run_cli("crawl")
    assert result.exit_code == 2 and "crawl.redis_url" in result.stderr
    project.write(
        crawl_toml(
            "http://127.0.0.1:1", {"cat": 3}, redis_url=REDIS_URL, redis_key_prefix="my project"
        )
    )
    result = run_cli("crawl")
    assert result.exit_code == 2 and "crawl.redis_key_prefix" in result.stderr


def test_unreachable_redis_is_a_named_error(project, images):
    from crawler.errors import CrawlError

    with make_server(images).start() as site:
        project.write(crawl_toml(site.url, {"circle": 2}, redis_url="redis://127.0.0.1:1/0"))
        with pytest.raises(CrawlError, match="cannot reach Redis at redis://127.0.0.1:1/0"):
            crawl(project.config)


# ---- crawlers sharing a frontier (browsers) ---------------------------------------------


@pytest.mark.browser
def test_two_crawlers_share_the_work_and_fetch_each_image_once(
    project, images, redis_prefix, db_url
):
    targets = {"circle": 15, "square": 15, "triangle": 15}
    with make_server(images, image_delay=0.2).start() as site:
        project.write(distributed_toml(site.url, targets, redis_prefix) + storage_toml(db_url))
        summaries = crawl_side_by_side(project.config)
        fetched = Counter(p for p in site.site.requests if p.startswith("/image/"))
    rows = assert_inbox_consistent(project)
    assert Counter(r["keyword_class"] for r in rows) == targets  # none over, none short
    assert fetched and max(fetched.values()) == 1  # no image fetched twice, by anyone
    assert sum(fetched.values()) == len(rows) == 45
    assert all(s.downloaded > 0 for s in summaries)  # both did part of the work
    assert sorted(s.stats["pingo/redis/started_round"] for s in summaries) == [0, 1]
    # The last crawler out removed the round's keys.
    assert list(frontier(redis_prefix).server.scan_iter(match=f"{redis_prefix}:*")) == []


@pytest.mark.browser
def test_refused_downloads_are_made_up_once_across_crawlers(project, images, redis_prefix):
    from crawler.demo_site import FAULTS

    targets = {"circle": 6, "square": 6}
    with make_server(images, faults=True).start() as broken:
        project.write(
            distributed_toml(
                broken.url,
                targets,
                redis_prefix,
                download_timeout=2.0,
                retries=0,
                max_image_bytes=1_000_000,
                max_drivers=1,
            )
        )
        summaries = crawl_side_by_side(project.config)
        fetched = Counter(p for p in broken.site.requests if p.startswith(("/image/", "/fault/")))
    rows = assert_inbox_consistent(project)
    assert Counter(r["keyword_class"] for r in rows) == targets  # refusals were made up for
    assert not any("/fault/" in r["source_url"] for r in rows)
    # Both classes' result lists start with the same broken URLs: each was fetched by one
    # crawler for one class, refused once, and remembered.
    refused = Counter()
    for s in summaries:
        for c in s.classes.values():
            refused.update(c.refused)
    assert refused == {reason: 1 for reason in FAULTS.values()}
    assert max(fetched.values()) == 1
    with project.store() as store:
        fault_urls = [f"{broken.url}/fault/{n}.png" for n in FAULTS if n != "private"]
        assert store.seen_urls(fault_urls) == set(fault_urls)


@pytest.mark.browser
@pytest.mark.timeout(120)  # crawlers that never went idle would run for max_seconds
def test_crawlers_stop_when_the_sources_run_dry(project, images, redis_prefix):
    with make_server(images).start() as site:  # 40 circles: 20 short of the target
        project.write(distributed_toml(site.url, {"circle": 60}, redis_prefix))
        summaries = crawl_side_by_side(project.config)
    assert len(assert_inbox_consistent(project)) == 40
    assert [s.finish_reason for s in summaries] == ["finished", "finished"]
    assert list(frontier(redis_prefix).server.scan_iter(match=f"{redis_prefix}:*")) == []


@pytest.mark.browser
def test_killing_a_crawler_mid_round_the_other_takes_over(project, images, redis_prefix):
    targets = {"circle": 30, "square": 30}
    shared = frontier(redis_prefix)
    with make_server(images, image_delay=0.5).start() as site:
        project.write(
            distributed_toml(site.url, targets, redis_prefix, concurrency=2, max_drivers=1)
        )
        doomed = subprocess.Popen(
            [sys.executable, "-m", "pingo.cli", "--config", str(project.path), "-q", "crawl"],
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        survivor: list = []
        other = threading.Thread(target=lambda: survivor.append(crawl(project.config)))
        try:
            wait_for(lambda: len(inbox_rows(project)) >= 3, "the first crawler stores images")
            (doomed_id,) = shared.snapshot()["workers"]
            other.start()
            wait_for(lambda: len(shared.snapshot()["workers"]) == 2, "the second one joins")
            wait_for(
                lambda: shared.server.hlen(shared._inflight(doomed_id)),
                "the first crawler has requests in flight",
            )
            assert doomed.poll() is None, "the first crawler ended before it could be killed"
        finally:
            os.killpg(doomed.pid, signal.SIGKILL)  # its CLI, its crawl process, its browsers
            doomed.wait()
        held = shared.server.hlen(shared._inflight(doomed_id))
        charged = shared.server.hlen(f"{redis_prefix}:charged:{doomed_id}")  # being stored
        at_kill = len(inbox_rows(project))
        other.join()
        after_survivor = Counter(r["keyword_class"] for r in assert_inbox_consistent(project))
        assert all(after_survivor[c] <= t for c, t in targets.items())  # never overfilled
        assert len(inbox_rows(project)) > at_kill  # the survivor went on after the kill
        # ... and took back what the killed one held (its leave() only removes itself).
        assert survivor[0].stats.get("pingo/redis/requeued_from_dead", 0) == held - charged
        assert shared.snapshot()["workers"] == []
        assert not shared.server.exists(shared._inflight(doomed_id))
        # A crawler started afterwards completes whatever the killed one left undone.
        crawl(project.config)
        fetched = Counter(p for p in site.site.requests if p.startswith("/image/"))
    rows = assert_inbox_consistent(project)
    assert Counter(r["keyword_class"] for r in rows) == targets
    # Only requests the killed crawler held can have been fetched a second time.
    assert sum(n - 1 for n in fetched.values()) <= held


@pytest.fixture
def remote_chromedriver(tmp_path):
    """chromedriver serving the W3C WebDriver protocol on 127.0.0.1, as a Grid node does."""
    driver = shutil.which("chromedriver")
    if not driver:
        pytest.fail("chromedriver is required: run `make browser`")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tmp_path / "chromedriver.log"
    server = subprocess.Popen(
        [driver, f"--port={port}", "--allowed-ips=127.0.0.1", f"--log-path={log}", "--verbose"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _answers(url + "/status"), "chromedriver listens", 20)
        yield url, log
    finally:
        server.terminate()
        server.wait(10)


def _answers(url: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=1):
            return True
    except OSError:
        return False


@pytest.mark.browser
def test_browsers_come_from_a_remote_webdriver(project, images, remote_chromedriver):
    url, log = remote_chromedriver
    with make_server(images).start() as site:
        project.write(crawl_toml(site.url, {"circle": 5}, selenium_remote_url=url, max_drivers=1))
        summary = crawl(project.config)
    assert summary.classes["circle"].downloaded == 5
    assert summary.stats["selenium/page_count"] >= 1
    text = log.read_text(errors="replace")
    assert "InitSession" in text and "/search?q=circle" in text  # the remote one rendered
