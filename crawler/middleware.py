"""SeleniumMiddleware: renders SeleniumRequests on a browser pool, off the reactor thread.

Settings (scrapy-selenium's names, plus pool controls):
SELENIUM_DRIVER_NAME (chrome|firefox), SELENIUM_DRIVER_EXECUTABLE_PATH,
SELENIUM_DRIVER_ARGUMENTS, SELENIUM_BROWSER_EXECUTABLE_PATH, SELENIUM_COMMAND_EXECUTOR (a
Selenium Grid / remote driver URL), SELENIUM_MAX_DRIVERS (browsers),
SELENIUM_PAGES_PER_BROWSER (recycle after), SELENIUM_PAGE_LOAD_TIMEOUT (s),
SELENIUM_RETRY_TIMES (fresh-browser retries of a failed render),
SELENIUM_RENDER_DEADLINE (s until a render is presumed hung), SELENIUM_ENABLED,
SELENIUM_ON_REACTOR_THREAD (render synchronously, like scrapy-selenium; a benchmark baseline),
SELENIUM_USER_AGENT (the browser's User-Agent; "chrome": a desktop Chrome's; from
crawl.user_agent / crawl.browser_user_agent).
Their defaults: crawler.settings.

Other requests pass through untouched, so Scrapy's downloader keeps fetching images while
pages render. Stats: selenium/page_count, selenium/browser_started, selenium/browser_crashed,
selenium/page_timeout, selenium/retry_count, selenium/render_failed, selenium/scrolls,
selenium/more_clicks, selenium/page_unreachable, ...
"""

from __future__ import annotations

import logging
import time

from scrapy import signals
from scrapy.exceptions import NotConfigured
from scrapy.http import HtmlResponse
from scrapy.utils.defer import maybe_deferred_to_future

from crawler.browser import BrowserSpec
from crawler.pool import BrowserPool, Rendered, RenderJob
from crawler.selenium_request import SeleniumRequest
from crawler.settings import get

logger = logging.getLogger(__name__)


class SeleniumMiddleware:
    def __init__(self, crawler, pool: BrowserPool, on_reactor_thread: bool = False):
        self.crawler = crawler
        self.pool = pool
        self.on_reactor_thread = on_reactor_thread

    @classmethod
    def from_crawler(cls, crawler):
        settings = crawler.settings
        if not get(settings, "SELENIUM_ENABLED"):
            raise NotConfigured("SELENIUM_ENABLED is off")
        spec = BrowserSpec.from_settings(settings)
        stats = crawler.stats

        def stat(key: str, n: int = 1) -> None:
            # Workers call this from their threads; stats are touched on the reactor only.
            from twisted.internet import reactor

            reactor.callFromThread(stats.inc_value, key, n)

        pool = BrowserPool(
            spec,
            size=get(settings, "SELENIUM_MAX_DRIVERS"),
            pages_per_browser=get(settings, "SELENIUM_PAGES_PER_BROWSER"),
            retries=get(settings, "SELENIUM_RETRY_TIMES"),
            deadline=get(settings, "SELENIUM_RENDER_DEADLINE") or None,
            stat=stat,
        )
        middleware = cls(crawler, pool, get(settings, "SELENIUM_ON_REACTOR_THREAD"))
        crawler.signals.connect(middleware.spider_opened, signal=signals.spider_opened)
        crawler.signals.connect(middleware.spider_closed, signal=signals.spider_closed)
        return middleware

    def spider_opened(self) -> None:
        self.pool.start(prestart=not self.on_reactor_thread)

    async def spider_closed(self) -> None:
        from twisted.internet.threads import deferToThread

        self.pool.stop_watchdog()  # here, on the reactor thread, not in pool.close's thread
        # Quitting browsers blocks; do it on a thread so the reactor can finish closing.
        await maybe_deferred_to_future(deferToThread(self.pool.close))

    async def process_request(self, request):
        if not isinstance(request, SeleniumRequest):
            return None
        job = RenderJob(
            request.url,
            request.wait_time,
            request.wait_until,
            request.script,
            request.screenshot,
            getattr(request, "scroll", None),
        )
        if self.on_reactor_thread:
            rendered = self.pool.render_blocking(job)  # blocks every other download
        else:
            rendered = await maybe_deferred_to_future(self.pool.render(job))
        # Wall-clock window in which pages rendered (benchmarks read pages per second off it).
        now = time.time()
        self.crawler.stats.min_value("selenium/first_render_start", now - rendered.seconds)
        self.crawler.stats.max_value("selenium/last_render_end", now)
        return self._response(request, rendered)

    def _response(self, request, rendered: Rendered) -> HtmlResponse:
        request.meta.update(
            scrolls=rendered.scrolls,
            scroll_count=rendered.scroll_count,
            more_clicks=rendered.clicks,
            render_seconds=rendered.seconds,
            render_attempts=rendered.attempts,
        )
        if rendered.screenshot is not None:
            request.meta["screenshot"] = rendered.screenshot
        return HtmlResponse(
            rendered.url,
            status=rendered.status,
            body=rendered.body,
            encoding="utf-8",
            request=request,
            flags=["selenium"],
        )
