"""crawler: fills the inbox for classes below target.

Selenium renders search-result pages (off Scrapy's reactor thread, on a small pool of
browsers); Scrapy's own downloader fetches the images; the image pipeline stores the original
bytes through storage. Entry points: ``crawler.crawl`` (``crawler.run.crawl``) and
``crawler.demo_site``. ``crawler.frontier`` is the Redis frontier several crawlers share.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from crawler.run import crawl

__all__ = ["crawl"]


def __getattr__(name: str) -> Any:
    # Lazy: crawler.run imports Scrapy (~0.7 s); `import crawler` (the CLI, the scheduler's
    # crawler.errors) must not pay for it.
    if name == "crawl":
        from crawler.run import crawl

        return crawl
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
