"""Scrapy settings for a pingo crawl, built from the [crawl] config section.

This module owns every Scrapy-level default: ``DEFAULTS`` holds those no config key sets, and
the config-derived ones come from core.config's defaults through ``build_settings``.
Components read a setting with ``get(settings, NAME)`` and take a constructor default with
``default(NAME)``, so no value is written twice.
"""

from __future__ import annotations

import functools
import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from core.config import Config

logger = logging.getLogger(__name__)

DEFAULTS: dict[str, Any] = {
    "BOT_NAME": "pingo",
    "ROBOTSTXT_OBEY": True,
    "AUTOTHROTTLE_ENABLED": True,
    "AUTOTHROTTLE_START_DELAY": 0.1,
    "AUTOTHROTTLE_MAX_DELAY": 10.0,
    "COOKIES_ENABLED": False,
    "TELNETCONSOLE_ENABLED": False,
    "RETRY_ENABLED": True,
    "RETRY_HTTP_CODES": [500, 502, 503, 504, 522, 524, 408, 429],
    "CLOSESPIDER_ERRORCOUNT": 50,
    "MEDIA_ALLOW_REDIRECTS": True,
    # Private addresses are refused before robots.txt (100) or any connection.
    "DOWNLOADER_MIDDLEWARES": {
        "crawler.netguard.PrivateAddressMiddleware": 50,
        # robots.txt decided per request (a source's own obey_robots), rules named on refusal
        "scrapy.downloadermiddlewares.robotstxt.RobotsTxtMiddleware": None,
        "crawler.robots.SourceRobotsMiddleware": 100,
        # JSON APIs: budgets, tokens and back-off, after robots.txt (100), just before sending.
        "crawler.api_middleware.ApiMiddleware": 120,
        "crawler.middleware.SeleniumMiddleware": 800,
    },
    "ITEM_PIPELINES": {"crawler.pipeline.InboxImagesPipeline": 300},
    "LOG_LEVEL": "INFO",
    "SELENIUM_DRIVER_NAME": "chrome",
    "SELENIUM_ENABLED": True,
    "SELENIUM_ON_REACTOR_THREAD": False,  # render on the reactor thread (tests only)
    "SELENIUM_RENDER_DEADLINE": 0.0,  # seconds a render may take; 0 = from the page load timeout
    "PINGO_INBOX_WRITERS": 4,  # threads storing images
    "PINGO_REDIS_WORKER_TTL": 10.0,  # seconds a silent worker counts as alive
    "PINGO_API_RETRIES": 3,  # back-offs on one API page (429/503) before giving up on it
    "PINGO_API_MAX_WAIT": 120.0,  # a longer Retry-After stops that source for this crawl
    "PINGO_API_BUDGET_PREFIX": "pingo-api",  # Redis keys of the shared API budgets
}


def build_settings(
    config: Config, data_dir: str, db_url: str | None, overrides: dict[str, Any] | None = None
) -> dict[str, Any]:
    crawl = config.crawl
    settings = dict(DEFAULTS)
    settings.update(
        {
            "USER_AGENT": crawl.user_agent,
            "ROBOTSTXT_OBEY": crawl.obey_robots,
            "CONCURRENT_REQUESTS": crawl.concurrency + crawl.max_drivers,
            "CONCURRENT_REQUESTS_PER_DOMAIN": crawl.concurrency + crawl.max_drivers,
            "AUTOTHROTTLE_TARGET_CONCURRENCY": float(crawl.concurrency),
            "DOWNLOAD_DELAY": crawl.download_delay,
            "AUTOTHROTTLE_START_DELAY": max(crawl.download_delay, 0.1),
            "DOWNLOAD_TIMEOUT": crawl.download_timeout,
            "DOWNLOAD_MAXSIZE": crawl.max_image_bytes,
            "DOWNLOAD_WARNSIZE": 0,
            "RETRY_TIMES": crawl.retries,
            "CLOSESPIDER_TIMEOUT": crawl.max_seconds,
            "SELENIUM_MAX_DRIVERS": crawl.max_drivers,
            "SELENIUM_PAGES_PER_BROWSER": crawl.pages_per_browser,
            "SELENIUM_PAGE_LOAD_TIMEOUT": crawl.page_load_timeout,
            "SELENIUM_RETRY_TIMES": crawl.retries,
            "SELENIUM_COMMAND_EXECUTOR": crawl.selenium_remote_url,
            # The browser's User-Agent: crawl.user_agent, or "chrome" (a desktop Chrome's)
            "SELENIUM_USER_AGENT": (
                "chrome" if crawl.browser_user_agent == "chrome" else crawl.user_agent
            ),
            "PINGO_DATA_DIR": str(data_dir),
            "PINGO_DB_URL": db_url,
            "PINGO_MIN_IMAGE_SIDE": crawl.min_image_side,
            # The factory would refuse what is over its limits: refuse it here, unstored.
            "PINGO_MAX_IMAGE_PIXELS": min(crawl.max_image_pixels, config.factory.max_pixels),
            "PINGO_DECODE_TIMEOUT": config.factory.decode_timeout,
            "PINGO_ALLOW_PRIVATE_NETWORKS": crawl.allow_private_networks,
            "PINGO_TRUSTED_ORIGINS": [crawl.demo_url],  # the local demo site
            "PINGO_URL_RETRY_AFTER": crawl.retry_failed_after * 3600,  # seconds
            "PINGO_URL_MAX_ATTEMPTS": crawl.max_url_attempts,
            "PINGO_IDLE_TIMEOUT": crawl.idle_timeout,  # read by the frontier (with redis_url)
        }
    )
    if crawl.redis_url:
        # Several crawlers share one frontier: scrapy-redis's queue and dupefilter, through
        # pingo's scheduler (rounds, shared budgets, work taken back from dead workers).
        from crawler.frontier import default_key_prefix

        settings.update(
            {
                "SCHEDULER": "crawler.redis_scheduler.SharedScheduler",
                "REDIS_URL": crawl.redis_url,
                "PINGO_REDIS_PREFIX": crawl.redis_key_prefix
                or default_key_prefix(db_url, data_dir),
            }
        )
    settings.update(overrides or {})
    return settings


@functools.cache
def _defaults() -> dict[str, Any]:
    from core.config import Config

    return build_settings(Config(), "", None)


def default(name: str) -> Any:
    """What setting ``name`` is in a crawl of the default config (KeyError if no such one)."""
    return _defaults()[name]


def get(settings: Any, name: str) -> Any:
    """Setting ``name`` from a crawler's Scrapy settings, typed like its default, and that
    default when it is unset (a crawler built without build_settings, as tests do)."""
    fallback = default(name)
    if isinstance(fallback, bool):
        return settings.getbool(name, fallback)
    if isinstance(fallback, int):
        return settings.getint(name, fallback)
    if isinstance(fallback, float):
        return settings.getfloat(name, fallback)
    return settings.get(name, fallback)
