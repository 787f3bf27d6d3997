"""Factory memory: peak resident size of opening the near-duplicate index over N kept images.

A real SQLite DB is filled with N kept rows (default 1M; bulk insert) whose hashes are
realistic: the phash and view hashes of real sign-language-digits photos, each reused with a
few random bits flipped (the near-copies a crawl brings). The .npz sidecar is written too, as
after any factory run. Then two child processes each open the index the way the factory does
at start (``open_index`` inside an Analyser, as ``process_inbox``):

  pingo     ids and hashes in numpy arrays, kept rows streamed from the DB a page at a time;
  baseline  the previous open_index: a dict of every kept row (id -> row dict), then the same
            reconciliation.

Each child prints its peak RSS (VmHWM) and the RSS after imports (the interpreter,
numpy, Pillow, SQLAlchemy: what any factory process carries). Target: <= 150 MB at 1M rows.

    .venv/bin/python bench/factory_memory.py [--rows 1000000] [--data DIR] [--skip-baseline]

About 10 minutes at 1M rows on 2 busy cores (filling ~2.5 min; opening the baseline's way
is the slowest part). ``--data DIR`` keeps the filled DB for a rerun (reused when present).
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DATASET = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "sign-language-digits"
METHOD = "phash"


def rss_mb(field: str = "VmRSS") -> float:
    """This process's resident size (VmRSS) or its peak (VmHWM), MB. Not ru_maxrss: on Linux
    that carries over from the parent through fork and exec, so a child would report the
    bench's own peak."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def real_hashes(n_photos: int) -> list[tuple[int, list[int]]]:
    """(main hash, view hashes) of real photos, as the factory computes them."""
    from dataset_factory.hashing import all_hashes
    from vision.decode import decode

    photos = sorted(DATASET.glob("*/*.JPG"))
    if not photos:
        sys.exit(f"no photos at {DATASET}")
    photos = photos[:: max(1, len(photos) // n_photos)][:n_photos]
    out = []
    for p in photos:
        hashed = all_hashes(decode(p).image, METHOD)
        main, stored = hashed.main, hashed.stored
        out.append((main, stored))
    return out


def flip(h: int, rng: np.random.Generator) -> int:
    """``h`` with 0-6 random bits flipped, as a signed 64-bit int."""
    u = h & 0xFFFFFFFFFFFFFFFF
    for b in rng.choice(64, size=int(rng.integers(0, 7)), replace=False):
        u ^= 1 << int(b)
    return u - (1 << 64) if u >= 1 << 63 else u


def fill(data_dir: Path, rows: int, seed: int = 0) -> float:
    """A real pingo DB with ``rows`` kept images and its index sidecar; returns seconds."""
    from dataset_factory.dedupe import index_path
    from dataset_factory.index import NearDuplicateIndex
    from storage.store import Store

    started = time.perf_counter()
    Store.open(data_dir).close()  # the schema, as pingo creates it
    rng = np.random.default_rng(seed)
    bases = real_hashes(400)
    index = NearDuplicateIndex(METHOD)
    main_ids, main_h, view_ids, view_h = [], [], [], []
    now = "2026-01-01 00:00:00.000000"
    con = sqlite3.connect(data_dir / "pingo.db")
    con.execute("PRAGMA synchronous=OFF")
    sql = (
        "INSERT INTO images (id, sha256, phash, hash_method, source_url, source, query, "
        "keyword_class, status, label, label_source, confidence, model_version, path, "
        "width, height, bytes, created_at, updated_at) "
        "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
    )
    block = 50_000
    for start in range(1, rows + 1, block):
        batch = []
        picks = rng.integers(0, len(bases), size=min(block, rows + 1 - start))
        for k, pick in enumerate(picks.tolist()):
            i = start + k
            main, views = bases[pick]
            h = flip(main, rng)
            cls = f"class{pick % 10}"
            status = "review" if i % 10 == 0 else "accepted"
            batch.append(
                (
                    i,
                    f"{i:064x}",
                    h,
                    METHOD,
                    f"https://img.example.org/{i}.jpg",
                    "openverse",
                    f"{cls} photo",
                    cls,
                    status,
                    cls,
                    "model",
                    0.97,
                    "v0001",
                    f"{'dataset' if status == 'accepted' else 'review'}/{cls}/{i:064x}.jpg",
                    640,
                    480,
                    48_213,
                    now,
                    now,
                )
            )
            main_ids.append(i)
            main_h.append(h)
            for v in views:
                view_ids.append(i)
                view_h.append(flip(v, rng))
        con.executemany(sql, batch)
        con.commit()
    con.close()
    index.main.extend(main_ids, main_h)
    index.views.extend(view_ids, view_h)
    index.save(index_path(data_dir, METHOD, hard=True))
    return time.perf_counter() - started


def old_open_index(store, analyser, method: str, hard: bool):
    """The open_index pingo had before: one dict per kept row, held for the whole reconcile."""
    from dataset_factory.dedupe import KEPT, add_kept_rows, index_path
    from dataset_factory.index import NearDuplicateIndex

    path = index_path(store.data_dir, method, hard)
    index = NearDuplicateIndex.load(path, method) or NearDuplicateIndex(method)
    kept = {}
    for status in KEPT:
        for row in store.iter_images(status=status):
            if row["path"]:
                kept[row["id"]] = row
    have = set(index.main.ids.tolist())
    gone = have - set(kept)
    if gone:
        index.remove(gone)
    missing = [kept[i] for i in sorted(set(kept) - have)]
    add_kept_rows(index, store, analyser, missing, method, hard, write_back=True)
    if gone or missing:
        index.save(path)
    return index


def child(way: str, data_dir: Path) -> None:
    from dataset_factory.dedupe import open_index
    from dataset_factory.hash_pool import Analyser, Settings
    from storage.store import Store

    imported = rss_mb()
    opener = open_index if way == "new" else old_open_index
    store = Store.open(data_dir, repair=False)
    t = time.perf_counter()
    with Analyser(Settings(method=METHOD), 1) as analyser:
        index = opener(store, analyser, METHOD, True)
    seconds = time.perf_counter() - t
    peak = rss_mb("VmHWM")
    print(
        json.dumps(
            {
                "way": way,
                "images": len(index),
                "views": len(index.views),
                "peak_mb": peak,
                "imports_mb": imported,
                "seconds": seconds,
            }
        )
    )


def measure(way: str, data_dir: Path) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", way, "--data", str(data_dir)],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--data", type=Path, help="data_dir to fill (default: a temp folder)")
    ap.add_argument("--skip-baseline", action="store_true", help="measure pingo's way only")
    ap.add_argument("--child", choices=("new", "old"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args.child, args.data)
    with tempfile.TemporaryDirectory(prefix="pingo-factory-mem-") as tmp:
        data_dir = args.data or Path(tmp) / "data"
        if (data_dir / "pingo.db").exists():
            print(f"reusing {data_dir}")
        else:
            print(f"filling {data_dir} with {args.rows:,} kept rows ...", flush=True)
            print(
                f"  {fill(data_dir, args.rows):.1f} s; DB "
                f"{(data_dir / 'pingo.db').stat().st_size / 2**20:.0f} MB"
            )
        new = measure("new", data_dir)
        if args.skip_baseline:
            return print(json.dumps(new))
        old = measure("old", data_dir)
    print(f"\nopen_index over {new['images']:,} kept images ({new['views']:,} view hashes)")
    print(f"  {'':<34} {'pingo':>10} {'baseline':>10} {'ratio':>7}")
    print(
        f"  {'peak RSS (MB)':<34} {new['peak_mb']:>10.0f} {old['peak_mb']:>10.0f} "
        f"{old['peak_mb'] / new['peak_mb']:>6.1f}x"
    )
    print(
        f"  {'peak RSS above imports (MB)':<34} {new['peak_mb'] - new['imports_mb']:>10.0f} "
        f"{old['peak_mb'] - old['imports_mb']:>10.0f} "
        f"{(old['peak_mb'] - old['imports_mb']) / (new['peak_mb'] - new['imports_mb']):>6.1f}x"
    )
    print(
        f"  {'seconds to open':<34} {new['seconds']:>10.1f} {old['seconds']:>10.1f} "
        f"{old['seconds'] / new['seconds']:>6.1f}x"
    )
    print(f"  target: <= 150 MB peak at 1M rows: {'met' if new['peak_mb'] <= 150 else 'MISSED'}")


if __name__ == "__main__":
    main()
