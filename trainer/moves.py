"""Moving the label check's images: one batch, or one by one around a move in progress."""

from __future__ import annotations

from typing import TYPE_CHECKING

from storage import Move, MoveConflictError

if TYPE_CHECKING:
    from storage import Store

BUSY = "being moved by another process; left as it is"
MISSING = "file missing (now rejected, file_missing)"


def move_all(store: Store, moves: list[Move]) -> tuple[dict[int, str], set[int]]:
    """Apply ``moves`` in one recoverable batch; when another process holds one of them, the
    others one by one. Returns image id -> new path or why not, and the ids moved."""
    outcome: dict[int, str] = {}
    moved: set[int] = set()
    if not moves:
        return outcome, moved
    try:
        _record(store.move_many(moves), outcome, moved)
    except MoveConflictError:
        for move in moves:
            try:
                _record(store.move_many([move]), outcome, moved)
            except MoveConflictError:
                outcome[move.image_id] = BUSY
    return outcome, moved


def _record(result, outcome: dict[int, str], moved: set[int]) -> None:
    moved.update(result)
    outcome.update(result)
    outcome.update(result.skipped)
    for image_id in result.missing:
        outcome[image_id] = MISSING
