"""`pingo schedule`: APScheduler runs crawl -> factory and the nightly train + prune, unattended.

Suitable for systemd: a blocking process that logs to data/logs/ and exits 0 on SIGTERM or
SIGINT after the job in progress has finished (a second signal exits at once; storage is
crash-safe, so the next start carries on).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from datetime import UTC, datetime
from typing import Any

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger

from core.config import Config
from crawler.backlog import review_backlog
from crawler.errors import CrawlInterrupted
from scheduler.errors import BusyError
from scheduler.jobs import STAGES, Stage, run_job

logger = logging.getLogger(__name__)

# A scheduled job waits this long for a manual job holding the lock before giving up.
LOCK_WAIT_SECONDS = 3600.0


def config_triggers(config: Config) -> dict[str, BaseTrigger]:
    return {
        "crawl": CronTrigger.from_crontab(config.crawl.schedule, timezone=UTC),
        "train": CronTrigger.from_crontab(config.train.schedule, timezone=UTC),
    }


def next_fire_times(config: Config, now: datetime | None = None) -> dict[str, str]:
    """When each scheduled job fires next, from the config's cron expressions."""
    now = now or datetime.now(UTC)
    return {
        job: trigger.get_next_fire_time(None, now).isoformat()
        for job, trigger in config_triggers(config).items()
    }


class Service:
    """The scheduler process. ``stages`` and ``triggers`` default to the real ones."""

    def __init__(
        self,
        config: Config,
        stages: dict[str, Stage] | None = None,
        triggers: dict[str, BaseTrigger] | None = None,
        lock_wait: float = LOCK_WAIT_SECONDS,
    ):
        self.config = config
        self.stages = {**STAGES, **(stages or {})}
        self.triggers = triggers or config_triggers(config)
        self.lock_wait = lock_wait
        self.stopping = threading.Event()
        # One worker thread: jobs of this process never overlap; the job lock covers others.
        self.scheduler = BlockingScheduler(
            executors={"default": ThreadPoolExecutor(1)},
            job_defaults={
                "coalesce": True,
                "max_instances": 1,
                # None: a run missed while the machine slept still happens (once).
                "misfire_grace_time": None,
            },
            timezone=UTC,
        )

    def _run(self, job: str) -> bool:
        if self.stopping.is_set():
            return False
        try:
            run_job(self.config, job, self.stages[job], wait=self.lock_wait)
            return True
        except BusyError as exc:
            logger.warning("%s", exc)
        except CrawlInterrupted as exc:  # recorded as interrupted; not a crash
            logger.warning("%s %s", job, exc)
        except Exception:
            logger.exception("%s failed; the schedule goes on", job)
        return False

    def crawl_then_factory(self) -> None:
        if self._run("crawl"):
            self._run("factory")

    def train(self) -> None:
        """Nightly: train (when due), then prune what retention no longer keeps."""
        self._run("train")
        self._run("prune")

    def chain(self) -> None:
        """crawl -> factory -> train -> prune (the train job applies its own gate)."""
        self.crawl_then_factory()
        self.train()

    def start(self, run_now: bool = False) -> None:
        """Block until SIGTERM/SIGINT (or ``stop()``); return after a clean shutdown."""
        self.scheduler.add_job(
            self.crawl_then_factory, self.triggers["crawl"], id="crawl", name="crawl then factory"
        )
        self.scheduler.add_job(self.train, self.triggers["train"], id="train", name="train")
        if run_now:
            self.scheduler.add_job(
                self.chain, id="run-now", name="run now", next_run_time=datetime.now(UTC)
            )
        self._install_signal_handlers()
        for job in self.scheduler.get_jobs():
            logger.info("scheduled %s: %s", job.name, job.trigger)
        self.scheduler.start()
        logger.info("scheduler stopped")

    def stop(self) -> None:
        """Stop taking jobs; wait for the one in progress."""
        self.stopping.set()
        if self.scheduler.running:
            self.scheduler.shutdown(wait=True)

    def _install_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return

        def handle(signum, _frame):
            if self.stopping.is_set():
                logger.warning("second %s: exiting now", signal.Signals(signum).name)
                os._exit(1)
            logger.info("%s: finishing the current job, then exiting", signal.Signals(signum).name)
            # shutdown(wait=True) blocks until the running job ends; do it off the handler.
            self.stopping.set()
            threading.Thread(target=self.stop, daemon=True).start()

        signal.signal(signal.SIGTERM, handle)
        signal.signal(signal.SIGINT, handle)


def status(config: Config, store: Any, limit: int = 10) -> dict[str, Any]:
    """The last runs, the next fire times and the classes held back from crawling by their
    review backlog (`pingo status --json`)."""
    runs = [
        {k: r[k] for k in ("job", "status", "started", "finished", "counts", "error")}
        for r in store.recent_runs(limit)
    ]
    return {
        "runs": runs,
        "next": next_fire_times(config),
        "review_backlog": review_backlog(config, store),
    }
