"""A person's decisions on review/ images: accept (optionally relabelled) or reject.

A decision is recorded with label source ``human``; the factory never lets a model or a
duplicate override it: storage refuses a non-human move of a filed human row, so a factory
run deciding the same image at the same moment cannot undo the person's decision, and when
the factory's move of it is in flight the decision waits for it and is applied after.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from core.config import check_safe_name
from dataset_factory.errors import ReviewError
from storage import ImageFileMissingError, ImageNotFoundError, MoveConflictError

if TYPE_CHECKING:
    from core.config import Config
    from storage import Store

logger = logging.getLogger(__name__)


LABEL_ISSUE = "label_issue"  # sent to review by the label check before training


def list_review(store: Store, class_name: str | None = None) -> list[dict]:
    """Review images (optionally of one best-guess class): first those the label check
    flagged, most suspicious first (the surest other-class guess), then the rest oldest first."""
    rows = list(store.iter_images(status="review", class_name=class_name))
    flagged = sorted(
        (r for r in rows if r["reason"] == LABEL_ISSUE), key=lambda r: -(r["confidence"] or 0)
    )
    return flagged + [r for r in rows if r["reason"] != LABEL_ISSUE]


def _review_row(store: Store, image_id: int) -> dict:
    try:
        row = store.get_image(image_id)
    except ImageNotFoundError as exc:
        raise ReviewError(str(exc)) from None
    if row["status"] != "review":
        raise ReviewError(f"image {image_id} is {row['status']}, not in review")
    return row


# How long a decision waits for another process's move of the same image to finish.
CONFLICT_WAIT = 30.0


def _move(store: Store, image_id: int, status: str, **changes: Any) -> None:
    deadline = time.monotonic() + CONFLICT_WAIT
    while True:
        try:
            store.move(image_id, status, **changes)
            return
        except MoveConflictError:
            if time.monotonic() > deadline:
                raise ReviewError(
                    f"image {image_id} is being moved by another process; try again"
                ) from None
            time.sleep(0.05)
        except ImageFileMissingError as exc:
            raise ReviewError(str(exc)) from None


def accept(store: Store, config: Config, image_id: int, label: str | None = None) -> str:
    """Accept into dataset/<label>/ (default: the model's best guess); returns the label."""
    row = _review_row(store, image_id)
    label = label or row["label"] or row["keyword_class"]
    check_safe_name(label, "label")
    if config.classes and label not in config.classes:
        raise ReviewError(
            f"label {label!r} is not a class in the config ({', '.join(sorted(config.classes))})"
        )
    _move(store, image_id, "accepted", label=label, label_source="human", reason=None)
    logger.info("image %d accepted as %s by a person", image_id, label)
    return label


def reject(store: Store, image_id: int, reason: str = "human_rejected") -> None:
    """Reject into rejected/<reason>/."""
    _review_row(store, image_id)
    check_safe_name(reason, "reject reason")
    _move(store, image_id, "rejected", reason=reason, label_source="human")
    logger.info("image %d rejected by a person (%s)", image_id, reason)
