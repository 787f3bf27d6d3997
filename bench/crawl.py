"""Crawler benchmarks, each against the obvious alternative measured in the same run.

(a) Result pages rendered per second, pages delayed 1 s by the server: the browser pool
    (SELENIUM_MAX_DRIVERS browsers on worker threads) vs one browser driven on the reactor
    thread, which is how scrapy-selenium's middleware works (it calls driver.get there).
(b) Images per second downloaded into the inbox from the demo site serving a real dataset
    (default ../shared/datasets/sign-language-digits): Scrapy + the inbox pipeline vs one
    thread fetching the same URLs one after another with urllib (a naive script).

    .venv/bin/python bench/crawl.py                 # both, default sizes (~1-2 minutes)
    .venv/bin/python bench/crawl.py --pages 16 --drivers 3 --images DIR --concurrency 32
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.config import Config  # noqa: E402
from crawler.demo_images import ensure_demo_images  # noqa: E402
from crawler.demo_site import make_server  # noqa: E402
from crawler.run import crawl  # noqa: E402

SIGN_DIGITS = ROOT.parent / "shared" / "datasets" / "sign-language-digits"
logger = logging.getLogger("bench.crawl")


def project(url: str, classes: dict[str, tuple[str, int]], **crawl_settings) -> Config:
    tmp = Path(tempfile.mkdtemp(prefix="pingo-bench-crawl-"))
    return Config.from_mapping(
        {
            "classes": {
                name: {"keywords": [kw], "target": target} for name, (kw, target) in classes.items()
            },
            "crawl": {"demo_url": url, **crawl_settings},
        },
        base_dir=tmp,
    )


def render_rate(url: str, pages: int, drivers: int, on_reactor: bool) -> tuple[float, int, float]:
    """(pages per second over the render window, pages rendered, wall seconds)."""
    # One class per page, each lacking one image: almost all the work is rendering.
    classes = {f"c{i}": ("circle square triangle", 1) for i in range(pages)}
    config = project(url, classes, max_drivers=drivers)
    start = time.monotonic()
    summary = crawl(config, settings={"SELENIUM_ON_REACTOR_THREAD": on_reactor})
    wall = time.monotonic() - start
    s = summary.stats
    window = s["selenium/last_render_end"] - s["selenium/first_render_start"]
    return s["selenium/page_count"] / window, s["selenium/page_count"], wall


def bench_render(pages: int, drivers: int, delay: float) -> None:
    images = ensure_demo_images()
    with make_server(images, page_delay=delay).start() as site:
        pool = render_rate(site.url, pages, drivers, on_reactor=False)
        blocking = render_rate(site.url, pages, 1, on_reactor=True)
    print(f"\n(a) result pages rendered per second ({pages} pages, server delay {delay:.1f}s)")
    print(f"{'mode':<44} {'pages':>5} {'pages/s':>8} {'wall s':>7}")
    for mode, (rate, rendered, wall) in (
        (f"pool: {drivers} browsers on worker threads", pool),
        ("1 browser on the reactor thread (baseline)", blocking),
    ):
        print(f"{mode:<44} {rendered:>5} {rate:>8.2f} {wall:>7.1f}")
    print(f"ratio pool/baseline: {pool[0] / blocking[0]:.2f}x")


def bench_download(folder: Path, concurrency: int, image_delay: float = 0.0) -> None:
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
    with make_server(folder, page_size=100, image_delay=image_delay).start() as site:
        # One query naming every folder: one page (scrolled to the end) lists every image,
        # so the download window measures downloading, not waiting for renders.
        config = project(
            site.url,
            {"all": (" ".join(classes), 100_000)},
            concurrency=concurrency,
            per_query_limit=5000,
            profiles={"demo": {"max_scrolls": 200}},
        )
        start = time.monotonic()
        summary = crawl(config)
        wall = time.monotonic() - start
        s = summary.stats
        stored = s.get("file_status_count/stored", 0) + s.get("file_status_count/duplicate", 0)
        window = s["pingo/last_image_at"] - s["pingo/first_image_at"]
        # The alternative: a script fetching the same URLs one after another with urllib and
        # storing them the same way (same checks, same Store calls); and bytes only, a ceiling.
        urls = [f"{site.url}/image/{c}/{f}" for c in classes for f in site.site.index[c]]
        naive = naive_store(urls)
        t0 = time.monotonic()
        for u in urls:
            with urllib.request.urlopen(u) as r:
                r.read()
        bytes_only = time.monotonic() - t0
    refused = sum(sum(c.refused.values()) for c in summary.classes.values())
    print(
        f"\n(b) images per second into the inbox from {folder} ({len(urls)} images"
        + (f", server delay {image_delay * 1000:.0f} ms per image)" if image_delay else ")")
    )
    print(f"{'mode':<44} {'images':>6} {'img/s':>8} {'wall s':>7}")
    print(
        f"{f'scrapy + inbox pipeline (concurrency {concurrency})':<44} {stored:>6} "
        f"{stored / window:>8.1f} {wall:>7.1f}"
    )
    print(
        f"{'urllib one at a time, same checks + Store':<44} {len(urls):>6} "
        f"{len(urls) / naive:>8.1f} {naive:>7.1f}"
    )
    print(
        f"{'urllib one at a time, bytes only (ceiling)':<44} {len(urls):>6} "
        f"{len(urls) / bytes_only:>8.1f} {bytes_only:>7.1f}"
    )
    print(
        f"ratio scrapy/urllib+Store: {(stored / window) / (len(urls) / naive):.2f}x; "
        f"duplicates {s.get('file_status_count/duplicate', 0)}, refused {refused}; "
        f"crawl incl. browser start and page renders: {stored / wall:.1f} img/s"
    )


def naive_store(urls: list[str]) -> float:
    """Seconds for a one-thread script: fetch, check, add_image, record_url, per URL."""
    from crawler.pipeline import ImageRefused, check_image
    from storage import Store
    from storage.errors import DuplicateImageError

    with Store.open(Path(tempfile.mkdtemp(prefix="pingo-bench-naive-"))) as store:
        t0 = time.monotonic()
        for u in urls:
            with urllib.request.urlopen(u) as r:
                body, ctype = r.read(), r.headers.get("Content-Type", "")
            try:
                ext, w, h = check_image(body, ctype, 16, 40_000_000)
                image_id = store.add_image(
                    body,
                    keyword_class="all",
                    source="demo",
                    ext=ext,
                    source_url=u,
                    width=w,
                    height=h,
                )
            except (ImageRefused, DuplicateImageError):
                image_id = None
            store.record_url(u, "stored", image_id)
        return time.monotonic() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pages", type=int, default=12, help="result pages to render (a)")
    parser.add_argument("--drivers", type=int, default=2, help="browsers in the pool (a)")
    parser.add_argument("--delay", type=float, default=1.0, help="server delay per page (a)")
    parser.add_argument("--images", type=Path, default=SIGN_DIGITS, help="folder to serve (b)")
    parser.add_argument("--concurrency", type=int, default=16, help="parallel downloads (b)")
    parser.add_argument(
        "--image-delay",
        type=float,
        default=0.0,
        help="server delay per image in seconds, like network latency (b)",
    )
    parser.add_argument("--only", choices=["render", "download"])
    args = parser.parse_args()
    if args.only != "download":
        bench_render(args.pages, args.drivers, args.delay)
    if args.only != "render":
        if not args.images.is_dir():
            sys.exit(f"no image folder at {args.images} (pass --images DIR)")
        bench_download(args.images, args.concurrency, args.image_delay)


if __name__ == "__main__":
    main()
