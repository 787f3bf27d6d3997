"""Near-duplicate recall and wrong merges on real photos (sign-language-digits).

Builds a held-out set from the real photos: originals (odd-numbered files of each class;
the even ones were used to tune the verifier), and for each original planted copies with
easy edits (resize, recompression, small crop, brightness, upscale, 1-12% off random sides)
and hard edits (10% crop, letterbox bars, caption band, slight rotation, mirror flip, corner
watermark). Then it
measures, side by side in one run:

* recall: planted copies found as copies of their own original;
* wrong merges: distinct originals reported as copies of one another.

for plain phash at radius 10 (what imagededup-style tools do) and for pingo's default
(phash radius ``max_distance`` plus verified hard-edit views). ``--radius-sweep`` also
prints recall vs wrong merges of the main hash per radius, the measurement behind the
default radius.

    .venv/bin/python bench/factory_recall.py [--originals 200] [--radius-sweep] [--split odd]
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageOps

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dataset_factory.dedupe import Deduper, Kept  # noqa: E402
from dataset_factory.hash_pool import Settings, analyse_paths  # noqa: E402
from dataset_factory.index import NearDuplicateIndex  # noqa: E402

DATASET = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "sign-language-digits"


def _crop(im, left, top, right, bottom):
    w, h = im.size
    return im.crop(
        (round(w * left), round(h * top), round(w * (1 - right)), round(h * (1 - bottom)))
    )


def crop_sides(im, r):
    """1-12% off a random non-empty combination of sides: the commonest edit between two sites
    showing one photo."""
    sides = [r.random() < 0.5 for _ in range(4)]
    if not any(sides):
        sides[r.randrange(4)] = True
    return _crop(im, *[r.uniform(0.01, 0.12) if s else 0.0 for s in sides])


EASY = {
    "resize50": lambda im, r: im.resize((im.width // 2, im.height // 2), Image.Resampling.LANCZOS),
    "jpeg_q30": lambda im, r: im,  # saved with quality 30 below
    "crop5": lambda im, r: _crop(im, 0.025, 0.025, 0.025, 0.025),
    "brightness": lambda im, r: ImageEnhance.Brightness(im).enhance(1.3),
    "upscale2x": lambda im, r: im.resize((im.width * 2, im.height * 2), Image.Resampling.BICUBIC),
    "crop1-12": crop_sides,
}


def _letterbox(im, r):
    w, h = im.size
    bar = round(h * 0.18)
    out = Image.new("RGB", (w, h + 2 * bar), (0, 0, 0))
    out.paste(im, (0, bar))
    return out


def _caption(im, r):
    w, h = im.size
    band = max(12, round(h * 0.14))
    out = Image.new("RGB", (w, h + band), (255, 255, 255))
    out.paste(im, (0, 0))
    ImageDraw.Draw(out).text((4, h + 1), "photo: example.com", fill=(0, 0, 0))
    return out


def _rotate(im, r):
    angle = r.choice([-5, -4, -3, 3, 4, 5])
    return _crop(im.rotate(angle, Image.Resampling.BICUBIC), 0.06, 0.06, 0.06, 0.06)


def _crop10(im, r):
    a, b = r.uniform(0, 0.1), r.uniform(0, 0.1)
    return _crop(im, a, b, 0.1 - a, 0.1 - b)


def _watermark(im, r):
    out = im.copy()
    d = ImageDraw.Draw(out)
    w, h = out.size
    d.rectangle((w * 0.55, h * 0.8, w * 0.98, h * 0.95), fill=(255, 255, 255))
    d.text((w * 0.57, h * 0.82), "(c) site", fill=(0, 0, 0))
    return out


HARD = {
    "crop10": _crop10,
    "letterbox": _letterbox,
    "caption": _caption,
    "rotate": _rotate,
    "mirror": lambda im, r: ImageOps.mirror(im),
    "watermark": _watermark,
}


def originals(split: str, n: int | None, seed: int = 7) -> list[Path]:
    paths = []
    for cls in sorted(p for p in DATASET.iterdir() if p.is_dir()):
        files = sorted(cls.glob("*"))
        paths += files[1::2] if split == "odd" else files[0::2]
    if n is not None and n < len(paths):
        paths = random.Random(seed).sample(paths, n)
    return paths


def plant(paths: list[Path], out: Path, seed: int = 11) -> list[tuple[int, str, str, Path]]:
    """Write edited copies; returns (original index, kind, edit name, path)."""
    r = random.Random(seed)
    copies = []
    for i, p in enumerate(paths):
        im = Image.open(p).convert("RGB")
        for kind, edits in (("easy", EASY), ("hard", HARD)):
            for name, edit in edits.items():
                dst = out / f"{i:05d}_{name}.jpg"
                edit(im, r).save(dst, "JPEG", quality=30 if name == "jpeg_q30" else 90)
                copies.append((i, kind, name, dst))
    return copies


def evaluate(
    orig_analyses,
    copy_analyses,
    copies,
    *,
    max_distance,
    hard,
    hard_distance=14,
    verify_threshold=0.86,
    sizes=None,
):
    """(recall per edit, wrong merges among originals) for one configuration."""
    index = NearDuplicateIndex("phash")
    kept = {}

    def lookup(i):
        return kept[i]

    deduper = Deduper(
        index,
        max_distance=max_distance,
        hard=hard,
        hard_distance=hard_distance,
        verify_threshold=verify_threshold,
        lookup=lookup,
    )
    merged = 0
    for a in orig_analyses:
        if not hard:
            a = _plain(a)
        kept[a.image_id] = Kept(a.image_id, a.width, a.height, False, str(sizes[a.image_id]))
        if deduper.find_copy(a) is not None:
            merged += 1
        deduper.remember(a.image_id, a)
    found = Counter()
    total = Counter()
    for (orig, _kind, name, _), a in zip(copies, copy_analyses):
        if not hard:
            a = _plain(a)
        total[name] += 1
        hit = deduper.find_copy(a)
        if hit is not None and hit[0] == orig:
            found[name] += 1
    return {k: found[k] / total[k] for k in total}, merged


def _plain(a):
    from dataclasses import replace

    return replace(a, views=[], mirror_views=[], thumbs=[])


def radius_sweep(orig_analyses, copy_analyses, copies):
    hashes = np.array([a.phash & 0xFFFFFFFFFFFFFFFF for a in orig_analyses], np.uint64)
    dist = np.bitwise_count(hashes[:, None] ^ hashes[None, :])
    np.fill_diagonal(dist, 65)
    nearest = dist.min(axis=1)
    easy = [(o, a) for (o, kind, _, _), a in zip(copies, copy_analyses) if kind == "easy"]
    d_easy = np.array(
        [
            int(np.bitwise_count(np.uint64(a.phash & 0xFFFFFFFFFFFFFFFF) ^ hashes[o]))
            for o, a in easy
        ]
    )
    print(
        "\nradius sweep (main phash only): easy-copy recall vs distinct originals that have "
        "another original within the radius"
    )
    print(f"{'radius':>6} {'easy recall':>12} {'wrongly merged':>15}")
    for r in range(0, 17, 2):
        print(f"{r:>6} {np.mean(d_easy <= r):>12.3f} {np.mean(nearest <= r):>15.4f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--originals", type=int, default=200, help="held-out originals (0 = all)")
    ap.add_argument(
        "--split",
        choices=["odd", "even"],
        default="odd",
        help="odd = held-out, even = the tuning half",
    )
    ap.add_argument("--radius-sweep", action="store_true")
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--hard-distance", type=int, default=14)
    ap.add_argument("--verify-threshold", type=float, default=0.86)
    ap.add_argument("--max-distance", type=int, default=6)
    args = ap.parse_args()
    paths = originals(args.split, args.originals or None)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        copies = plant(paths, Path(tmp))
        settings = Settings(hard=True)
        orig = analyse_paths(paths, settings, args.workers)
        cps = analyse_paths([c[3] for c in copies], settings, args.workers)
        sizes = dict(enumerate(paths))
        print(
            f"{len(paths)} originals ({args.split} split), {len(copies)} planted copies; "
            f"hashed in {time.perf_counter() - t0:.1f}s"
        )
        plain, plain_merged = evaluate(orig, cps, copies, max_distance=10, hard=False, sizes=sizes)
        ours, ours_merged = evaluate(
            orig,
            cps,
            copies,
            max_distance=args.max_distance,
            hard=True,
            hard_distance=args.hard_distance,
            verify_threshold=args.verify_threshold,
            sizes=sizes,
        )
        print(f"\n{'edit':<12} {'kind':<5} {'phash r=10':>11} {'pingo':>8}")
        for name in [*EASY, *HARD]:
            kind = "easy" if name in EASY else "hard"
            print(f"{name:<12} {kind:<5} {plain[name]:>11.3f} {ours[name]:>8.3f}")
        for kind, names in (("easy", EASY), ("hard", HARD)):
            p = np.mean([plain[n] for n in names])
            o = np.mean([ours[n] for n in names])
            print(f"{'ALL ' + kind:<18} {p:>11.3f} {o:>8.3f}   ratio {o / max(p, 1e-9):.2f}x")
        print(
            f"{'wrong merges':<18} {plain_merged:>11d} {ours_merged:>8d}   "
            f"(distinct originals reported as copies, of {len(paths)})"
        )
        if args.radius_sweep:
            radius_sweep(orig, cps, copies)
            print("\nradius sweep with verification (pingo, hard duplicates on)")
            print(f"{'radius':>6} {'easy recall':>12} {'hard recall':>12} {'wrong merges':>13}")
            for r in (4, 6, 8, 10, 12):
                rec, merged = evaluate(
                    orig,
                    cps,
                    copies,
                    max_distance=r,
                    hard=True,
                    hard_distance=args.hard_distance,
                    verify_threshold=args.verify_threshold,
                    sizes=sizes,
                )
                print(
                    f"{r:>6} {np.mean([rec[n] for n in EASY]):>12.3f} "
                    f"{np.mean([rec[n] for n in HARD]):>12.3f} {merged:>13d}"
                )


if __name__ == "__main__":
    main()
