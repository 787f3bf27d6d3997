"""`pingo report`: one self-contained HTML page a person opens after days away.

data/reports/index.html with its images in data/reports/assets/ (no network, no scripts):
per-class progress against target (and the classes held back from crawling by their review
backlog), the last crawl per search source (and why a source gave nothing), crawl yield and
duplicate rate per source and keyword, the model history, the latest
training curves and confusion matrix, and thumbnail contact sheets of every class and of the
review queue.
"""

from __future__ import annotations

import html
import itertools
import logging
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from core.config import Config
from core.stats import accuracy_interval, format_interval
from crawler.backlog import backlog_lines, review_backlog
from pingo.tables import auto_accept, class_progress
from storage import Store, atomic_write

logger = logging.getLogger(__name__)

THUMB = 72  # px, contact-sheet cell
SHEET_COLUMNS = 12
SHEET_MAX = 96  # thumbnails per sheet


def model_accuracy(metrics: dict[str, Any] | None) -> float | None:
    """Test accuracy from a metrics.json-like dict (flat, or under "test")."""
    if not metrics:
        return None
    for source in (metrics, metrics.get("test") or {}):
        for key in ("test_accuracy", "accuracy"):
            if isinstance(source.get(key), (int, float)):
                return float(source[key])
    return None


def model_interval(metrics: dict[str, Any] | None) -> list[float] | None:
    """The test accuracy's 95% interval from a metrics.json-like dict (flat or under "test");
    for models trained before pingo recorded it, the Wilson interval of accuracy and images."""
    if not metrics:
        return None
    for source, images in ((metrics, "test_images"), (metrics.get("test") or {}, "images")):
        ci = source.get("test_accuracy_ci", source.get("accuracy_ci"))
        if isinstance(ci, list) and len(ci) == 2:
            return [float(ci[0]), float(ci[1])]
        n = source.get(images)
        if isinstance(n, int) and n > 0 and (acc := model_accuracy(source)) is not None:
            return accuracy_interval(acc, n)
    return None


def contact_sheet(paths: list[Path], out: Path) -> int:
    """A grid of thumbnails as one JPEG; unreadable files are skipped. Returns cells drawn."""
    from PIL import Image, ImageOps

    thumbs = []
    for path in paths[:SHEET_MAX]:
        try:
            with Image.open(path) as im:
                im.draft("RGB", (THUMB * 2, THUMB * 2))
                thumbs.append(ImageOps.fit(im.convert("RGB"), (THUMB, THUMB)))
        except Exception as exc:  # a bad file must not stop the report
            logger.debug("no thumbnail for %s: %s", path, exc)
    if not thumbs:
        return 0
    cols = min(SHEET_COLUMNS, len(thumbs))
    rows = (len(thumbs) + cols - 1) // cols
    sheet = Image.new("RGB", (cols * (THUMB + 2), rows * (THUMB + 2)), "white")
    for i, thumb in enumerate(thumbs):
        sheet.paste(thumb, ((i % cols) * (THUMB + 2) + 1, (i // cols) * (THUMB + 2) + 1))
    sheet.save(out, "JPEG", quality=85)
    return len(thumbs)


def _accuracy_plot(models: list[dict[str, Any]], out: Path) -> bool:
    points = [
        (m["version"], acc, m["promoted"])
        for m in models
        if (acc := model_accuracy(m["metrics"])) is not None
    ]
    if not points:
        return False
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3))
    ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", color="#4477aa")
    for version, acc, promoted in points:
        if promoted:
            ax.scatter(
                [version],
                [acc],
                s=160,
                facecolors="none",
                edgecolors="#228833",
                linewidths=2,
                label="promoted",
            )
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    if any(p[2] for p in points):
        ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return True


def _bar(value: int, target: int | None, colour: str) -> str:
    pct = min(100.0, 100.0 * value / target) if target else 0.0
    return f'<div class="bar"><div style="width:{pct:.1f}%;background:{colour}"></div></div>'


def _sources_section(store: Store) -> str:
    """Per source in the last crawl: queries, results, images; the cause and what to do
    when it gave nothing (crawler.causes)."""
    from crawler.summary import RUNS_SEARCHED, alarm_line, last_crawl_sources

    esc = html.escape
    started, sources = last_crawl_sources(store.recent_runs(RUNS_SEARCHED))
    rows, alarms = [], []
    for name, h in sources.items():
        rows.append(
            f"<tr><td>{esc(name)}</td><td>{h.get('queries') or 0}</td>"
            f"<td>{h.get('results') or 0}</td><td>{h.get('images') or 0}</td>"
            f"<td>{h.get('empty_queries') or 0}</td>"
            f"<td>{esc(str(h.get('last_error') or ''))}</td></tr>"
        )
        if h.get("queries") and not h.get("results"):
            alarms.append(f'<p class="held">{esc(alarm_line(name, h))}</p>')
    when = f" (crawl started {esc(started[:19].replace('T', ' '))} UTC)" if started else ""
    return (
        f"<h2>Search sources{when}</h2>"
        + "".join(alarms)
        + "<table><tr><th>source</th><th>queries</th><th>results</th><th>images</th>"
        "<th>queries without results</th><th>latest problem</th></tr>"
        + ("".join(rows) or '<tr><td colspan="6">no crawl yet</td></tr>')
        + "</table>"
    )


def build_report(config: Config, store: Store) -> Path:
    """Write data/reports/index.html (and assets/); return its path."""
    reports = store.data_dir / "reports"
    assets = reports / "assets"
    if assets.exists():
        shutil.rmtree(assets)
    assets.mkdir(parents=True)
    esc = html.escape
    stats = store.stats(config.targets)
    parts: list[str] = []

    # -- progress per class
    rows = []
    for r in class_progress(stats):
        pct = f"{r.percent:.0f}%" if r.percent is not None else "-"
        rows.append(
            f"<tr><td>{esc(r.name)}</td><td>{r.accepted}</td><td>{r.review}</td>"
            f"<td>{r.target if r.target is not None else '-'}</td><td>{pct}</td>"
            f"<td>{_bar(r.accepted, r.target, '#228833')}"
            f"{_bar(r.review, r.target, '#ccbb44')}</td></tr>"
        )
    rejected = ", ".join(f"{esc(str(r))}: {n}" for r, n in stats.rejected.items()) or "none"
    parts.append(
        "<h2>Classes</h2><table><tr><th>class</th><th>accepted</th><th>review</th>"
        "<th>target</th><th>of target</th><th>accepted (green) / review (yellow)</th></tr>"
        + "".join(rows)
        + "</table>"
        f"<p>inbox: {stats.inbox} &middot; rejected: {sum(stats.rejected.values())} "
        f"({rejected})</p>"
    )
    held = backlog_lines(review_backlog(config, store))
    if held:  # the crawler waits for a person: say so where the person looks
        parts.append(
            '<p class="held">Not crawled until some review images are decided '
            "(<code>pingo review</code>):</p><ul>"
            + "".join(f"<li>{esc(line)}</li>" for line in held)
            + "</ul>"
        )

    # -- what auto-accepting promises per class
    info = auto_accept(config, store)
    rows = []
    for name, c in info["classes"].items():
        precision = f"{c['precision']:.2f}" if c["precision"] is not None else "-"
        coverage = f"{c['coverage']:.2f}" if c["coverage"] is not None else "-"
        rows.append(
            f"<tr><td>{esc(name)}</td><td>{precision}</td><td>{coverage}</td>"
            f"<td>{c['test_images'] or '-'}</td><td>{c['keyword_reliability']:.2f}</td>"
            f"<td>{c['keyword_judged']}</td></tr>"
        )
    parts.append(
        f"<h2>Auto-accept</h2><p>decision: {esc(info['decision'])}, target precision "
        f"{info['target_precision']:.2f}, model {esc(info['model'] or 'none yet')}. Precision "
        "and coverage: what the model's rule gave on its held-out test split (validated); "
        "keyword right: how often each keyword's results are right, from people's review "
        "decisions and the label check before training.</p>"
        "<table><tr><th>class</th><th>auto-accept precision</th><th>coverage</th>"
        "<th>test images</th><th>keyword right</th><th>judged images</th></tr>"
        + "".join(rows)
        + "</table>"
    )

    # -- crawl yield per source and keyword
    rows = []
    for y in store.yield_by_query():
        dup = 100.0 * (y["duplicates"] or 0) / y["images"] if y["images"] else 0.0
        rows.append(
            f"<tr><td>{esc(str(y['source']))}</td><td>{esc(str(y['query'] or '-'))}</td>"
            f"<td>{y['images']}</td><td>{y['accepted']}</td><td>{y['review']}</td>"
            f"<td>{y['rejected']}</td><td>{dup:.1f}%</td></tr>"
        )
    parts.append(
        "<h2>Crawl yield</h2><table><tr><th>source</th><th>query</th><th>images</th>"
        "<th>accepted</th><th>review</th><th>rejected</th><th>duplicate rate</th></tr>"
        + ("".join(rows) or '<tr><td colspan="7">no images yet</td></tr>')
        + "</table>"
    )

    # -- search sources: the last crawl's yield and, for a source that gave nothing, why
    parts.append(_sources_section(store))

    # -- licences of the accepted images, and the credits file beside the class folders
    from core.licenses import family
    from storage.attribution import ATTRIBUTION_MD, write_attribution

    write_attribution(store)
    rows = []
    for name, mix in sorted(store.license_mix().items()):
        total = sum(mix.values())
        shown = ", ".join(
            f"{esc(lic)}: {n}" for lic, n in sorted(mix.items(), key=lambda kv: (-kv[1], kv[0]))
        )
        unknown = sum(n for lic, n in mix.items() if family(lic) == "unknown")
        rows.append(
            f"<tr><td>{esc(name)}</td><td>{total}</td><td>{shown}</td>"
            f"<td>{100.0 * unknown / total:.0f}%</td></tr>"
        )
    parts.append(
        "<h2>Licences</h2><p>Accepted images per licence, as their sources gave it "
        "(<code>unknown</code>: rendered search pages and imports say nothing). Credits to "
        f'show: <a href="../dataset/{ATTRIBUTION_MD}">dataset/{ATTRIBUTION_MD}</a> and '
        "dataset/attribution.csv.</p>"
        "<table><tr><th>class</th><th>accepted</th><th>licences</th><th>unknown</th></tr>"
        + ("".join(rows) or '<tr><td colspan="4">no accepted images yet</td></tr>')
        + "</table>"
    )

    # -- models
    models = store.registry.rows()
    rows = []
    for m in reversed(models):
        acc = model_accuracy(m["metrics"])
        shown = "-"
        if acc is not None:
            shown = f"{acc:.4f} {format_interval(model_interval(m['metrics']))}".strip()
        rows.append(
            f"<tr><td>{esc(m['version'])}{' &#9733;' if m['promoted'] else ''}</td>"
            f"<td>{esc(m['created'][:19].replace('T', ' '))}</td>"
            f"<td>{shown}</td>"
            f"<td>{esc(m['note'] or '')}</td></tr>"
        )
    section = (
        "<h2>Models</h2><p>&#9733; = promoted (models/CURRENT: "
        f"{esc(store.registry.current() or 'none')})</p>"
    )
    if _accuracy_plot(models, assets / "model_accuracy.png"):
        section += '<img src="assets/model_accuracy.png" alt="test accuracy per model version">'
    section += (
        "<table><tr><th>version</th><th>created (UTC)</th><th>test accuracy [95% interval]</th>"
        "<th>note</th></tr>"
        + ("".join(rows) or '<tr><td colspan="4">no model yet</td></tr>')
        + "</table>"
    )
    for version in store.registry.versions()[-1:]:  # the latest, if any
        plots = sorted(store.registry.path(version).glob("*.png"))
        for plot in plots:
            shutil.copy2(plot, assets / f"{version}_{plot.name}")
            section += (
                f'<figure><img src="assets/{esc(version)}_{esc(plot.name)}" '
                f'alt="{esc(plot.stem)}"><figcaption>{esc(version)}: {esc(plot.name)}'
                "</figcaption></figure>"
            )
    parts.append(section)

    # -- contact sheets
    section = "<h2>Images</h2>"
    sheets = 0
    for status, title in (("accepted", "accepted"), ("review", "review queue")):
        for name in sorted(stats.classes):
            labelled = (r for r in store.iter_images(status, name) if r["label"] == name)
            paths = [store.abspath(r["path"]) for r in itertools.islice(labelled, SHEET_MAX)]
            if not paths:
                continue
            sheets += 1
            out = assets / f"sheet_{sheets:03d}_{status}.jpg"
            n = contact_sheet(paths, out)
            if n:
                section += (
                    f"<h3>{esc(name)} &mdash; {title} ({n} shown)</h3>"
                    f'<img src="assets/{out.name}" alt="{esc(name)} {title}">'
                )
    parts.append(section)

    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>pingo report</title>
<style>
body {{ font-family: sans-serif; margin: 2em; color: #222; max-width: 1100px; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1em; }}
td, th {{ border-bottom: 1px solid #ddd; padding: 4px 10px; text-align: left; }}
.bar {{ width: 260px; height: 9px; background: #eee; margin: 2px 0; }}
.bar div {{ height: 100%; }}
img {{ max-width: 100%; border: 1px solid #ddd; margin: 4px 0; }}
figure {{ display: inline-block; margin: 0 1em 1em 0; }}
</style></head><body>
<h1>pingo report</h1><p>generated {generated} &middot; data: {esc(str(store.data_dir))}</p>
{"".join(parts)}
</body></html>
"""
    index = reports / "index.html"
    atomic_write(index, page)
    logger.info("report written to %s", index)
    return index
