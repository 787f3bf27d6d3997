"""process_inbox: the factory's one entry point (CLI `pingo factory`, `pingo demo`, scheduler).

Inbox rows are taken in id order, in chunks. For each chunk: hash and decode-check in the
worker pool, decide duplicates one image at a time against the index (which grows as images
are kept, so copies inside one chunk are caught too), classify the survivors in batches,
then apply every decision of the chunk with one ``store.move_many`` and save the index.

Crash safety comes from that order: nothing leaves the inbox before its chunk's moves are
recorded, storage finishes or rolls back half-done moves on the next open, and the index is
reconciled with the DB on load. Rerunning after kill -9 redoes at most one chunk.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable

from dataset_factory.analyse import Analyser, Analysis, Job, Settings
from dataset_factory.classify import Classifier
from dataset_factory.dedupe import Deduper, Kept, index_path, open_index
from dataset_factory.validate import Limits

logger = logging.getLogger(__name__)

CHUNK = 256


@dataclass
class FactorySummary:
    """What one run did, per keyword class: accepted / review / rejected (per reason)."""

    classes: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    processed: int = 0
    replaced: int = 0          # kept images demoted because a better copy arrived
    model_version: str | None = None
    index_size: int = 0

    def count(self, keyword_class: str, outcome: str) -> None:
        self.classes[keyword_class][outcome] += 1

    @property
    def rejected(self) -> Counter:
        total = Counter()
        for c in self.classes.values():
            total.update({k[len("rejected:"):]: v for k, v in c.items()
                          if k.startswith("rejected:")})
        return total

    def totals(self, keyword_class: str) -> dict[str, int]:
        c = self.classes.get(keyword_class, Counter())
        return {"accepted": c["accepted"], "review": c["review"],
                "rejected": sum(v for k, v in c.items() if k.startswith("rejected:")),
                "duplicates": c["rejected:duplicate"]}

    def as_json(self) -> dict[str, Any]:
        return {"processed": self.processed, "replaced": self.replaced,
                "model_version": self.model_version, "index_size": self.index_size,
                "classes": {k: self.totals(k) for k in sorted(self.classes)},
                "rejected": dict(sorted(self.rejected.items()))}


def settings_from(config) -> Settings:
    f = config.factory
    return Settings(method=f.hash, timeout=f.decode_timeout, hard=f.hard_duplicates,
                    limits=Limits(min_size=f.min_size, max_aspect=f.max_aspect,
                                  max_pixels=f.max_pixels))


def process_inbox(config, store, progress: Callable[[int], None] | None = None, *,
                  limit: int | None = None, chunk_size: int = CHUNK) -> FactorySummary:
    """Validate, dedupe, classify and file every inbox image (at most ``limit``)."""
    f = config.factory
    summary = FactorySummary()
    rows = []
    for row in store.iter_images(status="inbox"):
        rows.append(row)
        if limit is not None and len(rows) >= limit:
            break
    settings = settings_from(config)
    with Analyser(settings, f.workers) as analyser:
        index = open_index(store, analyser, f.hash, f.hard_duplicates)
        summary.index_size = len(index)
        if not rows:
            return summary
        model = LazyModel(store.registry)
        summary.model_version = store.registry.current()
        kept_cache: dict[int, Kept] = {}

        def lookup(image_id: int) -> Kept:
            if image_id not in kept_cache:
                r = store.get_image(image_id)
                kept_cache[image_id] = Kept(image_id, r["width"] or 0, r["height"] or 0,
                                            r["label_source"] == "human",
                                            str(store.abspath(r["path"])) if r["path"] else None)
            return kept_cache[image_id]

        deduper = Deduper(index, max_distance=f.max_distance, hard=f.hard_duplicates,
                          hard_distance=f.hard_distance, verify_threshold=f.verify_threshold,
                          lookup=lookup)
        for start in range(0, len(rows), chunk_size):
            chunk = rows[start:start + chunk_size]
            jobs = [Job(r["id"], str(store.abspath(r["path"]))) for r in chunk]
            analyses = list(analyser.run(jobs, progress))
            moves = _decide(config, store, chunk, analyses, deduper, kept_cache, model,
                            summary)
            store.move_many(moves)
            index.save(index_path(store.data_dir, f.hash, f.hard_duplicates),
                       source_count=len(index))
            summary.processed += len(chunk)
        summary.index_size = len(index)
    logger.info("factory: %s", summary.as_json())
    return summary


class LazyModel:
    """The promoted model, loaded (TensorFlow imported) only when an image needs it."""

    def __init__(self, registry):
        self.registry = registry
        self._loaded = False
        self._classifier: Classifier | None = None

    def get(self) -> Classifier | None:
        if not self._loaded:
            self._classifier = Classifier.from_registry(self.registry)
            self._loaded = True
        return self._classifier


def _decide(config, store, chunk, analyses: list[Analysis], deduper: Deduper,
            kept_cache: dict[int, Kept], model: LazyModel,
            summary: FactorySummary) -> list:
    from storage import Move

    rows = {r["id"]: r for r in chunk}
    plans: dict[int, tuple[str, dict]] = {}   # image id -> (status, changes)
    survivors: list[int] = []
    demoted: list[tuple[int, int]] = []       # (kept id from an earlier run, replaced by)
    for a in analyses:
        row = rows[a.image_id]
        if not a.ok:
            logger.debug("image %d rejected: %s %s", a.image_id, a.reason, a.detail)
            plans[a.image_id] = ("rejected", {"reason": a.reason})
            continue
        base = {"phash": a.phash, "hash_method": config.factory.hash,
                "width": a.width, "height": a.height}
        new = Kept(a.image_id, a.width, a.height, row["label_source"] == "human",
                   str(store.abspath(row["path"])))
        verdict = deduper.check(a, new)
        if verdict.duplicate_of is not None:
            plans[a.image_id] = ("rejected", {**base, "reason": "duplicate",
                                              "duplicate_of": verdict.duplicate_of})
            continue
        kept_cache[a.image_id] = new
        plans[a.image_id] = ("keep", base)
        survivors.append(a.image_id)
        if verdict.replaces is not None:
            old = verdict.replaces
            if old in plans:  # kept earlier in this chunk, not moved yet
                survivors.remove(old)
                plans[old] = ("rejected", {**plans[old][1], "reason": "duplicate",
                                           "duplicate_of": a.image_id})
            else:
                demoted.append((old, a.image_id))
            kept_cache.pop(old, None)

    _label(config, store, rows, survivors, plans, model)
    moves = []
    for image_id, (status, changes) in plans.items():
        moves.append(Move(image_id, status, changes))
        outcome = status if status != "rejected" else f"rejected:{changes['reason']}"
        summary.count(rows[image_id]["keyword_class"], outcome)
    for old, new_id in demoted:
        moves.append(Move(old, "rejected", {"reason": "duplicate", "duplicate_of": new_id}))
        summary.replaced += 1
        logger.info("image %d replaced by its larger copy %d", old, new_id)
    return moves


def _label(config, store, rows, survivors: list[int], plans, model: LazyModel) -> None:
    """Turn each survivor's "keep" plan into accepted or review, with its label source."""
    need = [i for i in survivors if rows[i]["label_source"] != "human"]
    classifier = model.get() if need and model.registry.current() else None
    by_model = [i for i in need
                if classifier is not None and rows[i]["keyword_class"] in classifier.classes]
    predictions = dict(zip(by_model, classifier.predict(
        [str(store.abspath(rows[i]["path"])) for i in by_model],
        config.factory.batch_size))) if by_model else {}
    for image_id in survivors:
        row, base = rows[image_id], plans[image_id][1]
        if row["label_source"] == "human":
            plans[image_id] = ("accepted", {**base, "label": row["label"] or row["keyword_class"],
                                            "label_source": "human"})
            continue
        pred = predictions.get(image_id)
        if pred is None:  # no model yet, or a class the model has never seen
            plans[image_id] = ("accepted", {**base, "label": row["keyword_class"],
                                            "label_source": "keyword"})
            continue
        keyword = row["keyword_class"]
        model = {"label": pred.label, "label_source": "model", "confidence": pred.confidence,
                 "model_version": classifier.version}
        if pred.label == keyword and pred.confidence >= config.confidence_for(keyword):
            plans[image_id] = ("accepted", {**base, **model})
        else:
            why = "disagrees" if pred.label != keyword else "low_confidence"
            plans[image_id] = ("review", {**base, **model, "reason": why})
