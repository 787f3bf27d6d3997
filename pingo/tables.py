"""The per-class progress table, computed once for every place that shows it.

`pingo stats`, the demo's last step and the HTML report all show accepted / review / target per
class; they render the rows built here, so a change to what "of target" means happens once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from storage.store import Stats


@dataclass(frozen=True)
class ClassProgress:
    name: str
    accepted: int
    review: int
    target: int | None

    @property
    def percent(self) -> float | None:
        """Accepted as a percentage of the target (may pass 100); None without a target."""
        return 100.0 * self.accepted / self.target if self.target else None


def class_progress(stats: Stats) -> list[ClassProgress]:
    """One row per class, sorted by name."""
    return [
        ClassProgress(name, c["accepted"] or 0, c["review"] or 0, c["target"])
        for name, c in sorted(stats.classes.items())
    ]


def progress_lines(stats: Stats) -> list[str]:
    """The plain-text table: class, accepted, review, target, of target and a 20-step bar."""
    rows = class_progress(stats)
    width = max([len("class"), *(len(r.name) for r in rows)])
    lines = [f"{'class':<{width}}  accepted  review  target  of target"]
    for r in rows:
        pct = r.percent
        bar = "#" * int(min(pct, 100) // 5) if pct is not None else ""
        lines.append(
            f"{r.name:<{width}}  {r.accepted:>8}  {r.review:>6}  "
            f"{r.target if r.target is not None else '-':>6}  "
            f"{f'{pct:5.1f}%' if pct is not None else '     -'} {bar}"
        )
    return lines


def totals_line(stats: Stats) -> str:
    """Inbox and rejected totals, with the rejected reasons."""
    rejected = ", ".join(f"{r} {n}" for r, n in stats.rejected.items()) or "none"
    return f"inbox: {stats.inbox}\nrejected: {sum(stats.rejected.values())} ({rejected})"
