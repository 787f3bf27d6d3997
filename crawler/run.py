"""Run one crawl: plan from storage, crawl in a child process, return a CrawlSummary.

Twisted's reactor cannot be restarted inside one process, so every crawl runs Scrapy in a
fresh child Python (``python -m crawler.run``); ``crawl()`` can then be called any number of
times from the CLI, ``pingo demo`` or the scheduler.

Stopping (see docs/crawler.md): SIGINT or SIGTERM to ``pingo crawl`` (the process group or the
CLI alone) is passed on to the child, which stops Scrapy (renders and downloads in flight may
be dropped: the URL memory and storage's add journal make that safe) and quits its browsers;
the CLI waits for it (at most STOP_WAIT_SECONDS, then kills it) before it exits and releases
the job lock, and the run is recorded as interrupted. If the parent dies without a word
(SIGKILL, OOM) the kernel kills the child at once (PR_SET_PDEATHSIG), and its browsers with it,
so nothing is stored after the lock is gone.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

_EARLY_STOPS: list[int] = []
if __name__ == "__main__":  # a stop while this crawl process still imports Scrapy: kept
    for _signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(_signum, lambda signum, _frame: _EARLY_STOPS.append(signum))

from core.sources import resolve_sources  # noqa: E402  (after the early signal handlers)
from crawler.backlog import class_needs  # noqa: E402
from crawler.errors import (  # noqa: E402
    CrawlError,
    CrawlInterrupted,
    SourceRefusedError,
    UnknownCrawlClassError,
)
from crawler.spider import ClassPlan  # noqa: E402
from crawler.summary import CrawlSummary, alarm_line  # noqa: E402

if TYPE_CHECKING:
    from scrapy.crawler import CrawlerProcess

    from core.config import Config
    from core.sources import SourceProfile
    from storage import Store

logger = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parents[1]
STOP_WAIT_SECONDS = 30.0  # a stopped crawl's child gets this long to quit before SIGKILL
DUPLICATE_SIGNAL_SECONDS = 3.0  # a stop signal this soon after the first is the same stop
PARENT_ENV = "PINGO_CRAWL_PARENT"
INTERRUPTED_STAT = "pingo/interrupted"


def plan_crawl(
    config: Config, store: Store, classes: list[str] | None = None, limit: int | None = None
) -> tuple[list[ClassPlan], dict[str, str]]:
    """Classes that lack images and how many each lacks, capped by ``limit``; the others with
    why they are skipped. A class lacks target - accepted - inbox - min(review,
    crawl.max_review_backlog) (crawler.backlog)."""
    wanted = list(config.classes) if not classes else list(classes)
    unknown = [c for c in wanted if c not in config.classes]
    if unknown:
        raise UnknownCrawlClassError(
            f"unknown class {unknown[0]!r}; the config declares "
            + (", ".join(config.classes) or "no classes")
        )
    plan, skipped = [], {}
    for name, need in class_needs(config, store, wanted).items():
        if need.skip_reason is not None:
            skipped[name] = need.skip_reason
            continue
        lacking = need.lacking if limit is None else min(need.lacking, limit)
        plan.append(ClassPlan(name, lacking, list(config.classes[name].keywords)))
    return plan, skipped


def crawl(
    config: Config,
    store: Store | None = None,
    classes: list[str] | None = None,
    sources: list[str] | None = None,
    limit: int | None = None,
    *,
    settings: dict[str, Any] | None = None,
    demo_url: str | None = None,
) -> CrawlSummary:
    """Crawl the classes below target (or ``classes``) on ``sources`` (default: config's).

    ``limit`` caps the images taken per class; ``settings`` overrides Scrapy settings;
    ``demo_url`` overrides crawl.demo_url (e.g. a demo site started on port 0).
    Raises UnknownCrawlClassError / UnknownSourceError / CrawlError.
    """
    from storage import Store

    own_store = store is None
    if store is None:
        store = Store.from_config(config)
    try:
        profiles = resolve_sources(list(sources or config.crawl.sources), config.crawl.profiles)
        profiles, refused = _refuse_anonymous(config, profiles)
        plan, skipped = plan_crawl(config, store, classes, limit)
        data_dir = str(store.data_dir)
        db_url = store.engine.url.render_as_string(hide_password=False)
    finally:
        if own_store:
            store.close()
    lacking = {p.name: p.lacking for p in plan}
    names = [p.name for p in profiles]
    if not plan:
        logger.info("every class has what it needs; nothing to crawl")
        return CrawlSummary.from_stats({}, names, refused, skipped, demo_sources(profiles))
    from crawler.settings import build_settings

    scrapy_settings = build_settings(config, data_dir, db_url, settings)
    if all(p.kind == "api" for p in profiles):  # JSON APIs only: no browser to start
        scrapy_settings["SELENIUM_ENABLED"] = False
        scrapy_settings["DOWNLOADER_MIDDLEWARES"] = {
            k: v
            for k, v in scrapy_settings["DOWNLOADER_MIDDLEWARES"].items()
            if k != "crawler.middleware.SeleniumMiddleware"
        }
    if demo_url:  # a demo site started elsewhere (e.g. on port 0) is as local as the configured
        scrapy_settings["PINGO_TRUSTED_ORIGINS"] = [
            *scrapy_settings["PINGO_TRUSTED_ORIGINS"],
            demo_url,
        ]
    _check_browser(scrapy_settings)
    if not scrapy_settings.get("SELENIUM_COMMAND_EXECUTOR"):
        from crawler.leftovers import remove_leftovers

        remove_leftovers()  # browser folders (and processes) of crawls that were killed
    if scrapy_settings.get("REDIS_URL"):
        from crawler.frontier import check_redis

        check_redis(scrapy_settings["REDIS_URL"])
    payload = {
        "plan": plan,
        "sources": profiles,
        "demo_url": demo_url or config.crawl.demo_url,
        "per_query_limit": config.crawl.per_query_limit,
        "licenses": list(config.crawl.licenses),
        "settings": scrapy_settings,
        "log_level": _effective_log_level(),
    }
    logger.info(
        "crawling %s on %s", ", ".join(f"{p.name} ({p.lacking})" for p in plan), ", ".join(names)
    )
    stats = {**_run_child(payload), **refused}
    summary = CrawlSummary.from_stats(lacking, names, stats, skipped, demo_sources(profiles))
    for s in summary.empty_sources:
        logger.warning("%s", alarm_line(s, summary.sources[s]))
    return summary


def demo_sources(profiles) -> list[str]:
    """The sources served by the local demo site (their search_url uses {demo_url})."""
    return [p.name for p in profiles if "{demo_url}" in p.search_url]


def _refuse_anonymous(
    config: Config, profiles: list[SourceProfile]
) -> tuple[list[SourceProfile], dict[str, str]]:
    """Sources whose terms ask for a User-Agent that names the client (Wikimedia) do not start
    while crawl.user_agent is pingo's default: the others, and a stat saying why per refused
    one (pingo/source/<name>/stopped). Refused alone, they stop the crawl with that line."""
    from core.config import CrawlConfig

    if config.crawl.user_agent != CrawlConfig.user_agent:
        return profiles, {}
    refused = {
        f"pingo/source/{p.name}/stopped": (
            f"{p.name}: not started: its API asks every client for a User-Agent with contact "
            'details; set crawl.user_agent in pingo.toml, e.g. "my-dataset/1.0 '
            '(https://example.org/me; me@example.org)"'
        )
        for p in profiles
        if p.needs_contact
    }
    for line in refused.values():
        logger.warning("%s", line)
    kept = [p for p in profiles if not p.needs_contact]
    if refused and not kept:
        raise SourceRefusedError(next(iter(refused.values())))
    return kept, refused


def _check_browser(settings: dict[str, Any]) -> None:
    """Fail here, with a clear BrowserError, if no browser can be started at all."""
    if settings["SELENIUM_ENABLED"]:  # build_settings sets it
        from scrapy.settings import Settings

        from crawler.browser import BrowserSpec

        BrowserSpec.from_settings(Settings(settings))


def _effective_log_level() -> int | None:
    """The level to log at in the child, or None when nobody here shows logs."""
    root = logging.getLogger()
    return (root.level or logging.WARNING) if root.handlers else None


class _Terminated(BaseException):
    """SIGTERM reached the process waiting for the crawl (raised by its handler)."""


def _run_child(payload: dict[str, Any]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="pingo-crawl-") as tmp:
        job, result = Path(tmp) / "job.pickle", Path(tmp) / "stats.json"
        job.write_bytes(pickle.dumps(payload))
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")])
        )
        env[PARENT_ENV] = str(os.getpid())
        with _sigterm_raises():
            child = subprocess.Popen(
                [sys.executable, "-m", "crawler.run", str(job), str(result)], env=env
            )
            try:
                code = child.wait()
            except BaseException as exc:
                signame = _stop_signal_name(exc)
                # Pass the stop on (the child takes a second copy from a group signal as
                # the same stop), wait for it to quit its browsers, and only then go on to
                # release the job lock. A child that does not stop in time is killed: its
                # browsers die with it (PR_SET_PDEATHSIG).
                _stop_child(child, signal.SIGTERM if signame == "SIGTERM" else signal.SIGINT)
                if signame:
                    raise CrawlInterrupted(f"interrupted by {signame}", signame) from exc
                raise
        if not result.exists():
            raise CrawlError(f"the crawl process ended with exit code {code} before reporting")
        stats = json.loads(result.read_text())
        if stats.get(INTERRUPTED_STAT):  # stopped by a signal sent to it alone
            raise CrawlInterrupted(
                f"interrupted by {stats[INTERRUPTED_STAT]}", stats[INTERRUPTED_STAT], stats
            )
        return stats


def _stop_signal_name(exc: BaseException) -> str | None:
    if isinstance(exc, KeyboardInterrupt):
        return "SIGINT"
    if isinstance(exc, _Terminated):
        return "SIGTERM"
    return None


def _stop_child(child: subprocess.Popen, signum: int) -> None:
    """Ask the child to stop, wait up to STOP_WAIT_SECONDS, then kill it; always reap it."""
    while True:  # a further Ctrl-C while waiting must not leave the child behind
        try:
            if child.poll() is None:
                child.send_signal(signum)
                try:
                    child.wait(STOP_WAIT_SECONDS)
                except subprocess.TimeoutExpired:
                    logger.warning(
                        "the crawl process did not stop within %.0fs; killing it", STOP_WAIT_SECONDS
                    )
                    child.kill()
            child.wait()
            return
        except (KeyboardInterrupt, _Terminated):
            child.kill()


@contextmanager
def _sigterm_raises() -> Iterator[None]:
    """While the crawl runs, SIGTERM raises (like SIGINT) instead of killing this process at
    once, so the child is stopped and waited for. Only the main thread can set handlers
    (the scheduler runs jobs on a worker thread and handles SIGTERM itself)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handle(signum, _frame):
        raise _Terminated()

    previous = signal.signal(signal.SIGTERM, handle)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# ---- the child -------------------------------------------------------------------------------


def run_here(payload: dict[str, Any], stop: _StopSignals | None = None) -> dict[str, Any]:
    """Run one crawl in this process (once per process: Twisted cannot restart)."""
    from scrapy.crawler import CrawlerProcess
    from twisted.internet import task

    from crawler.spider import ImageSearchSpider

    process = CrawlerProcess({**payload["settings"], "LOG_INSTALL_ROOT_HANDLER": False})
    _quiet_noisy_loggers(payload.get("log_level"))  # Scrapy just reset its loggers' levels
    spider_cls = ImageSearchSpider
    if payload["settings"].get("REDIS_URL"):
        from crawler.shared_spider import SharedImageSearchSpider as spider_cls
    crawler = process.create_crawler(spider_cls)
    process.crawl(
        crawler,
        plan=payload["plan"],
        sources=payload["sources"],
        demo_url=payload["demo_url"],
        per_query_limit=payload["per_query_limit"],
        **({"licenses": payload["licenses"]} if payload.get("licenses") else {}),
    )
    parent = os.getppid()

    def stop_if_orphaned():  # where PR_SET_PDEATHSIG is missing (not Linux)
        if os.getppid() != parent:
            logger.warning("the process that started this crawl is gone; stopping")
            _abandon_browsers()
            process.stop()

    from twisted.internet import reactor  # the one Scrapy installed

    watch = task.LoopingCall(stop_if_orphaned)
    reactor.callWhenRunning(watch.start, 0.5, False)
    if stop is not None:
        reactor.callWhenRunning(stop.reactor_running, process)
    # Our own SIGINT/SIGTERM handlers (_StopSignals), installed before Scrapy even started.
    process.start(install_signal_handlers=stop is None)
    stats = dict(crawler.stats.get_stats())
    if stop is not None and stop.signame:
        stats[INTERRUPTED_STAT] = stop.signame
    return stats


def _abandon_browsers() -> None:
    """Renders and browser starts in progress give up; no new browser starts."""
    from crawler.pool import abandon_all

    abandon_all()


class _StopSignals:
    """SIGINT/SIGTERM in the crawl process, from the moment it starts.

    The first signal stops the crawl gracefully (at once if the reactor runs, else as soon as
    it does); the same stop arriving twice (the group's signal and the CLI's forward) within
    DUPLICATE_SIGNAL_SECONDS counts once; a later one kills the browsers and exits now."""

    def __init__(self):
        self.signame: str | None = None
        self.first = 0.0
        self.process: CrawlerProcess | None = None  # set once the reactor runs

    def install(self) -> None:
        signal.signal(signal.SIGINT, self.handle)
        signal.signal(signal.SIGTERM, self.handle)
        if _EARLY_STOPS:
            self.handle(_EARLY_STOPS[0], None)

    def handle(self, signum, _frame) -> None:
        name = signal.Signals(signum).name
        now = time.monotonic()
        if self.signame is None:
            self.signame, self.first = name, now
            logger.warning("%s: stopping the crawl", name)
            _abandon_browsers()
            if self.process is not None:
                from twisted.internet import reactor

                reactor.callFromThread(self._stop)
            return
        if now - self.first < DUPLICATE_SIGNAL_SECONDS:
            return
        logger.warning("second %s: quitting now", name)
        from crawler.pool import kill_all_browsers

        kill_all_browsers()
        os._exit(128 + signum)

    def reactor_running(self, process: CrawlerProcess) -> None:
        self.process = process
        if self.signame is not None:  # a stop that came while Scrapy was starting
            self._stop()

    def _stop(self) -> None:
        from twisted.internet import reactor

        def stop_reactor_soon(_: object) -> None:
            # If the crawl never got going, stop_after_crawl may have nothing to wait for.
            # (Twisted types the reactor by its zope interfaces, whose methods have no
            # ``self``: mypy takes callLater's delay, and stop's nothing, for ``self``.)
            if reactor.running:
                reactor.callLater(0, _stop_reactor)  # type: ignore[arg-type]

        assert self.process is not None  # only called once the reactor runs
        self.process.stop().addBoth(stop_reactor_soon)


def _stop_reactor() -> None:
    from twisted.internet import reactor

    try:
        reactor.stop()  # type: ignore[misc]  # zope-typed reactor: see _StopSignals._stop
    except Exception:  # already stopping
        pass


def _die_with_parent() -> None:
    """Linux: the kernel SIGKILLs this process when the CLI (the thread that started it) dies,
    so a crawl whose CLI was killed stores nothing more; its browsers die with it."""
    parent = os.environ.get(PARENT_ENV)
    if not sys.platform.startswith("linux") or not parent:
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            return
    except (OSError, AttributeError):
        return
    if os.getppid() != int(parent):  # it died before the tie was made
        os._exit(1)


def _quiet_noisy_loggers(level: int | None) -> None:
    level = logging.WARNING if level is None else max(level, logging.WARNING)
    for noisy in (
        "scrapy",
        "selenium",
        "PIL",
        "twisted",
        "filelock",
        "scrapy_selenium",
        "scrapy_redis",
    ):
        logging.getLogger(noisy).setLevel(level)
    # Selenium's HTTP client retries a browser that is gone; the pool reports that itself.
    logging.getLogger("urllib3").setLevel(max(level, logging.ERROR))


def _child_main(job: str, result: str) -> int:
    _die_with_parent()
    stop = _StopSignals()
    stop.install()
    payload = pickle.loads(Path(job).read_bytes())
    level = payload.get("log_level")
    if level is not None:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
        )
        if level > logging.DEBUG:  # Scrapy logs its banner before its levels can be set
            handler.addFilter(
                lambda r: (
                    r.levelno >= logging.WARNING or not r.name.startswith(("scrapy", "twisted"))
                )
            )
        logging.getLogger().addHandler(handler)
        logging.getLogger().setLevel(level)
    stats = run_here(payload, stop)
    from storage.files import atomic_write

    atomic_write(Path(result), json.dumps(stats, default=str))
    return 0


def _exit_now(code: int) -> None:
    """End the crawl process without waiting for threads: a crawl stopped while it started
    can leave Twisted thread-pool workers that never quit (threading._shutdown would wait
    for them forever). Browsers still running are killed first; the stats are written."""
    try:
        from crawler.pool import end_all_browsers

        end_all_browsers()
    finally:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _main(argv: list[str]) -> None:
    code = 1
    try:
        code = _child_main(*argv[1:3])
    except KeyboardInterrupt:  # a stop before its handler was set (Python still starting)
        code = 128 + signal.SIGINT
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        logger.exception("the crawl process failed")
    _exit_now(code)


if __name__ == "__main__":
    _main(sys.argv)
