"""When to train: every class at its target and the dataset changed since the last model.

A class's count is its accepted images, plus (train.learn_from_review) the review images the
trainer learns from: with an early model most crawled images wait in review, and the loop
must still train the model that can decide them.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import TYPE_CHECKING

from core.names import MIN_NONE_EXAMPLES, NONE_CLASS
from trainer import data

if TYPE_CHECKING:
    from core.config import Config
    from storage import Store

logger = logging.getLogger(__name__)


def training_classes(config: Config, store: Store) -> list[str]:
    """The configured classes, plus the built-in "none" (out of scope) once people gave
    MIN_NONE_EXAMPLES examples of it: the model then says when an image is none of them."""
    classes = list(config.classes)
    if store.stats({}).classes.get(NONE_CLASS, {}).get("accepted", 0) >= MIN_NONE_EXAMPLES:
        classes.append(NONE_CLASS)
    return classes


def dataset_hash(config: Config, store: Store) -> str:
    """The manifest hash the next run would have (from the DB; no image is read)."""
    tc = config.train
    plan = data.plan_from_store(
        store,
        training_classes(config, store),
        tc.val_fraction,
        tc.test_fraction,
        tc.learn_from_review,
    )
    return plan.manifest_hash()


def should_train(config: Config, store: Store) -> tuple[bool, str]:
    """True when every class has reached its target and the dataset changed since the last
    model (any model trained, promoted or not); the reason says which condition decided."""
    if not config.classes:
        return False, "no classes are configured"
    stats = store.stats(config.targets)
    learnable: Counter[str] = Counter()
    if config.train.learn_from_review:  # review images the trainer learns from count too
        learnable.update(r["label"] for r in data.learnable_review_rows(store))
    below = [
        f"{name} {c['accepted'] + learnable[name]}/{c['target']}"
        for name, c in sorted(stats.classes.items())
        if name in config.classes and c["accepted"] + learnable[name] < c["target"]
    ]
    if below:
        return False, "classes below target: " + ", ".join(below)
    last = store.registry.latest_row()
    if last is None:
        return True, "every class is at target and there is no model yet"
    if last["manifest_hash"] == dataset_hash(config, store):
        return False, f"the dataset has not changed since model {last['version']}"
    return True, f"every class is at target and the dataset changed since model {last['version']}"
