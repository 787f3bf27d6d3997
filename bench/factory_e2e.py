"""The factory end to end (issue 14): images/s, CPU, recall and wrong merges, side by side.

Real photos (``../shared/datasets/cifar10-subset`` test split and ``sign-language-digits``),
upscaled so that decoding costs what a crawled photo's does (cifar 32 px -> 384 px,
sign-language 100 px -> 400 px; the bench says so in its output), plus for every original
planted copies:

* easy: a crop of 1-12% on a random combination of sides (every original gets one), and one
  of resize 50%, JPEG quality 30, brightness +30%, upscale 1.5x;
* hard: one of 10% crop, letterbox bars, caption band, rotation 3-5 deg, mirror flip, corner
  watermark (bench/factory_recall.py's edits);
* hard negatives: different sign-language photos pasted over 36% of one shared photo (a
  shop's garments shot on one backdrop), which must stay apart. Sign-language photos share
  their background too.

Each configuration runs in a fresh process on a fresh copy of that inbox (same files, same
shuffled order):

* naive: ``imagehash.phash(Image.open(p))``, a linear scan at radius 10, an SQLite insert and a
  file copy per image (the ten-minute script);
* pingo factory with ``factory.hard_duplicates = false``;
* pingo factory, default settings (no model: the keyword files every survivor).

Printed per configuration: images/s (wall time of the run, pool start included), CPU ms per
image (the process and its worker processes), recall of easy and hard planted copies (a copy
is caught when it ends with its original, one kept and the other naming it in
``duplicate_of``, or is filed as a copy of another copy of the same original), wrong merges
(images filed as a copy of an image from another group) and peak RSS of the factory process
(VmHWM).

``--fill 100000,1000000`` then measures the default's duplicate decisions with the index
pre-filled to that many kept images: the hashes of real photos outside the inbox (the cifar
train split, their views and planted copies' views), each repeated with 1-12 random bits
flipped to reach the size. Every new image of the inbox is decided against it (index query,
candidates, verification with the kept images' thumbnails from their files), and the time per
image is compared with the same decisions against an empty index, in the same run.

    .venv/bin/python bench/factory_e2e.py                 # 400 originals, ~1600 images
    .venv/bin/python bench/factory_e2e.py --originals 200 --fill 100000,1000000
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from factory_recall import HARD, crop_sides  # noqa: E402

DATASETS = Path(
    os.environ.get("PINGO_DATASETS")
    or next(
        (
            str(p)
            for p in (REPO.parent / "shared" / "datasets", REPO.parents[1] / "shared" / "datasets")
            if p.is_dir()
        ),
        str(REPO.parent / "shared" / "datasets"),
    )
)
SIGN = DATASETS / "sign-language-digits"
CIFAR = DATASETS / "cifar10-subset"
SIGN_SIDE, CIFAR_SIDE = 400, 384
MASK = 0xFFFFFFFFFFFFFFFF


EASY = {
    "resize50": lambda im, r: im.resize((im.width // 2, im.height // 2), Image.Resampling.LANCZOS),
    "jpeg_q30": lambda im, r: im,
    "brightness": lambda im, r: ImageEnhance.Brightness(im).enhance(1.3),
    "upscale": lambda im, r: im.resize(
        (im.width * 3 // 2, im.height * 3 // 2), Image.Resampling.BICUBIC
    ),
}


def _originals(n: int, seed: int) -> list[tuple[Path, int]]:
    r = random.Random(seed)
    sign = sorted(SIGN.glob("*/*"))
    cifar = sorted((CIFAR / "test").glob("*/*"))
    picked = r.sample(sign, n // 2) + r.sample(cifar, n - n // 2)
    return [(p, SIGN_SIDE if p.is_relative_to(SIGN) else CIFAR_SIDE) for p in picked]


def _load(p: Path, side: int) -> Image.Image:
    im = Image.open(p).convert("RGB")
    return im.resize((side, side), Image.Resampling.BICUBIC)


def build(out: Path, n: int, negatives: int, seed: int = 5) -> list[dict]:
    """Write the inbox files; returns [{file, group, kind, edit}] in arrival order."""
    r = random.Random(seed)
    items: list[dict] = []

    def save(im, name, group, kind, edit, quality=90):
        dst = out / f"{len(items):05d}_{name}.jpg"
        im.save(dst, "JPEG", quality=quality)
        items.append({"file": str(dst), "group": group, "kind": kind, "edit": edit})

    for g, (p, side) in enumerate(_originals(n, seed)):
        im = _load(p, side)
        save(im, "orig", g, "orig", "")
        save(crop_sides(im, r), "crop", g, "easy", "crop1-12")
        edit = r.choice(list(EASY))
        save(EASY[edit](im, r), edit, g, "easy", edit, 30 if edit == "jpeg_q30" else 90)
        edit = r.choice(list(HARD))
        save(HARD[edit](im, r), edit, g, "hard", edit)
    # hard negatives: different objects on one shared background, each its own group
    sign = sorted(SIGN.glob("*/*"))
    group = n
    for b in range(max(1, negatives // 8)):
        bg = _load(r.choice(sign), SIGN_SIDE)
        for _ in range(min(8, negatives - b * 8)):
            im = bg.copy()
            thing = _load(r.choice(sign), 240)  # a detailed object over 36% of the frame
            im.paste(thing, (80, 100))
            save(im, "neg", group, "neg", "")
            group += 1
    order = list(range(len(items)))
    r.shuffle(order)
    return [items[i] for i in order]


# ---- the configurations, each in its own process --------------------------------------------


def vmhwm_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds() -> float:
    s = resource.getrusage(resource.RUSAGE_SELF)
    c = resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def child_naive(items: list[dict], tmp: Path) -> dict:
    import imagehash

    out = tmp / "naive-out"
    out.mkdir()
    db = sqlite3.connect(tmp / "naive.db")
    db.execute("create table images (id integer primary key, path text, phash text, dup integer)")
    kept: list[tuple[int, int]] = []  # (hash, index)
    result = {}
    cpu, t = cpu_seconds(), time.perf_counter()
    for i, item in enumerate(items):
        h = int(str(imagehash.phash(Image.open(item["file"]))), 16)
        dup = next((j for k, j in kept if (k ^ h).bit_count() <= 10), None)
        db.execute("insert into images values (?, ?, ?, ?)", (i, item["file"], hex(h), dup))
        db.commit()
        if dup is None:
            kept.append((h, i))
            shutil.copy(item["file"], out / Path(item["file"]).name)
        result[i] = dup
    wall, cpu = time.perf_counter() - t, cpu_seconds() - cpu
    return {"wall": wall, "cpu": cpu, "dup": result, "rss_mb": vmhwm_mb()}


def child_factory(items: list[dict], tmp: Path, hard: bool) -> dict:
    from core.config import load_config
    from dataset_factory import process_inbox
    from storage import Store

    config_path = tmp / "pingo.toml"
    config_path.write_text(
        textwrap.dedent(f"""
        [project]
        data_dir = "{tmp / "data"}"
        [classes.thing]
        target = 100000
        [factory]
        hard_duplicates = {"true" if hard else "false"}
        """)
    )
    config = load_config(config_path)
    with Store.from_config(config) as store:
        ids = [
            store.add_image(
                Path(it["file"]).read_bytes(), keyword_class="thing", source="bench", ext="jpg"
            )
            for it in items
        ]
        cpu, t = cpu_seconds(), time.perf_counter()
        summary = process_inbox(config, store)
        wall, cpu = time.perf_counter() - t, cpu_seconds() - cpu
        index_of = {image_id: i for i, image_id in enumerate(ids)}
        dup = {}
        for i, image_id in enumerate(ids):
            row = store.get_image(image_id)
            if row["status"] == "inbox":
                raise SystemExit(f"image {image_id} left in the inbox")
            d = row["duplicate_of"] if row["reason"] == "duplicate" else None
            dup[i] = index_of[d] if d is not None else None
    s = summary.as_json()
    return {
        "wall": wall,
        "cpu": cpu,
        "dup": dup,
        "rss_mb": vmhwm_mb(),
        "lock_held_s": s["lock_held_s"],
        "deferred": s["deferred"],
        "verified": s.get("verified"),
    }


# ---- scoring ------------------------------------------------------------------------------


def score(items: list[dict], dup: dict[int, int | None]) -> dict:
    """Recall per kind and wrong merges from each image's final ``duplicate_of`` (or None)."""

    def root(i: int) -> int:
        seen = 0
        while dup[i] is not None and seen < len(dup):
            i, seen = dup[i], seen + 1
        return i

    roots = {i: root(i) for i in range(len(items))}
    orig = {it["group"]: i for i, it in enumerate(items) if it["kind"] == "orig"}
    found: dict[str, list[bool]] = {"easy": [], "hard": []}
    per_edit: dict[str, list[bool]] = {}
    for i, it in enumerate(items):
        if it["kind"] in found:
            # caught: one group with its original, or filed as a copy of another image of its
            # group (then a miss between that image and the original counts for that image)
            hit = roots[i] == roots[orig[it["group"]]] or (
                dup[i] is not None and items[roots[i]]["group"] == it["group"]
            )
            found[it["kind"]].append(hit)
            per_edit.setdefault(it["edit"], []).append(hit)
    wrong_pairs = [
        (it["kind"], items[roots[i]]["kind"])
        for i, it in enumerate(items)
        if dup[i] is not None and items[roots[i]]["group"] != it["group"]
    ]
    wrong = len(wrong_pairs)
    return {
        "easy": sum(found["easy"]) / len(found["easy"]),
        "hard": sum(found["hard"]) / len(found["hard"]),
        "wrong": wrong,
        "wrong_kinds": sorted(f"{a}->{b}" for a, b in wrong_pairs),
        "per_edit": {k: sum(v) / len(v) for k, v in sorted(per_edit.items())},
    }


# ---- the index pre-filled to 100k / 1M kept images -------------------------------------------


def _flip(hashes: np.ndarray, rng: np.random.Generator, bits: tuple[int, int]) -> np.ndarray:
    """``hashes`` with ``bits`` (low, high) random bits flipped each: other photos like them."""
    out = hashes.copy()
    for start in range(0, len(out), 100_000):
        part = out[start : start + 100_000]
        k = rng.integers(bits[0], bits[1] + 1, len(part))
        flips = rng.random((len(part), 64)).argsort(axis=1) < k[:, None]
        masks = np.packbits(flips, axis=1).view(">u8")[:, 0].astype(np.uint64)
        np.bitwise_xor(part, masks, out=part)
    return out


def fill_run(
    items: list[dict], sizes: list[int], tmp: Path, e2e_rate: float | None, bits: tuple[int, int]
) -> None:
    """The default's duplicate decisions for the inbox against an index pre-filled to each size,
    side by side with an empty index."""
    from core.config import FactoryConfig
    from dataset_factory.dedupe import Deduper, Kept
    from dataset_factory.hash_pool import Settings, analyse_paths
    from dataset_factory.index import HashArray, NearDuplicateIndex

    r = random.Random(3)
    fill_dir = tmp / "fill"
    fill_dir.mkdir()
    sources = r.sample(sorted((CIFAR / "train").glob("*/*")), 1000)
    paths = []
    for i, p in enumerate(sources):  # real photos outside the inbox and a planted copy of each
        im = _load(p, CIFAR_SIDE)
        paths.append(fill_dir / f"{i:04d}.jpg")
        im.save(paths[-1], "JPEG", quality=90)
        edit = r.choice([*EASY, *HARD])
        copy = (EASY.get(edit) or HARD[edit])(im, r)
        paths.append(fill_dir / f"{i:04d}_{edit}.jpg")
        copy.save(paths[-1], "JPEG", quality=90)
    settings = Settings()
    fill = analyse_paths(paths, settings)
    inbox = analyse_paths([it["file"] for it in items], settings)
    main = np.array([a.phash & MASK for a in fill], np.uint64)
    view_src = np.array([j for j, a in enumerate(fill) for _ in a.views], np.int64)
    views = np.array([v & MASK for a in fill for v in a.views], np.uint64)
    base = 10_000_000  # ids of the filled entries

    def lookup(image_id: int) -> Kept:
        if image_id >= base:
            a = fill[(image_id - base) % len(fill)]
            return Kept(
                image_id, a.width, a.height, False, str(paths[(image_id - base) % len(fill)])
            )
        return kept[image_id]

    print(
        f"\nduplicate decisions of the {len(items)} inbox images against a pre-filled index "
        f"(hashes of {len(fill)} real photos outside the inbox and their planted copies, "
        f"repeated with {bits[0]}-{bits[1]} bits flipped)"
    )
    print(
        f"{'kept hashes':>12} {'view hashes':>12} {'ms/image':>9} {'verified/img':>13} {'ratio':>7}"
    )
    base_ms = None
    for n in [0, *sizes]:
        rng = np.random.default_rng(n)
        index = NearDuplicateIndex("phash")
        if n:
            src = np.arange(n) % len(fill)
            index.main = HashArray(base + np.arange(n), _flip(main[src], rng, bits))
            per = len(views) / len(fill)
            m = int(n * per)
            vsrc = np.arange(m) % len(views)
            index.views = HashArray(
                base + view_src[vsrc] + (np.arange(m) // len(views)) * len(fill),
                _flip(views[vsrc], rng, bits),
            )
        kept: dict[int, Kept] = {}
        f = FactoryConfig()  # the default settings, as `pingo factory` uses them
        deduper = Deduper(
            index,
            max_distance=f.max_distance,
            hard=f.hard_duplicates,
            hard_distance=f.hard_distance,
            verify_threshold=f.verify_threshold,
            lookup=lookup,
        )
        t = time.perf_counter()
        for i, a in enumerate(inbox):
            if a.ok:
                new = Kept(i, a.width, a.height, False, items[i]["file"])
                kept[i] = new
                deduper.check(a, new)
        ms = 1000 * (time.perf_counter() - t) / len(inbox)
        base_ms = base_ms or ms
        print(
            f"{n:>12,} {len(index.views):>12,} {ms:>9.2f} {deduper.verified / len(inbox):>13.2f} "
            f"{base_ms / ms:>6.2f}x"
        )
        if n and e2e_rate:
            implied = 1 / (1 / e2e_rate + (ms - base_ms) / 1000)
            print(
                f"{'':>12} the factory would run at {implied:.1f} img/s "
                f"({implied / e2e_rate:.2f}x of {e2e_rate:.1f} at an empty index): the "
                "decisions are serial in the main process"
            )


def run_child(mode: str, manifest: Path) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", mode, "--manifest", str(manifest)],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        raise SystemExit(f"{mode} failed:\n{out.stderr[-3000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["dup"] = {int(k): v for k, v in result["dup"].items()}
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--originals", type=int, default=400)
    ap.add_argument("--negatives", type=int, default=80, help="hard negatives (shared background)")
    ap.add_argument("--modes", default="naive,plain,default")
    ap.add_argument("--fill", default="", help="index sizes for the decision-cost run")
    ap.add_argument(
        "--fill-bits",
        default="7-16",
        help="bits flipped in each filled hash: a kept image is more than max_distance (6) "
        "from the others unless the verifier told them apart, so 7-16 models distinct photos; "
        "1-12 a collection crowded with near-copies",
    )
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--manifest", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        items = json.loads(Path(args.manifest).read_text())
        with tempfile.TemporaryDirectory(prefix="pingo-e2e-") as tmp:
            if args.child == "naive":
                res = child_naive(items, Path(tmp))
            else:
                res = child_factory(items, Path(tmp), hard=args.child == "default")
        print(json.dumps(res))
        return

    with tempfile.TemporaryDirectory(prefix="pingo-e2e-") as tmp:
        tmp = Path(tmp)
        (tmp / "inbox").mkdir()
        items = build(tmp / "inbox", args.originals, args.negatives)
        manifest = tmp / "manifest.json"
        manifest.write_text(json.dumps(items))
        kinds = {k: sum(it["kind"] == k for it in items) for k in ("orig", "easy", "hard", "neg")}
        print(
            f"{len(items)} images: {kinds['orig']} originals (cifar test upscaled 32->"
            f"{CIFAR_SIDE} px, sign-language 100->{SIGN_SIDE} px), {kinds['easy']} easy and "
            f"{kinds['hard']} hard planted copies, {kinds['neg']} hard negatives (different "
            f"objects on one background); {os.cpu_count()} cores"
        )
        rows = {}
        for mode in args.modes.split(","):
            res = run_child(mode, manifest)
            rows[mode] = res | score(items, res["dup"])
        names = {
            "naive": "naive phash script (r=10)",
            "plain": "pingo, hard_duplicates=false",
            "default": "pingo, default",
        }
        print(
            f"\n{'':<30} {'img/s':>7} {'vs naive':>8} {'CPU ms/img':>10} {'easy rec':>8} "
            f"{'hard rec':>8} {'wrong':>6} {'peak RSS':>9}"
        )
        base = rows.get("naive")
        for mode, r in rows.items():
            rate = len(items) / r["wall"]
            ratio = f"{rate / (len(items) / base['wall']):.2f}x" if base else "-"
            print(
                f"{names[mode]:<30} {rate:>7.1f} {ratio:>8} {1000 * r['cpu'] / len(items):>10.2f} "
                f"{r['easy']:>8.3f} {r['hard']:>8.3f} {r['wrong']:>6d} {r['rss_mb']:>7.0f}MB"
            )
        for mode, r in rows.items():
            if r["wrong"]:
                print(f"  {mode} wrong merges (image -> kept image of another group):", end=" ")
                kinds = r["wrong_kinds"]
                print(", ".join(f"{k} x{kinds.count(k)}" for k in sorted(set(kinds))))
        print("\nrecall per edit")
        print(f"{'edit':<12}" + "".join(f"{m:>10}" for m in rows))
        for edit in next(iter(rows.values()))["per_edit"]:
            print(f"{edit:<12}" + "".join(f"{r['per_edit'][edit]:>10.3f}" for r in rows.values()))
        if args.fill:
            e2e = len(items) / rows["default"]["wall"] if "default" in rows else None
            low, high = (int(x) for x in args.fill_bits.split("-"))
            fill_run(items, [int(x) for x in args.fill.split(",")], tmp, e2e, (low, high))


if __name__ == "__main__":
    main()
