"""Index sync: each factory worker's in-memory near-duplicate index, kept in step with the others.

Each worker holds the index in memory; it is written to the .npz sidecar only under the
factory lock (``LOCK``), after the chunk's moves. Before deciding a chunk (under the lock) a
worker reloads the sidecar if another worker saved it since (that brings the view hashes
without re-decoding anything), then reads the DB rows changed since its last sync, minus a
clock slack, and applies them: images kept by a worker that died between its moves and its
save are added (re-hashed), images demoted or rejected since are dropped. The DB stays the
truth; the sidecar only saves work.
"""

from __future__ import annotations

import logging
import os
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from dataset_factory.dedupe import KEPT, add_kept_rows, index_path, open_index
from dataset_factory.hash_pool import Analyser
from dataset_factory.index import NearDuplicateIndex
from storage import utcnow

if TYPE_CHECKING:
    from storage import Store

logger = logging.getLogger(__name__)

LOCK = "factory"  # store.exclusive name held while a chunk is decided and filed
# Rows changed this long before a worker's last sync are read again: covers clocks that differ
# between machines (keep them NTP-synced) and moves whose timestamp precedes their commit.
CLOCK_SLACK = timedelta(seconds=30)


class SharedIndex:
    """One worker's copy of the near-duplicate index, kept in step with the others'."""

    def __init__(self, store: Store, analyser: Analyser, method: str, hard: bool):
        self.store = store
        self.analyser = analyser
        self.method = method
        self.hard = hard
        self.path = index_path(store.data_dir, method, hard)
        self.index = NearDuplicateIndex(method)
        self._seen: tuple | None = None  # the sidecar's stat when this worker last read/wrote it
        self._synced_at: datetime | None = None  # start of this worker's last sync (DB clock: UTC)
        self._locked_at: datetime | None = None  # start of its last sync under the factory lock
        self._stale = True  # full reconcile needed (start, or after a failed step)

    def invalidate(self) -> None:
        """Forget in-memory changes that were not filed: the next sync reconciles in full."""
        self._stale = True

    def sync(self, locked: bool = True) -> list[dict] | None:
        """Bring the index up to date with the sidecar and the DB.

        Under the factory lock (``locked``) the result is exact: nobody else files images
        meanwhile. Without it, it is a cheap head start (most of what other workers kept, so
        that verification against it can run before taking the lock); the locked sync that
        follows catches up. Returns the rows that changed, or None after a full reconcile
        (then anything may have changed).
        """
        now = utcnow()
        if self._stale:
            if not locked:
                return []
            self._replace(open_index(self.store, self.analyser, self.method, self.hard))
            self._stale, self._seen = False, _signature(self.path)
            self._synced_at = self._locked_at = now
            return None
        since = self._synced_at
        assert since is not None and self._locked_at is not None  # set by the full reconcile
        sig = _signature(self.path)
        if sig is not None and sig != self._seen:
            loaded = NearDuplicateIndex.load(self.path, self.method)
            if loaded is not None:
                self._replace(loaded)
                # written by a lock holder after this worker's last locked sync: it knows the
                # DB as of then, not necessarily as of this worker's last unlocked sync
                since = self._locked_at
            self._seen = sig
        changed = self.store.changed_since(since - CLOCK_SLACK)
        self._synced_at = now
        if locked:
            self._locked_at = now
        self._apply(changed)
        return changed

    def save(self) -> None:
        """Write the sidecar (under the factory lock, after the chunk's moves)."""
        self.index.save(self.path)
        self._seen = _signature(self.path)

    def _replace(self, other: NearDuplicateIndex) -> None:
        # in place: the Deduper holds this object
        self.index.main, self.index.views = other.main, other.views

    def _apply(self, changed: list[dict]) -> None:
        if not changed:
            return
        ids = np.fromiter((r["id"] for r in changed), np.int64, len(changed))
        present = dict(zip(ids.tolist(), np.isin(ids, self.index.main.ids).tolist()))
        kept = [r for r in changed if r["status"] in KEPT and r["path"]]
        gone = [
            r["id"] for r in changed if present[r["id"]] and not (r["status"] in KEPT and r["path"])
        ]
        missing = [r for r in kept if not present[r["id"]]]
        if gone:
            self.index.remove(gone)
        if missing:  # kept by a worker that died before saving the sidecar, or by a person
            add_kept_rows(
                self.index,
                self.store,
                self.analyser,
                missing,
                self.method,
                self.hard,
                write_back=False,
            )
        if gone or missing:
            logger.info(
                "near-duplicate index synced: %d added, %d dropped", len(missing), len(gone)
            )


def _signature(path: Path) -> tuple | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size
