"""How many images each class still needs crawled, counting its review backlog.

A class needs ``target - accepted - inbox - min(review, limit)`` more images, where ``review``
counts the class's images waiting in review/ (by the class they were crawled for) and
``limit`` is crawl.max_review_backlog (or the class's own override; unset: its target). A
class whose review backlog fills the rest of its need is *held back*: it is not crawled until
a person decides some of those images, so the loop never piles up unreviewed images. The
crawl plan, `pingo status` and the report all read it from here (no Scrapy import).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from core.config import Config
    from storage import Store


@dataclass(frozen=True)
class ClassNeed:
    name: str
    target: int
    accepted: int
    inbox: int  # crawled for this class, waiting for the factory
    review: int  # crawled for this class, waiting for a person
    review_limit: int  # review images that count toward the need
    limit_key: str  # the setting review_limit comes from

    @property
    def lacking(self) -> int:
        """Images still to crawl (never below 0)."""
        counted = min(self.review, self.review_limit)
        return max(0, self.target - self.accepted - self.inbox - counted)

    @property
    def held_back(self) -> bool:
        """Below target with what is accepted or in the inbox, but the review backlog fills
        the rest: crawling it would only add to what a person has to review."""
        return self.lacking == 0 and self.accepted + self.inbox < self.target

    @property
    def skip_reason(self) -> str | None:
        """Why the class is not crawled, or None when it lacks images."""
        if self.lacking > 0:
            return None
        if self.accepted >= self.target:
            return "at target"
        if self.accepted + self.inbox >= self.target:
            return f"{self.inbox} images already wait in the inbox"
        return f"{self.review} waiting for review"


def class_needs(
    config: Config, store: Store, classes: list[str] | None = None
) -> dict[str, ClassNeed]:
    """Per configured class (or ``classes``, which must be configured): what it has and needs."""
    stats = store.stats(config.targets)
    inbox = store.inbox_counts()
    review = store.counts_by_keyword_class("review")
    needs = {}
    for name in config.classes if classes is None else classes:
        limit, key = config.review_backlog_for(name)
        needs[name] = ClassNeed(
            name,
            config.classes[name].target,
            stats.classes.get(name, {}).get("accepted", 0) or 0,
            inbox.get(name, 0),
            review.get(name, 0),
            limit,
            key,
        )
    return needs


def review_backlog(config: Config, store: Store) -> dict[str, dict[str, Any]]:
    """The classes held back by their review backlog: {class: {"review": n, "limit": n,
    "setting": key}}; empty when none is."""
    return {
        name: {"review": n.review, "limit": n.review_limit, "setting": n.limit_key}
        for name, n in class_needs(config, store).items()
        if n.held_back
    }


def backlog_lines(backlog: dict[str, dict[str, Any]]) -> list[str]:
    """One line per held-back class, e.g.
    ``held back: shoes 212 waiting for review (crawl.max_review_backlog 150)``."""
    return [
        f"held back: {name} {b['review']} waiting for review ({b['setting']} {b['limit']})"
        for name, b in sorted(backlog.items())
    ]
