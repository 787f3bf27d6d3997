"""Run one crawl: plan from storage, crawl in a child process, return a CrawlSummary.

Twisted's reactor cannot be restarted inside one process, so every crawl runs Scrapy in a
fresh child Python (``python -m crawler.run``); ``crawl()`` can then be called any number of
times from the CLI, ``pingo demo`` or the scheduler. The child stops by itself if its parent
dies, and quits every browser it started.
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
from pathlib import Path
from typing import Any

from crawler.errors import CrawlError, UnknownCrawlClassError
from crawler.sources import resolve_sources
from crawler.spider import ClassPlan
from crawler.summary import CrawlSummary

logger = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def plan_crawl(config, store, classes: list[str] | None = None,
               limit: int | None = None) -> tuple[list[ClassPlan], dict[str, str]]:
    """Classes below target and how many each lacks (target - accepted - inbox), capped."""
    wanted = list(config.classes) if not classes else list(classes)
    unknown = [c for c in wanted if c not in config.classes]
    if unknown:
        raise UnknownCrawlClassError(f"unknown class {unknown[0]!r}; the config declares "
                                     + (", ".join(config.classes) or "no classes"))
    stats = store.stats(config.targets)
    inbox = store.inbox_counts()
    plan, skipped = [], {}
    for name in wanted:
        cls = config.classes[name]
        accepted = stats.classes.get(name, {}).get("accepted", 0) or 0
        lacking = cls.target - accepted - inbox.get(name, 0)
        if lacking <= 0:
            skipped[name] = ("at target" if accepted >= cls.target else
                             f"{inbox.get(name, 0)} images already wait in the inbox")
            continue
        if limit is not None:
            lacking = min(lacking, limit)
        plan.append(ClassPlan(name, lacking, list(cls.keywords)))
    return plan, skipped


def crawl(config, store=None, classes: list[str] | None = None,
          sources: list[str] | None = None, limit: int | None = None, *,
          settings: dict[str, Any] | None = None, demo_url: str | None = None) -> CrawlSummary:
    """Crawl the classes below target (or ``classes``) on ``sources`` (default: config's).

    ``limit`` caps the images taken per class; ``settings`` overrides Scrapy settings;
    ``demo_url`` overrides crawl.demo_url (e.g. a demo site started on port 0).
    Raises UnknownCrawlClassError / UnknownSourceError / CrawlError.
    """
    from storage import Store

    own_store = store is None
    store = Store.from_config(config) if own_store else store
    try:
        profiles = resolve_sources(list(sources or config.crawl.sources), config.crawl.profiles)
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
        return CrawlSummary.from_stats({}, names, {}, skipped)
    from crawler.settings import build_settings
    scrapy_settings = build_settings(config, data_dir, db_url, settings)
    if demo_url:  # a demo site started elsewhere (e.g. on port 0) is as local as the configured
        scrapy_settings["PINGO_TRUSTED_ORIGINS"] = [
            *scrapy_settings.get("PINGO_TRUSTED_ORIGINS", []), demo_url]
    _check_browser(scrapy_settings)
    if not scrapy_settings.get("SELENIUM_COMMAND_EXECUTOR"):
        from crawler.leftovers import remove_leftovers
        remove_leftovers()  # browser folders (and processes) of crawls that were killed
    if scrapy_settings.get("REDIS_URL"):
        from crawler.distributed import check_redis
        check_redis(scrapy_settings["REDIS_URL"])
    payload = {
        "plan": plan, "sources": profiles, "demo_url": demo_url or config.crawl.demo_url,
        "per_query_limit": config.crawl.per_query_limit,
        "settings": scrapy_settings,
        "log_level": _effective_log_level(),
    }
    logger.info("crawling %s on %s", ", ".join(f"{p.name} ({p.lacking})" for p in plan),
                ", ".join(names))
    stats = _run_child(payload)
    summary = CrawlSummary.from_stats(lacking, names, stats, skipped)
    for s in summary.empty_sources:
        logger.warning("source %r found no results for any keyword: its markup may have "
                       "changed; see docs/crawler.md", s)
    return summary


def _check_browser(settings: dict[str, Any]) -> None:
    """Fail here, with a clear BrowserError, if no browser can be started at all."""
    if settings.get("SELENIUM_ENABLED", True):
        from scrapy.settings import Settings

        from crawler.browser import BrowserSpec
        BrowserSpec.from_settings(Settings(settings))


def _effective_log_level() -> int | None:
    """The level to log at in the child, or None when nobody here shows logs."""
    root = logging.getLogger()
    return (root.level or logging.WARNING) if root.handlers else None


def _run_child(payload: dict[str, Any]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="pingo-crawl-") as tmp:
        job, result = Path(tmp) / "job.pickle", Path(tmp) / "stats.json"
        job.write_bytes(pickle.dumps(payload))
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT),
                                                          env.get("PYTHONPATH")]))
        child = subprocess.Popen([sys.executable, "-m", "crawler.run", str(job), str(result)],
                                 env=env)
        try:
            code = child.wait()
        except BaseException as exc:
            # Let Scrapy close cleanly (browsers quit). Ctrl-C in a terminal already reached
            # the child; a second SIGINT would force an unclean stop.
            if not isinstance(exc, KeyboardInterrupt):
                child.send_signal(signal.SIGINT)
            try:
                child.wait(60)
            except subprocess.TimeoutExpired:
                child.kill()
            raise
        if not result.exists():
            raise CrawlError(f"the crawl process ended with exit code {code} before reporting")
        return json.loads(result.read_text())


# ---- the child -------------------------------------------------------------------------------

def run_here(payload: dict[str, Any]) -> dict[str, Any]:
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
    process.crawl(crawler, plan=payload["plan"], sources=payload["sources"],
                  demo_url=payload["demo_url"], per_query_limit=payload["per_query_limit"])
    parent = os.getppid()

    def stop_if_orphaned():
        if os.getppid() != parent:
            logger.warning("the process that started this crawl is gone; stopping")
            process.stop()

    from twisted.internet import reactor
    watch = task.LoopingCall(stop_if_orphaned)
    reactor.callWhenRunning(watch.start, 2.0, False)
    process.start()
    return dict(crawler.stats.get_stats())


def _quiet_noisy_loggers(level: int | None) -> None:
    level = logging.WARNING if level is None else max(level, logging.WARNING)
    for noisy in ("scrapy", "selenium", "PIL", "twisted", "filelock", "scrapy_selenium",
                  "scrapy_redis"):
        logging.getLogger(noisy).setLevel(level)
    # Selenium's HTTP client retries a browser that is gone; the pool reports that itself.
    logging.getLogger("urllib3").setLevel(max(level, logging.ERROR))


def _child_main(job: str, result: str) -> int:
    payload = pickle.loads(Path(job).read_bytes())
    level = payload.get("log_level")
    if level is not None:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(
            "%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
        if level > logging.DEBUG:  # Scrapy logs its banner before its levels can be set
            handler.addFilter(lambda r: r.levelno >= logging.WARNING
                              or not r.name.startswith(("scrapy", "twisted")))
        logging.getLogger().addHandler(handler)
        logging.getLogger().setLevel(level)
    stats = run_here(payload)
    from storage.files import atomic_write
    atomic_write(Path(result), json.dumps(stats, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(_child_main(*sys.argv[1:3]))
