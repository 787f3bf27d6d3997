"""The label check before training: keyword labels that the images themselves contradict.

Keyword labels (the class an image was crawled for) are often wrong. Before a model learns
from them, every image of the train and validation splits gets an out-of-fold prediction: the
images are cut into ``train.clean_folds`` folds (stratified by label, grouped by split key so
near duplicates never sit on both sides), and each fold is predicted by a small model trained
on the other folds, with the project's own architecture and pixels (vision.pixels, decoded
once). cleanlab's ``find_label_issues`` then picks the images whose given label those
predictions contradict. Only keyword-labelled images may be flagged: a person's label and a
model-accepted label are never moved. Flagged images go to review/ (reason ``label_issue``,
the out-of-fold best guess as label) through storage's crash-safe moves, and the run trains on
the store's accepted images re-read without them. The test split is left alone: it stays the
held-out judge of promotion, and cleaning it with a model would grade the model by itself.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from core.config import Config, TrainConfig
from storage import Move, atomic_write
from trainer import data
from trainer.moves import move_all
from trainer.rejudge import Rejudged, rejudge
from trainer.split import unit_interval

if TYPE_CHECKING:
    from storage import Store

logger = logging.getLogger(__name__)

CLEANING = "cleaning.json"  # in the registry entry of the run that cleaned
REASON = "label_issue"  # review/ reason of a flagged image
KEYWORD = "keyword"
# Each fold's model is cheap: at most this many epochs, and, once there are enough images
# for a steady val_loss, early stopping on a small part of its own training images (picked by
# split key) after PATIENCE epochs without improvement; fewer images train all EPOCHS.
EPOCHS = 10
PATIENCE = 3
STOP_SHARE = 0.1
MIN_STOP_IMAGES = 50
# Fold models that tell the classes apart this little (balanced accuracy against the given
# labels, as a share of the way from chance to perfect) would flag at random: no flags then.
# At 0.25 the demo's fold models (balanced accuracy 0.52 on 3 classes of clean drawn shapes)
# flagged 48 of 129 right images; half the way keeps such guesses out.
MIN_SKILL = 0.5
# A class needs this many images per fold, or the check is skipped (too few to judge).
MIN_PER_FOLD = 2


@dataclass(frozen=True)
class Flag:
    """One keyword-labelled image whose label the out-of-fold prediction contradicts."""

    image_id: int
    path: str  # absolute path when checked (dataset/<given>/...)
    given: str
    suggested: str  # argmax of the out-of-fold probabilities
    score: float  # suspicion: 1 - out-of-fold probability of the given label
    confidence: float  # out-of-fold probability of the suggested label
    source: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "image_id": self.image_id,
            "given": self.given,
            "suggested": self.suggested,
            "score": round(self.score, 6),
            "confidence": round(self.confidence, 6),
            "source": self.source,
        }


@dataclass
class Cleaning:
    """What the label check found (nothing is moved yet; see ``apply``)."""

    folds: int
    classes: list[str]
    flagged: list[Flag] = field(default_factory=list)  # most suspicious first
    # {"<class>": {"<source>": {"checked": n, "flagged": m}}}, keyword-labelled images only
    counts: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)
    seconds: float = 0.0
    skipped: str | None = None  # why the check did not run or flagged nothing
    items: list[data.Item] = field(default_factory=list)  # the rows of pred_probs
    pred_probs: np.ndarray | None = None  # out-of-fold probabilities, columns = classes
    unreadable: int = 0  # images left out because they no longer decode
    balanced_accuracy: float | None = None  # of the out-of-fold predictions, given labels
    rejudged: Rejudged | None = None  # keyword_only review images decided (trainer.rejudge)

    @property
    def checked(self) -> int:
        return sum(c["checked"] for by_source in self.counts.values() for c in by_source.values())

    def reliability_report(self) -> dict[str, Any]:
        """The part of cleaning.json the keyword reliability reads (vision.evidence)."""
        return {"skipped": self.skipped, "counts": self.counts}

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"checked": self.checked, "flagged": len(self.flagged)}
        if self.skipped:
            out["skipped"] = self.skipped
        if self.rejudged is not None and self.rejudged.waiting:
            out["keyword_only"] = self.rejudged.summary()
        return out


def _checkable(item: data.Item) -> bool:
    return item.label_source == KEYWORD and item.image_id is not None


def _why_not(classes: list[str], items: list[data.Item], folds: int) -> str | None:
    if not any(_checkable(i) for i in items):
        return "no keyword-labelled image in the train and val splits"
    per_class = Counter(i.label for i in items)
    few = {c: per_class[c] for c in classes if per_class[c] < MIN_PER_FOLD * folds}
    if few:
        return (
            f"{len(few)} class(es) have fewer than {MIN_PER_FOLD * folds} train+val images "
            f"for {folds} folds: {few}"
        )
    if len({i.group for i in items}) < folds:
        return f"fewer distinct images than {folds} folds"
    return None


def find_label_issues(
    plan: data.DatasetPlan,
    tc: TrainConfig,
    *,
    max_pixels: int | None = None,
    cache_dir: Path | None = None,
    progress: bool = False,
) -> Cleaning:
    """Out-of-fold probabilities for the plan's train+val images with ``tc.clean_folds``
    folds, and the keyword-labelled images cleanlab flags (a Cleaning; nothing is moved)."""
    started = time.time()
    folds = tc.clean_folds
    classes = list(plan.classes)
    pool = [i for i in plan.items if i.split in ("train", "val")]
    why = _why_not(classes, pool, folds)
    if why:
        logger.info("label check skipped: %s", why)
        return Cleaning(folds, classes, skipped=why, seconds=time.time() - started)

    from trainer.cache import cache_key, dataset_cache

    key = "clean-" + cache_key([i.path for i in pool], tc.image_size, max_pixels or 0)
    with dataset_cache(len(pool), tc.image_size, tc.cache_memory_mb, cache_dir, key) as cache:
        pixels, ok = _decode(pool, tc.image_size, max_pixels, cache.folder)
        items = [i for i, good in zip(pool, ok) if good]
        rows = np.flatnonzero(ok)
        why = _why_not(classes, items, folds)
        if why:
            logger.info("label check skipped: %s", why)
            return Cleaning(folds, classes, skipped=why, seconds=time.time() - started)
        probs = _out_of_fold(pixels, rows, items, classes, tc, progress)
        del pixels  # a file-backed array must be closed before its folder is removed

    labels = np.array([classes.index(i.label) for i in items])
    skill = _balanced_accuracy(labels, probs)
    chance = 1 / len(classes)
    flagged: list[Flag] = []
    if skill < chance + MIN_SKILL * (1 - chance):
        why = (
            f"the fold models are too weak to judge labels (balanced accuracy {skill:.2f}, "
            f"chance {chance:.2f}); more images or epochs help"
        )
        logger.warning("label check: no image flagged: %s", why)
    else:
        flagged = _flags(items, labels, probs, classes)
    counts: dict[str, dict[str, dict[str, int]]] = {}
    for i in items:
        if _checkable(i):
            c = counts.setdefault(i.label, {}).setdefault(
                i.source or "unknown", {"checked": 0, "flagged": 0}
            )
            c["checked"] += 1
    for f in flagged:
        counts[f.given][f.source or "unknown"]["flagged"] += 1
    return Cleaning(
        folds,
        classes,
        flagged,
        counts,
        time.time() - started,
        items=items,
        pred_probs=probs,
        unreadable=len(pool) - len(items),
        balanced_accuracy=skill,
        skipped=why,
    )


def _balanced_accuracy(labels: np.ndarray, probs: np.ndarray) -> float:
    """Mean over classes of the share of its images whose out-of-fold argmax is the label."""
    guess = probs.argmax(axis=1)
    recalls = [float((guess[labels == c] == c).mean()) for c in np.unique(labels)]
    return float(np.mean(recalls))


def _decode(pool: list[data.Item], size: int, max_pixels: int | None, folder: Path | None):
    """(uint8 (n, size, size, 3) pixels, bool readable per item): decoded once through
    vision.pixels, in memory or (past train.cache_memory_mb) in a file under ``folder``."""
    from vision.pixels import image_dataset

    shape = (len(pool), size, size, 3)
    if folder is None:
        pixels = np.zeros(shape, np.uint8)
    else:
        pixels = np.lib.format.open_memmap(folder / "pixels.npy", "w+", np.uint8, shape)
    ok = np.zeros(len(pool), bool)
    # The labels carry each image's index, so dropped (undecodable) files leave a gap.
    ds = image_dataset(
        [i.path for i in pool], size, max_pixels, labels=range(len(pool)), unreadable="skip"
    )
    for batch, index in ds.batch(256).as_numpy_iterator():
        pixels[index] = batch
        ok[index] = True
    if not ok.all():
        logger.warning("label check: %d image(s) no longer decode; left out", int((~ok).sum()))
    return pixels, ok


def _out_of_fold(
    pixels: np.ndarray,
    rows: np.ndarray,
    items: list[data.Item],
    classes: list[str],
    tc: TrainConfig,
    progress: bool,
) -> np.ndarray:
    """(len(items), classes) probabilities, each row from the fold model that did not see it."""
    from sklearn.model_selection import StratifiedGroupKFold
    from tqdm import tqdm

    labels = np.array([classes.index(i.label) for i in items])
    groups = [i.group for i in items]
    splitter = StratifiedGroupKFold(
        n_splits=tc.clean_folds, shuffle=True, random_state=tc.seed % 2**32
    )
    probs = np.zeros((len(items), len(classes)), np.float32)
    # The early-stopping share is picked by split key (salted apart from the split itself).
    stop = np.array([unit_interval(f"clean-stop:{g}") < STOP_SHARE for g in groups])
    with tqdm(total=tc.clean_folds, desc="label check", unit="fold", disable=not progress) as bar:
        for fold, (train, held) in enumerate(splitter.split(rows, labels, groups)):
            probs[held] = _fold_model_probs(
                pixels,
                rows,
                labels,
                train[~stop[train]],
                train[stop[train]],
                held,
                classes,
                tc,
                fold,
            )
            bar.update()
    return probs


def _fold_model_probs(
    pixels: np.ndarray,
    rows: np.ndarray,
    labels: np.ndarray,
    fit_idx: np.ndarray,
    stop_idx: np.ndarray,
    held_idx: np.ndarray,
    classes: list[str],
    tc: TrainConfig,
    fold: int,
) -> np.ndarray:
    import keras

    from trainer.models import BACKBONE_LAYER, NO_WEIGHTS, build_model

    keras.utils.set_random_seed(tc.seed + fold)
    k = len(classes)
    if len(stop_idx) < MIN_STOP_IMAGES or len(np.unique(labels[fit_idx])) < k:
        fit_idx, stop_idx = np.concatenate([fit_idx, stop_idx]), stop_idx[:0]
    model = build_model(tc.arch, tc.image_size, k, tc.weights)
    if tc.weights != NO_WEIGHTS:  # the head learns on the backbone's features, as in fit
        model.get_layer(BACKBONE_LAYER).trainable = False
    model.compile(
        optimizer=keras.optimizers.Adam(tc.learning_rate),
        loss="sparse_categorical_crossentropy",
    )
    callbacks = []
    validation = None
    if len(stop_idx):
        validation = _batches(pixels, rows, labels, stop_idx, tc.batch_size)
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor="val_loss", patience=min(tc.patience, PATIENCE), restore_best_weights=True
            )
        )
    model.fit(
        _batches(pixels, rows, labels, fit_idx, tc.batch_size, shuffle=True, seed=tc.seed + fold),
        validation_data=validation,
        epochs=min(tc.epochs, EPOCHS),
        class_weight=_class_weights(labels[fit_idx], k),
        callbacks=callbacks,
        shuffle=False,  # the dataset shuffles itself
        verbose=0,
    )
    out = model.predict(_batches(pixels, rows, None, held_idx, tc.batch_size), verbose=0)
    keras.backend.clear_session()  # each fold's graph is garbage once predicted
    return np.asarray(out, np.float32)


def _batches(
    pixels: np.ndarray,
    rows: np.ndarray,
    labels: np.ndarray | None,
    idx: np.ndarray,
    batch: int,
    *,
    shuffle: bool = False,
    seed: int = 0,
):
    """float32 0..255 batches of the items ``idx`` (with labels when given), read from the
    decoded array (``rows`` maps an item to its row there)."""
    import tensorflow as tf

    size = pixels.shape[1]

    def gather(i: np.ndarray) -> np.ndarray:
        at = rows[i]
        order = np.argsort(at)  # a file-backed array reads fastest in order
        out = np.empty((len(at), size, size, 3), np.uint8)
        out[order] = pixels[at[order]]
        return out

    def load(i):
        x = tf.numpy_function(gather, [i], tf.uint8, stateful=False)
        x = tf.cast(tf.ensure_shape(x, (None, size, size, 3)), tf.float32)
        return x if labels is None else (x, tf.gather(tf.constant(labels), i))

    ds = tf.data.Dataset.from_tensor_slices(idx.astype(np.int64))
    if shuffle:
        ds = ds.shuffle(max(len(idx), 1), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch).map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)


def _class_weights(labels: np.ndarray, k: int) -> dict[int, float] | None:
    """Inverse-frequency weights as in training (data.class_weights), or None if balanced."""
    n = np.bincount(labels, minlength=k)
    if n.min() == 0 or n.max() <= 1.1 * n.min():
        return None
    return {i: float(n.sum() / (k * c)) for i, c in enumerate(n)}


def _flags(
    items: list[data.Item], labels: np.ndarray, probs: np.ndarray, classes: list[str]
) -> list[Flag]:
    """cleanlab's issues among the keyword-labelled images, most suspicious first."""
    from cleanlab.filter import find_label_issues as cleanlab_issues

    # All images inform cleanlab's per-class thresholds; only keyword ones may be flagged.
    # n_jobs=1: no worker processes forked from a process that holds TensorFlow.
    ranked = cleanlab_issues(
        labels, probs, return_indices_ranked_by="self_confidence", n_jobs=1, verbose=False
    )
    flags = []
    for r in ranked:
        item = items[int(r)]
        if not _checkable(item):
            continue
        guess = int(np.argmax(probs[r]))
        assert item.image_id is not None  # _checkable
        flags.append(
            Flag(
                item.image_id,
                item.path,
                item.label,
                classes[guess],
                float(1.0 - probs[r, labels[r]]),
                float(probs[r, guess]),
                item.source,
            )
        )
    flags.sort(key=lambda f: -f.score)  # stable: cleanlab's order breaks ties
    return flags


# ---- applying -----------------------------------------------------------------------------


def apply(store: Store, cleaning: Cleaning, version: str) -> dict[int, str]:
    """Move the flagged images to review/ (reason label_issue, the out-of-fold guess as label,
    label source model, model_version = the run's version, whose entry holds cleaning.json).

    Returns image id -> what happened ("review/<class>/<file>" or why it was not moved). A
    row that changed since the plan was read (a person decided it, the factory replaced it)
    is left alone: each move expects the row still accepted with its keyword label.
    """
    in_review = {i.image_id for i in cleaning.items if i.status == "review"}
    moves = [
        Move(
            f.image_id,
            "review",
            {
                "label": f.suggested,
                "label_source": "model",
                "confidence": f.confidence,
                "reason": REASON,
                "model_version": version,
            },
            # a review image learned from (train.learn_from_review) under its keyword's
            # class, whatever label the factory gave it
            expect=(
                {"status": "review", "keyword_class": f.given}
                if f.image_id in in_review
                else {"status": "accepted", "label": f.given, "label_source": KEYWORD}
            ),
        )
        for f in cleaning.flagged
    ]
    return move_all(store, moves)[0]


def clean(
    store: Store,
    config: Config,
    tc: TrainConfig,
    plan: data.DatasetPlan,
    folder: Path,
    version: str,
    *,
    progress: bool = False,
) -> tuple[data.DatasetPlan, Cleaning]:
    """The check, the moves, cleaning.json in the entry ``folder``, and the plan to train on
    (re-read from the store when anything moved, so the manifest is what is on disk)."""
    cleaning = find_label_issues(
        plan,
        tc,
        max_pixels=config.factory.max_pixels,
        cache_dir=store.data_dir / "cache",
        progress=progress,
    )
    moved = apply(store, cleaning, version) if cleaning.flagged else {}
    n_moved = sum(1 for where in moved.values() if where.startswith("review/"))
    # after the flags: the keyword reliability it uses counts this check's findings
    cleaning.rejudged = rejudge(store, config, cleaning, version)
    write_report(folder / CLEANING, cleaning, moved)
    if not cleaning.skipped:
        logger.info(
            "label check: %d keyword-labelled image(s) checked over %d folds, %d flagged, %d "
            "moved to review/ (%s) in %.0f s",
            cleaning.checked,
            cleaning.folds,
            len(cleaning.flagged),
            n_moved,
            REASON,
            cleaning.seconds,
        )
    if n_moved or cleaning.rejudged.accepted or cleaning.rejudged.rejected:
        plan = data.plan_from_store(
            store, plan.classes, tc.val_fraction, tc.test_fraction, tc.learn_from_review
        )
        data.check_enough(plan)
    return plan, cleaning


def skip(plan: data.DatasetPlan, tc: TrainConfig, folder: Path, why: str) -> Cleaning:
    """No check in this run (the reason is logged and written to cleaning.json)."""
    logger.warning("label check skipped: %s", why)
    cleaning = Cleaning(tc.clean_folds, list(plan.classes), skipped=why)
    write_report(folder / CLEANING, cleaning, {})
    return cleaning


def write_report(path: Path, cleaning: Cleaning, moved: dict[int, str]) -> None:
    """cleaning.json: folds, seconds, per class and source counts, the flagged images."""
    body = {
        "folds": cleaning.folds,
        "seconds": round(cleaning.seconds, 3),
        "skipped": cleaning.skipped,
        **cleaning.summary(),
        "moved": sum(1 for where in moved.values() if where.startswith("review/")),
        "unreadable": cleaning.unreadable,
        "balanced_accuracy": cleaning.balanced_accuracy,
        "counts": cleaning.counts,
        "flagged_images": [
            {**f.as_json(), "outcome": moved.get(f.image_id, "not moved")} for f in cleaning.flagged
        ],
    }
    atomic_write(path, json.dumps(body, indent=2, ensure_ascii=False) + "\n")
