"""Whether a freshly written entry replaces the model in service: it must score at least as
well as the current model on the same test split (plus train.promote_margin)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from storage.errors import ModelLoadError
from trainer import data
from trainer.evaluate import evaluate_on
from vision.model import load_model

if TYPE_CHECKING:
    from core.config import Config, TrainConfig
    from storage import Store
    from trainer.registry_writer import Written

logger = logging.getLogger(__name__)


@dataclass
class PromotionDecision:
    promoted: bool
    reason: str
    new_accuracy: float
    current_version: str | None = None
    current_accuracy: float | None = None  # the current model on the *new* test split
    margin: float = 0.0
    test_images: int = 0


def promotion_decision(
    store: Store, config: Config, tc: TrainConfig, plan: data.DatasetPlan, written: Written
) -> PromotionDecision:
    """Promote if the new test accuracy >= the current model's on the same test split + margin."""
    new = written.test["accuracy"]
    base = dict(new_accuracy=new, margin=tc.promote_margin, test_images=written.test["images"])
    current = store.registry.current()
    if current is None:
        return PromotionDecision(True, "first model: nothing is promoted yet", **base)
    try:
        loaded = load_model(store.registry.path(current))
    except ModelLoadError as exc:
        return PromotionDecision(
            True,
            f"the current model cannot be loaded ({exc}); replacing it",
            current_version=current,
            **base,
        )
    if loaded.classes != plan.classes:
        return PromotionDecision(
            True,
            f"classes changed from {loaded.classes} to "
            f"{plan.classes}; the current model cannot be compared",
            current_version=current,
            **base,
        )
    cur = evaluate_on(loaded, plan.split("test"), tc.batch_size, config.factory.max_pixels)[
        "accuracy"
    ]
    promoted = new >= cur + tc.promote_margin
    verdict = "promoted" if promoted else "not promoted"
    reason = (
        f"{verdict}: test accuracy {new:.4f} vs {cur:.4f} for current {current} on the "
        f"same {written.test['images']} test images (margin {tc.promote_margin:+.4f})"
    )
    return PromotionDecision(
        promoted, reason, current_version=current, current_accuracy=cur, **base
    )
