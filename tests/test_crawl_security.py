"""Issue 10's security faults in the crawler: names, secrets in messages, the demo site's
page, the shared queue's encoding, private addresses. Real Redis, real sockets, no mocks."""

from __future__ import annotations

import html.parser
import json
import os
import urllib.request
from pathlib import Path
from urllib.parse import quote

import pytest
from conftest import REDIS_URL

from core.config import Config, check_safe_name
from core.errors import UnsafeNameError
from crawler.demo_images import ensure_demo_images
from crawler.demo_site import DemoSite, make_server
from crawler.errors import CrawlError


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return ensure_demo_images(tmp_path_factory.mktemp("cache"), count=4, size=32)


# ---- names and secrets ------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["cat\n", "cat\r\n", "cat\n\n"])
def test_a_class_name_with_a_trailing_newline_is_refused(tmp_path, name):
    with pytest.raises(UnsafeNameError):
        check_safe_name(name)
    with pytest.raises(UnsafeNameError):
        Config.from_mapping({"classes": {name: {}}}, base_dir=tmp_path)


@pytest.mark.parametrize(
    "url", ["redis://:s3cr3t-pw@127.0.0.1:1/0", "redis://pingo:s3cr3t-pw@127.0.0.1:1/0"]
)
def test_an_unreachable_redis_is_named_without_its_password(url):
    from crawler.frontier import check_redis

    with pytest.raises(CrawlError) as err:  # nothing listens on port 1: refused at once
        check_redis(url)
    assert "s3cr3t-pw" not in str(err.value)
    assert "127.0.0.1:1" in str(err.value) and "***" in str(err.value)


# ---- the demo site ------------------------------------------------------------------------------


class _Scripts(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.scripts: list[str] = []
        self._in = False

    def handle_starttag(self, tag, attrs):
        if tag == "script":
            self._in = True
            self.scripts.append("")

    def handle_endtag(self, tag):
        if tag == "script":
            self._in = False

    def handle_data(self, data):
        if self._in:
            self.scripts[-1] += data


def test_the_demo_page_keeps_a_hostile_query_inside_its_script(images):
    query = '</script><script>document.title="pwned"</script><!--'
    with make_server(images).start() as site:
        with urllib.request.urlopen(f"{site.url}/search?q={quote(query)}", timeout=10) as r:
            page = r.read().decode()
    parser = _Scripts()
    parser.feed(page)
    assert len(parser.scripts) == 1, "the query broke out of the page's script"
    line = next(s for s in parser.scripts[0].splitlines() if s.startswith("const query = "))
    assert json.loads(line[len("const query = ") :].rstrip(";")) == query  # still the query


def test_the_demo_request_log_keeps_only_the_newest_requests(images):
    with make_server(images, request_log=5).start() as site:
        for i in range(12):
            urllib.request.urlopen(f"{site.url}/page/{i}", timeout=10).read()
        assert site.site.requests == [f"/page/{i}" for i in range(7, 12)]
    assert DemoSite(images).request_log >= 1000  # the default keeps enough for tests


# ---- the shared queue in Redis ---------------------------------------------------------------


class _Planted:
    """Unpickling this creates ``marker``: what an attacker's payload would do instead."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture
def shared_scheduler(redis_prefix, tmp_path):
    from scrapy.utils.test import get_crawler

    from crawler.redis_scheduler import SharedScheduler
    from crawler.shared_spider import SharedImageSearchSpider

    crawler = get_crawler(
        SharedImageSearchSpider,
        {
            "REDIS_URL": REDIS_URL,
            "PINGO_REDIS_PREFIX": redis_prefix,
            "PINGO_DATA_DIR": str(tmp_path),
        },
    )
    spider = SharedImageSearchSpider.from_crawler(crawler, plan=[], sources=[])
    crawler.spider = spider
    scheduler = SharedScheduler.from_crawler(crawler)
    scheduler.open(spider)
    try:
        yield scheduler
    finally:
        scheduler.close("finished")


def test_a_pickle_planted_in_the_shared_queue_is_not_run(shared_scheduler, tmp_path, caplog):
    import pickle

    from crawler.selenium_request import Scroll, SeleniumRequest

    marker = tmp_path / "pwned"
    spider = shared_scheduler.spider
    shared_scheduler.frontier.push(pickle.dumps(_Planted(marker)), -1000)  # first in line
    sent = SeleniumRequest(
        "http://127.0.0.1:1/search?q=cat",
        callback=spider.parse_results,
        errback=spider.results_failed,
        dont_filter=True,
        wait_time=10,
        wait_until="a.result",
        scroll=Scroll("a.result", 40, 5, 0.5),
        cb_kwargs={"class_name": "cat", "source_name": "demo", "keyword": "cat", "want": 40},
        headers={"X-Bin": b"\xff\x00"},
        body=b"\x80\x04binary",
        meta={"pingo_item": {"a": 1}, "pair": (1, "b"), "$odd": b"\x01"},
    )
    assert shared_scheduler.enqueue_request(sent)
    with caplog.at_level("ERROR", logger="crawler.redis_scheduler"):
        assert shared_scheduler.next_request() is None  # the planted entry: dropped
        got = shared_scheduler.next_request()
    assert not marker.exists(), "the planted pickle ran"
    assert "cannot decode" in caplog.text and "pickle" in caplog.text
    assert shared_scheduler.stats.get_value("pingo/redis/undecodable") == 1
    # pingo's own requests still round-trip through the queue, now as JSON.
    raw = shared_scheduler.server.hvals(shared_scheduler.frontier.inflight_key)
    assert raw and all(r.startswith(b"{") for r in raw)
    assert type(got) is SeleniumRequest
    assert (got.url, got.wait_until, got.scroll, got.cb_kwargs, got.dont_filter, got.body) == (
        sent.url,
        "a.result",
        Scroll("a.result", 40, 5, 0.5),
        sent.cb_kwargs,
        True,
        sent.body,
    )
    assert got.headers.getlist("X-Bin") == [b"\xff\x00"]
    assert got.meta["pair"] == (1, "b") and got.meta["$odd"] == b"\x01"
    assert got.callback == spider.parse_results and got.errback == spider.results_failed


def test_the_queue_codec_refuses_request_classes_pingo_does_not_queue():
    from crawler import queue_codec

    entry = queue_codec.dumps({"url": "http://x/", "_class": "subprocess.Popen"})
    with pytest.raises(queue_codec.UndecodableRequest, match="not one pingo queues"):
        queue_codec.loads(entry)
    with pytest.raises(TypeError, match="JSON only"):
        queue_codec.dumps({"url": "http://x/", "meta": {"x": object()}})


# ---- remote bytes and Ghostscript -------------------------------------------------------------

EPS = (
    b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 64 64\n%%EndComments\n"
    b"newpath 0 0 moveto 64 64 lineto stroke\nshowpage\n%%EOF\n"
)


@pytest.fixture
def fake_ghostscript(tmp_path, monkeypatch):
    """A ``gs`` first on PATH that leaves a marker when anything runs it."""
    from PIL import EpsImagePlugin

    marker = tmp_path / "ghostscript-ran"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    gs = bin_dir / "gs"
    gs.write_text(f"#!/bin/sh\ntouch '{marker}'\nexit 1\n")
    gs.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(EpsImagePlugin, "gs_binary", None)  # look for gs again
    return marker


def test_an_eps_body_never_reaches_ghostscript_and_is_not_an_image(fake_ghostscript):
    from crawler.pipeline import ImageRefused, check_image, passing_failure

    with pytest.raises(ImageRefused) as err:
        check_image(EPS, "application/postscript", 16, 40_000_000)
    assert err.value.reason == "not_image" and not passing_failure(err.value.reason)
    assert not fake_ghostscript.exists(), "Ghostscript ran on a downloaded body"


@pytest.mark.browser
def test_a_crawl_refuses_eps_and_decode_bombs_as_not_images(
    project, tmp_path, images, fake_ghostscript
):
    from crawler_fixtures.helpers import assert_inbox_consistent, crawl_toml
    from test_crawl_resources import scan_bomb

    from crawler.run import crawl

    folder = tmp_path / "hostile" / "circle"
    folder.mkdir(parents=True)
    (folder / "a_good.png").write_bytes((images / "circle" / "circle_000.png").read_bytes())
    (folder / "b_postscript.png").write_bytes(EPS)  # served as image/png
    (folder / "c_scans.jpg").write_bytes(scan_bomb())
    with make_server(folder.parent).start() as server:
        project.write(crawl_toml(server.url, {"circle": 3}, max_drivers=1))
        summary = crawl(project.config, settings={"PINGO_DECODE_TIMEOUT": 1.0})
    circle = summary.classes["circle"]
    assert circle.downloaded == 1 and circle.refused == {"not_image": 2}
    assert summary.stats["pingo/image_check/timeouts"] == 1
    assert not fake_ghostscript.exists(), "Ghostscript ran on a downloaded body"
    with project.store() as store:  # refused for good: not fetched again by a later crawl
        urls = [f"{server.url}/image/circle/{n}" for n in ("b_postscript.png", "c_scans.jpg")]
        assert store.seen_urls(urls) == set(urls)
    assert len(assert_inbox_consistent(project)) == 1


# ---- private addresses ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "host",
    [
        "localhost",
        "127.0.0.1",
        "169.254.169.254",
        "10.0.0.1",
        "192.168.1.1",
        "172.16.0.1",
        "100.64.0.1",
        "0.0.0.0",
        "::1",
        "::ffff:127.0.0.1",
        "fe80::1",
        "fd00::1",
    ],
)
def test_loopback_link_local_and_private_addresses_are_not_public(host):
    from crawler.netguard import is_public, resolve

    addresses = resolve(host, 80)  # literals: no DNS, no connection
    assert addresses and not any(is_public(a) for a in addresses)


def test_public_addresses_and_demo_origins():
    from crawler.netguard import is_public, origin, resolve

    assert is_public("93.184.216.34") and is_public("2606:2800:220:1:248:1893:25c8:1946")
    assert resolve("93.184.216.34", 80) == ["93.184.216.34"]  # a literal: nothing sent
    assert origin("http://LocalHost:8765/x") == ("localhost", 8765)
    assert origin("https://example.org/x") == ("example.org", 443)
    assert origin("file:///etc/passwd") is None and origin("http://[::1") is None


class _Server:
    """A server on 127.0.0.1: ``answer(path) -> (status, content type, body)``; every
    request path is recorded in ``paths``."""

    def __init__(self, answer):
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.paths: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                server.paths.append(self.path)
                status, ctype, body = answer(self.path)
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def _recorder(files: dict[str, bytes]) -> _Server:
    """Serves the given files (404 otherwise) and records every request."""
    return _Server(
        lambda path: (200 if path in files else 404, "image/png", files.get(path, b"no"))
    )


def _engine(links: dict[str, list[str]]) -> _Server:
    """Answers like Bing: one results page per query word, with the given image URLs."""
    import html as html_lib
    from urllib.parse import parse_qs, urlsplit

    def page(path: str):
        query = parse_qs(urlsplit(path).query).get("q", [""])[0]
        anchors = "".join(
            f"<a class='iusc' m='{html_lib.escape(json.dumps({'murl': u}))}'>x</a>"
            for u in links.get(query, [])
        )
        return 200, "text/html; charset=utf-8", f"<html><body>{anchors}</body></html>".encode()

    return _Server(page)


def test_result_pages_cannot_make_the_crawler_fetch_private_addresses(project, images):
    from crawler_fixtures.helpers import crawl_toml

    from crawler.run import crawl

    inner = _recorder(
        {
            f"/{q}{i}.png": (images / q / f"{q}_00{i}.png").read_bytes()
            for q in ("circle", "square")
            for i in (1, 2)
        }
    )
    # A results page (Bing's markup) naming images on loopback under two names.
    links = {
        q: [f"http://localhost:{inner.port}/{q}1.png", f"http://127.0.0.1:{inner.port}/{q}2.png"]
        for q in ("circle", "square")
    }
    engine = _engine(links)
    try:
        settings = f'''
[crawl.profiles.bing]
search_url = "{engine.url}/images/search?q={{query}}"
'''
        project.write(crawl_toml(engine.url, {"circle": 2}, sources=["bing"]) + settings)
        refused = crawl(project.config).classes["circle"]
        assert refused.refused == {"private_address": 2} and refused.downloaded == 0
        assert inner.paths == [], "the crawler connected to a private address"
        # An intranet crawl says so, and then gets them.
        project.write(
            crawl_toml(engine.url, {"square": 2}, sources=["bing"], allow_private_networks=True)
            + settings
        )
        allowed = crawl(project.config).classes["square"]
        assert allowed.downloaded == 2
        assert sorted(p for p in inner.paths if p.endswith(".png")) == [
            "/square1.png",
            "/square2.png",
        ]
    finally:
        engine.close()
        inner.close()
