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

from crawler.demo_images import ensure_demo_images
from crawler.demo_site import DemoSite, make_server
from crawler.errors import CrawlError
from pingo.config import Config, check_safe_name
from pingo.errors import UnsafeNameError

REDIS_URL = os.environ.get("PINGO_TEST_REDIS", "redis://127.0.0.1:6379/9")


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


@pytest.mark.parametrize("url", ["redis://:s3cr3t-pw@127.0.0.1:1/0",
                                 "redis://pingo:s3cr3t-pw@127.0.0.1:1/0"])
def test_an_unreachable_redis_is_named_without_its_password(url):
    from crawler.distributed import check_redis
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
    assert json.loads(line[len("const query = "):].rstrip(";")) == query  # still the query


def test_the_demo_request_log_keeps_only_the_newest_requests(images):
    with make_server(images, request_log=5).start() as site:
        for i in range(12):
            urllib.request.urlopen(f"{site.url}/page/{i}", timeout=10).read()
        assert site.site.requests == [f"/page/{i}" for i in range(7, 12)]
    assert DemoSite(images).request_log >= 1000  # the default keeps enough for tests


# ---- the shared queue in Redis ---------------------------------------------------------------

@pytest.fixture
def redis_prefix():
    import uuid

    import redis
    server = redis.Redis.from_url(REDIS_URL)
    try:
        server.ping()
    except redis.RedisError as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"no Redis at {REDIS_URL} ({exc}); CI starts one")
    prefix = f"pingotest:{uuid.uuid4().hex[:10]}"
    try:
        yield prefix
    finally:
        keys = list(server.scan_iter(match=f"{prefix}:*", count=500))
        if keys:
            server.delete(*keys)
        server.close()


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

    crawler = get_crawler(SharedImageSearchSpider, {
        "REDIS_URL": REDIS_URL, "PINGO_REDIS_PREFIX": redis_prefix,
        "PINGO_DATA_DIR": str(tmp_path)})
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
    sent = SeleniumRequest("http://127.0.0.1:1/search?q=cat", callback=spider.parse_results,
                           errback=spider.results_failed, dont_filter=True, wait_time=10,
                           wait_until="a.result", scroll=Scroll("a.result", 40, 5, 0.5),
                           cb_kwargs={"class_name": "cat", "source_name": "demo",
                                      "keyword": "cat", "want": 40},
                           headers={"X-Bin": b"\xff\x00"}, body=b"\x80\x04binary",
                           meta={"pingo_item": {"a": 1}, "pair": (1, "b"), "$odd": b"\x01"})
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
    assert (got.url, got.wait_until, got.scroll, got.cb_kwargs, got.dont_filter, got.body) == \
        (sent.url, "a.result", Scroll("a.result", 40, 5, 0.5), sent.cb_kwargs, True, sent.body)
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
