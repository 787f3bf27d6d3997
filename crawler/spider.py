"""ImageSearchSpider: for each class below target, search its keywords on each source.

The plan (class -> how many images it lacks, its keywords) comes from ``crawler.run``, which
asked storage. Per class the spider works through (source, keyword) pairs one at a time:
render the results page (scrolling until enough results exist), take the full-size image URLs
the profile finds, skip URLs fetched before (storage remembers them) or already taken in this
crawl, and yield items until the class has as many candidates as it lacks. Only then, or when
a page runs dry, does it render the next query, so no page is rendered needlessly.

Sources of kind "api" (JSON search APIs: crawler.api_sources) take the same path with a plain
Scrapy request instead of a render: each answer gives results with their licence, and the
next page of the same query is asked for while the class still lacks images; a query goes on
at the page where the last crawl left it (kept beside the API budget, crawler.rate_limit).
Results whose licence crawl.licenses leaves out are dropped before download.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING

import scrapy

from core.config import CrawlConfig
from core.licenses import FAMILIES, UNKNOWN
from core.sources import SourceProfile
from crawler import causes
from crawler.robots import DECIDED_BY_META, OBEY_META
from crawler.selenium_request import Scroll, SeleniumRequest
from crawler.settings import get
from crawler.sources import extract

if TYPE_CHECKING:
    from storage import Store

logger = logging.getLogger(__name__)


@dataclass
class ClassPlan:
    name: str
    lacking: int
    keywords: list[str] = field(default_factory=list)


class ImageSearchSpider(scrapy.Spider):
    name = "pingo_images"

    def __init__(
        self,
        plan: list[ClassPlan],
        sources: list[SourceProfile],
        demo_url: str = "",
        per_query_limit: int = CrawlConfig.per_query_limit,
        render_wait: float = 10.0,
        licenses: tuple[str, ...] | list[str] = FAMILIES,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.plan = {p.name: p for p in plan}
        self.licenses = tuple(licenses)
        self.stopped_sources: dict[str, str] = {}  # source -> why it is not asked again
        if UNKNOWN not in self.licenses:  # rendered pages say nothing of licences
            for s in sources:
                if s.kind != "api":
                    self.stopped_sources[s.name] = (
                        f"{s.name}: its results carry no licence and crawl.licenses leaves "
                        "out 'unknown'; not searched"
                    )
        sources = [s for s in sources if s.name not in self.stopped_sources]
        self.sources = {s.name: s for s in sources}
        self.demo_url = demo_url
        self.per_query_limit = per_query_limit
        self.render_wait = render_wait
        self.budget = {p.name: p.lacking for p in plan}
        self.queries = {
            p.name: deque((s.name, kw) for s in sources for kw in p.keywords) for p in plan
        }
        self.taken: set[str] = set()
        # Fresh results not taken yet (the class had enough then); used when downloads fail.
        self.leftovers: dict[str, deque[dict]] = {p.name: deque() for p in plan}
        self.store: Store | None = None

    @classmethod
    def from_crawler(cls, crawler, *args, **kwargs):
        spider = super().from_crawler(crawler, *args, **kwargs)
        crawler.signals.connect(spider.on_closed, signal=scrapy.signals.spider_closed)
        crawler.signals.connect(spider.on_idle, signal=scrapy.signals.spider_idle)
        return spider

    def _open_store(self):
        if self.store is None:
            from storage import Store

            settings = self.crawler.settings
            self.store = Store.open(
                settings.get("PINGO_DATA_DIR"), settings.get("PINGO_DB_URL"), repair=False
            )
        return self.store

    @cached_property
    def url_retry(self):
        """Which URLs fetched before are due again (passing failures, after a pause)."""
        from datetime import timedelta

        from crawler.pipeline import passing_failure
        from storage import UrlRetry

        settings = self.crawler.settings
        return UrlRetry(
            passing_failure,
            timedelta(seconds=get(settings, "PINGO_URL_RETRY_AFTER")),
            get(settings, "PINGO_URL_MAX_ATTEMPTS"),
        )

    def on_closed(self) -> None:
        if self.store is not None:
            self.store.close()

    async def start(self):
        for name, why in self.stopped_sources.items():
            self.crawler.stats.set_value(f"pingo/source/{name}/stopped", why)
            logger.warning("%s", why)
        for name in self.plan:
            request = self.next_query(name)
            if request is not None:
                yield request

    def lacking(self, class_name: str) -> int:
        """How many more candidates this class needs."""
        return self.budget[class_name]

    def can_take(self, class_name: str) -> bool:
        return self.budget[class_name] > 0

    def still_lacking(self, class_name: str, lacked: int, taken: int) -> int:
        """After a results page: how many the class lacked before it, minus what it gave."""
        return self.budget[class_name]

    def pop_query(self, class_name: str) -> tuple[str, str] | None:
        queue = self.queries[class_name]
        return queue.popleft() if queue else None

    def next_query(self, class_name: str, want: int | None = None):
        """The next results page to render for this class, or None when none are left."""
        if self.lacking(class_name) <= 0:
            return None
        while True:
            query = self.pop_query(class_name)
            if query is None:
                return None
            source_name, keyword = query
            if source_name not in self.stopped_sources:  # an API out of quota, say
                return self.results_request(class_name, source_name, keyword, want)

    def results_request(
        self,
        class_name: str,
        source_name: str,
        keyword: str,
        want: int | None = None,
        cursor: int | None = None,
    ) -> scrapy.Request:
        source = self.sources[source_name]
        if source.kind == "api":
            return self.api_request(class_name, source, keyword, cursor)
        lacking = max(self.lacking(class_name), 0)
        want = want or min(self.per_query_limit, max(2 * lacking, lacking + 20))
        self.crawler.stats.inc_value(f"pingo/source/{source_name}/queries")
        return SeleniumRequest(
            url=source.results_url(keyword, self.demo_url),
            callback=self.parse_results,
            errback=self.results_failed,
            dont_filter=True,
            wait_time=self.render_wait,
            wait_until=source.wait_css or source.result_css,
            scroll=Scroll(
                source.result_css,
                want,
                source.max_scrolls,
                source.scroll_pause,
                more_css=source.more_css,
                step=source.scroll_step,
                attr=source.url_attr,
            )
            if source.scroll
            else None,
            cb_kwargs={
                "class_name": class_name,
                "source_name": source_name,
                "keyword": keyword,
                "want": want,
            },
            meta={"handle_httpstatus_all": True, **self.robots_meta(source)},
        )

    def robots_meta(self, source: SourceProfile) -> dict:
        """Whether robots.txt is obeyed for this source's result pages, and which key says so
        (its own ``obey_robots``, else crawl.obey_robots)."""
        if source.obey_robots is not None:
            obey, key = source.obey_robots, f"[crawl.profiles.{source.name}] obey_robots"
        else:
            obey, key = self.crawler.settings.getbool("ROBOTSTXT_OBEY"), "crawl.obey_robots"
        return {OBEY_META: obey, DECIDED_BY_META: f"{key} = {str(obey).lower()}"}

    def note_problem(self, source_name: str, keyword: str, problem: causes.Problem) -> None:
        """A query of this source gave no usable result: count its cause, keep the latest,
        and log it at WARNING (API sources call this too)."""
        stats = self.crawler.stats
        prefix = f"pingo/source/{source_name}/"
        stats.inc_value(prefix + "empty_queries")
        stats.inc_value(prefix + f"cause/{problem.cause}")
        stats.set_value(prefix + "last_error", str(problem))
        stats.set_value(prefix + f"empty/{keyword}", problem.cause)
        logger.warning("%s %r gave no usable result: %s", source_name, keyword, problem)

    def api_request(
        self, class_name: str, source: SourceProfile, keyword: str, cursor: int | None
    ) -> scrapy.Request:
        from crawler.api_middleware import openverse_credentials
        from crawler.api_sources import base_url, request_url

        authenticated = source.api == "openverse" and openverse_credentials() is not None
        if cursor is None:  # a query's first request: go on where the last crawl left off
            self.crawler.stats.inc_value(f"pingo/source/{source.name}/queries")
            cursor = self.api_budget.cursor(_query_key(source, keyword))
            if cursor is not None:
                self.crawler.stats.inc_value(f"pingo/source/{source.name}/resumed")
        return scrapy.Request(
            request_url(source, keyword, cursor, self.licenses, self.demo_url, authenticated),
            callback=self.parse_results,
            errback=self.results_failed,
            dont_filter=True,
            headers={"Accept": "application/json"},
            cb_kwargs={
                "class_name": class_name,
                "source_name": source.name,
                "keyword": keyword,
                "want": 0,
                "cursor": cursor,
            },
            meta={
                "pingo_api": source.name,
                "pingo_api_base": base_url(source, self.demo_url),
                "handle_httpstatus_all": True,
                "dont_retry": True,  # ApiMiddleware backs off and retries with Retry-After
                # robots.txt is for crawlers of pages, not for API clients under the API's
                # terms (Wikimedia's disallows /w/, where api.php itself lives).
                "dont_obey_robotstxt": True,
            },
        )

    @cached_property
    def api_budget(self):
        from crawler.rate_limit import budget_for

        return budget_for(self.crawler)

    def parse_results(
        self,
        response,
        class_name: str,
        source_name: str,
        keyword: str,
        want: int,
        cursor: int | None = None,
    ):
        stats = self.crawler.stats
        lacked = self.lacking(class_name)
        source = self.sources[source_name]
        if response.status >= 400:
            if source.kind == "api" and cursor is not None:  # that page may be gone: restart
                self.api_budget.remember(_query_key(source, keyword), None)
            stats.inc_value(f"pingo/source/{source_name}/page_errors")
            self.note_problem(
                source_name,
                keyword,
                causes.classify_status(response.status, response.url, _text(response)),
            )
            yield from self._continue(class_name)
            return
        if source.kind == "api":
            yield from self._parse_api(response, class_name, source, keyword, cursor)
            return
        found = list(extract(source, response))[: self.per_query_limit]
        stats.inc_value(f"pingo/source/{source_name}/results", len(found))
        if not found:
            self.note_problem(
                source_name,
                keyword,
                causes.classify_page(
                    response.url,
                    _text(response),
                    len(response.css(source.result_css)) if _is_html(response) else 0,
                    json_body=b"json" in (response.headers.get(b"Content-Type") or b""),
                ),
            )
        items = [
            {
                "image_url": url,
                "page_url": page or response.url,
                "source": source_name,
                "query": keyword,
                "keyword_class": class_name,
            }
            for url, page in dict(found).items()
        ]
        new = yield from self._offer(class_name, items)
        still = self.still_lacking(class_name, lacked, new)
        logger.info(
            "%s %r: %d results, %d new for %s (%d still lacking)",
            source_name,
            keyword,
            len(found),
            new,
            class_name,
            max(still, 0),
        )
        if still > 0 and len(found) >= want and want < self.per_query_limit:
            # The page may hold more than was scrolled into view: ask for more of the same.
            more = min(self.per_query_limit, want * 2 + still)
            yield self.results_request(class_name, source_name, keyword, more)
            return
        yield from self._continue(class_name)

    def _parse_api(
        self, response, class_name: str, source: SourceProfile, keyword: str, cursor: int | None
    ):
        from core.licenses import allowed
        from crawler.api_sources import ApiAnswerError, parse_page

        stats = self.crawler.stats
        lacked = self.lacking(class_name)
        try:
            page = parse_page(source, response.body, cursor)
        except ApiAnswerError as exc:
            stats.inc_value(f"pingo/source/{source.name}/page_errors")
            self.note_problem(
                source.name,
                keyword,
                causes.Problem(causes.OTHER, f"{exc} for {keyword!r} ({response.url})"),
            )
            yield from self._continue(class_name)
            return
        stats.inc_value(f"pingo/source/{source.name}/results", len(page.results))
        if not page.results and cursor is None:  # a query's first page: nothing at all
            self.note_problem(
                source.name, keyword, causes.classify_page(response.url, "", 0, json_body=True)
            )
        # where the next crawl starts this query (past the last page: from the first again)
        self.api_budget.remember(_query_key(source, keyword), page.next_cursor)
        kept = [r for r in page.results if allowed(r.license, self.licenses)]
        if len(kept) < len(page.results):
            stats.inc_value(
                f"pingo/source/{source.name}/license_filtered", len(page.results) - len(kept)
            )
        items = [
            {
                "image_url": r.image_url,
                "page_url": r.page_url or response.url,
                "source": source.name,
                "query": keyword,
                "keyword_class": class_name,
                **r.licence_fields(),
            }
            for r in {r.image_url: r for r in kept}.values()
        ]
        new = yield from self._offer(class_name, items)
        still = self.still_lacking(class_name, lacked, new)
        logger.info(
            "%s %r page %s: %d results, %d new for %s (%d still lacking)",
            source.name,
            keyword,
            cursor or 1 if source.api == "openverse" else cursor or 0,
            len(page.results),
            new,
            class_name,
            max(still, 0),
        )
        if still > 0 and page.next_cursor is not None:
            yield self.results_request(class_name, source.name, keyword, cursor=page.next_cursor)
            return
        yield from self._continue(class_name)

    def _offer(self, class_name: str, items: list[dict]):
        """Yield the requests of the items no earlier crawl fetched while the class lacks
        images (the rest wait as leftovers); returns how many were taken."""
        fresh = [item for item in items if item["image_url"] not in self.taken]
        urls = [item["image_url"] for item in fresh]
        seen = self._open_store().seen_urls(urls, self.url_retry) if fresh else set()
        self.crawler.stats.inc_value(f"pingo/{class_name}/already_seen", len(seen))
        new = 0
        for item in fresh:
            if item["image_url"] in seen:
                continue
            if not self.can_take(class_name):
                self.leftovers[class_name].append(item)
                continue
            new += 1
            yield self._take(item)
        return new

    def _take(self, item: dict) -> dict | scrapy.Request:  # shared crawls: the image's request
        self.taken.add(item["image_url"])
        self.budget[item["keyword_class"]] -= 1
        self.crawler.stats.inc_value(f"pingo/{item['keyword_class']}/found")
        return item

    def refund(self, class_name: str) -> None:
        """A download of this class was refused or a duplicate: look for one more."""
        self.budget[class_name] += 1

    def on_idle(self) -> None:
        """Nothing in flight: top up classes whose downloads failed, then let the crawl end."""
        from scrapy.exceptions import DontCloseSpider

        scheduled = False
        for name, lacking in self.budget.items():
            if lacking <= 0:
                continue
            if self.leftovers[name]:
                request = scrapy.Request(
                    "data:,",
                    callback=self.emit_leftovers,
                    cb_kwargs={"class_name": name},
                    dont_filter=True,
                )
            else:
                request = self.next_query(name)
            if request is not None:
                self.crawler.engine.crawl(request)
                scheduled = True
        if scheduled:
            raise DontCloseSpider

    def emit_leftovers(self, response, class_name: str):
        queue = self.leftovers[class_name]
        while queue and self.budget[class_name] > 0:
            item = queue.popleft()
            if item["image_url"] not in self.taken:
                yield self._take(item)

    def _continue(self, class_name: str):
        request = self.next_query(class_name)
        if request is not None:
            yield request

    def results_failed(self, failure):
        from crawler.api_middleware import ApiSourceStopped

        request = failure.request
        kw = request.cb_kwargs
        source_name = kw["source_name"]
        if isinstance(failure.value, ApiSourceStopped):  # quota spent, rate limited for long
            self.stopped_sources[source_name] = str(failure.value)
            self.crawler.stats.set_value(f"pingo/source/{source_name}/stopped", str(failure.value))
        else:
            self.crawler.stats.inc_value(f"pingo/source/{source_name}/page_errors")
            problem = causes.classify_failure(failure.value, request.url)
            self.note_problem(source_name, kw["keyword"], problem)
        yield from self._continue(kw["class_name"])


def _is_html(response) -> bool:
    return hasattr(response, "css") and b"json" not in (
        response.headers.get(b"Content-Type") or b""
    )


def _text(response) -> str:
    """A response's text (empty for a body that is not text)."""
    try:
        return response.text
    except AttributeError:  # scrapy's plain Response: binary
        return ""


def _query_key(source: SourceProfile, keyword: str) -> str:
    return f"{source.name}:{keyword}"
