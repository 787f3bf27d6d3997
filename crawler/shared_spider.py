"""SharedImageSearchSpider: the image search spider as one of several workers of a round.

Same pages, same extraction and the same pipeline as ImageSearchSpider, with the decisions
that were per process moved to the shared frontier (crawler.frontier):

* how much a class still needs is ``left - open`` in Redis, not a local counter;
* the queries to render come from the round's shared list, so each is rendered once;
* every fresh result becomes an image *request* through the shared queue (instead of a
  pipeline download inside this process), so whichever worker has a free slot fetches it,
  and the shared dupefilter keeps a URL to one fetch; the scheduler admits as many as the
  class needs and parks the rest as leftovers for when downloads are refused;
* when idle it tops up classes from the leftovers or the next query, and it closes once the
  round is complete or nothing has happened anywhere for ``idle_timeout`` seconds.
"""

from __future__ import annotations

import logging
import time

import scrapy

from crawler.frontier import SharedFrontier
from crawler.spider import ImageSearchSpider

logger = logging.getLogger(__name__)

IMAGE_PRIORITY = 10  # images before more result pages: finish what was found first


class SharedImageSearchSpider(ImageSearchSpider):
    frontier: SharedFrontier

    @classmethod
    def from_crawler(cls, crawler, *args, **kwargs):
        spider = super().from_crawler(crawler, *args, **kwargs)
        spider.frontier = SharedFrontier.from_crawler(crawler)
        spider._last_busy = time.monotonic()
        return spider

    # what a new round starts from (the scheduler calls these when it joins)
    def round_plan(self):
        return list(self.plan.values())

    def round_queries(self) -> dict[str, list[tuple[str, str]]]:
        return {name: list(queue) for name, queue in self.queries.items()}

    async def start(self):
        for name in self.frontier.classes():
            request = self.next_query(name)
            if request is not None:
                yield request

    # ---- shared budget -------------------------------------------------------------------

    def lacking(self, class_name: str) -> int:
        return self.frontier.need(class_name)

    def can_take(self, class_name: str) -> bool:
        return True  # the scheduler admits or parks each request against the shared budget

    def still_lacking(self, class_name: str, lacked: int, taken: int) -> int:
        # The requests just yielded may not have reached the shared queue yet.
        return min(self.frontier.need(class_name), lacked - taken)

    def pop_query(self, class_name: str) -> tuple[str, str] | None:
        query = self.frontier.pop_query(class_name)
        if query is not None and query[0] not in self.sources:
            logger.error(
                "the round asks for source %r, which this worker's config does not "
                "define; skipping that query",
                query[0],
            )
            return None
        return query

    def refund(self, class_name: str) -> None:
        pass  # a refused download ends its request, which raises the class's need by one

    def top_up(self, class_name: str) -> None:
        """A request of this class ended without an image: queue a parked candidate now
        (the engine asks the scheduler for more as soon as this download slot is free)."""
        if self.frontier.admit_leftovers(class_name, -IMAGE_PRIORITY):
            self.crawler.stats.inc_value(f"pingo/{class_name}/topped_up")

    def _take(self, item: dict) -> scrapy.Request:
        cls = item["keyword_class"]
        self.crawler.stats.inc_value(f"pingo/{cls}/found")
        return scrapy.Request(
            item["image_url"],
            callback=self.image_fetched,
            errback=self.image_failed,
            priority=IMAGE_PRIORITY,
            # No handle_httpstatus_all: that would stop redirects being
            # followed; a 4xx/5xx comes to image_failed as an HttpError.
            meta={"pingo_class": cls, "pingo_item": item},
        )

    # ---- callbacks -----------------------------------------------------------------------

    def parse_results(self, response, *args, **kwargs):
        try:
            yield from super().parse_results(response, *args, **kwargs)
        finally:  # the page's results are queued (or the page failed): it is done
            self._page_done(response.meta.get("pingo_inflight"))

    def results_failed(self, failure):
        try:
            yield from super().results_failed(failure)
        finally:
            self._page_done(failure.request.meta.get("pingo_inflight"))

    def _page_done(self, inflight_id: str | None) -> None:
        self.frontier.renders = max(self.frontier.renders - 1, 0)
        self.frontier.finish(inflight_id)

    def image_fetched(self, response):
        item = dict(response.meta["pingo_item"])
        item["fetched"] = {
            "status": response.status,
            "body": response.body,
            "content_type": response.headers.get(b"Content-Type", b"").decode("latin-1"),
            "inflight": response.meta.get("pingo_inflight"),
        }
        yield item

    def image_failed(self, failure):
        request = failure.request
        item = dict(request.meta["pingo_item"])
        item["fetched"] = {"error": failure.value, "inflight": request.meta.get("pingo_inflight")}
        yield item

    # ---- idle: top up, or leave --------------------------------------------------------------

    def on_idle(self) -> None:
        import redis
        from scrapy.exceptions import DontCloseSpider

        try:
            self._top_up_or_leave()
        except redis.RedisError as exc:  # Redis gone: wait idle_timeout for it, then stop
            last = max(self._last_busy, self.frontier.last_pop)
            if time.monotonic() - last < self.frontier.idle_timeout:
                raise DontCloseSpider from None
            logger.error(
                "the shared queue in Redis cannot be reached (%s); this crawler stops", exc
            )

    def _top_up_or_leave(self) -> None:
        from scrapy.exceptions import DontCloseSpider

        frontier = self.frontier
        if frontier.round_complete():
            logger.info("every class of the round has what it lacked; this crawler stops")
            return
        scheduled = False
        for name in frontier.classes():
            if frontier.need(name) <= 0:
                continue
            if frontier.admit_leftovers(name, -IMAGE_PRIORITY):
                scheduled = True
                continue
            request = self.next_query(name)
            if request is not None:
                self.crawler.engine.crawl(request)
                scheduled = True
        now = time.monotonic()
        if scheduled or frontier.queue_length() or frontier.others_busy():
            self._last_busy = now
            raise DontCloseSpider
        if now - max(self._last_busy, frontier.last_pop) < frontier.idle_timeout:
            raise DontCloseSpider
        logger.info(
            "the shared queue has been empty for %.0fs; this crawler stops", frontier.idle_timeout
        )
