"""`pingo sources check`: one query per source, rendered as a crawl would, and what it found.

A user can tell a broken profile from an empty query in one command: each source's results
page is checked against robots.txt (as the crawl decides it), rendered in one headless
browser with the source's profile (scrolling, "see more", steps), and read; a source that gives
nothing gets the cause and the advice the crawl summary would give. Nothing is downloaded or
stored.
"""

from __future__ import annotations

import logging
import time
import urllib.request
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from core.sources import SourceProfile, resolve_sources
from crawler import causes

if TYPE_CHECKING:
    from core.config import Config

logger = logging.getLogger(__name__)

DEFAULT_QUERY = "cat"
CHECK_WANT = 30  # results a check scrolls for


@dataclass
class SourceCheck:
    source: str
    query: str
    url: str
    results: int = 0
    urls: list[str] = field(default_factory=list)
    problem: causes.Problem | None = None
    advice: str | None = None
    seconds: float = 0.0

    def as_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "query": self.query,
            "url": self.url,
            "results": self.results,
            "urls": self.urls,
            "cause": self.problem.cause if self.problem else None,
            "error": str(self.problem) if self.problem else None,
            "advice": self.advice,
            "seconds": round(self.seconds, 2),
        }


def default_query(config: Config) -> str:
    """The first keyword of the first class, so the check asks what a crawl would ask."""
    for spec in config.classes.values():
        if spec.keywords:
            return spec.keywords[0]
    return DEFAULT_QUERY


def robots_problem(
    profile: SourceProfile, url: str, obey_default: bool, agent: str, timeout: float
) -> causes.Problem | None:
    """The robots refusal a crawl would meet on ``url``, or None (allowed, not obeyed, or no
    robots.txt to read: a crawl then renders the page, and so does the check)."""
    from protego import Protego

    from crawler.robots import RobotsRefused, matching_rule

    obey = profile.obey_robots if profile.obey_robots is not None else obey_default
    if not obey:
        return None
    parts = urlsplit(url)
    request = urllib.request.Request(
        f"{parts.scheme}://{parts.netloc}/robots.txt", headers={"User-Agent": agent}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            text = answer.read(500_000).decode("utf-8", "replace")
    except OSError:  # HTTP errors, refused connections: the render below tells
        return None
    if Protego.parse(text).can_fetch(url, agent):
        return None
    rule, group = matching_rule(text, agent, url)
    key = (
        f"[crawl.profiles.{profile.name}] obey_robots"
        if profile.obey_robots is not None
        else "crawl.obey_robots"
    )
    return causes.Problem(causes.ROBOTS, RobotsRefused(url, rule, group, f"{key} = true").explain())


def check_sources(
    config: Config,
    names: list[str] | None = None,
    query: str | None = None,
    settings: dict[str, Any] | None = None,
) -> list[SourceCheck]:
    """Check ``names`` (default: crawl.sources) with one query each (default: the first
    keyword of the first class). Raises UnknownSourceError, BrowserError."""
    from scrapy.http import HtmlResponse
    from scrapy.settings import Settings

    from crawler.browser import BrowserSpec
    from crawler.pool import BrowserPool, RenderJob
    from crawler.run import demo_sources
    from crawler.selenium_request import Scroll
    from crawler.settings import build_settings
    from crawler.sources import extract

    profiles = resolve_sources(list(names or config.crawl.sources), config.crawl.profiles)
    demo = demo_sources(profiles)
    query = query or default_query(config)
    scrapy_settings = build_settings(config, "", None, settings)
    spec = BrowserSpec.from_settings(Settings(scrapy_settings))
    agent = config.crawl.user_agent  # what the crawl's robots.txt check goes by
    pool = BrowserPool(spec, size=1, retries=0)
    checks = []
    try:
        for profile in profiles:
            url = profile.results_url(query, config.crawl.demo_url)
            check = SourceCheck(profile.name, query, url)
            start = time.monotonic()
            check.problem = robots_problem(
                profile, url, config.crawl.obey_robots, agent, config.crawl.page_load_timeout
            )
            if check.problem is None:
                want = min(CHECK_WANT, config.crawl.per_query_limit)
                job = RenderJob(
                    url,
                    10.0,
                    profile.wait_css or profile.result_css,
                    scroll=Scroll(
                        profile.result_css,
                        want,
                        profile.max_scrolls,
                        profile.scroll_pause,
                        profile.more_css,
                        profile.scroll_step,
                        profile.url_attr,
                    )
                    if profile.scroll
                    else None,
                )
                try:
                    rendered = pool.render_blocking(job)
                except Exception as exc:  # whatever it is, it is this source's cause
                    check.problem = causes.classify_failure(exc, url)
                else:
                    response = HtmlResponse(
                        rendered.url, status=rendered.status, body=rendered.body, encoding="utf-8"
                    )
                    if rendered.status >= 400:
                        check.problem = causes.classify_status(rendered.status, url, response.text)
                    else:
                        found = list(dict(extract(profile, response)))
                        check.results, check.urls = len(found), found
                        if not found:
                            check.problem = causes.classify_page(
                                rendered.url,
                                response.text,
                                len(response.css(profile.result_css)),
                            )
            if check.problem is not None:
                check.advice = causes.advice(
                    check.problem.cause, profile.name, profile.name in demo
                )
            check.seconds = time.monotonic() - start
            checks.append(check)
    finally:
        pool.close()
    return checks
