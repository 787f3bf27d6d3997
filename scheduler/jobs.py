"""Running one stage as a recorded job: the job lock, a `runs` row, stale-run cleanup.

The stage code lives in crawler / dataset_factory / trainer; this module only calls it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from typing import Any, Callable

from pingo.config import Config
from scheduler.lock import JobLock
from storage import Store

logger = logging.getLogger(__name__)

Stage = Callable[[Config, Store], Any]


def crawl_stage(config: Config, store: Store) -> Any:
    from crawler.run import crawl
    return crawl(config, store)


def factory_stage(config: Config, store: Store) -> Any:
    from dataset_factory.run import process_inbox
    return process_inbox(config, store)


def train_stage(config: Config, store: Store, force: bool = False) -> Any:
    """Train only when the trainer's gate passes (every class at target, dataset changed)."""
    from trainer.run import should_train, train
    if not force:
        due, reason = should_train(config, store)
        if not due:
            logger.info("training skipped: %s", reason)
            return {"skipped": reason}
    return train(config, store, force=force)


def prune_stage(config: Config, store: Store, dry_run: bool = False) -> Any:
    """Delete old rejected files and old model versions (storage.keep_rejected_days,
    train.keep_models); rows stay, the promoted and previous models stay."""
    from storage.prune import prune
    return prune(store, config.storage.keep_rejected_days, config.train.keep_models,
                 dry_run=dry_run)


STAGES: dict[str, Stage] = {"crawl": crawl_stage, "factory": factory_stage,
                            "train": train_stage, "prune": prune_stage}


def as_counts(result: Any) -> dict | None:
    """A stage's summary as JSON-safe counts for the runs table."""
    if result is None:
        return None
    if hasattr(result, "as_json"):
        result = result.as_json()
    elif dataclasses.is_dataclass(result):
        result = dataclasses.asdict(result)
    if not isinstance(result, dict):
        result = {"result": result}
    return json.loads(json.dumps(result, default=str))


def shares_lock(config: Config, job: str) -> bool:
    """Whether ``job`` may run beside others of its kind: factory workers (they claim inbox
    rows) and crawl workers that share a Redis frontier do; everything else runs alone."""
    return job == "factory" or (job == "crawl" and bool(config.crawl.redis_url))


def run_job(config: Config, job: str, stage: Stage | None = None, *, wait: float = 0.0) -> Any:
    """Run one stage under the job lock and record it in `runs`; re-raise its failure."""
    stage = stage or STAGES[job]
    with JobLock(config.data_dir).hold(job, wait=wait, shared=shares_lock(config, job)):
        with Store.from_config(config) as store:
            store.fail_stale_runs()
            run_id = store.start_run(job)
            logger.info("%s started (run %d)", job, run_id)
            try:
                result = stage(config, store)
            except BaseException as exc:
                error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                store.finish_run(run_id, "failed", None, error)
                logger.error("%s failed (run %d): %s", job, run_id, error)
                raise
            store.finish_run(run_id, "succeeded", as_counts(result))
            store.snapshot_counts(config.targets)
            logger.info("%s finished (run %d)", job, run_id)
            return result
