"""Search-source profiles against saved result pages; profile config; image checks."""

from __future__ import annotations

import io

import pytest
from conftest import png_bytes
from crawler_fixtures.helpers import saved_page
from scrapy.http import HtmlResponse

from core.errors import ConfigError, UnknownSourceError
from core.sources import BUILTIN, load_profiles, resolve_sources
from crawler.pipeline import ImageRefused, check_image, failure_reason
from crawler.sources import extract

BASE = "http://127.0.0.1:9999"


def page(url: str, text: str) -> HtmlResponse:
    return HtmlResponse(url, body=text.encode("utf-8"), encoding="utf-8")


def test_bing_profile_reads_full_size_urls_from_json_attributes():
    bing = BUILTIN["bing"]
    assert (
        bing.results_url("red circle")
        == "https://www.bing.com/images/search?q=red+circle&form=HDRSC2&first=1"
    )
    response = page(bing.results_url("circle"), saved_page("bing_results.html", BASE))
    found = list(extract(bing, response))
    assert found == [
        (f"{BASE}/image/circle/circle_00{i}.png", f"{BASE}/page/circle_00{i}.png") for i in range(4)
    ]  # the result with a non-JSON attribute is skipped


def test_naver_profile_reads_the_original_url_inside_the_thumbnail_url():
    naver = BUILTIN["naver"]
    assert naver.results_url("고양이").endswith("query=%EA%B3%A0%EC%96%91%EC%9D%B4")
    response = page(naver.results_url("square"), saved_page("naver_results.html", BASE))
    assert [u for u, _ in extract(naver, response)] == [
        f"{BASE}/image/square/square_00{i}.png" for i in range(3)
    ]


def test_demo_profile_resolves_relative_urls():
    html = (
        '<div id="results"><a class="result" href="/image/a/1.png" '
        'data-meta=\'{"murl": "/image/a/1.png", "purl": "/page/1.png"}\'></a></div>'
    )
    demo = BUILTIN["demo"]
    url = demo.results_url("a b", "http://127.0.0.1:8765/")
    assert url == "http://127.0.0.1:8765/search?q=a+b"
    assert list(extract(demo, page(url, html))) == [
        ("http://127.0.0.1:8765/image/a/1.png", "http://127.0.0.1:8765/page/1.png")
    ]


def test_profiles_are_fixed_and_added_in_config(project):
    project.write("""
[crawl.profiles.bing]
result_css = "a.iusc2"

[crawl.profiles.mysite]
search_url = "https://images.example.org/find?text={query}"
result_css = "img.full"
url_attr = "src"
scroll = false
""")
    profiles = load_profiles(project.config.crawl.profiles)
    assert profiles["bing"].result_css == "a.iusc2" and profiles["bing"].json_key == "murl"
    mysite = profiles["mysite"]
    assert (mysite.url_attr, mysite.scroll) == ("src", False)
    html = '<img class="full" src="/big/1.jpg"><img class="thumb" src="/t/1.jpg">'
    assert [u for u, _ in extract(mysite, page(mysite.results_url("x"), html))] == [
        "https://images.example.org/big/1.jpg"
    ]


@pytest.mark.parametrize(
    "table, message",
    [
        ('result_css = "img"', "search_url: required"),
        ('search_url = "https://x.org/"\nresult_css = "img"', "must contain {query}"),
        (
            'search_url = "https://x.org/?q={query}"\nresult_css = "img"\nscrol = true',
            "scrol: unknown key",
        ),
        (
            'search_url = "https://x.org/?q={query}"\nresult_css = "img"\nmax_scrolls = "3"',
            "wrong type",
        ),
    ],
)
def test_bad_profiles_are_refused_at_load(project, table, message):
    project.write(f"[crawl.profiles.new]\n{table}\n")
    with pytest.raises(ConfigError, match=message):
        _ = project.config


def test_unknown_source_is_a_named_error():
    with pytest.raises(UnknownSourceError, match="known sources are bing, demo, naver"):
        resolve_sources(["demo", "yahoo"])


def jpeg_bytes(size=(40, 30)) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, (1, 2, 3)).save(buf, "JPEG")
    return buf.getvalue()


def test_check_image_accepts_real_images_and_names_the_refusals():
    assert check_image(png_bytes(size=(20, 30)), "image/png", 16, 10_000) == ("png", 20, 30)
    assert check_image(jpeg_bytes(), "application/octet-stream", 16, 10_000) == ("jpg", 40, 30)
    cases = [
        (png_bytes(size=(10, 40)), "image/png", "too_small"),
        (png_bytes(size=(200, 200)), "image/png", "too_large"),
        (jpeg_bytes()[:-200], "image/jpeg", "corrupt"),  # truncated
        (b"<html>hello</html>", "text/html", "not_image"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 50, "image/png", "corrupt"),
    ]
    for body, ctype, reason in cases:
        with pytest.raises(ImageRefused) as err:
            check_image(body, ctype, 16, 10_000)
        assert err.value.reason == reason


def test_failure_reasons():
    from scrapy.exceptions import DownloadCancelledError, DownloadTimeoutError, IgnoreRequest

    assert failure_reason(IgnoreRequest("Forbidden by robots.txt")) == "robots"
    assert failure_reason(DownloadCancelledError("max size")) == "too_large"
    assert failure_reason(DownloadTimeoutError("took longer")) == "timeout"
    assert failure_reason(ConnectionRefusedError()) == "network"


def test_a_crawl_without_a_usable_browser_fails_early_with_a_named_error(project):
    from crawler.errors import BrowserError
    from crawler.run import crawl

    with pytest.raises(BrowserError, match="allowed are chrome, firefox"):
        crawl(project.config, settings={"SELENIUM_DRIVER_NAME": "opera"})
