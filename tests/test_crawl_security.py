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
