"""Crawl throughput with 1 vs 2 crawler processes sharing one Redis frontier.

The demo search site answers every image after a fixed delay (a slow image host), so one
crawler's throughput is bounded by its concurrency / delay; a second process, started with
the same config, takes requests off the same queue. Each run starts from an empty project
(SQLite) and a fresh Redis key prefix, crawls the same targets, and checks that every image
was fetched once and every class got exactly its target.

Images/s is measured over the window in which images arrived (first to last stored image,
across all workers: browser start-up excluded); wall seconds include start-up. A reference
row runs one process with twice the concurrency, the obvious alternative to a second process.

    .venv/bin/python bench/distributed_crawl.py                  # ~1-2 minutes
    .venv/bin/python bench/distributed_crawl.py --per-class 40 --image-delay 0.5 --concurrency 4
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from core.names import DEMO_CLASSES as CLASSES  # noqa: E402


def run(site, workers: int, concurrency: int, per_class: int, redis_url: str, tmp: Path) -> dict:
    from crawler_fixtures.helpers import crawl_toml

    from core.config import load_config
    from crawler.run import crawl
    from storage import Store

    project = tmp / f"w{workers}-c{concurrency}-{uuid.uuid4().hex[:6]}"
    project.mkdir()
    prefix = f"pingobench:{uuid.uuid4().hex[:10]}"
    (project / "pingo.toml").write_text(
        crawl_toml(
            site.url,
            {c: per_class for c in CLASSES},
            redis_url=redis_url,
            redis_key_prefix=prefix,
            idle_timeout=3.0,
            concurrency=concurrency,
            max_drivers=1,
            download_timeout=30.0,
        )
    )
    config = load_config(project / "pingo.toml")
    with Store.from_config(config):
        pass  # create the schema once, before the crawlers start
    site.site.requests.clear()
    summaries = []
    threads = [
        threading.Thread(target=lambda: summaries.append(crawl(config))) for _ in range(workers)
    ]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - started
    # Each process notes when its first and last image arrived; the union is the window.
    firsts = [s.stats["pingo/first_image_at"] for s in summaries if s.downloaded]
    lasts = [s.stats["pingo/last_image_at"] for s in summaries if s.downloaded]
    with Store.from_config(config) as store:
        stored = Counter(r["keyword_class"] for r in store.iter_images())
    fetched = Counter(p for p in site.site.requests if p.startswith("/image/"))
    assert stored == {c: per_class for c in CLASSES}, f"classes filled wrongly: {stored}"
    assert max(fetched.values()) == 1, "an image was fetched twice"
    _clear(redis_url, prefix)
    total = sum(stored.values())
    window = max(lasts) - min(firsts)
    return {
        "workers": workers,
        "concurrency": concurrency,
        "images": total,
        "window": window,
        "rate": total / window if window else float("nan"),
        "wall": wall,
        "per_worker": sorted(s.downloaded for s in summaries),
    }


def _clear(redis_url: str, prefix: str) -> None:
    import redis

    server = redis.Redis.from_url(redis_url)
    keys = list(server.scan_iter(match=f"{prefix}:*", count=500))
    if keys:
        server.delete(*keys)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--per-class", type=int, default=40, help="images per class (3 classes)")
    parser.add_argument(
        "--image-delay",
        type=float,
        default=0.25,
        help="seconds the demo site waits before each image",
    )
    parser.add_argument("--concurrency", type=int, default=4, help="crawl.concurrency per worker")
    parser.add_argument("--repeat", type=int, default=1, help="runs per setup (best is kept)")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/9")
    args = parser.parse_args()

    from crawler.demo_images import ensure_demo_images
    from crawler.demo_site import make_server
    from crawler.frontier import check_redis

    check_redis(args.redis_url)
    with tempfile.TemporaryDirectory(prefix="pingo-bench-dcrawl-") as tmp:
        images = ensure_demo_images(Path(tmp) / "cache", count=args.per_class + 10, size=32)
        with make_server(images, image_delay=args.image_delay).start() as site:
            setups = [(1, args.concurrency), (2, args.concurrency), (1, 2 * args.concurrency)]
            results = {}
            for workers, conc in setups:
                runs = [
                    run(site, workers, conc, args.per_class, args.redis_url, Path(tmp))
                    for _ in range(args.repeat)
                ]
                results[(workers, conc)] = max(runs, key=lambda r: r["rate"])
    one = results[(1, args.concurrency)]
    print(
        f"\ndemo site: {args.image_delay}s per image, {len(CLASSES)} classes x {args.per_class} "
        f"images, Redis {args.redis_url}\n"
    )
    print(
        f"{'setup':<34} {'images':>6} {'window s':>9} {'images/s':>9} {'wall s':>7} "
        f"{'per worker':>12} {'ratio':>6}"
    )
    labels = {
        (1, args.concurrency): f"1 process, concurrency {args.concurrency}",
        (2, args.concurrency): f"2 processes, concurrency {args.concurrency} each",
        (1, 2 * args.concurrency): f"1 process, concurrency {2 * args.concurrency} (ref)",
    }
    for key, r in results.items():
        print(
            f"{labels[key]:<34} {r['images']:>6} {r['window']:>9.2f} {r['rate']:>9.1f} "
            f"{r['wall']:>7.1f} {'/'.join(map(str, r['per_worker'])):>12} "
            f"{r['rate'] / one['rate']:>5.2f}x"
        )
    two = results[(2, args.concurrency)]
    print(
        f"\n2 processes vs 1: {two['rate'] / one['rate']:.2f}x images/s "
        f"({two['wall'] / one['wall']:.2f}x wall time)"
    )


if __name__ == "__main__":
    main()
