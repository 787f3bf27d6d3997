"""Re-judging the images that wait in review with only their keyword to vouch for them.

With ``factory.keyword_only = "review"`` the first, model-less batch waits in review/ (reason
keyword_only): the keyword alone does not reach ``factory.target_precision``. The label check
(trainer.cleaning) then gives every one of them an out-of-fold prediction: a model that did
not see the image. That is the model evidence the factory's evidence rule needs, so here the
same rule (vision.evidence) decides them, with the fold models calibrated on the images whose
label a person gave (temperature scaling on their out-of-fold predictions), the in-scope
profile measured on those same images, and the keyword reliability the label check measured.
What reaches the target is accepted (label source model, this run's version), what is out of
scope at the target is rejected, the rest stays in review. Without enough hand-labelled
images to calibrate on, nothing is re-judged: an uncalibrated fold model cannot promise a
precision.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from core.names import LEARNABLE_REVIEW_REASONS
from storage import Move
from trainer.moves import move_all
from vision.calibration import MIN_VAL_IMAGES, apply_temperature, fit_temperature
from vision.evidence import (
    OUT_OF_SCOPE,
    decide,
    evidence_record,
    posterior,
    reliability_from_store,
    scope_profile,
)

if TYPE_CHECKING:
    from core.config import Config
    from storage import Store
    from trainer.cleaning import Cleaning

logger = logging.getLogger(__name__)

KEYWORD_ONLY = LEARNABLE_REVIEW_REASONS[0]
HUMAN = "human"
RULE = "label check"  # evidence["rule"] of a re-judged image


@dataclass
class Rejudged:
    """What the re-judging did (``skipped`` says why it did not run)."""

    waiting: int = 0  # keyword_only review images with an out-of-fold prediction
    accepted: int = 0
    rejected: int = 0
    temperature: float | None = None
    calibration_images: int = 0
    skipped: str | None = None

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "waiting": self.waiting,
            "accepted": self.accepted,
            "rejected": self.rejected,
            "calibration_images": self.calibration_images,
            "temperature": self.temperature,
        }
        if self.skipped:
            out["skipped"] = self.skipped
        return out


def rejudge(store: Store, config: Config, cleaning: Cleaning, version: str) -> Rejudged:
    """Decide the label check's keyword_only review images with the evidence rule; moves
    them (accepted / rejected out_of_scope) and returns what happened."""
    result = Rejudged()
    flagged = {f.image_id for f in cleaning.flagged}
    if cleaning.pred_probs is None or not cleaning.items:
        result.skipped = cleaning.skipped or "no out-of-fold predictions"
        return result
    waiting = [
        n
        for n, item in enumerate(cleaning.items)
        if item.status == "review" and item.reason == KEYWORD_ONLY and item.image_id not in flagged
    ]
    result.waiting = len(waiting)
    if not waiting:
        return result
    if config.factory.decision != "evidence":
        result.skipped = f'factory.decision is "{config.factory.decision}", not "evidence"'
        return result
    if cleaning.skipped:
        # Fold models too weak to flag labels are too weak to vouch: their in-scope profile
        # cannot tell out-of-scope photos apart (on bench/loop.py they let 3 of 68 in at 0.90)
        result.skipped = cleaning.skipped
        return result
    classes = cleaning.classes
    probs = cleaning.pred_probs
    human = [n for n, item in enumerate(cleaning.items) if item.label_source == HUMAN]
    result.calibration_images = len(human)
    if len(human) < MIN_VAL_IMAGES:
        result.skipped = (
            f"{len(human)} hand-labelled images in the train and val splits; calibrating the "
            f"fold models needs {MIN_VAL_IMAGES} (pingo import DIR adds them)"
        )
        return result
    truth = np.array([classes.index(cleaning.items[n].label) for n in human])
    temperature = fit_temperature(truth, probs[human])
    result.temperature = round(float(temperature), 4)
    calibrated = apply_temperature(probs, temperature)
    scope = scope_profile(calibrated[human])
    reliability = reliability_from_store(
        store, config.factory.keyword_prior, cleaning.reliability_report()
    )
    # fold models learn with balancing class weights: their implicit class prior is even
    even = [1.0 / len(classes)] * len(classes)
    target = config.factory.target_precision
    moves = []
    for n in waiting:
        item = cleaning.items[n]
        assert item.image_id is not None
        keyword = item.label  # a review image's plan label is its keyword's class
        pi = reliability.of(keyword, item.source)
        post = posterior(calibrated[n][None, :], classes, keyword, pi, even, scope)[0]
        d = decide(post, classes, keyword, target)
        if d.status == "review":
            continue
        evidence = {
            "rule": RULE,
            **evidence_record(calibrated[n], post, classes, keyword, pi, target),
        }
        changes: dict[str, Any] = {
            "label": keyword,
            "label_source": "model",
            "model_version": version,
            "confidence": float(calibrated[n, classes.index(keyword)]),
            "decision_p": round(d.probability, 4),
            "evidence": evidence,
            "reason": OUT_OF_SCOPE if d.status == "rejected" else None,
        }
        expect = {"status": "review", "reason": KEYWORD_ONLY, "keyword_class": keyword}
        moves.append(Move(item.image_id, d.status, changes, expect=expect))
    _, moved = move_all(store, moves)
    for move in moves:
        if move.image_id in moved:
            if move.status == "accepted":
                result.accepted += 1
            else:
                result.rejected += 1
    logger.info(
        "label check: %d of %d keyword_only review image(s) accepted, %d rejected out of "
        "scope at target %.2f (fold models calibrated on %d hand-labelled images, T=%.2f)",
        result.accepted,
        result.waiting,
        result.rejected,
        target,
        len(human),
        temperature,
    )
    return result
