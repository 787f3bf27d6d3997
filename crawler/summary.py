"""CrawlSummary: what one crawl did, per class and per source, built from Scrapy's stats.

Per source: queries, results, images stored, page errors, and the queries that gave no usable
result with their cause (crawler.causes). A source with queries and no result at all raises
the zero-yield alarm: a WARNING naming its most frequent cause and what to do about it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from crawler import causes

logger = logging.getLogger(__name__)


@dataclass
class ClassSummary:
    lacking: int = 0
    found: int = 0
    downloaded: int = 0  # new images stored in the inbox
    duplicates: int = 0  # identical bytes already stored
    already_seen: int = 0  # result URLs skipped because an earlier crawl fetched them
    refused: dict[str, int] = field(default_factory=dict)


@dataclass
class CrawlSummary:
    classes: dict[str, ClassSummary] = field(default_factory=dict)
    sources: dict[str, dict[str, int]] = field(default_factory=dict)
    empty_sources: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # class -> why it was not crawled
    finish_reason: str | None = None
    seconds: float = 0.0
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def downloaded(self) -> int:
        return sum(c.downloaded for c in self.classes.values())

    @classmethod
    def from_stats(
        cls,
        plan: dict[str, int],
        sources: list[str],
        stats: dict[str, Any],
        skipped: dict[str, str] | None = None,
        demo_sources: list[str] | None = None,
    ) -> CrawlSummary:
        classes = {}
        for name, lacking in plan.items():
            prefix = f"pingo/{name}/"
            refused = {
                k[len(prefix + "refused/") :]: v
                for k, v in stats.items()
                if k.startswith(prefix + "refused/")
            }
            classes[name] = ClassSummary(
                lacking=lacking,
                found=stats.get(prefix + "found", 0),
                downloaded=stats.get(prefix + "stored", 0),
                duplicates=stats.get(prefix + "duplicate", 0),
                already_seen=stats.get(prefix + "already_seen", 0),
                refused=dict(sorted(refused.items())),
            )
        per_source = {s: source_health(s, stats, s in (demo_sources or ["demo"])) for s in sources}
        empty = [s for s, v in per_source.items() if v["queries"] and not v["results"]]
        elapsed = stats.get("elapsed_time_seconds", 0.0)
        return cls(
            classes,
            per_source,
            empty,
            dict(skipped or {}),
            stats.get("finish_reason"),
            float(elapsed or 0.0),
            stats,
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "classes": {k: vars(v) for k, v in self.classes.items()},
            "sources": self.sources,
            "empty_sources": self.empty_sources,
            "skipped": self.skipped,
            "finish_reason": self.finish_reason,
            "seconds": round(self.seconds, 2),
            "downloaded": self.downloaded,
        }

    def format(self) -> str:
        lines = []
        if self.classes:
            width = max(len("class"), *map(len, self.classes))
            lines.append(f"{'class':<{width}}  lacking  found  downloaded  duplicates  refused")
            for name, c in sorted(self.classes.items()):
                refused = ", ".join(f"{r} {n}" for r, n in c.refused.items())
                lines.append(
                    f"{name:<{width}}  {c.lacking:>7}  {c.found:>5}  {c.downloaded:>10}"
                    f"  {c.duplicates:>10}  {sum(c.refused.values())}"
                    + (f" ({refused})" if refused else "")
                )
        for name, why in sorted(self.skipped.items()):
            lines.append(f"{name}: not crawled ({why})")
        for s, v in self.sources.items():
            lines.append(
                f"source {s}: {v['queries']} queries, {v['results']} results, "
                f"{v.get('images', 0)} images"
                + (f", {v['page_errors']} page errors" if v["page_errors"] else "")
            )
            if v.get("empty_queries") and s not in self.empty_sources:
                lines.append(f"  {s}: {empty_queries_line(v)}")
            if v.get("stopped") and s not in self.empty_sources:
                lines.append(f"  stopped: {v['stopped']}")
        started = self.stats.get("pingo/redis/started_round")
        if started is not None:  # a distributed crawl (crawl.redis_url)
            lines.append(
                "shared crawl round: "
                + (
                    "started by this crawler"
                    if started
                    else "joined; its budget came from the crawler that started it"
                )
            )
        for s in self.empty_sources:
            lines.append("WARNING: " + alarm_line(s, self.sources[s]))
        lines.append(
            f"downloaded {self.downloaded} images in {self.seconds:.1f}s"
            + (f" ({self.finish_reason})" if self.finish_reason else "")
        )
        return "\n".join(lines)


def source_health(name: str, stats: dict[str, Any], is_demo: bool = False) -> dict[str, Any]:
    """One source's line of the summary (also `pingo status --json`'s "sources")."""
    prefix = f"pingo/source/{name}/"
    found = {
        k[len(prefix + "cause/") :]: v for k, v in stats.items() if k.startswith(prefix + "cause/")
    }
    empty = {
        k[len(prefix + "empty/") :]: v for k, v in stats.items() if k.startswith(prefix + "empty/")
    }
    cause = causes.dominant(found)
    return {
        "queries": stats.get(prefix + "queries", 0),
        "results": stats.get(prefix + "results", 0),
        "images": stats.get(prefix + "stored", 0),
        "page_errors": stats.get(prefix + "page_errors", 0),
        "empty_queries": stats.get(prefix + "empty_queries", 0),
        "causes": dict(sorted(found.items())),
        "empty": dict(sorted(empty.items())),
        "last_error": stats.get(prefix + "last_error"),
        # an API source that stopped for this crawl (daily quota spent, rate limited for long,
        # refused to start): the message says why and when it resumes
        "stopped": stats.get(prefix + "stopped"),
        "cause": cause,
        "advice": causes.advice(cause, name, is_demo) if cause else None,
    }


def alarm_line(name: str, health: dict[str, Any]) -> str:
    """The zero-yield alarm: the source found nothing; why, and what to do."""
    cause = health.get("cause")
    if health.get("stopped"):
        return f"source {name!r} found no results and stopped: {health['stopped']}"
    if not cause:
        return f"source {name!r} found no results for any keyword (see docs/crawler.md)"
    detail = str(health.get("last_error") or "").removeprefix(f"{cause}: ")
    return (
        f"source {name!r} found no results for any keyword ({cause}): "
        f"{detail or cause}. To do: {health.get('advice')}"
    )


def empty_queries_line(health: dict[str, Any], most: int = 5) -> str:
    """Which queries of a source gave nothing, and why (e.g. `2 of 5 queries gave no
    usable result: "t-shirt" (markup), ...`)."""
    empty = health.get("empty") or {}
    shown = ", ".join(f"{k!r} ({v})" for k, v in list(empty.items())[:most])
    more = f" and {len(empty) - most} more" if len(empty) > most else ""
    return (
        f"{health.get('empty_queries', 0)} of {health.get('queries', 0)} queries gave no "
        f"usable result: {shown}{more}; latest: {health.get('last_error')}"
    )


RUNS_SEARCHED = 50  # recent runs looked through for the last crawl's per-source health
STATUS_KEYS = (
    "queries",
    "results",
    "images",
    "last_error",
    "stopped",
    "cause",
    "advice",
    "empty_queries",
)


def last_crawl_sources(runs: list[dict[str, Any]]) -> tuple[str | None, dict[str, dict]]:
    """From recorded runs (newest first): when the last finished crawl started, and its
    per-source health (`pingo status`, the report). ({} before any crawl.)"""
    for run in runs:
        counts = run.get("counts") or {}
        if run.get("job") == "crawl" and isinstance(counts.get("sources"), dict):
            return run.get("started"), {
                name: {k: health.get(k) for k in STATUS_KEYS}
                for name, health in counts["sources"].items()
            }
    return None, {}


def sources_lines(sources: dict[str, dict], started: str | None) -> list[str]:
    """Text lines for `pingo status`: each source's last crawl, and its alarm if it found
    nothing."""
    lines = []
    when = f" (crawl of {started[:19].replace('T', ' ')})" if started else ""
    for name, h in sources.items():
        line = (
            f"source {name}{when}: {h.get('queries') or 0} queries, "
            f"{h.get('results') or 0} results, {h.get('images') or 0} images"
        )
        if h.get("empty_queries"):
            line += f", {h['empty_queries']} gave nothing"
        lines.append(line)
        if h.get("queries") and not h.get("results"):
            lines.append("  WARNING: " + alarm_line(name, h))
        elif h.get("stopped"):
            lines.append(f"  stopped: {h['stopped']}")
        elif h.get("last_error"):
            lines.append(f"  latest problem: {h['last_error']}")
    return lines
