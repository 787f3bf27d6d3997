"""`pingo demo` / `make demo`: the whole loop once, offline, against the local demo site.

crawl half of each target -> factory (keyword labels: no model yet) -> train a small model
-> crawl the rest -> factory (now the model sorts; unsure images go to review) -> stats and
the HTML report. Each stage runs as a recorded job under the job lock, like the scheduler's.
"""

from __future__ import annotations

import dataclasses
import logging
import urllib.request
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from core.config import Config, override
from core.errors import PingoError
from core.stats import format_interval
from scheduler.jobs import factory_stage, run_job

logger = logging.getLogger(__name__)

DEMO_KEYWORD_PRIOR = 0.95  # factory.keyword_prior for the demo site, whose results are right
# ... and so its first, model-less batch is accepted by keyword (factory.keyword_only): the
# demo has no hand-labelled images for the label check to calibrate on
DEMO_FACTORY = {"keyword_prior": DEMO_KEYWORD_PRIOR, "keyword_only": "accept"}

# 1-2 minutes of training on 2 cores; `pingo train` uses the config's full settings.
# Round 1 has ~35 training images a class: small batches give enough steps per epoch; the
# epoch cap bounds the time (early stopping may end it sooner; the best epoch is kept).
DEMO_TRAIN = {
    "image_size": 48,
    "epochs": 100,
    "batch_size": 8,
    "patience": 25,
    "arch": "small_cnn",
    "weights": "none",  # offline, whatever the starter config says
    "augment": True,
}


def _site_answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/robots.txt", timeout=3) as resp:
            return resp.status == 200
    except OSError:
        return False


def start_demo_site(config: Config) -> Callable[[], None] | None:
    """Serve the demo site at crawl.demo_url unless something already answers there."""
    from crawler.demo_site import serve_in_thread

    if _site_answers(config.crawl.demo_url):
        logger.info("using the demo site already running at %s", config.crawl.demo_url)
        return None
    parts = urlsplit(config.crawl.demo_url)
    if parts.hostname not in ("127.0.0.1", "localhost"):
        raise PingoError(
            f"crawl.demo_url {config.crawl.demo_url} does not answer and is not "
            "local, so the demo cannot start it"
        )
    _, stop = serve_in_thread(port=parts.port or 80)
    return stop


def _factory_line(summary) -> str:
    data = summary.as_json()
    parts = [
        f"{name}: {c['accepted']} accepted, {c['review']} review, {c['rejected']} rejected"
        for name, c in data["classes"].items()
    ]
    return "; ".join(parts) or "inbox was empty"


def run_demo(config: Config, echo: Callable[[str], None] = print) -> Path:
    """Run the demo loop; return the report's path."""
    from crawler import crawl
    from pingo.report import build_report, model_accuracy, model_interval
    from pingo.tables import progress_lines, totals_line
    from storage import Store
    from trainer import train

    # The demo is offline: the demo site alone, even where crawl.sources also lists the
    # open-licence APIs (as `pingo init` writes it).
    demo_only = ["demo"] if "demo" in config.crawl.sources else None
    if "demo" not in config.crawl.sources:
        echo(
            "note: crawl.sources does not include 'demo'; the demo crawls "
            + ", ".join(config.crawl.sources)
        )
    # The demo site's results are all right (drawn shapes): say so, as a user who knows a
    # source would, instead of the default prior for keyword searches (0.7).
    config = dataclasses.replace(config, factory=override(config.factory, DEMO_FACTORY))
    stop_site = start_demo_site(config)
    try:
        targets = config.targets
        half = max(1, min(targets.values()) // 2) if targets else 1

        echo(f"[1/6] crawl: up to {half} images per class below target")
        summary = run_job(config, "crawl", lambda c, s: crawl(c, s, sources=demo_only, limit=half))
        echo(summary.format())

        echo("[2/6] factory: validate, dedupe, label by keyword (no model yet)")
        echo(_factory_line(run_job(config, "factory", factory_stage)))

        echo(
            f"[3/6] train a small model ({DEMO_TRAIN['image_size']} px, up to "
            f"{DEMO_TRAIN['epochs']} epochs, early stopping; 1-2 minutes on 2 cores)"
        )
        result = run_job(
            config, "train", lambda c, s: train(c, s, force=True, overrides=DEMO_TRAIN)
        )
        accuracy = model_accuracy(result.metrics)
        echo(
            f"{result.version}: test accuracy {accuracy:.3f} "
            f"{format_interval(model_interval(result.metrics))}; {result.reason}"
            if result.trained and accuracy is not None
            else f"{result.reason}"
        )

        echo("[4/6] crawl: the rest of each target")
        echo(run_job(config, "crawl", lambda c, s: crawl(c, s, sources=demo_only)).format())

        echo("[5/6] factory: the promoted model sorts; unsure images go to review")
        echo(_factory_line(run_job(config, "factory", factory_stage)))

        echo("[6/6] stats and report")
        with Store.from_config(config) as store:
            stats = store.stats(targets)
            for line in [*progress_lines(stats), *totals_line(stats).splitlines()]:
                echo("  " + line)
            report = build_report(config, store)
        echo(f"report: {report}")
        return report
    finally:
        if stop_site:
            stop_site()
