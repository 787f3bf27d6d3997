"""InboxImagesPipeline: Scrapy downloads each image; the original bytes go into the inbox.

A FilesPipeline subclass: Scrapy's downloader fetches (robots.txt, retries, DOWNLOAD_MAXSIZE,
AutoThrottle all apply), then the bytes are checked (an allowed format, decodable, not too
small, not too many pixels: :mod:`crawler.imagecheck`, in worker processes under a time
limit, ``PINGO_DECODE_TIMEOUT``) and stored unchanged through ``Store.add_image`` (storage
writes the file atomically; no re-encode). Every fetched URL is recorded with its outcome via
``Store.record_url`` so no URL is fetched twice, across crawls too. Exact byte duplicates are
counted, not errors. DB and file work runs on a few worker threads, not on the reactor.

Outcomes, in stats as pingo/<class>/<outcome> and pingo/refused/<reason>: stored, duplicate,
refused: http_<code>, timeout, too_large, too_small, not_image, corrupt, robots, network, empty,
private_address. A body that is not an allowed format, or does not decode within the time
limit, is ``not_image``: never a passing failure.
A passing failure (timeout, network, 408, 429, 5xx: ``passing_failure``) is fetched again by a
later crawl, after ``crawl.retry_failed_after`` hours, up to ``crawl.max_url_attempts`` tries.

Distributed crawls (crawl.redis_url): the image was already fetched by a request through the
shared queue (crawler.shared_spider), so the item arrives with a ``fetched`` entry and is
checked and stored without downloading again. Each store is charged against the class's
shared budget first (``over_budget`` when it is spent: not stored, URL not recorded, so a
later crawl may still take it), and the request is then marked finished in Redis.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from scrapy.exceptions import (
    DownloadCancelledError,
    DownloadTimeoutError,
    IgnoreRequest,
    NotConfigured,
)
from scrapy.pipelines.files import FilesPipeline
from scrapy.utils.defer import maybe_deferred_to_future

try:  # refusals are expected outcomes: Scrapy logs these without a traceback
    from scrapy.pipelines.media import _MediaRequestFiltered as _Quiet
except ImportError:  # pragma: no cover - other Scrapy versions
    # (the stub types the two classes apart; either is a refusal Scrapy logs quietly)
    from scrapy.pipelines.media import FileException as _Quiet  # type: ignore[assignment]

from core.licenses import UNKNOWN
from crawler.imagecheck import ImageChecker, inspect
from crawler.netguard import PrivateAddressRefused
from crawler.settings import default, get

if TYPE_CHECKING:
    from twisted.python.threadpool import ThreadPool

    from storage import Store

logger = logging.getLogger(__name__)


class ImageRefused(_Quiet):
    """A download that is not kept; ``reason`` is a safe folder-style name."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def check_image(
    body: bytes,
    content_type: str,
    min_side: int,
    max_pixels: int,
    checker: ImageChecker | None = None,
) -> tuple[str, int, int]:
    """Return (extension, width, height) of an image pingo keeps, else raise ImageRefused.

    With a ``checker`` the decode runs in its worker processes, under its time limit;
    without, in this thread (trusted input, benchmarks)."""
    verdict = (
        checker.check(body, content_type)
        if checker
        else inspect(body, content_type, min_side, max_pixels)
    )
    if verdict[0] != "ok":
        raise ImageRefused(verdict[1], verdict[2])
    return verdict[1], verdict[2], verdict[3]


def passing_failure(outcome: str) -> bool:
    """A refusal worth trying again in a later crawl: the server or the network may recover.

    A 404, a corrupt or non-image body, robots.txt or a size limit will not change.
    """
    if outcome in ("timeout", "network", "http_408", "http_429"):
        return True
    return outcome.startswith("http_5") and len(outcome) == 8


def failure_reason(exc: BaseException) -> str:
    """A refusal reason for a download that failed before a response arrived."""
    from scrapy.spidermiddlewares.httperror import HttpError

    if isinstance(exc, (ImageRefused, PrivateAddressRefused)):
        return exc.reason
    if isinstance(exc, HttpError):  # a distributed crawl's image request: status not 2xx
        return f"http_{exc.response.status}"
    if isinstance(exc, IgnoreRequest):
        return (
            "robots"
            if "robots" in str(exc).lower() or "Forbidden by robots" in str(exc)
            else "ignored"
        )
    if isinstance(exc, DownloadCancelledError):
        return "too_large"
    if isinstance(exc, DownloadTimeoutError) or "timeout" in type(exc).__name__.lower():
        return "timeout"
    return "network"


class InboxImagesPipeline(FilesPipeline):
    """Settings: PINGO_DATA_DIR, PINGO_DB_URL, PINGO_MIN_IMAGE_SIDE, PINGO_MAX_IMAGE_PIXELS,
    PINGO_INBOX_WRITERS (threads storing images), PINGO_DECODE_TIMEOUT (seconds one body may
    take to decode; 0 = decode in the writer threads, unbounded). Defaults: crawler.settings."""

    def __init__(
        self,
        store_uri,
        *,
        crawler,
        data_dir: str,
        db_url: str | None,
        min_side: int,
        max_pixels: int,
        writers: int = default("PINGO_INBOX_WRITERS"),
        frontier=None,
        decode_timeout: float = default("PINGO_DECODE_TIMEOUT"),
    ):
        super().__init__(store_uri, crawler=crawler)
        self.frontier = frontier  # the shared budget of a distributed crawl, else None
        self.writers = writers
        self.data_dir = data_dir
        self.db_url = db_url
        self.min_side = min_side
        self.max_pixels = max_pixels
        self.decode_timeout = decode_timeout
        self.checker: ImageChecker | None = None
        # pingo's Store (not FilesPipeline's ``self.store``, which the hooks here never use)
        self.inbox: Store | None = None
        self._db: ThreadPool | None = None

    @classmethod
    def from_crawler(cls, crawler):
        settings = crawler.settings
        data_dir = settings.get("PINGO_DATA_DIR")
        if not data_dir:
            raise NotConfigured("PINGO_DATA_DIR is not set: no inbox to store images in")
        frontier = None
        if settings.get("REDIS_URL"):
            from crawler.frontier import SharedFrontier

            frontier = SharedFrontier.from_crawler(crawler)
        return cls(
            data_dir,
            crawler=crawler,
            data_dir=data_dir,
            db_url=settings.get("PINGO_DB_URL"),
            min_side=get(settings, "PINGO_MIN_IMAGE_SIDE"),
            max_pixels=get(settings, "PINGO_MAX_IMAGE_PIXELS"),
            writers=get(settings, "PINGO_INBOX_WRITERS"),
            frontier=frontier,
            decode_timeout=get(settings, "PINGO_DECODE_TIMEOUT"),
        )

    # Scrapy >= 2.13 calls these without the spider; the base keeps an optional one for old callers
    def open_spider(self) -> None:  # type: ignore[override]
        from twisted.python.threadpool import ThreadPool

        from storage import Store

        super().open_spider()
        self.inbox = Store.open(self.data_dir, self.db_url, repair=False)
        # Writes run off the reactor. Several threads, because most of a write is fsync
        # (which releases the GIL); SQLite itself queues the short transactions.
        self._db = db = ThreadPool(minthreads=1, maxthreads=self.writers, name="pingo-inbox-writer")
        db.start()
        if self.decode_timeout > 0:
            self.checker = ImageChecker(self.min_side, self.max_pixels, self.decode_timeout)

    def close_spider(self) -> None:
        if self._db is not None:
            self._db.stop()
        if self.checker is not None:
            self.checker.close()
        if self.inbox is not None:
            self.inbox.close()

    async def _in_db_thread(self, fn, *args, **kwargs):
        from twisted.internet import reactor
        from twisted.internet.threads import deferToThreadPool

        assert self._db is not None  # started in open_spider, before any item
        return await maybe_deferred_to_future(
            deferToThreadPool(reactor, self._db, fn, *args, **kwargs)
        )

    # ---- FilesPipeline hooks -----------------------------------------------------------------

    def get_media_requests(self, item, info):
        from scrapy import Request
        from scrapy.http.request import NO_CALLBACK

        return [
            Request(
                item["image_url"],
                callback=NO_CALLBACK,
                priority=10,
                meta={"pingo_class": item["keyword_class"]},
            )
        ]

    def media_to_download(self, request, info, *, item=None):
        return None  # always download: the spider already skipped URLs fetched before

    async def media_downloaded(self, response, request, info, *, item=None):
        if response.status != 200:
            raise ImageRefused(f"http_{response.status}")
        if not response.body:
            raise ImageRefused("empty")
        ctype = response.headers.get(b"Content-Type", b"").decode("latin-1")
        status, image_id = await self._in_db_thread(self._keep, response.body, ctype, item)
        self.inc_stats(status)
        self._mark_arrival()
        return {
            "url": request.url,
            "path": "",
            "checksum": None,
            "status": status,
            "image_id": image_id,
        }

    def media_failed(self, failure, request, info):
        if isinstance(failure.value, ImageRefused):
            raise failure.value
        reason = failure_reason(failure.value)
        raise ImageRefused(reason, str(failure.value)[:200])

    def _mark_arrival(self) -> None:
        now = time.time()  # the window in which images arrived (benchmarks use it)
        self.crawler.stats.min_value("pingo/first_image_at", now)
        self.crawler.stats.max_value("pingo/last_image_at", now)

    def _keep(
        self, body: bytes, content_type: str, item: dict, inflight: str | None = None
    ) -> tuple[str, int | None]:
        from storage.errors import DuplicateImageError

        assert self.inbox is not None  # opened in open_spider, before any item
        ext, width, height = check_image(
            body, content_type, self.min_side, self.max_pixels, self.checker
        )
        cls = item["keyword_class"]
        # Several crawlers share the budget: take one image of it before storing, atomically.
        if self.frontier is not None and not self.frontier.charge(cls, inflight):
            return "over_budget", None
        try:
            image_id = self.inbox.add_image(
                body,
                keyword_class=cls,
                source=item["source"],
                ext=ext,
                source_url=item["image_url"],
                page_url=item.get("page_url"),
                query=item.get("query"),
                width=width,
                height=height,
                # what an API source said of the licence; rendered pages say nothing
                license=item.get("license") or UNKNOWN,
                license_url=item.get("license_url"),
                creator=item.get("creator"),
                attribution=item.get("attribution"),
                title=item.get("title"),
            )
        except DuplicateImageError as dup:
            if self.frontier is not None:
                self.frontier.refund(cls, inflight)
            return "duplicate", dup.existing_id
        except BaseException:
            if self.frontier is not None:
                self.frontier.refund(cls, inflight)
            raise
        return "stored", image_id

    async def _keep_fetched(self, item: dict, fetched: dict) -> None:
        """A distributed crawl's image, fetched through the shared queue: check and store."""
        item["outcome"], item["image_id"] = "refused", None
        if "error" in fetched:
            item["reason"] = failure_reason(fetched["error"])
        elif fetched["status"] != 200:
            item["reason"] = f"http_{fetched['status']}"
        elif not fetched["body"]:
            item["reason"] = "empty"
        else:
            try:
                item["outcome"], item["image_id"] = await self._in_db_thread(
                    self._keep,
                    fetched["body"],
                    fetched["content_type"],
                    item,
                    fetched.get("inflight"),
                )
            except ImageRefused as exc:
                item["reason"] = exc.reason
            else:
                self._mark_arrival()

    def item_completed(self, results, item, info):
        ((ok, value),) = results
        if ok:
            item["outcome"], item["image_id"] = value["status"], value["image_id"]
        else:
            exc = value.value
            item["outcome"] = "refused"
            item["reason"] = exc.reason if isinstance(exc, ImageRefused) else failure_reason(exc)
            item["image_id"] = None
            logger.debug("refused %s (%s): %s", item["image_url"], item["keyword_class"], exc)
        return item

    async def process_item(self, item) -> Any:  # type: ignore[override]  # as open_spider
        fetched = item.pop("fetched", None)
        if fetched is None:
            item = await super().process_item(item)
        else:
            await self._keep_fetched(item, fetched)
        stats = self.crawler.stats
        cls = item["keyword_class"]
        if self.checker is not None and (self.checker.timeouts or self.checker.crashes):
            stats.set_value("pingo/image_check/timeouts", self.checker.timeouts)
            stats.set_value("pingo/image_check/crashes", self.checker.crashes)
        if item["outcome"] == "refused":
            stats.inc_value(f"pingo/{cls}/refused")
            stats.inc_value(f"pingo/{cls}/refused/{item['reason']}")
            stats.inc_value(f"pingo/refused/{item['reason']}")
        else:
            stats.inc_value(f"pingo/{cls}/{item['outcome']}")
            if item["outcome"] == "stored":  # per source too: the crawl summary's images
                stats.inc_value(f"pingo/source/{item['source']}/stored")
        refund = getattr(self.crawler.spider, "refund", None)
        if item["outcome"] != "stored" and refund:
            refund(cls)  # the class still lacks this image: the spider finds another
        outcome = item.get("reason") or item["outcome"]
        if outcome != "over_budget":  # not kept for lack of budget: a later crawl may take it
            assert self.inbox is not None  # opened in open_spider
            await self._in_db_thread(
                self.inbox.record_url, item["image_url"], outcome, item["image_id"]
            )
        if fetched is not None:
            self.frontier.finish(fetched.get("inflight"), cls)
            top_up = getattr(self.crawler.spider, "top_up", None)
            if item["outcome"] != "stored" and top_up:
                top_up(cls)  # the class needs one more candidate now
        return item
