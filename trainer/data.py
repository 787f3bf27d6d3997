"""What the trainer learns from: the labelled images, their split, and the tf.data pipeline.

Images come from the store (accepted rows, i.e. ``dataset/<class>/``) or from any folder laid
out as ``<root>/<class>/<image>``. The pipeline decodes and resizes each file once
(vision.pixels.image_dataset, as the factory does when it classifies, under the same
factory.max_pixels), caches the small uint8 result (in memory, or in a file under data_dir
when it would pass train.cache_memory_mb: trainer.cache), then shuffles, batches, augments
(training only, after the cache so every epoch sees new variants) and prefetches, all with
AUTOTUNE parallelism.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from core.names import LEARNABLE_REVIEW_REASONS
from trainer.errors import NotEnoughDataError
from trainer.split import SPLITS, assign_split, group_key

if TYPE_CHECKING:
    from storage import Store

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Item:
    path: str  # absolute file path
    label: str
    sha256: str  # of the file's bytes
    group: str  # split key (perceptual hash or content hash)
    split: str  # train / val / test
    # From the store (None for a folder plan): which row it is, who gave its label (keyword,
    # model or human) and which search source it came from; the label check needs them.
    # None of them is part of the manifest.
    image_id: int | None = None
    label_source: str | None = None
    source: str | None = None
    # "review": a review image learned from under its keyword's class (train.learn_from_review;
    # never in the test split). It is part of the manifest like any image.
    status: str = "accepted"
    reason: str | None = None  # a review image's reason (e.g. keyword_only)


@dataclass(frozen=True)
class DatasetPlan:
    """Every usable image with its split, and the class order of the model's outputs."""

    classes: list[str]
    items: list[Item]

    def split(self, name: str) -> list[Item]:
        return [i for i in self.items if i.split == name]

    def counts(self) -> dict[str, dict[str, int]]:
        """split -> class -> images."""
        out = {s: {c: 0 for c in self.classes} for s in SPLITS}
        for i in self.items:
            out[i.split][i.label] += 1
        return out

    def manifest(self) -> dict:
        """The content hashes per split: enough to rebuild exactly this dataset."""
        splits = {
            s: sorted(f"{i.label}/{i.sha256}" for i in self.items if i.split == s) for s in SPLITS
        }
        return {"classes": self.classes, "counts": self.counts(), "splits": splits}

    def manifest_hash(self) -> str:
        return manifest_hash(self.classes, ((i.sha256, i.label, i.group) for i in self.items))


def manifest_hash(classes: Sequence[str], rows: Iterable[tuple[str, str, str]]) -> str:
    """One hash over the classes and (sha256, label, group) of every image, order-free."""
    body = json.dumps(
        {"classes": list(classes), "images": sorted(map(list, rows))}, separators=(",", ":")
    )
    return hashlib.sha256(body.encode("utf-8")).hexdigest()


def plan_from_store(
    store: Store,
    classes: Sequence[str],
    val_fraction: float,
    test_fraction: float,
    learn_from_review: bool = False,
) -> DatasetPlan:
    """Accepted images whose label is one of ``classes`` (files under dataset/<class>/); with
    ``learn_from_review``, also crawled review images that nothing contradicted with confidence
    (core.names.LEARNABLE_REVIEW_REASONS), under their keyword's class, in the train and val
    splits: the test split judges models and holds accepted labels only."""
    wanted = set(classes)
    items: list = []
    skipped: Counter[str] = Counter()
    missing = 0
    rows = store.iter_images(status="accepted")
    if learn_from_review:
        rows = itertools.chain(rows, learnable_review_rows(store))
    for row in rows:
        if row["label"] not in wanted:
            skipped[row["label"]] += 1
            continue
        path = store.abspath(row["path"])
        if not path.is_file():
            missing += 1
            continue
        key = group_key(row["sha256"], row["phash"], row["hash_method"])
        split = assign_split(key, val_fraction, test_fraction)
        weak = row["status"] == "review"
        if weak and split == "test":  # the test split judges models: accepted labels only
            continue
        items.append(
            Item(
                str(path),
                row["label"],
                row["sha256"],
                key,
                split,
                image_id=row["id"],
                # a review image's label is its keyword's, whoever filed it: checkable as such
                label_source="keyword" if weak else row["label_source"],
                source=row["source"],
                status=row["status"],
                reason=row["reason"] if weak else None,
            )
        )
    if skipped:
        logger.warning("ignoring accepted images of classes not in the config: %s", dict(skipped))
    if missing:
        logger.warning(
            "%d accepted images have no file on disk; run any pingo command to repair the store",
            missing,
        )
    return DatasetPlan(sorted(classes), items)


def learnable_review_rows(store: Store) -> Iterator[dict]:
    """Review rows of crawled images that nothing contradicted with confidence, labelled with
    their keyword's class (whatever the model guessed)."""
    for row in store.iter_images(status="review"):
        if row["reason"] in LEARNABLE_REVIEW_REASONS and row["source"] != "import":
            yield {**row, "label": row["keyword_class"]}


def plan_from_folder(
    root: str | Path,
    val_fraction: float,
    test_fraction: float,
    classes: Sequence[str] | None = None,
) -> DatasetPlan:
    """A ``<root>/<class>/<image>`` folder (the image_dataset_from_directory layout)."""
    root = Path(root)
    if classes is None:
        classes = sorted(
            p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")
        )
    items = []
    for label in classes:
        for path in sorted((root / label).iterdir()):
            if path.name.startswith(".") or not path.is_file():
                continue
            sha = hashlib.sha256(path.read_bytes()).hexdigest()
            key = group_key(sha)
            items.append(
                Item(
                    str(path.resolve()),
                    label,
                    sha,
                    key,
                    assign_split(key, val_fraction, test_fraction),
                )
            )
    return DatasetPlan(sorted(classes), items)


def check_enough(plan: DatasetPlan) -> None:
    """Refuse to train when a class has no training image or a split is empty."""
    if len(plan.classes) < 2:
        raise NotEnoughDataError(f"need at least 2 classes to train, have {plan.classes}")
    counts = plan.counts()
    empty = [c for c, n in counts["train"].items() if n == 0]
    if empty:
        raise NotEnoughDataError(
            f"no training images for class(es) {', '.join(empty)}; images per split: {counts}"
        )
    for split in ("val", "test"):
        if sum(counts[split].values()) == 0:
            raise NotEnoughDataError(
                f"the {split} split is empty ({len(plan.items)} images in all): add images "
                f"or raise train.{split}_fraction"
            )


# ---- tf.data ------------------------------------------------------------------------------


def augmenter(seed: int):
    """Random flip, rotation, zoom and contrast; applied to training batches only."""
    import keras

    return keras.Sequential(
        [
            keras.layers.RandomFlip("horizontal", seed=seed),
            keras.layers.RandomRotation(0.1, fill_mode="nearest", seed=seed + 1),
            keras.layers.RandomZoom(0.1, fill_mode="nearest", seed=seed + 2),
            keras.layers.RandomContrast(0.1, seed=seed + 3),
        ],
        name="augment",
    )


def make_dataset(
    items: Sequence[Item],
    classes: Sequence[str],
    image_size: int,
    batch_size: int,
    *,
    training: bool,
    augment: bool = True,
    seed: int = 0,
    cache: bool | str = True,
    max_pixels: int | None = None,
):
    """(float32 0..255 images, int labels) batches; undecodable files are dropped, logged.

    ``cache``: True caches the decoded images in memory, a path in files with that prefix
    (trainer.cache decides which), False not at all. ``max_pixels``: factory.max_pixels.
    """
    import tensorflow as tf

    from vision.pixels import image_dataset

    autotune = tf.data.AUTOTUNE
    index = {c: i for i, c in enumerate(classes)}
    ds = image_dataset(
        [i.path for i in items],
        image_size,
        max_pixels,
        labels=[index[i.label] for i in items],
        unreadable="skip",
    )
    if isinstance(cache, str):
        ds = ds.cache(cache)
    elif cache:
        ds = ds.cache()
    if training:
        ds = ds.shuffle(max(len(items), 1), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    if training and augment:
        aug = augmenter(seed)
        ds = ds.map(
            lambda x, y: (aug(tf.cast(x, tf.float32), training=True), y),
            num_parallel_calls=autotune,
        )
    else:
        ds = ds.map(lambda x, y: (tf.cast(x, tf.float32), y), num_parallel_calls=autotune)
    options = tf.data.Options()
    # Several workers: each takes every n-th element (the files are one tensor, not shards).
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(options).prefetch(autotune)


def class_weights(plan: DatasetPlan) -> dict[int, float] | None:
    """Inverse-frequency weights over the training split, or None when balanced (<10% off)."""
    counts = plan.counts()["train"]
    n = [counts[c] for c in plan.classes]
    if min(n) == 0 or max(n) <= 1.1 * min(n):
        return None
    total = sum(n)
    return {i: total / (len(n) * k) for i, k in enumerate(n)}
