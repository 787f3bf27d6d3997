"""What durable move intents cost: images stored per second (Store.add_image + record_url, the
crawler's per-image storage work, then one move_many per 50 images, the factory's) with

  normal  every commit synchronous=NORMAL (pingo before issue 10: intents could be lost),
  pingo   intents synchronous=FULL, everything else NORMAL (now),
  full    every commit synchronous=FULL (the obvious fix).

Runs interleaved, median of --repeat. Usage: python bench/storage_durability.py [--n 300]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from storage import Move, Store, db  # noqa: E402
from storage import store as store_mod


def one(mode: str, n: int, root: Path) -> float:
    real = db.begin
    if mode != "pingo":
        store_mod.begin = lambda engine, durable=False: real(engine, durable=mode == "full")
        patched_begin = engine_begin(mode)
    else:
        store_mod.begin = real
        patched_begin = None
    with Store.open(tempfile.mkdtemp(dir=root)) as store:
        if patched_begin:
            store.engine.begin = patched_begin(store.engine.begin)
        t = time.perf_counter()
        ids = []
        for i in range(n):
            ids.append(
                store.add_image(
                    i.to_bytes(4, "big") * 100, keyword_class="cat", source="bench", ext="jpg"
                )
            )
            store.record_url(f"http://bench/{i}", "image")
        for i in range(0, n, 50):
            store.move_many([Move(j, "accepted", {"label": "cat"}) for j in ids[i : i + 50]])
        return n / (time.perf_counter() - t)


def engine_begin(mode: str):
    def wrap(begin):
        def patched(durable: bool = False):
            return begin(durable=mode == "full")

        return patched

    return wrap


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    rates: dict[str, list[float]] = {"normal": [], "pingo": [], "full": []}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeat):
            for mode in rates:
                rates[mode].append(one(mode, args.n, Path(tmp)))
    base = statistics.median(rates["normal"])
    for mode, r in rates.items():
        m = statistics.median(r)
        print(f"{mode:<7} {m:7.1f} images/s  {m / base:5.2f}x of normal")


if __name__ == "__main__":
    main()
