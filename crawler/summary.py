"""CrawlSummary: what one crawl did, per class and per source, built from Scrapy's stats."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

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
        per_source = {}
        for s in sources:
            prefix = f"pingo/source/{s}/"
            per_source[s] = {
                k: stats.get(prefix + k, 0) for k in ("queries", "results", "page_errors")
            }
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
                f"source {s}: {v['queries']} queries, {v['results']} results"
                + (f", {v['page_errors']} page errors" if v["page_errors"] else "")
            )
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
            lines.append(
                f"WARNING: source {s!r} found no results for any keyword: its markup "
                f"may have changed (see docs/crawler.md, 'Fixing a profile')"
            )
        lines.append(
            f"downloaded {self.downloaded} images in {self.seconds:.1f}s"
            + (f" ({self.finish_reason})" if self.finish_reason else "")
        )
        return "\n".join(lines)
