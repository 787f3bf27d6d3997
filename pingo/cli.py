"""The `pingo` command: a thin layer over the library.

Library code raises named PingoError subclasses; this module alone turns them into one-line
messages and exit codes (2: bad config or usage, 1: anything else refused), attaches log
handlers, and draws progress bars.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from core.config import Config, find_config_path, load_config, write_starter_config
from core.errors import PingoError
from core.names import ARCHITECTURES
from core.stats import format_interval
from pingo import __version__, quiet_import
from pingo.tables import (
    auto_accept,
    auto_accept_lines,
    progress_lines,
    review_reason_lines,
    totals_line,
)

if TYPE_CHECKING:
    from storage import Store

logger = logging.getLogger(__name__)


class PingoGroup(click.Group):
    """Runs a command and converts pingo's named exceptions into messages and exit codes."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except PingoError as exc:
            click.echo(f"pingo: error: {exc}", err=True)
            ctx.exit(exc.exit_code)


def _setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO
    if not verbose:  # TensorFlow's C++ start-up chatter (oneDNN, CPU features) says nothing useful
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    root = logging.getLogger()
    if not any(getattr(h, "_pingo", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
        )
        handler._pingo = True  # type: ignore[attr-defined]  # marks pingo's own handler
        root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("scrapy", "selenium", "urllib3", "tensorflow", "absl", "PIL", "matplotlib"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))


class Context:
    def __init__(self, config_path: str | None):
        self.config_path = config_path
        self._config: Config | None = None

    @property
    def config(self) -> Config:
        if self._config is None:
            self._config = load_config(self.config_path)
        return self._config

    def store(self):
        from storage import Store

        return Store.from_config(self.config)


pass_ctx = click.make_pass_decorator(Context)


def json_option(help: str = "Print machine-readable JSON.", **kwargs):
    """``--json``, the same flag name and parameter (``as_json``) on every command."""
    return click.option("--json", "as_json", is_flag=True, help=help, **kwargs)


def class_option(help: str, multiple: bool = False):
    """``--class C``: one class (or, with ``multiple``, a repeatable list as ``classes``)."""
    return click.option(
        "--class",
        "classes" if multiple else "class_name",
        metavar="C",
        multiple=multiple,
        help=help,
    )


def _as_job(ctx: Context, job: str, work):
    """Run ``work(store)`` as a recorded job under the job lock, like the scheduler does: a
    second job never overlaps it (it stops with "busy", exit status 75)."""
    from scheduler.jobs import run_job

    return run_job(ctx.config, job, lambda config, store: work(store))


@click.group(cls=PingoGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_path",
    metavar="FILE",
    envvar="PINGO_CONFIG",
    help="Config file (default: ./pingo.toml, or $PINGO_CONFIG).",
)
@click.option("-v", "--verbose", count=True, help="Log debug detail.")
@click.option("-q", "--quiet", is_flag=True, help="Log warnings and errors only.")
@click.version_option(__version__, prog_name="pingo")
@click.pass_context
def cli(ctx, config_path, verbose, quiet):
    """pingo grows an image-classification dataset unattended: crawl, dedupe, sort, retrain."""
    _setup_logging(verbose, quiet)
    if not verbose:
        quiet_import.install()
    ctx.obj = Context(config_path)


@cli.command()
@click.option("--force", is_flag=True, help="Overwrite an existing config file.")
@pass_ctx
def init(ctx: Context, force):
    """Write a commented starter pingo.toml (and create the data folders).

    \b
    Examples:
      pingo init
      pingo --config other.toml init --force
    """
    path = write_starter_config(find_config_path(ctx.config_path), force=force)
    ctx.store().close()
    click.echo(f"wrote {path}; data in {ctx.config.data_dir}")


@cli.command()
@json_option()
@click.option("--history", is_flag=True, help="Also show how each class grew per day.")
@pass_ctx
def stats(ctx: Context, as_json, history):
    """Per class: accepted, review, target; inbox and rejected totals; disk use per folder.

    \b
    Examples:
      pingo stats
      pingo stats --json --history
    """
    from storage.disk import disk_usage, human_bytes

    with ctx.store() as store:
        result = store.stats(ctx.config.targets)
        grown = store.count_history() if history else None
        accepting = auto_accept(ctx.config, store)
        reasons = store.review_reasons()
    disk = disk_usage(ctx.config.data_dir)
    if as_json:
        out = result.as_json()
        out["disk"] = disk
        out["auto_accept"] = accepting
        out["review_reasons"] = reasons
        if history:
            out["history"] = grown
        click.echo(json.dumps(out, indent=2, sort_keys=True))
        return
    for line in [*progress_lines(result), totals_line(result), *auto_accept_lines(accepting)]:
        click.echo(line)
    for line in review_reason_lines(reasons):
        click.echo(line)
    if result.set_aside:
        aside = ", ".join(f"{r} {n}" for r, n in result.set_aside.items())
        click.echo(f"set aside: {sum(result.set_aside.values())} ({aside}); see `pingo status`")
    used = [(name, u) for name, u in disk.items() if u["files"]]
    click.echo(
        "disk: "
        + (
            ", ".join(f"{name} {human_bytes(u['bytes'])} ({u['files']} files)" for name, u in used)
            or "empty"
        )
        + f"; total {human_bytes(sum(u['bytes'] for _, u in used))}"
    )
    if grown is not None:
        names = sorted(result.classes)
        click.echo("\naccepted per day: " + "  ".join(names))
        for day, counts in grown.items():
            click.echo(
                day
                + "  "
                + "  ".join(f"{counts.get(n, {}).get('accepted', 0):>{len(n)}}" for n in names)
            )


@cli.command()
@json_option("One JSON object per line per image (the only format).", required=True)
@click.option("--status", type=click.Choice(["inbox", "accepted", "review", "rejected"]))
@class_option("Label (or keyword class) C only.")
@pass_ctx
def images(ctx: Context, as_json, status, class_name):
    """Export image metadata as JSON lines (with each image's licence, license_url,
    creator, attribution and title where its source gave them).

    \b
    Example:
      pingo images --json --status review --class cat
    """
    with ctx.store() as store:
        for row in store.iter_images(status=status, class_name=class_name):
            click.echo(json.dumps(row, ensure_ascii=False))


@cli.command()
@pass_ctx
def attribution(ctx: Context):
    """Write dataset/ATTRIBUTION.md and dataset/attribution.csv: every accepted image's
    licence, creator and the credit line to show. `pingo factory` and `pingo report` rewrite
    them too.

    \b
    Example:
      pingo attribution
    """
    from storage.attribution import write_attribution

    with ctx.store() as store:
        md, csv_path, n = write_attribution(store)
    click.echo(f"credits for {n} accepted images: {md} and {csv_path}")


@cli.command("export")
@click.argument("out_dir", metavar="DIR", type=click.Path(path_type=Path))
@click.option(
    "--format",
    "fmt",
    required=True,
    type=click.Choice(["imagefolder", "csv", "jsonl", "hf", "tfrecord"]),
    help="imagefolder: train/val/test/<class>/ for Keras; hf: Hugging Face imagefolder with "
    "metadata.jsonl; tfrecord: sharded tf.train.Example; csv/jsonl: one row per image.",
)
@click.option(
    "--status",
    type=click.Choice(["accepted", "review", "all"]),
    default="accepted",
    show_default=True,
    help="Which images (all: accepted and review).",
)
@click.option(
    "--split",
    is_flag=True,
    help="csv/jsonl: add a split column; hf: train/ val/ test/ folders. imagefolder and "
    "tfrecord always split.",
)
@click.option("--force", is_flag=True, help="Write into a non-empty DIR (same names replaced).")
@pass_ctx
def export_command(ctx: Context, out_dir, fmt, status, split, force):
    """Copy (hard-link where possible) the labelled images to DIR in a format another library
    loads; the split is the trainer's own. The store is only read.

    \b
    Example:
      pingo export out/keras --format imagefolder
      pingo export out/hf --format hf --split
    """
    from tqdm import tqdm

    from pingo.export import export

    config = ctx.config
    with ctx.store() as store, tqdm(unit="img", disable=None, desc="export") as bar:

        def set_total(n: int) -> None:
            bar.total = n
            bar.refresh()

        result = export(
            store,
            out_dir,
            fmt,
            status=status,
            split=split,
            val_fraction=config.train.val_fraction,
            test_fraction=config.train.test_fraction,
            classes=config.classes,
            force=force,
            progress=bar.update,
            total=set_total,
        )
    per_split = ", ".join(f"{s} {sum(c.values())}" for s, c in result.counts.items())
    how = f"{result.linked} hard-linked, {result.copied} copied" if fmt != "tfrecord" else "encoded"
    click.echo(f"exported {result.total} images as {fmt} to {out_dir} ({per_split}; {how})")
    if result.missing:
        click.echo(f"{result.missing} images skipped: their file is missing (run `pingo check`)")


@cli.command("import")
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path))
@pass_ctx
def import_(ctx: Context, folder):
    """Copy FOLDER/<class>/<image> files into the inbox, labelled by a person.

    \b
    Example:
      pingo import ~/photos/labelled   # ~/photos/labelled/<class>/*.jpg
    """
    from tqdm import tqdm

    from storage.importer import import_folder, plan_import

    classes = ctx.config.classes
    total = len(plan_import(folder, classes))
    with ctx.store() as store, tqdm(total=total, unit="img", disable=None, desc="import") as bar:
        result = import_folder(store, folder, classes, progress=bar.update)
    for name in sorted(set(result.added) | set(result.duplicates)):
        click.echo(f"{name}: {result.added[name]} added, {result.duplicates[name]} already stored")
    click.echo(
        f"imported {result.total_added} images into the inbox"
        + (f"; {len(result.skipped)} files skipped (see log)" if result.skipped else "")
    )


def _log_to_file(data_dir: Path) -> None:
    """The scheduler's own log: data/logs/pingo.log, rotated at 5 MB, 5 kept."""
    from logging.handlers import RotatingFileHandler

    (data_dir / "logs").mkdir(parents=True, exist_ok=True)
    handler = RotatingFileHandler(
        data_dir / "logs" / "pingo.log", maxBytes=5_000_000, backupCount=5, encoding="utf-8"
    )
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)


@cli.command()
@pass_ctx
def demo(ctx: Context):
    """The whole loop once against the local demo site: crawl, factory, train, crawl, factory.

    \b
    Example:
      pingo demo
    """
    from pingo.demo import run_demo

    run_demo(ctx.config, echo=click.echo)


@cli.command()
@pass_ctx
def report(ctx: Context):
    """Write data/reports/index.html (progress, yield, models, contact sheets); print its path.

    \b
    Example:
      xdg-open $(pingo report)
    """
    from pingo.report import build_report

    with ctx.store() as store:
        click.echo(build_report(ctx.config, store))


@cli.command()
@click.option("--run-now", is_flag=True, help="Run crawl -> factory -> train once at start.")
@pass_ctx
def schedule(ctx: Context, run_now):
    """Run the loop unattended: crawl+factory on crawl.schedule, train on train.schedule.

    \b
    Example:
      pingo schedule --run-now
    """
    from scheduler.service import Service

    config = ctx.config
    ctx.store().close()  # create the layout, repair leftovers before the first job
    _log_to_file(config.data_dir)
    click.echo(
        f"pingo scheduler: crawl '{config.crawl.schedule}', train "
        f"'{config.train.schedule}' (UTC); logs in {config.data_dir / 'logs'}; "
        "Ctrl-C or SIGTERM stops after the current job"
    )
    Service(config).start(run_now=run_now)


@cli.command("status")
@json_option()
@click.option("--limit", default=10, show_default=True, help="How many recent runs.")
@pass_ctx
def status_command(ctx: Context, as_json, limit):
    """The last runs and when each job fires next.

    \b
    Example:
      pingo status --limit 20
    """
    from crawler.backlog import backlog_lines
    from crawler.summary import RUNS_SEARCHED, last_crawl_sources, sources_lines
    from scheduler.service import status

    with ctx.store() as store:
        store.fail_stale_runs()
        result = status(ctx.config, store, limit)
        result["set_aside"] = store.set_aside_rows(limit)
        crawled, result["sources"] = last_crawl_sources(store.recent_runs(RUNS_SEARCHED))
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    for run in result["runs"]:
        took = f" -> {run['finished'][11:19]}" if run["finished"] else ""
        line = f"{run['started'][:19].replace('T', ' ')}{took}  {run['job']:<8} {run['status']}"
        if run["error"]:
            line += f"  ({run['error']})"
        click.echo(line)
    if not result["runs"]:
        click.echo("no runs yet")
    for job, when in result["next"].items():
        click.echo(f"next {job}: {when}")
    for line in backlog_lines(result["review_backlog"]):
        click.echo(line)
    for line in sources_lines(result["sources"], crawled):
        click.echo(line)
    for row in result["set_aside"]:
        why = row["last_error"] or "no file at its path"
        click.echo(f"set aside: image {row['id']} ({row['reason']}) {row['path'] or '-'}: {why}")


@cli.command("train")
@click.option(
    "--force", is_flag=True, help="Train even if no class changed or some are below target."
)
@click.option("--epochs", type=int, help="Most epochs (early stopping may end sooner).")
@click.option("--image-size", type=int, metavar="PX", help="Train at PX x PX pixels.")
@click.option("--batch-size", type=int, metavar="N")
@click.option(
    "--arch", metavar="NAME", help=f"One of {', '.join(ARCHITECTURES)} (default: train.arch)."
)
@click.option(
    "--weights",
    metavar="W",
    help='Backbone weights: "none", "imagenet" or a local file (default: train.weights).',
)
@json_option("Print the result as JSON.")
@pass_ctx
def train_command(ctx: Context, force, epochs, image_size, batch_size, arch, weights, as_json):
    """Train a model on dataset/<class>/ and promote it if it beats the current one.

    \b
    Examples:
      pingo train
      pingo train --force --epochs 5 --image-size 64
    """
    from trainer import train

    overrides = {
        "epochs": epochs,
        "image_size": image_size,
        "batch_size": batch_size,
        "arch": arch,
        "weights": weights,
    }
    result = _as_job(
        ctx,
        "train",
        lambda store: train(
            ctx.config, store, force=force, overrides=overrides, progress=sys.stderr.isatty()
        ),
    )
    if as_json:
        click.echo(json.dumps(result.as_json(), indent=2, sort_keys=True))
    elif not result.trained:
        click.echo(f"not training: {result.reason} (use --force to train anyway)")
    else:
        m = result.metrics
        ci = format_interval(m.get("test_accuracy_ci"))
        click.echo(
            f"{result.version}: test accuracy {m['test_accuracy']:.4f} {ci} (95% interval), "
            f"loss {m['test_loss']:.4f} on {m['test_images']} images; {result.reason}"
        )
        click.echo(f"registry entry: {result.path}")


@cli.group(invoke_without_command=True)
@json_option()
@click.pass_context
def models(click_ctx, as_json):
    """List model versions; `models promote V` and `models rollback` change the one in service.

    \b
    Examples:
      pingo models
      pingo models promote v0003
      pingo models rollback
    """
    if click_ctx.invoked_subcommand is not None:
        return
    ctx = click_ctx.find_object(Context)
    with ctx.store() as store:
        rows = store.registry.listing()
        accepting = None if as_json else auto_accept(ctx.config, store, rows)
    if as_json:
        click.echo(json.dumps(rows, indent=2, sort_keys=True))
        return
    if not rows:
        click.echo("no models yet: run `pingo train`")
        return
    click.echo(
        "   version  state       test acc [95% interval]  loss    T      arch       px   note"
    )
    for r in rows:
        acc = "-"
        if r["test_accuracy"] is not None:
            acc = f"{r['test_accuracy']:.4f} {format_interval(r.get('test_accuracy_ci'))}"
        loss = f"{r['test_loss']:.4f}" if r["test_loss"] is not None else "-"
        temp = f"{r['temperature']:.2f}" if r.get("temperature") is not None else "-"
        click.echo(
            f"{'*' if r['current'] else ' '}  {r['version']:<7}  {r['state']:<10}  "
            f"{acc:<23}  {loss:<6}  {temp:<5}  {r['arch'] or '-':<9}  "
            f"{r['image_size'] or '-':>3}  {r['note'] or ''}"
        )
    click.echo(
        "* = in service (models/CURRENT); the interval: what the test split can tell (Wilson);"
        " T: the calibration temperature applied to the model's probabilities"
    )
    if accepting is not None and accepting["model"] is not None:
        for line in auto_accept_lines(accepting):
            click.echo(line)


@models.command("promote")
@click.argument("version")
@pass_ctx
def models_promote(ctx: Context, version):
    """Put VERSION in service (it must be complete and load in Keras safe mode).

    \b
    Example:
      pingo models promote v0003
    """
    from vision.model import check_promotable

    with ctx.store() as store:
        registry = store.registry
        check_promotable(registry, version, ctx.config.classes)
        registry.promote(version, f"promoted by hand (was {registry.current() or 'none'})")
    click.echo(f"promoted {version}")


@models.command("rollback")
@pass_ctx
def models_rollback(ctx: Context):
    """Put the previous usable model back in service.

    \b
    Example:
      pingo models rollback
    """
    from vision.model import check_promotable

    with ctx.store() as store:
        registry = store.registry
        old, new = registry.rollback(
            lambda version: check_promotable(registry, version, ctx.config.classes)
        )
    click.echo(f"rolled back from {old} to {new}")


@cli.command("crawl")
@class_option("Crawl class C only (repeatable). Default: every class below target.", multiple=True)
@click.option(
    "--source",
    "sources",
    multiple=True,
    metavar="S",
    help="Search source S only (repeatable). Default: crawl.sources.",
)
@click.option(
    "--limit", type=click.IntRange(min=1), metavar="N", help="Take at most N new images per class."
)
@click.option(
    "--with-demo-site",
    is_flag=True,
    help="Start the demo site for this crawl if a source uses it and nothing answers at "
    "crawl.demo_url (what `make crawl` does).",
)
@json_option("Print the summary as JSON.")
@pass_ctx
def crawl_command(ctx: Context, classes, sources, limit, with_demo_site, as_json):
    """Search the keywords of classes below target; download images into the inbox.

    With crawl.redis_url set, every `pingo crawl` started with the same config (on any
    machine) shares one frontier and one per-class budget; each exits when the shared queue
    has been empty for crawl.idle_timeout seconds.

    \b
    Examples:
      pingo crawl
      pingo crawl --class cat --source demo --limit 20
    """
    from crawler import crawl

    stop_site = None
    if with_demo_site:
        from core.sources import resolve_sources
        from crawler.run import demo_sources
        from pingo.demo import start_demo_site

        used = resolve_sources(list(sources or ctx.config.crawl.sources), ctx.config.crawl.profiles)
        if demo_sources(used):
            stop_site = start_demo_site(ctx.config)
    try:
        summary = _as_job(
            ctx,
            "crawl",
            lambda store: crawl(
                ctx.config,
                store,
                classes=list(classes) or None,
                sources=list(sources) or None,
                limit=limit,
            ),
        )
    finally:
        if stop_site is not None:
            stop_site()
    if as_json:
        click.echo(json.dumps(summary.as_json(), indent=2, sort_keys=True))
    else:
        click.echo(summary.format())


@cli.group("sources")
def sources_group():
    """Search sources: check what each finds."""


@sources_group.command("check")
@click.argument("names", nargs=-1, metavar="[NAME]...")
@click.option("--query", metavar="Q", help="Search Q (default: the first class's first keyword).")
@json_option()
@pass_ctx
def sources_check(ctx: Context, names, query, as_json):
    """Run one query on each source (default: crawl.sources) and print what it found.

    A source that finds nothing is shown with the cause (robots.txt, refused connection,
    HTTP error, consent page, changed markup, ...) and what to do; the exit status is then 1.
    Nothing is downloaded or stored.

    \b
    Examples:
      pingo sources check
      pingo sources check bing --query "red car"
    """
    from crawler.check import check_sources

    checks = check_sources(ctx.config, list(names) or None, query)
    if as_json:
        click.echo(json.dumps([c.as_json() for c in checks], indent=2, ensure_ascii=False))
    else:
        for c in checks:
            if c.problem is None:
                click.echo(
                    f"{c.source}: ok, {c.results} results for {c.query!r} ({c.seconds:.1f}s)"
                )
                for url in c.urls[:3]:
                    click.echo(f"  {url}")
            else:
                click.echo(
                    f"{c.source}: NOTHING for {c.query!r} ({c.problem.cause}): {c.problem.detail}"
                )
                click.echo(f"  to do: {c.advice}")
                click.echo(f"  page: {c.url}")
    if any(c.problem is not None for c in checks):
        click.get_current_context().exit(1)


@cli.command("demo-site")
@click.option(
    "--images",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Folder of <class>/ subfolders to serve (default: generated shapes).",
)
@click.option("--port", type=click.IntRange(0, 65535), default=8765, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option(
    "--page-delay",
    type=click.FloatRange(min=0),
    default=0.0,
    help="Seconds before each result page answers (a slow engine).",
)
@click.option("--faults", is_flag=True, help="Start every result list with broken images.")
def demo_site(images, port, host, page_delay, faults):
    """Serve a folder of class subfolders as a JavaScript image search engine.

    \b
    Example:
      pingo demo-site --images ~/photos --port 8765
    """
    from crawler.demo_site import make_server

    server = make_server(images, port, host, page_delay=page_delay, faults=faults)
    click.echo(
        f"demo search site at {server.url}/search?q=... "
        f"({', '.join(server.site.index)}); Ctrl-C stops it"
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


@cli.command()
@click.option(
    "--limit", type=click.IntRange(min=1), metavar="N", help="Process at most N inbox images."
)
@json_option("Print the summary as JSON.")
@pass_ctx
def factory(ctx: Context, limit, as_json):
    """Validate, dedupe and sort the inbox into dataset/, review/ and rejected/.

    Several `pingo factory` processes (on one machine, or on several sharing data_dir and a
    PostgreSQL storage.db_url) may run at once: each claims its own inbox images.

    \b
    Examples:
      pingo factory
      pingo factory --limit 500 --json
    """
    from tqdm import tqdm

    from dataset_factory import process_inbox
    from storage.attribution import write_attribution

    def work(store: Store) -> Any:
        total = sum(store.inbox_counts().values())
        with tqdm(
            total=min(total, limit or total), unit="img", disable=None, desc="factory"
        ) as bar:
            summary = process_inbox(ctx.config, store, progress=bar.update, limit=limit)
        write_attribution(store)  # the dataset may have changed: its credits with it
        return summary

    summary = _as_job(ctx, "factory", work)
    if as_json:
        click.echo(json.dumps(summary.as_json(), indent=2, sort_keys=True))
        return
    click.echo(f"model: {summary.model_version or 'none yet (labels from keywords)'}")
    names = sorted(summary.classes)
    width = max([len("class"), *map(len, names)])
    click.echo(f"{'class':<{width}}  accepted  review  rejected  of which duplicates")
    for name in names:
        t = summary.totals(name)
        click.echo(
            f"{name:<{width}}  {t['accepted']:>8}  {t['review']:>6}  {t['rejected']:>8}  "
            f"{t['duplicates']:>19}"
        )
    reasons = ", ".join(f"{r} {n}" for r, n in summary.rejected.items()) or "none"
    click.echo(
        f"worker {summary.worker} processed {summary.processed}; rejected: {reasons}; "
        f"{summary.replaced} kept images replaced by a larger copy; "
        f"{summary.index_size} images in the near-duplicate index"
    )


@cli.group(invoke_without_command=True)
@class_option("Only images whose best guess is C.")
@json_option("One JSON object per line per image.")
@click.pass_context
def review(click_ctx, class_name, as_json):
    """List review images; `review accept ID [--label C]`, `review reject ID` decide them.

    \b
    Examples:
      pingo review --class cat
      pingo review accept 201 204 --label dog
      pingo review reject 207
    """
    if click_ctx.invoked_subcommand is not None:
        return
    from dataset_factory.review import list_review

    ctx = click_ctx.find_object(Context)
    with ctx.store() as store:
        rows = list_review(store, class_name)
        for row in rows:
            if as_json:
                click.echo(json.dumps(row, ensure_ascii=False))
                continue
            conf = f"{row['confidence']:.2f}" if row["confidence"] is not None else "-"
            click.echo(
                f"{row['id']:>7}  guess {row['label']:<12} "
                f"keyword {row['keyword_class']:<12} conf {conf:>4}  "
                f"{row['reason'] or '':<14} {store.abspath(row['path'])}"
            )
    if not rows and not as_json:
        click.echo("nothing to review")


@review.command("accept")
@click.argument("image_ids", type=int, nargs=-1, required=True)
@click.option("--label", metavar="C", help="File under class C instead of the best guess.")
@pass_ctx
def review_accept(ctx: Context, image_ids, label):
    """Accept IMAGE_IDS into dataset/ (label source: human).

    \b
    Examples:
      pingo review accept 201 204
      pingo review accept 205 --label dog
    """
    from dataset_factory.review import accept

    with ctx.store() as store:
        for image_id in image_ids:
            click.echo(f"{image_id}: accepted as {accept(store, ctx.config, image_id, label)}")


@review.command("reject")
@click.argument("image_ids", type=int, nargs=-1, required=True)
@click.option(
    "--reason", default="human_rejected", show_default=True, help="Folder name under rejected/."
)
@pass_ctx
def review_reject(ctx: Context, image_ids, reason):
    """Reject IMAGE_IDS into rejected/<reason>/ (label source: human).

    \b
    Example:
      pingo review reject 207 --reason blurry
    """
    from dataset_factory.review import reject

    with ctx.store() as store:
        for image_id in image_ids:
            reject(store, image_id, reason)
            click.echo(f"{image_id}: rejected ({reason})")


@cli.command("check")
@click.option(
    "--repair", is_flag=True, help="Fix what can be fixed without guessing, then check again."
)
@json_option()
@click.option(
    "--examples",
    default=5,
    show_default=True,
    metavar="N",
    help="Example paths shown per kind of problem.",
)
@pass_ctx
def check_command(ctx: Context, repair, as_json, examples):
    """Is the data folder sound? Rows vs files, folder counts, the index, models/CURRENT.

    Exit status 0 only when sound (after repairing, with --repair), 1 when not.

    \b
    Examples:
      pingo check
      pingo check --repair --json
    """
    from pingo.checkup import check
    from storage.check import HINTS

    report = check(ctx.config, repair=repair)
    if as_json:
        click.echo(json.dumps(report.as_json(), indent=2, sort_keys=True))
    else:
        for kind, n in sorted(report.repaired.items()):
            click.echo(f"repaired: {kind} {n}")
        for kind, problems in report.by_kind().items():
            fix = "" if kind in report.fixable else "  [not fixed by --repair]"
            click.echo(f"{kind}: {len(problems)}  ({report.kinds.get(kind, kind)}){fix}")
            for p in problems[:examples]:
                what = " ".join(
                    x
                    for x in (
                        p.path or "",
                        f"(image {p.image_id})" if p.image_id is not None else "",
                        p.detail,
                    )
                    if x
                )
                click.echo(f"  {what}")
            if len(problems) > examples:
                click.echo(f"  ... and {len(problems) - examples} more (--json lists all)")
            if kind in HINTS:
                click.echo(f"  -> {HINTS[kind]}")
        click.echo(
            "sound"
            if report.sound
            else f"NOT sound: {len(report.problems)} problems"
            + ("" if repair else "; `pingo check --repair` fixes those not marked")
        )
    if not report.sound:
        raise SystemExit(1)


@cli.command()
@click.option("--dry-run", is_flag=True, help="Say what would be deleted; delete nothing.")
@json_option()
@pass_ctx
def prune(ctx: Context, dry_run, as_json):
    """Delete rejected files older than storage.keep_rejected_days and model versions beyond
    train.keep_models (never the promoted or previous one). Rows stay: nothing is refetched.

    \b
    Examples:
      pingo prune --dry-run
      pingo prune
    """
    from scheduler.jobs import prune_stage
    from storage.disk import human_bytes

    if dry_run:  # reads only: no run record, no job lock needed
        with ctx.store() as store:
            result = prune_stage(ctx.config, store, dry_run=True)
    else:
        result = _as_job(ctx, "prune", lambda store: prune_stage(ctx.config, store))
    if as_json:
        click.echo(json.dumps(result.as_json(), indent=2, sort_keys=True))
        return
    verb = "would delete" if dry_run else "deleted"
    click.echo(
        f"{verb} {result.rejected_files} rejected files "
        f"({human_bytes(result.rejected_bytes)}) older than "
        f"{ctx.config.storage.keep_rejected_days:g} days"
        + (f", and {result.leftovers} left by an interrupted prune" if result.leftovers else "")
    )
    if result.models_skipped:
        click.echo(f"models: not pruned: {result.models_skipped}")
    else:
        which = ": " + ", ".join(result.models) if result.models else ""
        click.echo(
            f"{verb} {len(result.models)} model versions ({human_bytes(result.model_bytes)}){which}"
        )
        click.echo(
            "kept: "
            + (
                ", ".join(f"{v} ({why})" for v, why in result.kept_models.items())
                or "no model versions"
            )
        )


def main() -> None:
    cli(prog_name="pingo")


if __name__ == "__main__":
    main()
