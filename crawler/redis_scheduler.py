"""SharedScheduler: scrapy-redis's scheduler, adapted to Scrapy 2.19 and to pingo's rounds.

scrapy-redis 0.9.1 works with Scrapy 2.19 as far as it goes (its queue serialises requests
with ``Request.to_dict``, so ``SeleniumRequest`` round-trips with its render options), but
its ``PriorityQueue.pop`` (ZRANGE + ZREMRANGEBYRANK) forgets a request the moment it is
popped: a worker killed then loses every request it was downloading. This subclass keeps
scrapy-redis's queue (the same sorted set, encoding and RFPDupeFilter) and changes:

* ``next_request`` pops through :class:`SharedFrontier` (pop + remember as in flight, atomic),
  and takes a result page only while one of its browsers is free, so pages are spread over
  the workers instead of queueing behind one worker's browsers;
* ``enqueue_request`` admits image requests against the class budget (the rest are parked),
  and queues retries/redirects of a popped request in place of the original;
* ``open`` joins or starts the crawl round; a heartbeat keeps this worker alive, takes back
  the work of dead workers and wakes the engine every second (Scrapy's own heartbeat looks
  at the queue every 5 s only); ``close`` hands back unfinished requests.

Keys come from ``PINGO_REDIS_PREFIX`` (``<prefix>:requests``, ``<prefix>:dupefilter``).
Requests are stored as JSON (:mod:`crawler.queue_codec`), never pickle: a pickle planted in
the queue would run code on every worker. ``SCHEDULER_SERIALIZER`` is not used.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from scrapy_redis.scheduler import Scheduler

from crawler import queue_codec
from crawler.frontier import SharedFrontier
from crawler.settings import get

if TYPE_CHECKING:
    from twisted.internet.task import LoopingCall

logger = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 1.0


class SharedScheduler(Scheduler):
    def __init__(self, server, *, frontier: SharedFrontier, crawler, **kwargs):
        super().__init__(server, **kwargs)
        self.frontier = frontier
        self.crawler = crawler
        self._beat: LoopingCall | None = None
        self._last_alive = 0.0

    @classmethod
    def from_crawler(cls, crawler):
        frontier = SharedFrontier.from_crawler(crawler)
        if crawler.settings.get("SCHEDULER_SERIALIZER"):
            logger.warning("SCHEDULER_SERIALIZER is ignored: pingo's shared queue is JSON only")
        scheduler = cls(
            frontier.server,
            frontier=frontier,
            crawler=crawler,
            persist=True,  # the round outlives any one worker
            queue_key=frontier.queue_key,
            queue_cls="scrapy_redis.queue.PriorityQueue",
            dupefilter=_dupefilter(frontier, crawler.settings),
            dupefilter_key=frontier.dupefilter_key,
            idle_before_close=0,
            serializer=queue_codec,
        )
        scheduler.stats = crawler.stats
        scheduler.max_renders = get(crawler.settings, "SELENIUM_MAX_DRIVERS")
        return scheduler

    # ---- lifecycle -----------------------------------------------------------------------

    def open(self, spider):
        from twisted.internet import task

        super().open(spider)
        self.frontier.join(spider.round_plan(), spider.round_queries())
        self.stats.set_value("pingo/redis/started_round", int(self.frontier.started_round))
        self._beat = beat = task.LoopingCall(self._heartbeat)
        beat.start(HEARTBEAT_SECONDS, now=False)

    def close(self, reason):
        import redis

        if self._beat is not None and self._beat.running:
            self._beat.stop()
        try:
            requeued = self.frontier.leave()
        except redis.RedisError as exc:
            logger.error("could not hand this crawler's requests back to Redis: %s", exc)
            return
        if requeued:
            logger.info("handed %d unfinished requests back to the shared queue", requeued)
        self.stats.set_value("pingo/redis/handed_back", requeued)

    def _heartbeat(self) -> None:
        import redis

        try:
            self.frontier.heartbeat()
            _, requeued = self.frontier.reap()
            if requeued:
                self.stats.inc_value("pingo/redis/requeued_from_dead", requeued)
            # Look at the shared queue (and, when idle, whether to stop) every beat, not only
            # on Scrapy's 5 s heartbeat: other workers add requests at any time.
            self._wake_engine()
        except redis.RedisError as exc:  # Redis restarting: try again on the next beat
            logger.warning("Redis heartbeat failed: %s", exc)

    def _wake_engine(self) -> None:
        slot = getattr(self.crawler.engine, "_slot", None)
        if slot is not None and not self.crawler.engine.needs_backout():
            slot.nextcall.schedule()

    # ---- the queue -----------------------------------------------------------------------

    def enqueue_request(self, request):
        from crawler.selenium_request import SeleniumRequest

        follows = request.meta.get("pingo_inflight")  # a retry/redirect of a popped request
        class_name = request.meta.get("pingo_class")
        if not request.dont_filter and self.df.request_seen(request):
            self.df.log(request, self.spider)
            if follows:
                self.frontier.finish(follows, class_name or "")
            return False
        data = self.queue._encode_request(request)
        score = -request.priority
        if follows:
            self.frontier.follow_up(follows, data, score)
            if isinstance(request, SeleniumRequest):  # the page left this worker's browsers
                self.frontier.renders = max(self.frontier.renders - 1, 0)
        elif class_name:
            if not self.frontier.admit(class_name, data, score):
                self.stats.inc_value(f"pingo/{class_name}/parked")
        else:
            self.frontier.push(data, score)
        self.stats.inc_value("scheduler/enqueued/redis")
        return True

    def next_request(self):
        import redis

        from crawler.selenium_request import SeleniumRequest

        # Browsers all busy: take only requests with priority > 0 (images), not pages.
        try:
            got = self.frontier.pop("(0" if self.frontier.renders >= self.max_renders else "+inf")
        except redis.RedisError as exc:  # nothing to take; idle time runs (see the spider)
            self._redis_failed(exc)
            return None
        if got is None:
            return None
        inflight_id, data = got
        try:
            request = self.queue._decode_request(data)
        except Exception as exc:  # planted or foreign data, another version's, a method gone
            self.stats.inc_value("pingo/redis/undecodable")
            logger.error("dropping a request the shared queue cannot decode: %s", exc)
            self.frontier.finish(inflight_id)
            return None
        request.meta["pingo_inflight"] = inflight_id
        if isinstance(request, SeleniumRequest):
            self.frontier.renders += 1  # the spider counts it off when the page is done
        self.stats.inc_value("scheduler/dequeued/redis")
        return request

    def has_pending_requests(self):
        import redis

        try:
            return self.frontier.queue_length() > 0
        except redis.RedisError as exc:
            self._redis_failed(exc)
            return False

    def _redis_failed(self, exc) -> None:
        self.stats.inc_value("pingo/redis/errors")
        if self.stats.get_value("pingo/redis/errors") == 1:
            logger.error("the shared queue in Redis cannot be reached: %s", exc)


def _dupefilter(frontier: SharedFrontier, settings):
    from scrapy_redis.dupefilter import RFPDupeFilter

    return RFPDupeFilter(
        frontier.server, key=frontier.dupefilter_key, debug=settings.getbool("DUPEFILTER_DEBUG")
    )
