"""SeleniumRequest: the request API scrapy-selenium users know, plus scroll-until-enough."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from scrapy import Request

try:  # keep isinstance() checks in code written for scrapy-selenium working
    from scrapy_selenium import SeleniumRequest as _Base
except ImportError:  # pragma: no cover - scrapy-selenium is optional
    _Base = Request

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Scroll:
    """Scroll until ``want`` elements match ``css``, or scrolling stops adding any.

    ``step``: scroll this many pixels at a time (lazy tiles load only once in view), else to
    the bottom at once. ``more_css``: at the bottom, when a scroll adds nothing, click this
    ("see more") if it is shown, and go on. ``attr``: count only elements whose attribute
    ``attr`` is set and not a ``data:`` placeholder."""

    css: str
    want: int
    max_scrolls: int = 30
    pause: float = 1.5  # most seconds to wait for new elements after one scroll
    more_css: str | None = None
    step: int = 0
    attr: str | None = None


class SeleniumRequest(_Base):
    """A request rendered by a headless browser instead of Scrapy's downloader.

    wait_time/wait_until: wait up to wait_time seconds until wait_until holds; wait_until is a
    Selenium expected condition (a callable taking the driver) or a CSS selector string.
    screenshot: put a PNG of the page into ``response.meta["screenshot"]``.
    script: JavaScript run after the page loaded (and before scrolling).
    scroll: a :class:`Scroll`; the response's meta gets ``scrolls`` and ``scroll_count``.
    """

    attributes = (*Request.attributes, "wait_time", "wait_until", "screenshot", "script", "scroll")

    def __init__(
        self,
        *args,
        wait_time: float | None = None,
        wait_until=None,
        screenshot: bool = False,
        script: str | None = None,
        scroll: Scroll | None = None,
        **kwargs,
    ):
        self.wait_time = wait_time
        self.wait_until = wait_until
        self.screenshot = screenshot
        self.script = script
        self.scroll = scroll
        Request.__init__(self, *args, **kwargs)
