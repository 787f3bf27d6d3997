"""Page actions of profiles on saved pages served for real: the "See more" click (Bing), the
step scroll through lazy tiles (Naver), the browser's User-Agent, and profile keys."""

from __future__ import annotations

import pytest
from crawler_fixtures.helpers import FixtureEngine, served_page
from scrapy.http import HtmlResponse

from core.errors import ConfigError
from core.sources import BUILTIN, load_profiles
from crawler.browser import Browser, BrowserSpec
from crawler.pool import BrowserPool, RenderJob
from crawler.selenium_request import Scroll
from crawler.sources import extract

pytestmark = pytest.mark.browser

IMAGES = "http://127.0.0.1:9"  # image URLs are only read here, never fetched


@pytest.fixture(scope="module")
def engine():
    pages = {
        "/images/search": (200, served_page("bing_results.html", IMAGES)),
        "/search.naver": (200, served_page("naver_results.html", IMAGES)),
    }
    with FixtureEngine(pages) as server:
        yield server


def render(driver, url: str, scroll: Scroll):
    """Render ``url`` in the shared browser as the crawl's pool does; (response, clicks)."""
    rendered = BrowserPool(BrowserSpec())._render_once(
        driver, RenderJob(url, 5, scroll.css, scroll=scroll)
    )
    response = HtmlResponse(rendered.url, body=rendered.body, encoding="utf-8")
    return response, rendered.clicks


def test_bing_see_more_is_clicked_when_scrolling_adds_nothing(chromium, engine):
    bing = BUILTIN["bing"]
    url = f"{engine.url}/images/search?q=circle"
    scroll = Scroll(bing.result_css, 50, 10, 0.5, more_css=bing.more_css, attr=bing.url_attr)
    response, clicks = render(chromium, url, scroll)
    urls = [u for u, _ in extract(bing, response)]
    assert clicks >= 1
    # The first batch, the batch the click adds, and the one scrolling adds after the click.
    assert urls == [f"{IMAGES}/image/circle/circle_{i:03d}.png" for i in range(12)]

    without, clicks = render(chromium, url, Scroll(bing.result_css, 50, 10, 0.5, attr="m"))
    assert clicks == 0 and len(list(extract(bing, without))) == 4  # stalled at the first batch


def test_naver_step_scroll_loads_lazy_tiles_a_jump_leaves_placeholders(chromium, engine):
    naver = BUILTIN["naver"]
    assert naver.scroll_step > 0
    url = f"{engine.url}/search.naver?where=image&query=square"
    want = 50
    stepped, _ = render(
        chromium,
        url,
        Scroll(naver.result_css, want, 60, 0.5, step=naver.scroll_step, attr=naver.url_attr),
    )
    every = [f"{IMAGES}/image/square/square_{i:03d}.png" for i in range(12)]
    assert [u for u, _ in extract(naver, stepped)] == every

    jumped, _ = render(chromium, url, Scroll(naver.result_css, want, 60, 0.5, attr="src"))
    got = [u for u, _ in extract(naver, jumped)]
    placeholders = [
        img.attrib["src"][:5] for img in jumped.css(naver.result_css) if "src" in img.attrib
    ]
    assert len(got) < 12 and "data:" in placeholders  # the middle tiles never came into view


@pytest.mark.parametrize("choice", ["crawl", "chrome"])
def test_the_browser_sends_the_configured_user_agent(spec, engine, choice):
    from dataclasses import replace

    from scrapy.settings import Settings

    ours = "pingo-test/1.0 (+https://example.org/bot)"
    wanted = ours if choice == "crawl" else "chrome"
    chosen = BrowserSpec.from_settings(
        Settings({"SELENIUM_USER_AGENT": wanted, "SELENIUM_PAGE_LOAD_TIMEOUT": 10})
    ).user_agent
    assert chosen is not None
    browser = Browser.start(replace(spec, user_agent=chosen))
    try:
        browser.driver.get(f"{engine.url}/images/search?q=ua-{choice}")
        navigator = browser.driver.execute_script("return navigator.userAgent")
    finally:
        browser.quit()
    sent = {ua for p, ua in engine.requests if p.endswith(f"ua-{choice}")}
    assert sent == {chosen} and navigator == chosen
    if choice == "chrome":
        assert "Chrome/" in chosen and "Headless" not in chosen
    else:
        assert chosen == ours


def test_profile_keys_for_page_actions_and_robots(project):
    project.write("""
[crawl.profiles.bing]
more_css = ""            # switch the built-in's button off
obey_robots = false

[crawl.profiles.lazy]
search_url = "https://x.org/?q={query}"
result_css = "img"
url_attr = "src"
scroll_step = 400
""")
    profiles = load_profiles(project.config.crawl.profiles)
    assert profiles["bing"].more_css is None and profiles["bing"].obey_robots is False
    assert profiles["lazy"].scroll_step == 400 and profiles["lazy"].obey_robots is None
    assert BUILTIN["bing"].more_css == "a.btn_seemore"
    for bad, message in (
        ("scroll_step = -5", "scroll_step: pixels"),
        ('obey_robots = "no"', "obey_robots: got 'no'; wrong type"),
    ):
        project.write(f"[crawl.profiles.bing]\n{bad}\n")
        with pytest.raises(ConfigError, match=message):
            _ = project.config
    project.write('[crawl]\nbrowser_user_agent = "firefox"\n')
    with pytest.raises(ConfigError, match="browser_user_agent"):
        _ = project.config
