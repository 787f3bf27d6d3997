"""Why a source gave nothing for a query: one cause per failed or empty query, with advice.

A results page (or an API answer) that yields no usable result has one of a few causes, and
each calls for something different from the user: start the demo site, wait out a quota, read
a robots.txt rule and decide, open the page in a browser, fix a profile. ``classify_failure``
names the cause of an exception (the spider's errback: rendering, robots.txt, downloads of
API sources), ``classify_status`` of an HTTP status, ``classify_page`` of a page that loaded
but gave no URL. ``advice`` says what to do. Causes are plain strings so they travel through
Scrapy stats and the runs table as they are.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

logger = logging.getLogger(__name__)

CONNECTION_REFUSED = "connection_refused"
TIMEOUT = "timeout"
UNREACHABLE = "unreachable"  # DNS, reset, TLS, any other network failure
HTTP_ERROR = "http_error"
RATE_LIMITED = "rate_limited"  # 429 or an exhausted quota
ROBOTS = "robots"
CONSENT = "consent"  # a consent wall or a captcha instead of results
EMPTY_JSON = "empty_json"  # an API answered well-formed JSON without results
MARKUP = "markup"  # the page loaded; nothing matched result_css
NO_URLS = "no_urls"  # results matched, none held an image URL where the profile looks
RENDER_FAILED = "render_failed"  # browsers crashed rendering it, retries included
OTHER = "error"

CAUSES = (
    CONNECTION_REFUSED,
    TIMEOUT,
    UNREACHABLE,
    HTTP_ERROR,
    RATE_LIMITED,
    ROBOTS,
    CONSENT,
    EMPTY_JSON,
    MARKUP,
    NO_URLS,
    RENDER_FAILED,
    OTHER,
)

# Chromium's net error codes (in WebDriver messages and on its error page) -> cause.
_NET_ERRORS = {
    "ERR_CONNECTION_REFUSED": CONNECTION_REFUSED,
    "ERR_TIMED_OUT": TIMEOUT,
    "ERR_CONNECTION_TIMED_OUT": TIMEOUT,
}
NET_ERROR = re.compile(r"\b(?:net::)?(ERR_[A-Z_]+)\b")

# Markers of a consent wall or a bot check, looked for only on a page without results.
_CONSENT_MARKERS = (
    "captcha",
    "unusual traffic",
    "are you a robot",
    "not a robot",
    "verify you are human",
    "before you continue",
    "consent.",
    "cookie consent",
    "accept all cookies",
)


@dataclass(frozen=True)
class Problem:
    """Why one query gave no usable result: ``cause`` (one of CAUSES) and one line of detail."""

    cause: str
    detail: str

    def __str__(self) -> str:
        return f"{self.cause}: {self.detail}"


def _where(url: str) -> str:
    parts = urlsplit(url)
    return parts.netloc or url[:80]


def classify_status(status: int, url: str, body: str = "") -> Problem:
    """A results page or API answer with HTTP ``status`` >= 400."""
    text = body[:2000].lower()
    if status == 429 or "quota" in text or "rate limit" in text:
        return Problem(RATE_LIMITED, f"{_where(url)} answered HTTP {status} (too many requests)")
    return Problem(HTTP_ERROR, f"{_where(url)} answered HTTP {status}")


def classify_failure(exc: BaseException, url: str) -> Problem:
    """The cause of an exception that ended a results request (render, robots, download)."""
    from scrapy.exceptions import IgnoreRequest
    from twisted.internet import error as tx

    from crawler.robots import RobotsRefused

    chain: list[BaseException] = []
    seen: BaseException | None = exc
    while seen is not None and len(chain) < 5:  # RenderFailed keeps the browser's error
        chain.append(seen)
        seen = getattr(seen, "last_error", None) or seen.__cause__
    for e in chain:
        if isinstance(e, RobotsRefused):
            return Problem(ROBOTS, e.explain())
        if isinstance(e, IgnoreRequest) and "robots" in str(e).lower():
            return Problem(ROBOTS, f"robots.txt of {_where(url)} disallows {url[:200]}")
        response = getattr(e, "response", None)  # scrapy's HttpError (API sources)
        if response is not None and getattr(response, "status", 0) >= 400:
            return classify_status(response.status, url, response.text[:2000])
        if isinstance(e, (ConnectionRefusedError, tx.ConnectionRefusedError)):
            return Problem(CONNECTION_REFUSED, f"nothing answers at {_where(url)}")
        if isinstance(e, (tx.TimeoutError, tx.TCPTimedOutError, TimeoutError)) or (
            "timeout" in type(e).__name__.lower()
        ):
            return Problem(TIMEOUT, f"{_where(url)} did not answer in time ({type(e).__name__})")
        if isinstance(e, tx.DNSLookupError):
            return Problem(UNREACHABLE, f"{_where(url)}: host name not found")
        match = NET_ERROR.search(str(e))
        if match:
            code = match.group(1)
            cause = _NET_ERRORS.get(code, UNREACHABLE)
            what = "nothing answers at" if cause == CONNECTION_REFUSED else "cannot reach"
            return Problem(cause, f"{what} {_where(url)} ({code})")
        if isinstance(e, (tx.ConnectError, tx.ConnectionLost, ConnectionError, OSError)):
            return Problem(UNREACHABLE, f"{_where(url)}: {type(e).__name__}: {e}"[:300])
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if "429" in first or "quota" in first.lower():
        return Problem(RATE_LIMITED, f"{_where(url)}: {first[:200]}")
    from crawler.pool import RenderFailed

    if isinstance(exc, RenderFailed):
        return Problem(RENDER_FAILED, first[:300])
    return Problem(OTHER, f"{type(exc).__name__}: {first}"[:300])


def is_consent_page(url: str, text: str) -> bool:
    """A consent wall or a bot check (looked at only when a page gave no results)."""
    host = urlsplit(url).hostname or ""
    if host.startswith("consent.") or "/sorry/" in url:
        return True
    lowered = text[:200_000].lower()
    return any(marker in lowered for marker in _CONSENT_MARKERS)


def classify_page(url: str, text: str, matched: int, json_body: bool = False) -> Problem:
    """A page that loaded (status < 400) but gave no usable URL: why.

    ``matched``: elements matching the profile's result_css; ``json_body``: the answer was
    JSON (an API source)."""
    if json_body:
        return Problem(EMPTY_JSON, f"{_where(url)} answered JSON without results")
    if matched:
        return Problem(
            NO_URLS,
            f"{matched} results matched, but none held an image URL where the profile looks "
            "(url_attr / json_key / url_param), or they were still placeholders",
        )
    if is_consent_page(url, text):
        return Problem(CONSENT, f"{_where(url)} showed a consent or captcha page, not results")
    return Problem(MARKUP, f"the page from {_where(url)} loaded but nothing matched result_css")


def advice(cause: str, source: str, is_demo: bool = False) -> str:
    """What a user can do about ``cause`` for ``source`` (one sentence)."""
    profile = f"[crawl.profiles.{source}]"
    if cause == CONNECTION_REFUSED and is_demo:
        return (
            "the demo site is not running: start it with `pingo demo-site` (or run "
            "`make crawl`, which starts it when crawl.sources uses demo)"
        )
    return {
        CONNECTION_REFUSED: "check that the host in search_url is up and reachable from here",
        TIMEOUT: "the network or the source is slow: try again, or raise crawl.page_load_timeout",
        UNREACHABLE: "check the host name in search_url and this machine's network",
        HTTP_ERROR: "the source refused or failed the request: try later; a 403 often means "
        "it blocks automated search",
        RATE_LIMITED: "slow down (crawl.download_delay) or wait until the quota resets",
        ROBOTS: "robots.txt forbids the result page; to crawl it anyway set obey_robots = "
        f"false under {profile}, only if the source's terms allow it: the choice and the "
        "responsibility are yours",
        CONSENT: "the source wants a person (consent wall or captcha): open search_url in a "
        'browser from this machine, try crawl.browser_user_agent = "chrome", or use '
        "another source",
        EMPTY_JSON: "the API found nothing for these keywords: try them on the site, or "
        "other keywords",
        MARKUP: f"its markup may have changed, or the keyword finds nothing: run `pingo "
        f"sources check {source}` and see docs/crawler.md, 'Fixing a profile'",
        NO_URLS: f"fix url_attr / json_key / url_param under {profile}; lazy tiles need "
        "scroll_step",
        RENDER_FAILED: "the browser crashed on every try: see the selenium/* stats and the log",
    }.get(cause, "see the log for the error")


def dominant(causes: dict[str, int]) -> str | None:
    """The cause seen most often (ties: the earlier in CAUSES)."""
    if not causes:
        return None
    return max(causes, key=lambda c: (causes[c], -CAUSES.index(c) if c in CAUSES else -99))
