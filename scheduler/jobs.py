"""Running one stage as a recorded job: the job lock, a `runs` row, stale-run cleanup.

The stage code lives in crawler / dataset_factory / trainer; this module only calls it.
While a stage runs, a heartbeat thread stamps its `runs` row every HEARTBEAT seconds, so a
process on another host (which cannot look up the pid) never takes a long live run for a
dead one.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from core.config import Config
from scheduler.lock import JobLock
from storage import Store

logger = logging.getLogger(__name__)

Stage = Callable[[Config, Store], Any]
HEARTBEAT = 60.0  # seconds; well under storage.files.STALE_SECONDS


def crawl_stage(config: Config, store: Store) -> Any:
    from crawler import crawl

    return crawl(config, store)


def factory_stage(config: Config, store: Store) -> Any:
    from dataset_factory import process_inbox
    from storage.attribution import write_attribution

    summary = process_inbox(config, store)
    write_attribution(store)  # the dataset may have changed: its credits with it
    return summary


def train_stage(config: Config, store: Store, force: bool = False) -> Any:
    """Train only when the trainer's gate passes (every class at target, dataset changed).

    The gate is evaluated here, once: ``train`` is then told not to evaluate it again.
    """
    from trainer import should_train, train

    if not force:
        due, reason = should_train(config, store)
        if not due:
            logger.info("training skipped: %s", reason)
            return {"skipped": reason}
    return train(config, store, force=True)


def prune_stage(config: Config, store: Store, dry_run: bool = False) -> Any:
    """Delete old rejected files and old model versions (storage.keep_rejected_days,
    train.keep_models); rows stay, the promoted and previous models stay."""
    from storage.prune import prune

    return prune(
        store, config.storage.keep_rejected_days, config.train.keep_models, dry_run=dry_run
    )


STAGES: dict[str, Stage] = {
    "crawl": crawl_stage,
    "factory": factory_stage,
    "train": train_stage,
    "prune": prune_stage,
}


def as_counts(result: Any) -> dict | None:
    """A stage's summary as JSON-safe counts for the runs table."""
    if result is None:
        return None
    if hasattr(result, "as_json"):
        result = result.as_json()
    elif dataclasses.is_dataclass(result) and not isinstance(result, type):
        result = dataclasses.asdict(result)
    if not isinstance(result, dict):
        result = {"result": result}
    return json.loads(json.dumps(result, default=str))


def shares_lock(config: Config, job: str) -> bool:
    """Whether ``job`` may run beside others of its kind: factory workers (they claim inbox
    rows) and crawl workers that share a Redis frontier do; everything else runs alone."""
    return job == "factory" or (job == "crawl" and bool(config.crawl.redis_url))


@contextmanager
def heartbeat(store: Store, run_id: int, every: float | None = None) -> Iterator[None]:
    """Stamp the run's heartbeat every ``every`` (default HEARTBEAT) seconds while the block
    runs."""
    every = every or HEARTBEAT
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(every):
            try:
                store.heartbeat_run(run_id)
            except Exception as exc:  # a missed beat is harmless; the next one retries
                logger.warning("run %d heartbeat failed: %s", run_id, exc)

    thread = threading.Thread(target=beat, daemon=True, name=f"run-{run_id}-heartbeat")
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _interrupted(exc: BaseException) -> bool:
    from crawler.errors import CrawlInterrupted

    return isinstance(exc, (KeyboardInterrupt, CrawlInterrupted))


def run_job(config: Config, job: str, stage: Stage | None = None, *, wait: float = 0.0) -> Any:
    """Run one stage under the job lock and record it in `runs`; re-raise its failure."""
    stage = stage or STAGES[job]
    with JobLock(config.data_dir).hold(job, wait=wait, shared=shares_lock(config, job)):
        with Store.from_config(config) as store:
            store.fail_stale_runs()
            run_id = store.start_run(job)
            logger.info("%s started (run %d)", job, run_id)
            try:
                with heartbeat(store, run_id):
                    result = stage(config, store)
            except BaseException as exc:
                error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                if _interrupted(exc):  # a person or the service manager stopped it
                    store.finish_run(
                        run_id,
                        "interrupted",
                        as_counts(getattr(exc, "stats", None) or None),
                        str(exc) or "interrupted by SIGINT",
                    )
                    logger.warning("%s interrupted (run %d): %s", job, run_id, exc)
                    raise
                store.finish_run(run_id, "failed", None, error)
                logger.error("%s failed (run %d): %s", job, run_id, error)
                raise
            store.finish_run(run_id, "succeeded", as_counts(result))
            store.snapshot_counts(config.targets)
            logger.info("%s finished (run %d)", job, run_id)
            return result
