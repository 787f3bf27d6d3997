"""Benchmark the trainer on the real sign-language-digits photos (2062 images, 10 classes).

Two measurements, both in this one run so that noise from other work on the machine hits
both sides alike:

1. input pipeline: images/s of pingo's tf.data pipeline (decode + resize once, cache, shuffle,
   augment, prefetch) vs the plain keras-io pipeline (image_dataset_from_directory, augment,
   prefetch, no cache), iterated for the same number of epochs without a model;
2. training: the default model (small_cnn) at <= 64 px trained by trainer.fit with early
   stopping, written as a registry entry, evaluated on the content-hash test split; prints
   test accuracy and wall time (the project's best so far is 0.967).

    .venv/bin/python bench/train.py                  # default: 64 px, up to 60 epochs
    .venv/bin/python bench/train.py --epochs 100 --arch seed_cnn --image-size 48
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATASET = ROOT.parent / "shared" / "datasets" / "sign-language-digits"
TARGET_ACCURACY = 0.967


def pipeline_rates(
    plan, image_size: int, batch_size: int, epochs: int, seed: int, augment: bool
) -> dict:
    """images/s per epoch for pingo's pipeline and keras-io's, over the same training files."""
    import keras
    import tensorflow as tf

    from trainer import data

    items = plan.split("train")
    ours = data.make_dataset(
        items, plan.classes, image_size, batch_size, training=True, augment=augment, seed=seed
    )

    # keras-io image_classification_from_scratch: from the folder, augmentation mapped in
    # the pipeline, prefetch; no cache. Same files: a folder of links to the training split.
    link_root = Path(tempfile.mkdtemp(prefix="pingo-bench-kio-"))
    for i, item in enumerate(items):
        folder = link_root / item.label
        folder.mkdir(exist_ok=True)
        os.symlink(item.path, folder / f"{i:05d}{Path(item.path).suffix}")
    kio = keras.utils.image_dataset_from_directory(
        link_root,
        image_size=(image_size, image_size),
        batch_size=batch_size,
        seed=seed,
        verbose=False,
    )
    if augment:
        aug = data.augmenter(seed)
        kio = kio.map(lambda x, y: (aug(x, training=True), y), num_parallel_calls=tf.data.AUTOTUNE)
    kio = kio.prefetch(tf.data.AUTOTUNE)

    # Epochs alternate between the two pipelines, so load from other work on the machine
    # falls on both alike.
    rates = {"pingo": [], "keras-io": []}
    for _ in range(epochs):
        for name, ds in (("pingo", ours), ("keras-io", kio)):
            start, n = time.perf_counter(), 0
            for x, _ in ds:
                n += int(x.shape[0])
            rates[name].append(n / (time.perf_counter() - start))
    return rates


def print_rates(rates: dict, title: str) -> None:
    print(f"\n{title} (images/s):")
    print(f"{'epoch':>8}  {'pingo (cache)':>14}  {'keras-io (no cache)':>20}  {'ratio':>6}")
    for i, (ours, kio) in enumerate(zip(rates["pingo"], rates["keras-io"]), 1):
        print(f"{i:>8}  {ours:>14.0f}  {kio:>20.0f}  {ours / kio:>5.2f}x")
    mean = {k: sum(v[1:] or v) / len(v[1:] or v) for k, v in rates.items()}
    print(
        f"{'mean 2+':>8}  {mean['pingo']:>14.0f}  {mean['keras-io']:>20.0f}  "
        f"{mean['pingo'] / mean['keras-io']:>5.2f}x"
    )


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", type=Path, default=DATASET)
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--epochs", type=int, default=60, help="upper bound (early stopping)")
    p.add_argument("--patience", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--arch", default="small_cnn")
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--pipeline-epochs", type=int, default=4)
    p.add_argument("--skip-train", action="store_true", help="pipeline comparison only")
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="keep the registry entry here (default: a temp folder)",
    )
    p.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = p.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    for noisy in ("tensorflow", "absl", "matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if not args.dataset.is_dir():
        print(f"dataset not found: {args.dataset}", file=sys.stderr)
        return 2

    from core.config import TrainConfig
    from trainer import data, registry_writer
    from trainer.devices import choose_placement
    from trainer.fit import fit
    from trainer.promotion_gate import PromotionDecision

    placement = choose_placement()
    tc = dataclasses.replace(
        TrainConfig(),
        image_size=args.image_size,
        epochs=args.epochs,
        batch_size=args.batch_size,
        arch=args.arch,
        seed=args.seed,
        patience=args.patience,
    )
    t0 = time.perf_counter()
    plan = data.plan_from_folder(args.dataset, tc.val_fraction, tc.test_fraction)
    counts = {s: sum(c.values()) for s, c in plan.counts().items()}
    print(
        f"dataset: {len(plan.items)} images, {len(plan.classes)} classes, split {counts} "
        f"(listed and hashed in {time.perf_counter() - t0:.1f}s); device: "
        f"{placement.description}"
    )

    rates = {}
    for augment in (False, True):
        key = "augment" if augment else "decode_only"
        rates[key] = pipeline_rates(
            plan, tc.image_size, tc.batch_size, args.pipeline_epochs, tc.seed, augment
        )
        print_rates(
            rates[key],
            f"input pipeline, {counts['train']} training images at "
            f"{tc.image_size}px, batch {tc.batch_size}, augmentation "
            f"{'on' if augment else 'off'}",
        )
    result = {
        "images": len(plan.items),
        "split": counts,
        "device": placement.description,
        "pipeline_images_per_s": rates,
        "cores": os.cpu_count(),
    }

    if not args.skip_train:
        folder = args.out or Path(tempfile.mkdtemp(prefix="pingo-bench-train-"))
        folder.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        outcome = fit(plan, tc, placement, folder)
        written = registry_writer.write_entry(
            folder, "bench", plan, tc, placement, outcome, started=time.time()
        )
        registry_writer.finish_entry(
            folder,
            written,
            PromotionDecision(False, "benchmark run", new_accuracy=written.test["accuracy"]),
        )
        wall = time.perf_counter() - start
        test = written.test
        ok = test["accuracy"] >= TARGET_ACCURACY
        print(f"\ntraining {tc.arch} at {tc.image_size}px on {placement.description}:")
        print(f"{'':>22}  {'pingo ' + tc.arch:>16}  {'project best':>12}")
        print(
            f"{'test accuracy':>22}  {test['accuracy']:>16.4f}  {TARGET_ACCURACY:>12.3f}"
            f"  {'PASS' if ok else 'BELOW TARGET'}"
        )
        print(f"{'test loss':>22}  {test['loss']:>16.4f}")
        print(f"{'macro F1':>22}  {test['macro_f1']:>16.4f}")
        print(f"{'test images':>22}  {test['images']:>16d}")
        print(f"{'epochs (best)':>22}  {f'{written.epochs_run} ({written.best_epoch})':>16}")
        print(f"{'fit seconds':>22}  {written.train_seconds:>16.0f}")
        print(f"{'wall seconds':>22}  {wall:>16.0f}  (fit + save + reload + evaluate + plots)")
        print(f"registry entry: {folder} (plot {written.curve_plot})")
        result.update(
            test_accuracy=test["accuracy"],
            test_loss=test["loss"],
            macro_f1=test["macro_f1"],
            epochs_run=written.epochs_run,
            best_epoch=written.best_epoch,
            fit_seconds=written.train_seconds,
            wall_seconds=wall,
            image_size=tc.image_size,
            arch=tc.arch,
            target_reached=ok,
        )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
