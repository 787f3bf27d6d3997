"""The per-class tables, computed once for every place that shows them.

`pingo stats`, the demo's last step and the HTML report all show accepted / review / target per
class; they render the rows built here, so a change to what "of target" means happens once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from core.config import Config
    from storage import Store
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


def auto_accept(
    config: Config, store: Store, listing: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """What the factory's decisions can promise per class, for `stats`, `models` and the
    report: the promoted model's auto-accept precision and coverage at factory.target_precision
    (validated on its held-out test split when it was trained) and how often each keyword is
    right as measured now (people's review decisions, the label check before training)."""
    from vision.evidence import reliability_from_store

    if listing is None:  # the registry listing, when the caller has not read it already
        listing = store.registry.listing()
    current = next((m for m in listing if m["current"]), None)
    validated = (current or {}).get("auto_accept") or {}
    reliability = reliability_from_store(store, config.factory.keyword_prior)
    classes = {}
    for name in sorted(config.classes):
        v = validated.get(name) or {}
        judged = reliability.by_class.get(name)
        classes[name] = {
            "precision": v.get("precision"),
            "coverage": v.get("coverage"),
            "test_images": v.get("test_images"),
            "keyword_reliability": round(reliability.of_class(name), 4),
            "keyword_judged": int(judged.judged) if judged else 0,
        }
    return {
        "decision": config.factory.decision,
        "target_precision": config.factory.target_precision,
        "model": current["version"] if current else None,
        "classes": classes,
    }


def auto_accept_lines(info: dict[str, Any]) -> list[str]:
    """The plain-text form of ``auto_accept``: one line per class."""
    head = (
        f"auto-accept ({info['decision']}, target precision {info['target_precision']:.2f}, "
        f"model {info['model'] or 'none yet: keyword labels, checked before training'}):"
    )
    lines = [head]
    width = max([5, *(len(c) for c in info["classes"])])
    for name, c in info["classes"].items():
        if c["precision"] is not None:
            model = (
                f"precision {c['precision']:.2f} (validated on {c['test_images']} test images), "
                f"coverage {c['coverage']:.2f}"
            )
        elif c["coverage"] is not None:
            model = "nothing reaches the target on the test split (coverage 0): all to review"
        else:
            model = "not measured"
        lines.append(
            f"  {name:<{width}}  {model}; keyword right {c['keyword_reliability']:.2f} "
            f"({c['keyword_judged']} judged)"
        )
    return lines


# review reasons `pingo stats` explains: (reason, what the images are, what happens next)
EXPLAINED_REASONS = (
    (
        "label_issue",
        "flagged by the label check",
        "in review, most suspicious first in `pingo review`",
    ),
    (
        "keyword_only",
        "waiting with only their keyword",
        "training's label check decides them once 20+ hand-labelled images are imported "
        "with `pingo import`; or decide them in `pingo review`",
    ),
)


def review_reason_lines(reasons: dict[str, dict[str, int]]) -> list[str]:
    """Lines for the review reasons people should know about, per class, e.g.
    ``flagged by the label check: dog 2 (in review, ...)``."""
    lines = []
    for reason, what, then in EXPLAINED_REASONS:
        counts = [(c, r[reason]) for c, r in sorted(reasons.items()) if r.get(reason)]
        if counts:
            lines.append(f"{what}: " + ", ".join(f"{c} {n}" for c, n in counts) + f" ({then})")
    return lines
