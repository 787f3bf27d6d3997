"""The crawler's image check: worker processes under a time limit vs decoding in the thread.

(a) Cost per image of real photos (default ../shared/datasets/sign-language-digits): the
    bounded check (crawler.imagecheck.ImageChecker: one worker process, bytes over a pipe)
    vs crawler.imagecheck.inspect in the calling thread (what the crawler did before).
(b) A progressive JPEG scan bomb (4000x4000, N scans): seconds in the thread vs seconds
    until the bounded check refuses it (factory.decode_timeout, default here 2 s).

    .venv/bin/python bench/crawl_imagecheck.py [--images DIR] [--count 500] [--scans 20000]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from crawler.imagecheck import ImageChecker, inspect  # noqa: E402

SIGN_DIGITS = ROOT.parent / "shared" / "datasets" / "sign-language-digits"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=Path, default=SIGN_DIGITS)
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--scans", type=int, default=20000, help="scans in the bomb (b)")
    parser.add_argument("--timeout", type=float, default=2.0, help="decode time limit (b)")
    args = parser.parse_args()

    files = sorted(
        p for p in args.images.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png")
    )[: args.count]
    bodies = [(f.read_bytes(), "image/jpeg") for f in files]
    checker = ImageChecker(16, 40_000_000, args.timeout)
    try:
        checker.check(*bodies[0])  # start the worker outside the timing
        t0 = time.perf_counter()
        for body, ctype in bodies:
            inspect(body, ctype, 16, 40_000_000)
        inline = time.perf_counter() - t0
        t0 = time.perf_counter()
        for body, ctype in bodies:
            checker.check(body, ctype)
        bounded = time.perf_counter() - t0
        n = len(bodies)
        print(f"(a) {n} images, {sum(len(b) for b, _ in bodies) / n / 1024:.1f} kB each")
        print(f"    in the thread    {inline / n * 1000:7.2f} ms/image")
        print(
            f"    worker process   {bounded / n * 1000:7.2f} ms/image"
            f"   ratio {bounded / inline:.2f}x"
        )

        from test_crawl_resources import scan_bomb

        bomb = scan_bomb(repeats=args.scans)
        t0 = time.perf_counter()
        checker.check(bomb, "image/jpeg")
        refused = time.perf_counter() - t0
        t0 = time.perf_counter()
        inspect(bomb, "image/jpeg", 16, 40_000_000)
        unbounded = time.perf_counter() - t0
        print(f"(b) scan bomb, {args.scans} scans, {len(bomb) / 1024:.0f} kB")
        print(f"    in the thread    {unbounded:7.1f} s, then stored")
        print(
            f"    worker process   {refused:7.1f} s, refused as not_image"
            f"   ratio {unbounded / refused:.1f}x"
        )
    finally:
        checker.close()


if __name__ == "__main__":
    main()
