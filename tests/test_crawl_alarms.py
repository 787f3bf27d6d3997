"""Real crawls (spider, pipeline, browser) against saved pages served on 127.0.0.1: each cause
of an empty source told apart with what to do, robots.txt per source, the zero-yield alarm in
the summary, `status --json`, the report and `pingo sources check`; hyphens and non-ASCII."""

from __future__ import annotations

import json

import pytest
from crawler_fixtures.helpers import (
    FIXTURES,
    FixtureEngine,
    assert_inbox_consistent,
    closed_port,
    crawl_toml,
    served_page,
)

from crawler.demo_images import ensure_demo_images
from crawler.demo_site import folder_matches, make_server
from crawler.run import crawl

pytestmark = pytest.mark.browser

UA = "pingo-test/1.0 (+https://example.org/bot)"


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return ensure_demo_images(tmp_path_factory.mktemp("cache"), count=14, size=32)


@pytest.fixture(scope="module")
def site(images):
    with make_server(images).start() as server:
        yield server


@pytest.fixture(scope="module")
def engine(site):
    """Bing and Naver, as saved; a consent wall; a 503; robots.txt refusing Bing's search."""
    pages = {
        "/images/search": (200, served_page("bing_results.html", site.url)),
        "/search.naver": (200, served_page("naver_results.html", site.url)),
        "/wall/images/search": (200, (FIXTURES / "consent_page.html").read_text()),
        "/down/images/search": (503, "<html><body>Service unavailable</body></html>"),
    }
    robots = "User-agent: *\nAllow: /images/search/ok\nDisallow: /images/search\n"
    with FixtureEngine(pages, robots) as server:
        yield server


def profile(name: str, url: str, **keys) -> str:
    lines = [f"[crawl.profiles.{name}]", f'search_url = "{url}"']
    for key, value in keys.items():
        lines.append(
            f"{key} = " + (str(value).lower() if isinstance(value, bool) else f'"{value}"')
        )
    return "\n".join(lines) + "\n"


def test_each_cause_of_an_empty_source_is_named_with_what_to_do(project, site, engine):
    """Five sources that give nothing, each for its own reason, then Bing allowed by its own
    obey_robots key: the crawl still gets its images, and the summary says which is which."""
    gone = f"http://127.0.0.1:{closed_port()}"
    bing_like = {"result_css": "a.iusc", "url_attr": "m", "json_key": "murl", "wait_css": "body"}
    project.write(
        crawl_toml(
            site.url,  # the saved pages' images are on the demo site, the one trusted origin
            {"circle": 3},
            sources=["gone", "blocked", "wall", "down", "broken", "bing"],
            user_agent=UA,
        )
        + profile("gone", f"{gone}/images/search?q={{query}}", **bing_like)
        + profile("blocked", f"{engine.url}/images/search?q={{query}}", **bing_like)
        + profile("wall", f"{engine.url}/wall/images/search?q={{query}}", **bing_like)
        + profile("down", f"{engine.url}/down/images/search?q={{query}}", **bing_like)
        + profile(
            "broken",
            f"{site.url}/search?q={{query}}",
            result_css="a.no-such-result",
            wait_css="#results",
            scroll=False,
        )
        + profile("bing", f"{engine.url}/images/search?q={{query}}", obey_robots=False)
    )
    summary = crawl(project.config)

    causes = {name: s["cause"] for name, s in summary.sources.items()}
    assert causes == {
        "gone": "connection_refused",
        "blocked": "robots",
        "wall": "consent",
        "down": "http_error",
        "broken": "markup",
        "bing": None,
    }
    assert summary.classes["circle"].downloaded == 3
    assert summary.sources["bing"]["images"] == 3
    assert summary.empty_sources == ["gone", "blocked", "wall", "down", "broken"]
    text = summary.format()
    alarms = {line.split("'")[1]: line for line in text.splitlines() if "WARNING" in line}
    assert set(alarms) == set(summary.empty_sources)
    assert "ERR_CONNECTION_REFUSED" in alarms["gone"] and "host in search_url" in alarms["gone"]
    assert 'rule "Disallow: /images/search" for user agent *' in alarms["blocked"]
    assert "decided by crawl.obey_robots = true" in alarms["blocked"]
    assert "obey_robots = false under [crawl.profiles.blocked]" in alarms["blocked"]
    assert "consent or captcha" in alarms["wall"]
    assert "HTTP 503" in alarms["down"]
    assert "pingo sources check broken" in alarms["broken"]
    # The browser said who it is: crawl.user_agent, not HeadlessChrome.
    assert engine.agents("/wall/images/search") == {UA}
    assert_inbox_consistent(project)


def test_the_alarm_reaches_crawl_output_status_and_report_and_make_crawl_starts_demo(
    project, run_cli, images
):
    port = closed_port()
    project.write(crawl_toml(f"http://127.0.0.1:{port}", {"circle": 2}))
    result = run_cli("crawl")
    assert result.exit_code == 0, result.output
    assert "found no results for any keyword (connection_refused)" in result.stdout
    assert "start it with `pingo demo-site`" in result.stdout

    status = json.loads(run_cli("status", "--json").stdout)
    demo = status["sources"]["demo"]
    assert (demo["queries"], demo["results"], demo["images"]) == (1, 0, 0)
    assert demo["last_error"].startswith("connection_refused: nothing answers at 127.0.0.1")
    assert "pingo demo-site" in run_cli("status").stdout

    assert run_cli("report").exit_code == 0
    page = (project.data_dir / "reports" / "index.html").read_text()
    assert "Search sources" in page and "start it with `pingo demo-site`" in page

    # `make crawl` runs `pingo crawl --with-demo-site`: the demo site starts for the crawl.
    ok = run_cli("crawl", "--with-demo-site", "--json")
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.stdout)["sources"]["demo"]["images"] == 2


def test_sources_check_tells_a_working_source_from_a_refused_one(project, run_cli, site, engine):
    project.write(
        crawl_toml(site.url, {"circle": 2}, sources=["demo", "bing", "naver"])
        + profile("bing", f"{engine.url}/images/search?q={{query}}")
        + profile("naver", f"{engine.url}/search.naver?where=image&query={{query}}")
    )
    result = run_cli("sources", "check")
    assert result.exit_code == 1, result.output  # one source gave nothing
    lines = result.stdout.splitlines()
    assert lines[0].startswith("demo: ok, 14 results for 'circle'")
    assert f"{site.url}/image/circle/circle_000.png" in lines[1]
    bing = next(line for line in lines if line.startswith("bing:"))
    assert "NOTHING for 'circle' (robots)" in bing and "Disallow: /images/search" in bing
    assert any(line.startswith("naver: ok, 12 results") for line in lines)  # step scroll

    data = json.loads(run_cli("sources", "check", "bing", "--query", "red car", "--json").stdout)
    assert data[0]["cause"] == "robots" and data[0]["url"].endswith("q=red+car")


def test_hyphenated_classes_and_non_ascii_keywords_crawl_end_to_end(project, tmp_path, images):
    folder = tmp_path / "site"
    for name in ("t-shirt", "고양이"):
        (folder / name).mkdir(parents=True)
        for i in range(3):
            (folder / name / f"{i}.png").write_bytes(
                (
                    images / "circle" / f"circle_{i + (4 if name == 't-shirt' else 0):03d}.png"
                ).read_bytes()
            )
    assert folder_matches("t-shirt", "T shirt") and not folder_matches("t-shirt", "shirt")
    with make_server(folder).start() as server:
        project.write(
            crawl_toml(server.url, {"t-shirt": 3}).replace(
                "[crawl]", '[classes.cat]\nkeywords = ["고양이 사진"]\ntarget = 3\n\n[crawl]'
            )
        )
        summary = crawl(project.config)
    assert summary.classes["t-shirt"].downloaded == 3
    assert summary.classes["cat"].downloaded == 3
    rows = assert_inbox_consistent(project)
    assert {r["query"] for r in rows} == {"t-shirt", "고양이 사진"}


def test_causes_of_api_and_network_failures_from_status_codes_and_exceptions():
    """What API sources (and pages) fail with, classified without a browser."""
    from scrapy.http import Request, TextResponse
    from scrapy.spidermiddlewares.httperror import HttpError
    from selenium.common.exceptions import TimeoutException
    from twisted.internet import error as tx

    from crawler.causes import classify_failure, classify_page, classify_status
    from crawler.pool import PageUnreachable, RenderFailed
    from crawler.robots import matching_rule

    url = "https://api.example.org/v1/images?q=cat"

    def answer(status: int, body: str = "") -> HttpError:
        response = TextResponse(url, status=status, body=body.encode(), request=Request(url))
        return HttpError(response, "Ignoring non-200 response")

    cases = {
        "rate_limited": [answer(429), answer(403, '{"detail": "daily quota exceeded"}')],
        "http_error": [answer(503), answer(401)],
        "timeout": [tx.TimeoutError(), RenderFailed("not rendered", TimeoutException("t"))],
        "unreachable": [tx.DNSLookupError("x"), PageUnreachable(url, "ERR_NAME_NOT_RESOLVED")],
        "connection_refused": [
            tx.ConnectionRefusedError(),
            PageUnreachable(url, "ERR_CONNECTION_REFUSED"),
        ],
        "render_failed": [RenderFailed("not rendered after 3 attempts: WebDriverException")],
    }
    for cause, failures in cases.items():
        for exc in failures:
            assert classify_failure(exc, url).cause == cause, exc
    assert "HTTP 503" in classify_status(503, url).detail
    assert classify_page(url, "{}", 0, json_body=True).cause == "empty_json"
    assert classify_page(url, "<p>hello</p>", 3).cause == "no_urls"

    robots = (
        "User-agent: pingo\nDisallow: /\n\n"
        "User-agent: *\nAllow: /images/search/ok\nDisallow: /images\n"
    )
    assert matching_rule(robots, "pingo/0.1 (+x)", url) == ("Disallow: /", "pingo")
    assert matching_rule(robots, "other", "https://b.org/images/search?q=x") == (
        "Disallow: /images",
        "*",
    )
    assert matching_rule(robots, "other", "https://b.org/images/search/ok") == (
        "Allow: /images/search/ok",
        "*",
    )
