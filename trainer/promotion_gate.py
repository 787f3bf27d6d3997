"""Whether a freshly written entry replaces the model in service, decided on the same test
images the new model was scored on, with the paired evidence stated.

The rule (docs/trainer.md, "Promotion"): both models are scored on the new test split, image
by image. McNemar's exact test looks at the images where they disagree: ``b`` only the new
model gets right, ``c`` only the current one.

- significantly better (one-sided p < SIGNIFICANCE): promoted, whatever promote_margin says;
- significantly worse (one-sided p < SIGNIFICANCE): not promoted;
- otherwise (no significant difference, the usual case on a small split): promoted when its
  accuracy >= the current model's + train.promote_margin, or when it learned from more images
  than the current model (``learned``): the dataset only grows, and a split too small to tell
  the two apart must not keep the model of a smaller dataset in service by one image.

The decision says how much the comparison can tell.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from core.stats import accuracy_interval, format_interval, mcnemar_from_correct
from storage.errors import ModelLoadError
from trainer import data
from trainer.evaluate import evaluate_outcomes
from vision.model import load_model

if TYPE_CHECKING:
    from core.config import Config, TrainConfig
    from storage import Store
    from trainer.registry_writer import Written

logger = logging.getLogger(__name__)

SIGNIFICANCE = 0.05  # one-sided level of McNemar's exact test
PAIRED = "mcnemar_exact"
UNPAIRED = "margin_only"


@dataclass
class PromotionDecision:
    promoted: bool
    reason: str
    new_accuracy: float
    current_version: str | None = None
    current_accuracy: float | None = None  # the current model on the *new* test split
    margin: float = 0.0
    test_images: int = 0
    new_accuracy_ci: list[float] | None = None  # Wilson 95% interval
    current_accuracy_ci: list[float] | None = None
    method: str | None = None  # PAIRED, UNPAIRED, or None (nothing to compare with)
    mcnemar_b: int | None = None  # test images only the new model gets right
    mcnemar_c: int | None = None  # test images only the current model gets right
    p_two_sided: float | None = None
    p_new_better: float | None = None  # one-sided
    p_new_worse: float | None = None  # one-sided
    significance: float = SIGNIFICANCE


def _p(p: float) -> str:
    return f"{p:.2f}" if p >= 0.01 else f"{p:.2g}"


def _accuracies(new: float, new_ci, cur: float, cur_ci, current: str, n: int, margin: float):
    return (
        f"test accuracy {new:.4f} {format_interval(new_ci)} vs {cur:.4f} "
        f"{format_interval(cur_ci)} for current {current} on the same {n} test images "
        f"(margin {margin:+.4f})"
    )


def paired_decision(
    new_correct: Sequence[bool],
    current_correct: Sequence[bool],
    margin: float,
    current_version: str,
    significance: float = SIGNIFICANCE,
    learned: tuple[int, int] | None = None,
) -> PromotionDecision:
    """The rule above on per-image outcomes of both models on the same test images;
    ``learned``: (images the new model learned from, images the current one did)."""
    n = len(new_correct)
    test = mcnemar_from_correct(new_correct, current_correct)
    new = sum(map(bool, new_correct)) / n if n else 0.0
    cur = sum(map(bool, current_correct)) / n if n else 0.0
    new_ci, cur_ci = accuracy_interval(new, n), accuracy_interval(cur, n)
    evidence = f"new right where current wrong {test.b}, the reverse {test.c}"
    if test.p_new_better < significance:
        promoted = True
        verdict = f"one-sided p = {_p(test.p_new_better)} (significantly better at {significance})"
    elif test.p_new_worse < significance:
        promoted = False
        verdict = f"one-sided p = {_p(test.p_new_worse)} (significantly worse at {significance})"
    elif new < cur + margin and learned is not None and learned[0] > learned[1]:
        promoted = True
        verdict = (
            f"p = {_p(test.p_two_sided)} (no significant difference at {significance}), and "
            f"the new model learned from more images ({learned[0]} vs {learned[1]})"
        )
    else:
        promoted = new >= cur + margin
        verdict = (
            f"p = {_p(test.p_two_sided)} (no significant difference at {significance}, "
            "so the margin decides)"
        )
    reason = (
        f"{'promoted' if promoted else 'not promoted'}: "
        f"{_accuracies(new, new_ci, cur, cur_ci, current_version, n, margin)}; "
        f"McNemar: {evidence}, {verdict}"
    )
    return PromotionDecision(
        promoted,
        reason,
        new,
        current_version=current_version,
        current_accuracy=cur,
        margin=margin,
        test_images=n,
        new_accuracy_ci=new_ci,
        current_accuracy_ci=cur_ci,
        method=PAIRED,
        mcnemar_b=test.b,
        mcnemar_c=test.c,
        p_two_sided=test.p_two_sided,
        p_new_better=test.p_new_better,
        p_new_worse=test.p_new_worse,
        significance=significance,
    )


def promotion_decision(
    store: Store, config: Config, tc: TrainConfig, plan: data.DatasetPlan, written: Written
) -> PromotionDecision:
    """Score the current model on the new test split and apply the rule above."""
    new = written.test["accuracy"]
    n = written.test["images"]
    base = dict(
        new_accuracy=new,
        margin=tc.promote_margin,
        test_images=n,
        new_accuracy_ci=written.test.get("accuracy_ci") or accuracy_interval(new, n),
    )
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
    scored, current_correct = evaluate_outcomes(
        loaded, plan.split("test"), tc.batch_size, config.factory.max_pixels
    )
    if len(current_correct) == len(written.test_correct) == n:
        return paired_decision(
            written.test_correct,
            current_correct,
            tc.promote_margin,
            current,
            learned=(_learned(plan.counts()), _learned(_manifest_counts(store, current))),
        )
    # Not the same images (a file became unreadable between the two scorings): no pairing.
    cur = scored["accuracy"]
    cur_ci = scored.get("accuracy_ci") or accuracy_interval(cur, scored["images"])
    promoted = new >= cur + tc.promote_margin
    reason = (
        f"{'promoted' if promoted else 'not promoted'}: "
        f"{_accuracies(new, base['new_accuracy_ci'], cur, cur_ci, current, n, tc.promote_margin)}"
        f"; no paired test (the current model read {scored['images']} of them), so the margin "
        "decides"
    )
    logger.warning("promotion without a paired test: %s", reason)
    return PromotionDecision(
        promoted,
        reason,
        current_version=current,
        current_accuracy=cur,
        current_accuracy_ci=cur_ci,
        method=UNPAIRED,
        **base,
    )


def _learned(counts: dict[str, dict[str, int]] | None) -> int:
    """Images a model learned from (train and val splits) by its split counts."""
    return sum(sum((counts or {}).get(split, {}).values()) for split in ("train", "val"))


def _manifest_counts(store: Store, version: str) -> dict[str, dict[str, int]] | None:
    """A registry entry's split counts (manifest.json), or None when unreadable."""
    import json

    from storage.registry import MANIFEST

    try:
        manifest = json.loads((store.registry.path(version) / MANIFEST).read_text("utf-8"))
    except (OSError, ValueError):
        return None
    counts = manifest.get("counts") if isinstance(manifest, dict) else None
    return counts if isinstance(counts, dict) else None
