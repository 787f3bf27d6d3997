"""When to train (every class at target, dataset changed) and whether to promote the result."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from core.config import Config, TrainConfig
from trainer import data
from trainer.errors import ModelLoadError

logger = logging.getLogger(__name__)


@dataclass
class PromotionDecision:
    promoted: bool
    reason: str
    new_accuracy: float
    current_version: str | None = None
    current_accuracy: float | None = None   # the current model on the *new* test split
    margin: float = 0.0
    test_images: int = 0


def latest_model_row(store) -> dict | None:
    rows = store.model_rows()
    return max(rows, key=lambda r: int(r["version"][1:])) if rows else None


def dataset_hash(config: Config, store) -> str:
    """The manifest hash the next run would have (from the DB; no image is read)."""
    tc = config.train
    plan = data.plan_from_store(store, list(config.classes), tc.val_fraction, tc.test_fraction)
    return plan.manifest_hash()


def should_train(config: Config, store) -> tuple[bool, str]:
    if not config.classes:
        return False, "no classes are configured"
    stats = store.stats(config.targets)
    below = [f"{name} {c['accepted']}/{c['target']}" for name, c in sorted(stats.classes.items())
             if name in config.classes and c["accepted"] < c["target"]]
    if below:
        return False, "classes below target: " + ", ".join(below)
    last = latest_model_row(store)
    if last is None:
        return True, "every class is at target and there is no model yet"
    if last["manifest_hash"] == dataset_hash(config, store):
        return False, f"the dataset has not changed since model {last['version']}"
    return True, f"every class is at target and the dataset changed since model {last['version']}"


def promotion_decision(store, config: Config, tc: TrainConfig, plan: data.DatasetPlan,
                       written) -> PromotionDecision:
    """Promote if the new test accuracy >= the current model's on the same test split + margin."""
    from trainer.entry import evaluate_on, load_entry_model
    new = written.test["accuracy"]
    base = dict(new_accuracy=new, margin=tc.promote_margin, test_images=written.test["images"])
    current = store.registry.current()
    if current is None:
        return PromotionDecision(True, "first model: nothing is promoted yet", **base)
    try:
        loaded = load_entry_model(store.registry.path(current))
    except ModelLoadError as exc:
        return PromotionDecision(True, f"the current model cannot be loaded ({exc}); "
                                 "replacing it", current_version=current, **base)
    if loaded.classes != plan.classes:
        return PromotionDecision(True, f"classes changed from {loaded.classes} to "
                                 f"{plan.classes}; the current model cannot be compared",
                                 current_version=current, **base)
    cur = evaluate_on(loaded, plan.split("test"), tc.batch_size,
                      config.factory.max_pixels)["accuracy"]
    promoted = new >= cur + tc.promote_margin
    verdict = "promoted" if promoted else "not promoted"
    reason = (f"{verdict}: test accuracy {new:.4f} vs {cur:.4f} for current {current} on the "
              f"same {written.test['images']} test images (margin {tc.promote_margin:+.4f})")
    return PromotionDecision(promoted, reason, current_version=current, current_accuracy=cur,
                             **base)


def register(store, version: str, written, decision: PromotionDecision,
             manifest_hash: str) -> None:
    """Record the model; only then point models/CURRENT at it when it passed the gate."""
    from trainer.entry import summary
    store.record_model(version, summary(written, decision), manifest_hash, promoted=False,
                       note=decision.reason)
    if decision.promoted:
        store.registry.promote(version)
        store.mark_promoted(version, note=decision.reason)
