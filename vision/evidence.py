"""How likely a crawled image is to be what its keyword says: keyword reliability and the
calibrated model combined by Bayes' rule.

A search for "cat" returns cats most of the time, not always. How often, per class and source,
is the **keyword reliability** pi: a Beta posterior that starts at ``factory.keyword_prior``
(worth ``PRIOR_STRENGTH`` images) and learns from evidence: people's review decisions on crawled
images (accepted under the keyword class: right; relabelled or rejected: wrong) and the label
check before training (keyword-labelled images it kept: right; flagged: wrong). A source's
estimate starts from its class's, so a new source borrows what the class has shown.

The model's calibrated probabilities p_j(x) were learned on class frequencies r_j (the training
split), so p_j / r_j is, up to a constant, how much more likely the image is under class j than
on average (the label-shift correction). The keyword gives the prior: pi for the keyword class
k, the rest (1 - pi) shared between the other classes and "out of scope" (none of the classes;
``OUT_OF_SCOPE_SHARE`` of the wrong results). An out-of-scope image has no output of its own
unless the model learned the built-in "none" class; without it, its likelihood ratio comes
from how sure the model is (``out_of_scope_ratio``): how often held-out in-scope images get
that top probability (measured by the trainer, ``scope_profile``) against an out-of-scope
image's top probability spread evenly over [1/K, 1] (no out-of-scope examples to measure it
on). A model that is rarely very sure of in-scope images cannot rule out that a very sure
image is out of scope; one that usually is, can. The posterior is

    P(y = j | x, keyword k)  ~  prior_j * p_j(x) / r_j,

so a weak model (p close to r everywhere) leaves the keyword's pi nearly untouched, and a
strong one can overrule it. The factory accepts an image when P(y = k) reaches
``factory.target_precision``; the trainer measures, on its held-out test split, what precision
and coverage that rule gives per class (``validate``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from core.names import LEARNABLE_REVIEW_REASONS, NONE_CLASS

if TYPE_CHECKING:
    from storage import Store

logger = logging.getLogger(__name__)

CLEANING = "cleaning.json"  # a registry entry's label check (trainer.cleaning)
PRIOR_STRENGTH = 10.0  # the keyword prior counts as this many judged images
OUT_OF_SCOPE_SHARE = 0.5  # of a keyword's wrong results, the share that is none of the classes
OUT_OF_SCOPE = "out_of_scope"  # the posterior's extra column, after the model's classes
# Bins of the calibrated top probability: how sure the model is of an in-scope image is
# measured on held-out images per bin (``scope_profile``).
SCOPE_EDGES = (0.0, 0.5, 0.7, 0.9, 0.97, 0.99, 1.0)


@dataclass(frozen=True)
class Tally:
    """Judged crawled images of one class (and source): right and wrong keyword labels."""

    right: float = 0.0
    wrong: float = 0.0

    def __add__(self, other: Tally) -> Tally:
        return Tally(self.right + other.right, self.wrong + other.wrong)

    @property
    def judged(self) -> float:
        return self.right + self.wrong


def beta_mean(prior: float, strength: float, tally: Tally) -> float:
    """Posterior mean of a Beta(prior * strength, (1 - prior) * strength) after ``tally``."""
    return (prior * strength + tally.right) / (strength + tally.judged)


class KeywordReliability:
    """pi per class and source, from ``tallies`` {(class, source): Tally}."""

    def __init__(
        self,
        prior: float,
        tallies: Mapping[tuple[str, str | None], Tally],
        strength: float = PRIOR_STRENGTH,
    ):
        self.prior = prior
        self.strength = strength
        self.tallies = dict(tallies)
        self.by_class: dict[str, Tally] = {}
        for (cls, _source), t in self.tallies.items():
            self.by_class[cls] = self.by_class.get(cls, Tally()) + t

    def of_class(self, cls: str) -> float:
        return beta_mean(self.prior, self.strength, self.by_class.get(cls, Tally()))

    def of(self, cls: str, source: str | None) -> float:
        """The class's estimate, refined by what this source has shown."""
        own = self.tallies.get((cls, source))
        base = self.of_class(cls)
        if own is None or own.judged == 0 or len(self._sources(cls)) < 2:
            return base
        return beta_mean(base, self.strength, own)

    def _sources(self, cls: str) -> set[str | None]:
        return {s for (c, s), t in self.tallies.items() if c == cls and t.judged}

    def as_json(self) -> dict[str, dict[str, float]]:
        classes = sorted(self.by_class)
        return {
            c: {
                "reliability": round(self.of_class(c), 4),
                "judged": self.by_class[c].judged,
                "wrong": self.by_class[c].wrong,
            }
            for c in classes
        }


def cleaning_tallies(report: Mapping[str, Any] | None) -> dict[tuple[str, str | None], Tally]:
    """What a label check before training showed, per class and source (its cleaning.json
    "counts"): keyword-labelled images it kept count as right, flagged ones as wrong. A check
    that was skipped, or whose fold models were too weak to flag anything, shows nothing."""
    out: dict[tuple[str, str | None], Tally] = {}
    if not report or report.get("skipped"):  # no check, or too weak a check to judge labels
        return out
    for cls, sources in (report.get("counts") or {}).items():
        for source, n in sources.items():
            flagged = float(n.get("flagged", 0))
            out[(cls, source)] = Tally(float(n.get("checked", 0)) - flagged, flagged)
    return out


def read_cleaning(folder: Path | None) -> dict[str, Any] | None:
    """A registry entry's cleaning.json, or None (no entry, no check, or unreadable)."""
    if folder is None:
        return None
    try:
        report = json.loads((Path(folder) / CLEANING).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        logger.warning("ignoring %s in %s: %s", CLEANING, folder, exc)
        return None
    return report if isinstance(report, dict) else None


def reliability_from_store(
    store: Store, prior: float, cleaning: Mapping[str, Any] | None = None
) -> KeywordReliability:
    """Keyword reliability from people's review decisions in ``store`` and a label check's
    report (default: the promoted model's cleaning.json)."""
    tallies: dict[tuple[str, str | None], Tally] = {
        key: Tally(float(right), float(wrong))
        for key, (right, wrong) in store.keyword_judgements().items()
    }
    if cleaning is None:
        cleaning = read_cleaning(store.registry.current_path())
    for key, t in cleaning_tallies(cleaning).items():
        tallies[key] = tallies.get(key, Tally()) + t
    return KeywordReliability(prior, tallies)


def scope_profile(probs: np.ndarray) -> dict[str, Any]:
    """How sure a model is of held-out in-scope images: counts of their calibrated top
    probability per SCOPE_EDGES bin."""
    top = np.asarray(probs, dtype=np.float64).max(axis=1) if len(probs) else np.zeros(0)
    counts, _ = np.histogram(top, bins=np.asarray(SCOPE_EDGES))
    return {"edges": list(SCOPE_EDGES), "counts": [int(c) for c in counts]}


def out_of_scope_ratio(probs: np.ndarray, profile: Mapping[str, Any] | None) -> np.ndarray:
    """(N,) likelihood ratio of "out of scope" to "in scope" for images with calibrated
    ``probs`` (N, K): an out-of-scope image's top probability taken as even over [1/K, 1],
    an in-scope one's as measured (``profile``, add-half smoothed). 1 without a profile."""
    p = np.asarray(probs, dtype=np.float64)
    if not profile or not sum(profile.get("counts", [])):
        return np.ones(len(p))
    edges = np.asarray(profile["edges"], dtype=np.float64)
    counts = np.asarray(profile["counts"], dtype=np.float64) + 0.5
    widths = np.diff(edges)
    inside = counts / counts.sum() / widths
    low = 1.0 / p.shape[1]
    overlap = np.clip(np.minimum(edges[1:], 1.0) - np.maximum(edges[:-1], low), 0.0, None)
    outside = overlap / (1.0 - low) / widths
    # bins as np.histogram's: [a, b), the last one closed
    which = np.clip(np.searchsorted(edges, p.max(axis=1), side="right") - 1, 0, len(widths) - 1)
    return outside[which] / inside[which]


def posterior(
    probs: np.ndarray,
    classes: Sequence[str],
    keyword: str,
    reliability: float,
    train_share: Sequence[float],
    scope: Mapping[str, Any] | None = None,
) -> np.ndarray:
    """(N, len(classes) + 1) posterior over the model's classes and out of scope (last column)
    for images crawled for ``keyword`` (one of ``classes``), given their calibrated ``probs``
    (N, len(classes)), the keyword's ``reliability`` and the model's training class shares.
    A model class named "none" is out of scope too: its mass goes to the last column."""
    p = np.asarray(probs, dtype=np.float64)
    r = np.clip(np.asarray(train_share, dtype=np.float64), 1e-6, None)
    r = r / r.sum()
    k = list(classes).index(keyword)
    none = list(classes).index(NONE_CLASS) if NONE_CLASS in classes else None
    others = [j for j in range(len(classes)) if j != k and j != none]
    wrong = 1.0 - reliability
    share_other = (1.0 - OUT_OF_SCOPE_SHARE) if others else 0.0
    prior = np.zeros(len(classes) + 1)
    prior[k] = reliability
    for j in others:
        prior[j] = wrong * share_other / len(others)
    prior[-1] = wrong * (1.0 - share_other)
    ratio = np.ones((len(p), len(classes) + 1))
    ratio[:, : len(classes)] = p / r
    ratio[:, -1] = out_of_scope_ratio(p, scope)
    if none is not None:
        ratio[:, -1] = ratio[:, none]
        ratio[:, none] = 0.0
    joint = ratio * prior
    total = joint.sum(axis=1, keepdims=True)
    total[total == 0] = 1.0
    return joint / total


def evidence_record(
    probs: np.ndarray,
    post: np.ndarray,
    classes: Sequence[str],
    keyword: str,
    reliability: float,
    target: float,
) -> dict[str, Any]:
    """What a decision rested on, as stored in an image's ``evidence`` column: the keyword's
    reliability, the calibrated model's probability of the keyword class and its best guess,
    the posterior probability of out of scope, and the target."""
    return {
        "keyword_reliability": round(reliability, 4),
        "model_p": round(float(probs[list(classes).index(keyword)]), 4),
        "model_guess": classes[int(np.argmax(probs))],
        "out_of_scope_p": round(float(post[-1]), 4),
        "target": target,
    }


@dataclass(frozen=True)
class Decision:
    """Where one image goes, with the probability behind it."""

    status: str  # accepted / review / rejected
    label: str  # the class it is filed under (the best guess in review)
    probability: float  # P(label is right) (for out of scope: P(none of the classes))
    reason: str | None = None  # review / rejection reason


def decide(post: np.ndarray, classes: Sequence[str], keyword: str, target: float) -> Decision:
    """One image's decision from its posterior row (``posterior``): accept the keyword class
    at ``target``; reject as out of scope at ``target``; a confident other-class guess goes to
    review with that guess; anything in between goes to review under the keyword class."""
    k = list(classes).index(keyword)
    if post[k] >= target:
        return Decision("accepted", keyword, float(post[k]))
    if post[-1] >= target:
        return Decision("rejected", keyword, float(post[-1]), OUT_OF_SCOPE)
    best = int(np.argmax(post))
    if best == len(classes):
        return Decision("review", keyword, float(post[k]), "maybe_out_of_scope")
    if best != k and post[best] >= target:
        return Decision("review", classes[best], float(post[best]), "other_class")
    if best != k:
        return Decision("review", classes[best], float(post[best]), "disagrees")
    return Decision("review", keyword, float(post[k]), LEARNABLE_REVIEW_REASONS[1])


def validate(
    probs: np.ndarray,
    truth: Sequence[int] | np.ndarray,
    classes: Sequence[str],
    reliability: Mapping[str, float],
    train_share: Sequence[float],
    target: float,
    scope: Mapping[str, Any] | None = None,
) -> dict[str, dict[str, float | int | None]]:
    """Per class: the precision and coverage the decision rule would give on held-out images
    (``probs`` calibrated, ``truth`` class indices) crawled for that class with its
    ``reliability``: the right images are that class's test images, the wrong ones the other
    classes' (weighted so they make up 1 - reliability of the results). Coverage: share of the
    right images accepted. Classes without test images are left out."""
    y = np.asarray(truth)
    out: dict[str, dict[str, float | int | None]] = {}
    for k, name in enumerate(classes):
        if name == NONE_CLASS or not (y == k).any():
            continue
        pi = reliability.get(name, 0.5)
        post = posterior(probs, classes, name, pi, train_share, scope)
        accepted = post[:, k] >= target
        coverage = float(accepted[y == k].mean())
        false_rate = float(accepted[y != k].mean()) if (y != k).any() else 0.0
        hit, miss = pi * coverage, (1.0 - pi) * false_rate
        out[name] = {
            "precision": round(hit / (hit + miss), 4) if hit + miss > 0 else None,
            "coverage": round(coverage, 4),
            "keyword_reliability": round(pi, 4),
            "test_images": int((y == k).sum()),
        }
    return out
