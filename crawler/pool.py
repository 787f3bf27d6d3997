"""A pool of headless browsers that render pages on worker threads, never on the reactor.

``render(job)`` returns a Deferred. Each of at most ``size`` threads takes an idle browser
(or starts one), loads the page, waits, runs the script, scrolls until enough results are
there, and hands back the HTML. A browser is recycled after ``pages_per_browser`` pages. A
browser that crashes, or hangs past its deadline (a watchdog on the reactor kills its
processes, which unblocks the worker), is replaced and the page retried up to ``retries``
times; then the render fails with RenderFailed. Counters go to Scrapy stats under selenium/.
"""

from __future__ import annotations

import atexit
import functools
import logging
import queue
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from crawler.browser import Browser, BrowserSpec
from crawler.errors import BrowserError, CrawlError
from crawler.selenium_request import Scroll
from crawler.settings import default

if TYPE_CHECKING:
    from twisted.python.threadpool import ThreadPool

logger = logging.getLogger(__name__)

# The page's own HTTP status (Chromium 109+; null where unsupported) and, on Chromium's own
# error page (a page that could not load), its net error code.
STATUS_JS = (
    "const e = performance.getEntriesByType('navigation')[0];"
    "const err = document.getElementById('main-frame-error') &&"
    " document.querySelector('.error-code');"
    "return [e && e.responseStatus ? e.responseStatus : null,"
    " err ? err.textContent.trim() : null];"
)
# Results counted while scrolling: those matching a selector, and with a usable attribute.
COUNT_JS = (
    "const els = document.querySelectorAll(arguments[0]); const a = arguments[1];"
    "if (!a) return els.length; let n = 0;"
    "for (const e of els) { const v = e.getAttribute(a); if (v && !v.startsWith('data:')) n++; }"
    "return n;"
)
STEP_JS = (
    "window.scrollBy(0, arguments[0]);"
    "return window.innerHeight + window.scrollY >= document.body.scrollHeight - 2;"
)
# Click the first shown element matching a selector ("see more"); false when none is shown.
CLICK_JS = (
    "const b = [...document.querySelectorAll(arguments[0])]"
    ".find(e => e.getClientRects().length && getComputedStyle(e).visibility !== 'hidden');"
    "if (!b) return false; b.scrollIntoView({block: 'center'}); b.click(); return true;"
)
STEP_PAUSE_SECONDS = 0.25  # most seconds a scroll step above the bottom waits for new tiles


WARM_UP_PAGE = "data:text/html,<title>warm-up</title><p>pingo</p><script>1</script>"
# Polling for the results every 0.05 s instead of Selenium's default 0.5 s saves ~0.4 s a page.
WAIT_POLL_SECONDS = 0.05


# Pools of this process, so a stop signal can reach them (see abandon_all).
_POOLS: weakref.WeakSet[BrowserPool] = weakref.WeakSet()


def abandon_all() -> None:
    """A stop was asked for: every pool's renders and browser starts in progress give up.

    Safe in a signal handler (only sets flags); the browsers are quit by ``close()``."""
    for pool in list(_POOLS):
        pool.abandon()


def kill_all_browsers() -> None:
    """SIGKILL every browser of this process now (a forced exit; safe in a signal handler)."""
    for pool in list(_POOLS):
        pool.kill_all(blocking=False)


def end_all_browsers() -> None:
    """At the crawl process's exit: kill the browsers no ``close()`` quit, remove their
    folders."""
    import shutil

    for pool in list(_POOLS):
        with pool._lock:
            browsers, pool._all = list(pool._all), set()
        for browser in browsers:
            browser.kill()
            if browser.profile_dir:
                shutil.rmtree(browser.profile_dir, ignore_errors=True)


class RenderFailed(CrawlError):
    """A page could not be rendered, even by fresh browsers (``last_error``: the last try's)."""

    def __init__(self, message: str, last_error: BaseException | None = None):
        super().__init__(message)
        self.last_error = last_error


class PageUnreachable(CrawlError):
    """The browser could not load the page: a network error (``net_error``, Chromium's
    ERR_... code), not the browser's fault, so it is neither retried nor replaced."""

    def __init__(self, url: str, net_error: str):
        super().__init__(f"{url}: {net_error}")
        self.url = url
        self.net_error = net_error


@dataclass
class RenderJob:
    url: str
    wait_time: float | None = None
    wait_until: Any = None  # expected condition callable, or a CSS selector
    script: str | None = None
    screenshot: bool = False
    scroll: Scroll | None = None


@dataclass
class Rendered:
    url: str
    body: bytes
    status: int
    scrolls: int = 0
    scroll_count: int | None = None
    clicks: int = 0  # "see more" buttons clicked
    screenshot: bytes | None = None
    seconds: float = 0.0
    attempts: int = 1


def _net_error(exc: BaseException) -> str | None:
    """Chromium's net error code in a WebDriver error (``net::ERR_NAME_NOT_RESOLVED``)."""
    import re

    match = re.search(r"net::(ERR_[A-Z_]+)", str(exc))
    return match.group(1) if match else None


def _no_stat(key: str, n: int = 1) -> None:
    """BrowserPool's ``stat`` when none is given: counts nothing."""


@dataclass
class _Lease:
    browser: Browser
    deadline: float
    killed: bool = field(default=False)


class BrowserPool:
    def __init__(
        self,
        spec: BrowserSpec,
        size: int = default("SELENIUM_MAX_DRIVERS"),
        pages_per_browser: int = default("SELENIUM_PAGES_PER_BROWSER"),
        retries: int = default("SELENIUM_RETRY_TIMES"),
        deadline: float | None = None,
        stat: Callable[[str, int], None] | None = None,
    ):
        self.spec = spec
        self.size = size
        self.pages_per_browser = pages_per_browser
        self.retries = retries
        # Past this, a render is presumed hung: page load + waits + scrolling, with slack.
        self.deadline = deadline or spec.page_load_timeout * 3 + 30
        self._stat = stat or _no_stat
        self._idle: queue.SimpleQueue[Browser] = queue.SimpleQueue()
        self._all: set[Browser] = set()
        self._leases: dict[int, _Lease] = {}  # thread id -> browser in use
        self._lock = threading.Lock()
        self._closed = False
        self._threadpool: ThreadPool | None = None  # made by start()
        _POOLS.add(self)

    # ---- Twisted side ------------------------------------------------------------------------

    def start(self, prestart: bool = True) -> None:
        from twisted.internet import reactor, task
        from twisted.python.threadpool import ThreadPool

        self._threadpool = pool = ThreadPool(
            minthreads=0, maxthreads=self.size, name="pingo-browser"
        )
        # Daemon workers: a crawl stopped before close() ran (Ctrl-C while it starts) must not
        # hang at exit waiting for them; atexit and PR_SET_PDEATHSIG end their browsers.
        # (the stub wants the Thread class; ThreadPool only calls it, as it calls this partial)
        daemon_thread = functools.partial(threading.Thread, daemon=True)
        pool.threadFactory = daemon_thread  # type: ignore[assignment]
        pool.start()
        # Even if the crawl is stopped uncleanly, no browser outlives this process.
        atexit.register(self.kill_all)
        if prestart:  # browsers start while the crawl sets up, not during the first renders
            for _ in range(self.size):
                pool.callInThread(self._prestart)
        self._watchdog = task.LoopingCall(self.kill_hung)
        self._watchdog.clock = reactor
        self._watchdog.start(1.0, now=False)

    def render(self, job: RenderJob):
        """A Deferred firing with Rendered (or failing with RenderFailed)."""
        from twisted.internet import reactor
        from twisted.internet.threads import deferToThreadPool

        assert self._threadpool is not None  # start() comes first
        return deferToThreadPool(reactor, self._threadpool, self.render_blocking, job)

    def stop_watchdog(self) -> None:
        """Stop the hung-render watchdog (on the reactor thread: its timer belongs there)."""
        if getattr(self, "_watchdog", None) and self._watchdog.running:
            self._watchdog.stop()

    def close(self) -> None:
        """Stop the threads (waiting for renders in flight) and quit every browser.

        In a crawl the reactor stops the watchdog first; elsewhere no reactor is running."""
        self._closed = True
        self.stop_watchdog()
        # Browsers first: a browser dies with the thread that started it (PR_SET_PDEATHSIG),
        # so quitting after the threads end would find them killed, not quit.
        self.quit_all()
        if self._threadpool is not None:
            self._threadpool.stop()
        self.quit_all()  # any a render in flight handed back meanwhile

    def abandon(self) -> None:
        """Stop starting browsers and retrying renders (a stop was asked for); renders in
        flight end with their page. Only sets a flag: callable from a signal handler."""
        self._closed = True

    def quit_all(self) -> None:
        with self._lock:
            browsers, self._all = list(self._all), set()
        for browser in browsers:
            browser.quit()
            self._stat("selenium/browser_quit", 1)

    def kill_all(self, blocking: bool = True) -> None:
        locked = self._lock.acquire(blocking)  # not in a signal handler: it may hold the lock
        browsers: list[Browser] = []
        try:
            for _ in range(5):
                try:
                    browsers = list(self._all)
                    break
                except RuntimeError:  # changed while copied (unlocked): try again
                    continue
        finally:
            if locked:
                self._lock.release()
        for browser in browsers:
            browser.kill()

    def kill_hung(self) -> None:
        now = time.monotonic()
        with self._lock:
            hung = [
                lease
                for lease in self._leases.values()
                if now > lease.deadline and not lease.killed
            ]
            for lease in hung:
                lease.killed = True
        for lease in hung:
            logger.warning("a browser hung for over %.0fs; killing it", self.deadline)
            self._stat("selenium/browser_hung", 1)
            lease.browser.kill()

    # ---- worker side (any thread) ------------------------------------------------------------

    def render_blocking(self, job: RenderJob) -> Rendered:
        """Render on the calling thread (a pool worker, or the reactor in the baseline)."""
        from selenium.common.exceptions import TimeoutException, WebDriverException
        from urllib3.exceptions import HTTPError as Urllib3Error

        last: Exception | None = None
        for attempt in range(1, self.retries + 2):
            if self._closed:
                raise RenderFailed(f"{job.url}: the crawl is closing")
            try:
                browser = self._acquire()
            except BrowserError as exc:
                self._stat("selenium/browser_start_failed", 1)
                last = exc
                continue
            lease = _Lease(browser, time.monotonic() + self.deadline)
            with self._lock:
                self._leases[threading.get_ident()] = lease
            start = time.monotonic()
            try:
                result = self._render_once(browser.driver, job)
            except TimeoutException as exc:
                self._stat("selenium/page_timeout", 1)
                last = exc
                self._discard(browser)  # a page that will not load may have wedged it
            except PageUnreachable:
                self._stat("selenium/page_unreachable", 1)
                self._release(browser)  # the browser is fine; the page's host is not
                raise
            except (WebDriverException, Urllib3Error, OSError) as exc:
                net_error = _net_error(exc)
                if net_error:  # e.g. net::ERR_CONNECTION_REFUSED: the host, not the browser
                    self._stat("selenium/page_unreachable", 1)
                    self._release(browser)
                    raise PageUnreachable(job.url, net_error) from None
                self._stat("selenium/browser_crashed", 1)
                logger.warning(
                    "browser failed rendering %s (%s); replacing it",
                    job.url,
                    str(exc).strip().splitlines()[0][:200]
                    if str(exc).strip()
                    else type(exc).__name__,
                )
                last = exc
                self._discard(browser)
            else:
                result.seconds = time.monotonic() - start
                result.attempts = attempt
                browser.pages += 1
                self._release(browser)
                self._stat("selenium/page_count", 1)
                return result
            finally:
                with self._lock:
                    self._leases.pop(threading.get_ident(), None)
            if attempt <= self.retries:
                self._stat("selenium/retry_count", 1)
        self._stat("selenium/render_failed", 1)
        raise RenderFailed(
            f"{job.url}: not rendered after {self.retries + 1} attempts: "
            f"{type(last).__name__}: {str(last).strip()[:200]}",
            last,
        )

    def _prestart(self) -> None:
        from selenium.common.exceptions import WebDriverException

        if self._closed:
            return
        try:
            browser = self._acquire(reuse=False)
            try:
                # A fresh browser's first page costs ~1 s more than later ones (renderer and
                # script engine start): pay that now, before the crawl's first result page.
                browser.driver.get(WARM_UP_PAGE)
            except WebDriverException as exc:
                logger.debug("browser warm-up failed: %s", exc)
            if self._closed:  # the crawl was stopped while this browser started
                self._discard(browser)
            else:
                self._idle.put(browser)
        except BrowserError as exc:
            self._stat("selenium/browser_start_failed", 1)
            logger.warning("%s", exc)

    def _acquire(self, reuse: bool = True) -> Browser:
        if reuse:
            try:
                return self._idle.get_nowait()
            except queue.Empty:
                pass
        browser = Browser.start(self.spec)
        with self._lock:
            self._all.add(browser)
        self._stat("selenium/browser_started", 1)
        return browser

    def _release(self, browser: Browser) -> None:
        if browser.pages >= self.pages_per_browser or self._closed:
            self._stat("selenium/browser_recycled", 1)
            self._discard(browser)
        else:
            self._idle.put(browser)

    def _discard(self, browser: Browser) -> None:
        with self._lock:
            self._all.discard(browser)
        browser.quit()

    def _render_once(self, driver, job: RenderJob) -> Rendered:
        from selenium.common.exceptions import TimeoutException
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support import expected_conditions as EC
        from selenium.webdriver.support.ui import WebDriverWait

        driver.get(job.url)
        status, net_error = driver.execute_script(STATUS_JS) or (None, None)
        if net_error:  # Chromium's error page: nothing to wait for or read
            raise PageUnreachable(job.url, net_error)
        status = status or 200
        if job.wait_until is not None and status < 400:
            condition = job.wait_until
            if isinstance(condition, str):
                condition = EC.presence_of_element_located((By.CSS_SELECTOR, condition))
            try:
                WebDriverWait(driver, job.wait_time or 10, poll_frequency=WAIT_POLL_SECONDS).until(
                    condition
                )
            except TimeoutException:
                self._stat("selenium/wait_timeout", 1)  # e.g. no results: read what is there
        if job.script:
            driver.execute_script(job.script)
        scrolls, count, clicks = 0, None, 0
        if job.scroll is not None and status < 400:
            scrolls, count, clicks = self._scroll(driver, job.scroll)
        shot = driver.get_screenshot_as_png() if job.screenshot else None
        return Rendered(
            driver.current_url,
            driver.page_source.encode("utf-8"),
            int(status),
            scrolls,
            count,
            clicks,
            shot,
        )

    def _scroll(self, driver, spec: Scroll) -> tuple[int, int, int]:
        """Scroll (to the bottom, or ``spec.step`` pixels at a time) until ``spec.want``
        results exist; at the bottom, when a scroll adds none, click ``spec.more_css`` if it
        is shown, else stop. Returns (scrolls, results counted, clicks)."""

        def counted() -> int:
            return int(driver.execute_script(COUNT_JS, spec.css, spec.attr))

        def more_within(seconds: float, count: int) -> int:
            deadline = time.monotonic() + seconds
            new = count
            while time.monotonic() < deadline:
                time.sleep(0.05)
                new = counted()
                if new > count:
                    break
            return new

        count = counted()
        scrolls = clicks = 0
        while count < spec.want and scrolls < spec.max_scrolls:
            if spec.step:
                at_bottom = bool(driver.execute_script(STEP_JS, spec.step))
            else:
                driver.execute_script("window.scrollTo(0, document.body.scrollHeight);")
                at_bottom = True
            scrolls += 1
            self._stat("selenium/scrolls", 1)
            pause = spec.pause if at_bottom else min(spec.pause, STEP_PAUSE_SECONDS)
            new = more_within(pause, count)
            if new > count or not at_bottom:
                count = max(new, count)
                continue
            if spec.more_css and driver.execute_script(CLICK_JS, spec.more_css):
                clicks += 1
                self._stat("selenium/more_clicks", 1)
                new = more_within(spec.pause, count)
                if new > count:
                    count = new
                    continue
            break  # at the bottom, nothing added and nothing to click: the end of the results
        return scrolls, count, clicks
