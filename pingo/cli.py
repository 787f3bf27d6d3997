"""The `pingo` command: a thin layer over the library.

Library code raises named PingoError subclasses; this module alone turns them into one-line
messages and exit codes (2: bad config or usage, 1: anything else refused), attaches log
handlers, and draws progress bars.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import click

from pingo import __version__
from pingo.config import Config, find_config_path, load_config, write_starter_config
from pingo.errors import PingoError

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
    root = logging.getLogger()
    if not any(getattr(h, "_pingo", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s",
                                               "%H:%M:%S"))
        handler._pingo = True
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


@click.group(cls=PingoGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", metavar="FILE", envvar="PINGO_CONFIG",
              help="Config file (default: ./pingo.toml, or $PINGO_CONFIG).")
@click.option("-v", "--verbose", count=True, help="Log debug detail.")
@click.option("-q", "--quiet", is_flag=True, help="Log warnings and errors only.")
@click.version_option(__version__, prog_name="pingo")
@click.pass_context
def cli(ctx, config_path, verbose, quiet):
    """pingo grows an image-classification dataset unattended: crawl, dedupe, sort, retrain."""
    _setup_logging(verbose, quiet)
    ctx.obj = Context(config_path)


@cli.command()
@click.option("--force", is_flag=True, help="Overwrite an existing config file.")
@pass_ctx
def init(ctx: Context, force):
    """Write a commented starter pingo.toml (and create the data folders)."""
    path = write_starter_config(find_config_path(ctx.config_path), force=force)
    ctx.store().close()
    click.echo(f"wrote {path}; data in {ctx.config.data_dir}")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
@pass_ctx
def stats(ctx: Context, as_json):
    """Per class: accepted, review, target; inbox and rejected totals."""
    with ctx.store() as store:
        result = store.stats(ctx.config.targets)
    if as_json:
        click.echo(json.dumps(result.as_json(), indent=2, sort_keys=True))
        return
    width = max([len("class"), *map(len, result.classes)])
    click.echo(f"{'class':<{width}}  accepted  review  target  of target")
    for name, c in sorted(result.classes.items()):
        target = c["target"]
        pct = 100.0 * c["accepted"] / target if target else None
        bar = "#" * int(min(pct, 100) // 5) if pct is not None else ""
        click.echo(f"{name:<{width}}  {c['accepted']:>8}  {c['review']:>6}  "
                   f"{target if target is not None else '-':>6}  "
                   f"{f'{pct:5.1f}%' if pct is not None else '     -'} {bar}")
    click.echo(f"inbox: {result.inbox}")
    rejected = ", ".join(f"{r} {n}" for r, n in result.rejected.items()) or "none"
    click.echo(f"rejected: {sum(result.rejected.values())} ({rejected})")


@cli.command()
@click.option("--json", "as_json", is_flag=True, required=True,
              help="One JSON object per line per image (the only format).")
@click.option("--status", type=click.Choice(["inbox", "accepted", "review", "rejected"]))
@click.option("--class", "class_name", metavar="C", help="Label (or keyword class) C only.")
@pass_ctx
def images(ctx: Context, as_json, status, class_name):
    """Export image metadata as JSON lines."""
    with ctx.store() as store:
        for row in store.iter_images(status=status, class_name=class_name):
            click.echo(json.dumps(row, ensure_ascii=False))


@cli.command("import")
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path))
@pass_ctx
def import_(ctx: Context, folder):
    """Copy FOLDER/<class>/<image> files into the inbox, labelled by a person."""
    from tqdm import tqdm

    from storage.importer import import_folder, plan_import

    classes = ctx.config.classes
    total = len(plan_import(folder, classes))
    with ctx.store() as store, tqdm(total=total, unit="img", disable=None,
                                    desc="import") as bar:
        result = import_folder(store, folder, classes, progress=bar.update)
    for name in sorted(set(result.added) | set(result.duplicates)):
        click.echo(f"{name}: {result.added[name]} added, {result.duplicates[name]} already stored")
    click.echo(f"imported {result.total_added} images into the inbox"
               + (f"; {len(result.skipped)} files skipped (see log)" if result.skipped else ""))


def main() -> None:
    cli(prog_name="pingo")


if __name__ == "__main__":
    main()
