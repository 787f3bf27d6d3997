"""End-to-end crawls: real demo site, real headless Chromium, real SQLite and inbox files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter

import pytest
from crawler_fixtures.helpers import (
    assert_inbox_consistent,
    browser_pids_under,
    crawl_toml,
    inbox_rows,
    kill_all,
)

from core.errors import UnknownSourceError
from crawler.demo_images import ensure_demo_images
from crawler.demo_site import FAULTS, make_server
from crawler.errors import UnknownCrawlClassError
from crawler.run import crawl

pytestmark = pytest.mark.browser

PAGE = 12  # results the demo site shows before the page is scrolled


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return ensure_demo_images(tmp_path_factory.mktemp("cache"), count=40, size=32)


@pytest.fixture(scope="module")
def site(images):
    with make_server(images).start() as server:
        yield server


def test_crawls_only_classes_below_target_each_about_what_it_lacks(project, site, images):
    from conftest import png_bytes

    project.write(crawl_toml(site.url, {"circle": 30, "square": 2, "triangle": 4}))
    with project.store() as store:  # square is at target; triangle has 1 waiting in the inbox
        for i in range(2):
            image_id = store.add_image(png_bytes((i, 1, 1)), keyword_class="square", source="x")
            store.move(image_id, "accepted", label="square")
        store.add_image(png_bytes((9, 9, 9)), keyword_class="triangle", source="x")

    summary = crawl(project.config)

    assert summary.skipped == {"square": "at target"}
    assert {n: c.lacking for n, c in summary.classes.items()} == {"circle": 30, "triangle": 3}
    assert summary.classes["circle"].downloaded == 30
    assert summary.classes["triangle"].downloaded == 3
    rows = assert_inbox_consistent(project)
    crawled = [r for r in rows if r["source"] == "demo"]
    by_class = {c: [r for r in crawled if r["keyword_class"] == c] for c in ("circle", "triangle")}
    assert len(by_class["circle"]) == 30 and len(by_class["triangle"]) == 3
    # Original bytes, unchanged, with where they came from.
    for r in crawled:
        name = r["source_url"].rsplit("/", 1)[-1]
        assert (project.data_dir / r["path"]).read_bytes() == (
            images / r["keyword_class"] / name
        ).read_bytes()
        assert r["query"] == r["keyword_class"] and r["page_url"] and r["width"] == 32
    # Results 13+ exist only after the page was scrolled.
    assert summary.stats["selenium/scrolls"] >= 1
    assert sum(int(r["source_url"][-7:-4]) >= PAGE for r in by_class["circle"]) >= 30 - PAGE

    # Everything lacking now waits in the inbox: a second crawl has nothing to do.
    again = crawl(project.config)
    assert again.classes == {} and set(again.skipped) == {"circle", "square", "triangle"}


def test_more_wanted_later_takes_new_urls_only(project, site):
    project.write(crawl_toml(site.url, {"circle": 5}))
    first = crawl(project.config)
    assert first.classes["circle"].downloaded == 5
    project.write(crawl_toml(site.url, {"circle": 9}))
    second = crawl(project.config)
    assert second.classes["circle"].downloaded == 4
    assert second.classes["circle"].already_seen >= 5  # skipped, not fetched again
    assert second.stats.get("file_count") == 4
    assert len(assert_inbox_consistent(project)) == 9


def test_broken_images_end_as_counted_refusals(project, images):
    def toml(target: int, **retry) -> str:
        return crawl_toml(
            broken.url,
            {"circle": target},
            download_timeout=2.0,
            retries=0,
            max_image_bytes=1_000_000,
            min_image_side=16,
            **retry,
        )

    def fetches() -> Counter:
        return Counter(
            p.rsplit("/", 1)[-1] for p in broken.site.requests if p.startswith("/fault/")
        )

    with make_server(images, faults=True).start() as broken:
        project.write(toml(6))
        summary = crawl(project.config)
        circle = summary.classes["circle"]
        assert circle.refused == {reason: 1 for reason in FAULTS.values()}
        assert circle.downloaded == 6  # the refusals were made up from further results
        rows = assert_inbox_consistent(project)
        assert len(rows) == 6 and not any("/fault/" in r["source_url"] for r in rows)
        with project.store() as store:  # refused URLs are remembered
            fault_urls = [f"{broken.url}/fault/{n}.png" for n in FAULTS if n != "private"]
            assert store.seen_urls(fault_urls) == set(fault_urls)
        first = fetches()

        # More wanted, the day after: the passing failures (a 5xx, a timeout) are tried once
        # more; a 404, a corrupt or non-image body, a size limit are not.
        project.write(toml(8, retry_failed_after=0, max_url_attempts=2))
        again = crawl(project.config).classes["circle"]
        assert again.refused == {"http_500": 1, "timeout": 1} and again.downloaded == 2
        assert fetches() - first == Counter({"500.png": 1, "slow.png": 1})
        # ...and after max_url_attempts tries, never again.
        second = fetches()
        project.write(toml(10, retry_failed_after=0, max_url_attempts=2))
        third = crawl(project.config).classes["circle"]
        assert third.refused == {} and third.downloaded == 2 and fetches() == second
    assert len(assert_inbox_consistent(project)) == 10


def test_identical_bytes_are_counted_as_duplicates(project, tmp_path, images):
    folder = tmp_path / "dupes"
    for cls in ("circle", "square"):
        (folder / cls).mkdir(parents=True)
    for i in range(4):  # square serves the same bytes as circle, plus 3 of its own
        data = (images / "circle" / f"circle_{i:03d}.png").read_bytes()
        (folder / "circle" / f"c{i}.png").write_bytes(data)
        (folder / "square" / f"s{i}.png").write_bytes(data)
    for i in range(3):
        (folder / "square" / f"z{i}.png").write_bytes(
            (images / "square" / f"square_{i:03d}.png").read_bytes()
        )
    with make_server(folder).start() as server:
        project.write(crawl_toml(server.url, {"circle": 4, "square": 3}, max_drivers=1))
        summary = crawl(project.config, classes=["circle"])
        assert summary.classes["circle"].downloaded == 4
        summary = crawl(project.config, classes=["square"])
    assert summary.classes["square"].duplicates == 4
    assert summary.classes["square"].downloaded == 3
    assert len(assert_inbox_consistent(project)) == 7


def test_killing_the_browser_mid_crawl_does_not_stop_the_crawl(project, images):
    with make_server(images, page_delay=2.0).start() as slow:
        project.write(crawl_toml(slow.url, {"circle": 8, "square": 8}, max_drivers=1))
        killed = []
        # the session's shared browser (the chromium fixture) may already run: not the crawl's
        before = set(browser_pids_under(os.getpid()))

        def kill_when_rendering():
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not killed:
                if any(p.startswith("/search") for p in slow.site.requests):
                    killed.extend(set(browser_pids_under(os.getpid())) - before)
                    kill_all(killed)
                time.sleep(0.1)

        killer = threading.Thread(target=kill_when_rendering)
        killer.start()
        summary = crawl(project.config)
        killer.join()
    assert killed, "no browser process was found to kill"
    assert summary.stats["selenium/browser_crashed"] >= 1
    assert summary.stats["selenium/retry_count"] >= 1
    assert summary.classes["circle"].downloaded == 8 and summary.classes["square"].downloaded == 8
    assert not set(browser_pids_under(os.getpid())) - before  # every browser quit at the end


def test_sigkill_mid_crawl_then_the_next_crawl_carries_on(project, images):
    with make_server(images, image_delay=0.25).start() as slow:
        project.write(crawl_toml(slow.url, {"circle": 30}, concurrency=2, max_drivers=1))
        child = subprocess.Popen(
            [sys.executable, "-m", "pingo.cli", "--config", str(project.path), "-q", "crawl"],
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline and child.poll() is None:
                if len(inbox_rows(project)) >= 5:
                    break
                time.sleep(0.2)
            assert child.poll() is None, "the crawl ended before it could be killed"
        finally:
            os.killpg(child.pid, signal.SIGKILL)  # the CLI, its crawl process, its browsers
            child.wait()
        partial = len(inbox_rows(project))
        assert 5 <= partial < 30
        summary = crawl(project.config)
    assert summary.classes["circle"].lacking == 30 - partial
    rows = assert_inbox_consistent(project)
    assert len(rows) == 30


def test_a_source_that_finds_nothing_is_reported_loudly(project, site):
    project.write(
        crawl_toml(site.url, {"circle": 3}, sources=["broken", "demo"])
        + """
[crawl.profiles.broken]
search_url = "{demo_url}/search?q={query}"
result_css = "a.no-such-result"
wait_css = "#results"
scroll = false
"""
    )
    summary = crawl(project.config)
    assert summary.empty_sources == ["broken"]
    assert "WARNING: source 'broken' found no results for any keyword" in summary.format()


def test_cli_crawl_prints_the_summary_and_refuses_bad_names(project, run_cli, site):
    project.write(crawl_toml(site.url, {"circle": 3, "square": 3}))
    result = run_cli("crawl", "--class", "square", "--limit", "2", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert list(data["classes"]) == ["square"] and data["classes"]["square"]["downloaded"] == 2
    bad = run_cli("crawl", "--class", "dragon")
    assert bad.exit_code == 2 and "unknown class 'dragon'" in bad.stderr
    bad = run_cli("crawl", "--source", "yahoo")
    assert bad.exit_code == 2 and "unknown search source 'yahoo'" in bad.stderr


def test_library_errors_are_named(project, site):
    project.write(crawl_toml(site.url, {"circle": 3}))
    with pytest.raises(UnknownCrawlClassError):
        crawl(project.config, classes=["dragon"])
    with pytest.raises(UnknownSourceError):
        crawl(project.config, sources=["yahoo"])


@pytest.fixture
def saved_engine_pages(site):
    """A local server answering like Bing and Naver with the saved pages (images: demo site)."""
    from crawler_fixtures.helpers import FixtureEngine, served_page

    pages = {
        "/images/search": (200, served_page("bing_results.html", site.url)),
        "/search.naver": (200, served_page("naver_results.html", site.url)),
    }
    with FixtureEngine(pages) as engine:
        yield engine


def test_bing_and_naver_profiles_crawl_their_saved_pages(project, site, saved_engine_pages):
    engine = saved_engine_pages.url
    project.write(
        crawl_toml(site.url, {"circle": 20}, sources=["bing", "naver"])
        + f'''
[crawl.profiles.bing]          # only the host changes: markup rules are the built-in ones
search_url = "{engine}/images/search?q={{query}}&form=HDRSC2&first=1"

[crawl.profiles.naver]
search_url = "{engine}/search.naver?where=image&query={{query}}"
'''
    )
    summary = crawl(project.config)
    # Bing: the first batch, then "See more images" clicked; Naver: lazy tiles, step-scrolled.
    assert summary.sources["bing"]["results"] == 12 and summary.sources["naver"]["results"] == 12
    assert summary.stats["selenium/more_clicks"] >= 1
    assert summary.classes["circle"].downloaded == 20
    rows = assert_inbox_consistent(project)
    assert sorted((r["source"], r["source_url"].rsplit("/", 1)[-1]) for r in rows) == sorted(
        [("bing", f"circle_{i:03d}.png") for i in range(12)]
        + [("naver", f"square_{i:03d}.png") for i in range(8)]
    )
    assert all(r["page_url"].startswith(site.url + "/page/") for r in rows if r["source"] == "bing")
    # The browser sent crawl.user_agent, not Chromium's HeadlessChrome.
    assert saved_engine_pages.agents("/images/search") == {project.config.crawl.user_agent}
