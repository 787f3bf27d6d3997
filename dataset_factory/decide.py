"""Filing a kept crawled image: accepted, review or rejected, with the label and why.

``factory.decision`` chooses the rule:

- ``evidence`` (default): the probability that the image is its keyword class, from the
  keyword's measured reliability and the calibrated model combined (vision.evidence); accepted
  at ``factory.target_precision``, rejected as out of scope at the same certainty, a confident
  other-class guess to review with that guess, the rest to review. Without a model (the first
  batch) the keyword label is all there is, with the keyword's reliability recorded as the
  probability: with ``factory.keyword_only = "accept"`` the image is accepted under it and the
  label check before training (trainer.cleaning) sends the likely wrong ones to review; with
  "review" it waits in review/ (reason keyword_only) unless the keyword alone reaches the
  target, and the trainer still learns from it (train.learn_from_review).
- ``agree``: the model agrees with the keyword and is at least ``factory.confidence`` sure.
- ``keyword``: the keyword label, always.

Images labelled by a person are accepted as they are under every rule. Every filed image
records the probability behind its decision (``decision_p``) and the evidence (``evidence``).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np

from core.names import LEARNABLE_REVIEW_REASONS
from vision.evidence import KeywordReliability, decide, evidence_record, posterior

if TYPE_CHECKING:
    from core.config import Config
    from dataset_factory.classify import Classifier

logger = logging.getLogger(__name__)

Plan = tuple[str, dict[str, Any]]  # (status, column changes)
KEYWORD_ONLY = LEARNABLE_REVIEW_REASONS[0]  # review: only the keyword vouches for the label


class Filing:
    """The decision rule of one factory run, with what it learned once for all images."""

    def __init__(
        self,
        config: Config,
        classifier: Classifier | None,
        reliability: KeywordReliability,
    ):
        self.config = config
        self.rule = config.factory.decision
        self.classifier = classifier
        self.reliability = reliability
        self.train_share = train_share(classifier) if classifier is not None else None

    def file(self, row: dict[str, Any], probs: np.ndarray | None, base: dict[str, Any]) -> Plan:
        """The plan for one kept image: ``probs`` are its calibrated model probabilities
        (None without a model, or for a class the model does not know)."""
        keyword = row["keyword_class"]
        if row["label_source"] == "human":
            return "accepted", {
                **base,
                "label": row["label"] or keyword,
                "label_source": "human",
            }
        if self.rule == "keyword" or probs is None or self.classifier is None:
            pi = self.reliability.of(keyword, row["source"])
            changes = {
                **base,
                "label": keyword,
                "label_source": "keyword",
                "decision_p": round(pi, 4),
                "evidence": {"keyword_reliability": round(pi, 4), "model": None},
            }
            f = self.config.factory
            if self.rule == "evidence" and f.keyword_only == "review" and pi < f.target_precision:
                return "review", {**changes, "reason": KEYWORD_ONLY}
            return "accepted", changes
        classes = self.classifier.classes
        best = int(np.argmax(probs))
        model = {
            "label_source": "model",
            "model_version": self.classifier.version,
        }
        if self.rule == "agree":
            confidence = float(probs[best])
            agrees = classes[best] == keyword and confidence >= self.config.confidence_for(keyword)
            changes = {**base, **model, "label": classes[best], "confidence": confidence}
            if agrees:
                return "accepted", changes
            why = "disagrees" if classes[best] != keyword else "low_confidence"
            return "review", {**changes, "reason": why}
        return self._evidence(row, probs, base, model)

    def _evidence(
        self, row: dict[str, Any], probs: np.ndarray, base: dict[str, Any], model: dict[str, Any]
    ) -> Plan:
        assert self.classifier is not None and self.train_share is not None
        classes = self.classifier.classes
        keyword = row["keyword_class"]
        pi = self.reliability.of(keyword, row["source"])
        post = posterior(
            probs[None, :], classes, keyword, pi, self.train_share, self.classifier.loaded.scope
        )[0]
        d = decide(post, classes, keyword, self.config.factory.target_precision)
        j = classes.index(d.label)
        changes = {
            **base,
            **model,
            "label": d.label,
            "confidence": float(probs[j]),  # the calibrated model alone
            "decision_p": round(d.probability, 4),
            "evidence": evidence_record(
                probs, post, classes, keyword, pi, self.config.factory.target_precision
            ),
        }
        if d.reason is not None:
            changes["reason"] = d.reason
        return d.status, changes


def train_share(classifier: Classifier) -> list[float]:
    """The model's training class shares, as its entry recorded them (equal shares for
    entries written before pingo recorded them, or trained with balancing class weights)."""
    share = classifier.loaded.config.get("train_share")
    classes = classifier.classes
    if isinstance(share, dict) and all(isinstance(share.get(c), int | float) for c in classes):
        return [float(share[c]) for c in classes]
    return [1.0 / len(classes)] * len(classes)
