"""Fitting one model: datasets, compile, callbacks (early stop, best checkpoint, LR plateau)."""

from __future__ import annotations

import logging
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.config import TrainConfig
from trainer import data
from trainer.cache import CachePlan, cache_key, dataset_cache
from trainer.devices import Placement
from trainer.models import BACKBONE_LAYER, NO_WEIGHTS, build_model, head_model

if TYPE_CHECKING:
    from trainer.embeddings import EmbedStats

logger = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.weights.h5"
HEAD_CHECKPOINT = "head.weights.h5"  # the best head trained on cached embeddings
# Fine-tuning (train.fine_tune_epochs > 0) unfreezes this share of the backbone's top layers,
# at train.learning_rate times this factor (small steps, so the pretrained features survive).
FINE_TUNE_SHARE = 0.3
FINE_TUNE_LR_FACTOR = 0.01


@dataclass
class FitOutcome:
    model: Any  # float32 Keras model with the best weights
    history: dict[str, list[float]]
    epochs_run: int
    best_epoch: int  # 1-based epoch whose weights were kept
    seconds: float
    class_weights: dict[int, float] | None
    cache: CachePlan | None = None  # where decoded images were cached between epochs
    embeddings: dict | None = None  # the head trained on cached embeddings: EmbedStats.as_json


def _epoch_logger():
    import keras

    class EpochLog(keras.callbacks.Callback):
        """One INFO line per epoch, for logs where no progress bar is drawn."""

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            logger.info(
                "epoch %d: %s",
                epoch + 1,
                ", ".join(f"{k} {float(v):.4g}" for k, v in sorted(logs.items())),
            )

    return EpochLog()


def _compile(model: Any, learning_rate: float) -> None:
    import keras

    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )


def _callbacks(checkpoint: Path, patience: int, best_so_far: float | None = None) -> list:
    """Early stop, best checkpoint (only better than ``best_so_far``), LR plateau, epoch log."""
    import keras

    return [
        keras.callbacks.EarlyStopping(monitor="val_loss", patience=patience),
        keras.callbacks.ModelCheckpoint(
            str(checkpoint),
            monitor="val_loss",
            save_best_only=True,
            save_weights_only=True,
            initial_value_threshold=best_so_far,
        ),
        keras.callbacks.ReduceLROnPlateau(
            monitor="val_loss", factor=0.5, patience=max(2, patience // 3), min_lr=1e-6
        ),
        _epoch_logger(),
    ]


def _unfreeze_top(backbone: Any) -> int:
    """Make the top FINE_TUNE_SHARE of ``backbone``'s layers trainable; batch norm layers stay
    frozen, so they keep running in inference mode (the Keras transfer-learning guide's advice).
    Returns how many layers were unfrozen."""
    from keras import layers

    backbone.trainable = True
    start = int(len(backbone.layers) * (1 - FINE_TUNE_SHARE))
    unfrozen = 0
    for i, layer in enumerate(backbone.layers):
        layer.trainable = i >= start and not isinstance(layer, layers.BatchNormalization)
        unfrozen += layer.trainable
    return unfrozen


def fit(
    plan: data.DatasetPlan,
    tc: TrainConfig,
    placement: Placement,
    folder: Path,
    progress: bool = False,
    *,
    cache_dir: Path | None = None,
    max_pixels: int | None = None,
) -> FitOutcome:
    """Train on ``plan``; decoded images are cached in memory or, past train.cache_memory_mb,
    in files under ``cache_dir`` (data_dir/cache), removed when fitting ends.
    ``max_pixels``: factory.max_pixels, so training reads every image the factory accepted."""
    cached = [i for i in plan.items if i.split in ("train", "val")]
    key = cache_key([i.path for i in cached], tc.image_size, max_pixels or 0)
    with dataset_cache(len(cached), tc.image_size, tc.cache_memory_mb, cache_dir, key) as cache:
        outcome = _fit(plan, tc, placement, folder, progress, cache, max_pixels, cache_dir)
    outcome.cache = cache
    return outcome


def _fit(
    plan: data.DatasetPlan,
    tc: TrainConfig,
    placement: Placement,
    folder: Path,
    progress: bool,
    cache: CachePlan,
    max_pixels: int | None,
    cache_dir: Path | None = None,
) -> FitOutcome:
    import keras

    keras.utils.set_random_seed(tc.seed)
    k = len(plan.classes)
    batch = tc.batch_size * placement.replicas
    train_ds = data.make_dataset(
        plan.split("train"),
        plan.classes,
        tc.image_size,
        batch,
        training=True,
        augment=tc.augment,
        seed=tc.seed,
        cache=cache.target("train"),
        max_pixels=max_pixels,
    )
    val_ds = data.make_dataset(
        plan.split("val"),
        plan.classes,
        tc.image_size,
        batch,
        training=False,
        cache=cache.target("val"),
        max_pixels=max_pixels,
    )
    pretrained = tc.weights != NO_WEIGHTS
    previous_policy = keras.mixed_precision.global_policy()
    if placement.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        with placement.strategy.scope():
            model = build_model(tc.arch, tc.image_size, k, tc.weights)
            if pretrained:  # the head learns first, on the backbone's ImageNet/file features
                model.get_layer(BACKBONE_LAYER).trainable = False
            _compile(model, tc.learning_rate)
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)

    checkpoint = folder / CHECKPOINT
    weights = data.class_weights(plan)
    if weights:
        logger.info(
            "classes are unbalanced: class weights %s",
            {plan.classes[i]: round(w, 3) for i, w in weights.items()},
        )
    started = time.time()
    with warnings.catch_warnings():
        # Dropping undecodable files leaves the epoch length unknown; Keras then warns at the
        # end of every epoch that the data "ran out", which is expected here.
        warnings.filterwarnings("ignore", message="Your input ran out of data")

        def run(epochs: int, best_so_far: float | None = None) -> dict[str, list[float]]:
            return model.fit(
                train_ds,
                validation_data=val_ds,
                epochs=epochs,
                class_weight=weights,
                callbacks=_callbacks(checkpoint, tc.patience, best_so_far),
                shuffle=False,
                verbose=1 if progress else 0,
            ).history

        embedded = None
        if pretrained and not os.environ.get("TF_CONFIG"):
            # The frozen backbone's output never changes: the head learns from cached vectors
            # (trainer.embeddings). Not in a multi-worker run, whose workers must all run the
            # same steps in step: there the head trains on images as before.
            history, embedded = _fit_head_on_embeddings(
                model, plan, tc, checkpoint, weights, cache_dir, max_pixels, progress
            )
        else:
            history = run(tc.epochs)
        if pretrained and tc.fine_tune_epochs > 0:
            best = min(history.get("val_loss", [float("inf")]), default=float("inf"))
            if checkpoint.exists():  # fine-tune from the best head, not the last one
                model.load_weights(str(checkpoint))
            with placement.strategy.scope():
                unfrozen = _unfreeze_top(model.get_layer(BACKBONE_LAYER))
                _compile(model, tc.learning_rate * FINE_TUNE_LR_FACTOR)
            logger.info(
                "fine-tuning the top %d backbone layers for up to %d epochs",
                unfrozen,
                tc.fine_tune_epochs,
            )
            tuned = run(tc.fine_tune_epochs, best)
            history = {key: history[key] + tuned.get(key, []) for key in history}
    seconds = time.time() - started
    history = {key: [float(v) for v in values] for key, values in history.items()}
    val_loss = history.get("val_loss", [])
    best_epoch = 1 + min(range(len(val_loss)), key=val_loss.__getitem__) if val_loss else 0
    if checkpoint.exists():
        with warnings.catch_warnings():
            # A head-phase checkpoint holds the head's optimizer state only; not needed here.
            warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
            model.load_weights(str(checkpoint))
    else:  # val_loss was never finite: keep the last weights, and say so
        logger.warning(
            "no best checkpoint was written (val_loss not finite); keeping the last epoch's weights"
        )
        best_epoch = len(history.get("loss", []))

    # The registry model is always float32, whatever policy trained it, so it runs anywhere.
    export = build_model(tc.arch, tc.image_size, k)
    export.set_weights(model.get_weights())
    return FitOutcome(
        export,
        history,
        len(history.get("loss", [])),
        best_epoch,
        seconds,
        weights,
        embeddings=embedded.as_json() if embedded else None,
    )


def _fit_head_on_embeddings(
    model: Any,
    plan: data.DatasetPlan,
    tc: TrainConfig,
    checkpoint: Path,
    class_weight: dict[int, float] | None,
    cache_dir: Path | None,
    max_pixels: int | None,
    progress: bool,
) -> tuple[dict[str, list[float]], EmbedStats]:
    """The head phase on cached embeddings: the same head layers (models.head_model) train on
    the train/val vectors with the same callbacks, then the best head's weights go into
    ``model``'s "probs" layer, and ``model``'s weights into ``checkpoint`` as the image
    path's best checkpoint would hold them. Images are not augmented here: each image has one
    vector. Returns the history and the EmbedStats."""
    import numpy as np
    import tensorflow as tf

    from trainer import embeddings

    index = {c: i for i, c in enumerate(plan.classes)}
    train, val = plan.split("train"), plan.split("val")
    stats = embeddings.EmbedStats("")
    vectors = embeddings.embed(
        train + val,
        tc,
        cache_dir,
        max_pixels=max_pixels,
        stats=stats,
    )
    labels = np.array([index[i.label] for i in train + val], np.int64)
    ok = np.isfinite(vectors).all(axis=1)  # an undecodable image has a NaN row: dropped
    n = len(train)
    x_train, y_train = vectors[:n][ok[:n]], labels[:n][ok[:n]]
    x_val, y_val = vectors[n:][ok[n:]], labels[n:][ok[n:]]

    head = head_model(vectors.shape[1], len(plan.classes))
    _compile(head, tc.learning_rate)
    head_checkpoint = checkpoint.with_name(HEAD_CHECKPOINT)
    # tf.data built once: Keras wraps numpy arrays in a new pipeline every epoch (about 2x
    # slower here, where an epoch's own work takes milliseconds).
    train_ds = (
        tf.data.Dataset.from_tensor_slices((x_train, y_train))
        .shuffle(max(len(x_train), 1), seed=tc.seed, reshuffle_each_iteration=True)
        .batch(tc.batch_size)
        .prefetch(tf.data.AUTOTUNE)
    )
    val_ds = tf.data.Dataset.from_tensor_slices((x_val, y_val)).batch(tc.batch_size).cache()
    started = time.time()
    try:
        history = head.fit(
            train_ds,
            validation_data=val_ds,
            epochs=tc.epochs,
            class_weight=class_weight,
            callbacks=_callbacks(head_checkpoint, tc.patience),
            shuffle=False,
            verbose=1 if progress else 0,
        ).history
        if head_checkpoint.exists():
            head.load_weights(str(head_checkpoint))
            model.get_layer("probs").set_weights(head.get_layer("probs").get_weights())
            model.save_weights(str(checkpoint))
        else:  # val_loss never finite: the last head, and no checkpoint (fit's warning says so)
            model.get_layer("probs").set_weights(head.get_layer("probs").get_weights())
    finally:
        head_checkpoint.unlink(missing_ok=True)
    logger.info(
        "head trained on %d cached embeddings in %.1f s (embeddings: %d computed, %d read, %.1f s)",
        len(x_train) + len(x_val),
        time.time() - started,
        stats.computed,
        stats.cached,
        stats.seconds,
    )
    return history, stats
