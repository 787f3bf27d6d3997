"""Dataset factory benchmarks, each side by side with the obvious alternative in one run.

(a) hashing: pingo's validate+phash (JPEG draft decoding, one worker per core) vs
    ``imagehash.phash(Image.open(p))`` in a loop, on >= 1-megapixel JPEGs made by upscaling
    the real sign-language-digits photos;
(b) near-duplicate index: query time at 1M and 10M hashes (vectorised XOR + popcount, one
    core) vs a Python loop over the hashes; time to add 10k hashes to a 1M index;
(c) auto-sort: images/s classified in tf.data batches vs a loop of ``model.predict`` on one
    image, with a small CNN in the registry format;
(d) near-duplicate recall: see bench/factory_recall.py.

    .venv/bin/python bench/factory.py [--images 300] [--big-index 10000000] [--sort 512]
    .venv/bin/python bench/factory.py --only index
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DATASET = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "sign-language-digits"


def row(name, ours, theirs, unit, higher_is_better=True):
    ratio = ours / theirs if higher_is_better else theirs / ours
    print(f"  {name:<44} {ours:>12.2f} {theirs:>12.2f} {unit:<9} {ratio:>7.1f}x")


def header(title, ours="pingo", theirs="baseline"):
    print(f"\n{title}\n  {'':<44} {ours:>12} {theirs:>12} {'unit':<9} {'ratio':>8}")


def make_big_jpegs(out: Path, n: int, side: int) -> list[Path]:
    from PIL import Image

    photos = sorted(DATASET.glob("*/*"))[:: max(1, len(sorted(DATASET.glob("*/*"))) // n)][:n]
    paths = []
    for i, p in enumerate(photos):
        dst = out / f"big_{i:04d}.jpg"
        Image.open(p).convert("RGB").resize((side, side), Image.Resampling.BICUBIC).save(
            dst, "JPEG", quality=90
        )
        paths.append(dst)
    return paths


def _rate(paths, settings, workers) -> tuple[float, float]:
    """(img/s with a warm pool, seconds the pool took to start)."""
    from dataset_factory.hash_pool import Analyser, Job

    t = time.perf_counter()
    with Analyser(settings, workers) as analyser:
        list(analyser.run([Job(-1, str(paths[0]))]))  # start the workers
        start = time.perf_counter() - t
        t = time.perf_counter()
        results = list(analyser.run(Job(i, str(p)) for i, p in enumerate(paths)))
        rate = len(paths) / (time.perf_counter() - t)
    assert all(r.ok for r in results)
    return rate, start


def bench_hashing(n: int, side: int, workers: int) -> None:
    import imagehash
    from PIL import Image

    from dataset_factory.hash_pool import Settings, worker_count

    with tempfile.TemporaryDirectory() as tmp:
        paths = make_big_jpegs(Path(tmp), n, side)
        t = time.perf_counter()
        for p in paths:
            imagehash.phash(Image.open(p))
        base = len(paths) / (time.perf_counter() - t)
        ours, start = _rate(paths, Settings(hard=False), workers)
        one, _ = _rate(paths, Settings(hard=False), 1)
        ours_hard, _ = _rate(paths, Settings(hard=True), workers)
    header(
        f"(a) hashing {len(paths)} JPEGs of {side}x{side} ({side * side / 1e6:.1f} MP), "
        f"{worker_count(workers)} workers",
        theirs="phash(open)",
    )
    row("validate + phash (draft decode, pool)", ours, base, "img/s")
    row("validate + phash, one worker", one, base, "img/s")
    row("validate + phash + hard-edit views (pool)", ours_hard, base, "img/s")
    print(f"  (worker pool start-up, paid once per run: {start:.2f} s)")


def bench_index(sizes: list[int], queries: int) -> None:
    from dataset_factory.index import HashArray, NearDuplicateIndex

    rng = np.random.default_rng(0)
    header(
        "(b) near-duplicate index, radius 6, one query at a time (one core)", theirs="python loop"
    )
    for n in sizes:
        hashes = rng.integers(0, 2**63, n, dtype=np.int64).astype(np.uint64) * np.uint64(
            2
        ) + rng.integers(0, 2, n, dtype=np.int64).astype(np.uint64)
        arr = HashArray(np.arange(n), hashes)
        qs = [int(h) ^ 0b101 for h in hashes[rng.integers(0, n, queries)]]
        arr.within(qs[0], 6)  # warm
        t = time.perf_counter()
        for q in qs:
            ids, _ = arr.within(q, 6)
            assert len(ids) >= 1
        ours_ms = (time.perf_counter() - t) / queries * 1000
        loop_n = min(n, 1_000_000)
        plain = hashes[:loop_n].tolist()
        t = time.perf_counter()
        q = qs[0]
        _ = [i for i, h in enumerate(plain) if (h ^ q).bit_count() <= 6]
        loop_ms = (time.perf_counter() - t) * 1000 * (n / loop_n)
        row(
            f"query at {n / 1e6:g}M hashes" + (" (loop scaled from 1M)" if loop_n < n else ""),
            ours_ms,
            loop_ms,
            "ms/query",
            higher_is_better=False,
        )
        if n == 1_000_000:
            index = NearDuplicateIndex("phash")
            index.main = HashArray(np.arange(n), hashes)
            new = rng.integers(0, 2**62, 10_000).tolist()
            t = time.perf_counter()
            for i, h in enumerate(new):
                index.add(n + i, h)
            add_ms = (time.perf_counter() - t) * 1000
            one = np.array(new[:1], np.uint64)
            t = time.perf_counter()
            np.concatenate([index.main.hashes[:n], one])  # what one add costs without spare room
            copy_ms = (time.perf_counter() - t) * 1000
            row(
                "add 10k hashes one by one to a 1M index",
                add_ms,
                copy_ms * 10_000,
                "ms",
                higher_is_better=False,
            )
            print(
                f"  {'':<44} (baseline: re-concatenating the array for each add, "
                f"{copy_ms:.1f} ms x 10k)"
            )
            with tempfile.TemporaryDirectory() as tmp:
                t = time.perf_counter()
                index.save(Path(tmp) / "i.npz")
                save_ms = (time.perf_counter() - t) * 1000
                t = time.perf_counter()
                NearDuplicateIndex.load(Path(tmp) / "i.npz", "phash")
                load_ms = (time.perf_counter() - t) * 1000
            print(f"  sidecar at 1M: save {save_ms:.0f} ms, load {load_ms:.0f} ms")


def bench_sort(n: int, loop_n: int, image_size: int, batch_size: int) -> None:
    from dataset_factory.classify import Classifier
    from trainer.models import build_model
    from vision.model import load_model
    from vision.pixels import load_pixels

    paths = [str(p) for p in sorted(DATASET.glob("*/*"))[:n]]
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp) / "v0001"
        model_dir.mkdir()
        build_model("small_cnn", image_size, 10).save(model_dir / "model.keras")  # pingo's own
        (model_dir / "classes.json").write_text(json.dumps([str(i) for i in range(10)]))
        (model_dir / "config.json").write_text(
            json.dumps({"image_size": image_size, "arch": "small_cnn"})
        )
        clf = Classifier(load_model(model_dir))
        clf.predict(paths[:batch_size], batch_size)  # warm up (graph tracing)
        t = time.perf_counter()
        clf.predict(paths, batch_size)
        ours = len(paths) / (time.perf_counter() - t)
        clf.model.predict(load_pixels(paths[0], image_size)[None].astype("float32"), verbose=0)
        t = time.perf_counter()
        for p in paths[:loop_n]:
            clf.model.predict(load_pixels(p, image_size)[None].astype("float32"), verbose=0)
        base = loop_n / (time.perf_counter() - t)
    header(f"(c) auto-sort, small CNN at {image_size}px, batch {batch_size}", theirs="predict(1)")
    row(f"tf.data batches ({n} images) vs predict loop ({loop_n})", ours, base, "img/s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", choices=["hash", "index", "sort"])
    ap.add_argument("--images", type=int, default=300, help="JPEGs to hash")
    ap.add_argument("--side", type=int, default=1200, help="their side, pixels (>= 1000)")
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--big-index", type=int, default=10_000_000)
    ap.add_argument("--queries", type=int, default=50)
    ap.add_argument("--sort", type=int, default=512, help="images to classify in batches")
    ap.add_argument("--sort-loop", type=int, default=64, help="images for the predict loop")
    ap.add_argument("--image-size", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=128, help="factory.batch_size default")
    args = ap.parse_args()
    print(
        f"cpus: {os.cpu_count()}, load average {os.getloadavg()[0]:.1f} (shared machine: "
        "compare ratios, not absolute figures)"
    )
    if args.only in (None, "hash"):
        bench_hashing(args.images, args.side, args.workers)
    if args.only in (None, "index"):
        bench_index([1_000_000, args.big_index], args.queries)
    if args.only in (None, "sort"):
        bench_sort(args.sort, args.sort_loop, args.image_size, args.batch_size)


if __name__ == "__main__":
    main()
