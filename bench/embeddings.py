"""Benchmark the head phase on cached embeddings (trainer.embeddings) against the head trained
on images through the frozen backbone, in one run on the same images.

A pretrained backbone (train.weights set) trains in two phases; the first trains only the
head while the backbone is frozen. Three ways of running that phase, same images, same
epochs (no early stop), the backbone a random-initialised weights file this script builds
(offline; the timing does not depend on what the weights are):

1. images: the frozen full model fitted on the decoded, augmented image batches (what the
   trainer did before the cache; the decoded-image cache is warm after the first epoch);
2. cold: trainer.fit with an empty embedding cache (computes every vector, then the head);
3. warm: trainer.fit again (every vector read from data_dir/cache/embeddings).

    .venv/bin/python bench/embeddings.py                       # 300 images, 96 px, 20 epochs
    .venv/bin/python bench/embeddings.py --images 300 --image-size 64 --epochs 20
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATASETS = [ROOT.parent / "shared" / "datasets", ROOT.parents[1] / "shared" / "datasets"]


def default_dataset() -> Path:
    for base in DATASETS:
        if (base / "sign-language-digits").is_dir():
            return base / "sign-language-digits"
    return DATASETS[0] / "sign-language-digits"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", type=Path, default=default_dataset())
    p.add_argument("--images", type=int, default=300, help="random subset of the dataset")
    p.add_argument("--arch", default="mobilenet_v3_small")
    p.add_argument("--image-size", type=int, default=96)
    p.add_argument("--epochs", type=int, default=20)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")

    import keras

    from core.config import TrainConfig
    from trainer import data
    from trainer.devices import choose_placement
    from trainer.fit import _callbacks, _compile, fit
    from trainer.models import BACKBONE_LAYER, BACKBONES, build_model

    placement = choose_placement()
    full = data.plan_from_folder(args.dataset, 0.15, 0.15)
    random.Random(0).shuffle(items := list(full.items))
    plan = data.DatasetPlan(full.classes, items[: args.images])
    work = Path(tempfile.mkdtemp(prefix="pingo-bench-embed-"))
    donor = getattr(keras.applications, BACKBONES[args.arch].constructor)(
        input_shape=(args.image_size, args.image_size, 3),
        include_top=False,
        weights=None,
        pooling="avg",
    )
    weights = work / "backbone.weights.h5"
    donor.save_weights(weights)
    # patience past the epoch count: every run does all its epochs
    tc = TrainConfig(
        arch=args.arch,
        image_size=args.image_size,
        weights=str(weights),
        epochs=args.epochs,
        patience=args.epochs + 1,
        batch_size=16,
    )
    counts = {s: sum(c.values()) for s, c in plan.counts().items()}
    print(
        f"{args.arch} at {args.image_size} px, {len(plan.items)} images {counts}, "
        f"{args.epochs} head epochs, {os.cpu_count()} CPUs, {placement.description}"
    )

    # 1. the head through the frozen backbone, on images (the path before the cache)
    keras.utils.set_random_seed(tc.seed)
    size, batch = tc.image_size, tc.batch_size
    train_ds = data.make_dataset(
        plan.split("train"), plan.classes, size, batch, training=True, seed=tc.seed
    )
    val_ds = data.make_dataset(plan.split("val"), plan.classes, size, batch, training=False)
    model = build_model(tc.arch, tc.image_size, len(plan.classes), tc.weights)
    model.get_layer(BACKBONE_LAYER).trainable = False
    _compile(model, tc.learning_rate)
    started = time.perf_counter()
    history = model.fit(
        train_ds,
        validation_data=val_ds,
        epochs=tc.epochs,
        callbacks=_callbacks(work / "images.weights.h5", tc.patience),
        verbose=0,
    ).history
    images_s = time.perf_counter() - started
    images_acc = max(history["val_accuracy"])

    # 2 and 3. trainer.fit with the embedding cache, cold then warm
    cache = work / "cache"
    runs = []
    for name in ("cold", "warm"):
        folder = work / name
        folder.mkdir()
        outcome = fit(plan, tc, placement, folder, cache_dir=cache)
        emb = outcome.embeddings or {}
        runs.append((name, outcome.seconds, emb, max(outcome.history["val_accuracy"])))
    (_, cold_s, cold, cold_acc), (_, warm_s, warm, warm_acc) = runs

    print(f"{'head phase':<44} {'seconds':>8} {'best val acc':>13}")
    print(f"{'images through the frozen backbone':<44} {images_s:8.2f} {images_acc:13.3f}")
    print(
        f"{'cold cache: ' + str(cold.get('computed')) + ' vectors computed + head':<44} "
        f"{cold_s:8.2f} {cold_acc:13.3f}"
    )
    print(
        f"{'warm cache: ' + str(warm.get('cached')) + ' vectors read + head':<44} "
        f"{warm_s:8.2f} {warm_acc:13.3f}"
    )
    print(
        f"  of which embeddings: cold {cold.get('seconds', 0):.2f} s, "
        f"warm {warm.get('seconds', 0):.2f} s"
    )
    print(
        f"ratio: warm vs images {images_s / warm_s:.1f}x faster, "
        f"warm vs cold {cold_s / warm_s:.1f}x, cold vs images {images_s / cold_s:.2f}x"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
