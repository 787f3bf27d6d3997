"""Chaos bench: many rounds of real `pingo crawl|factory|train` processes killed at random.

Each round signals one stage (SIGKILL, SIGINT or SIGTERM to its whole process group, after a
random delay inside the stage's typical run), reruns it clean (exit 0 required) and checks the
project (`pingo check --json` exits 0; no dangling URL, no run left running). At the end a clean
crawl and factory run must leave every image the demo site offered accounted for exactly once.
Real photos from ../shared/datasets (sign-language-digits by default) are served by the demo
site on 127.0.0.1. The seed is printed; --seed replays the same plan.

    .venv/bin/python bench/chaos.py                       # 200 rounds
    .venv/bin/python bench/chaos.py --rounds 12 --per-class 20 --seed 7
    .venv/bin/python bench/chaos.py --dataset cifar10-subset --classes cat dog ship

Prints a table: kills landed/planned per signal x stage, SIGINT/SIGTERM stop times, time per
round, and every fault found (with seed, round, stage, signal and delay).
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from chaos_driver import Chaos, Driver, outcome_counts, prepare_images  # noqa: E402

DATASETS = ROOT.parent / "shared" / "datasets"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument(
        "--dataset",
        default="sign-language-digits",
        help="folder under ../shared/datasets with <class>/ subfolders",
    )
    ap.add_argument("--classes", nargs="*", help="class folders to serve (default: all)")
    ap.add_argument(
        "--per-class", type=int, default=None, help="photos served per class (default: all)"
    )
    ap.add_argument("--crawl-limit", type=int, default=5, help="new images per class per crawl")
    ap.add_argument(
        "--grace",
        type=float,
        default=30.0,
        help="seconds a stage may take to stop after SIGINT/SIGTERM",
    )
    ap.add_argument("--keep", action="store_true", help="keep the project folder")
    args = ap.parse_args()

    from crawler.demo_site import make_server

    seed = args.seed if args.seed is not None else random.randrange(1_000_000)
    print(f"chaos bench: seed {seed} (--seed {seed} replays this plan), {args.rounds} rounds")
    source = DATASETS / args.dataset
    if not source.is_dir():
        print(f"no dataset at {source}", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="pingo-chaos-"))
    photos = prepare_images(source, work / "photos", args.classes, args.per_class)
    classes = sorted(p.name for p in photos.iterdir() if p.is_dir())
    faults: list[str] = []
    with make_server(photos, request_log=1_000_000).start() as site:
        driver = Driver(
            work / "project",
            site.url,
            classes,
            seed=seed,
            grace=args.grace,
            crawl_limit=args.crawl_limit,
        )
        chaos = Chaos(driver)
        started = time.monotonic()
        faults += chaos.warm_up()
        for number, (stage, signame) in enumerate(chaos.schedule(args.rounds), 1):
            r = chaos.round(number, stage, signame)
            print(
                f"round {number:>3}: {r.kill.describe():<58} "
                f"{'landed' if r.landed else 'missed':<6} {r.seconds:6.1f}s"
                f"{'  FAULT' if r.faults else ''}",
                flush=True,
            )
            for f in r.faults:
                print("    " + f.replace("\n", "\n    "), flush=True)
            faults += r.faults
        faults += chaos.finish(photos, site.site)
        total = time.monotonic() - started
    print()
    print(chaos.table())
    print(
        f"  offered {sum(1 for _ in photos.glob('*/*'))} image URLs; outcomes "
        f"{outcome_counts(driver.data_dir)}; {driver.runs} stage runs in {total:.0f}s"
    )
    print(f"  faults found: {len(faults)}")
    for f in faults:
        print("  - " + f.replace("\n", "\n    "))
    if args.keep or faults:
        print(f"project kept at {work}")
    else:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    return 1 if faults else 0


if __name__ == "__main__":
    sys.exit(main())
