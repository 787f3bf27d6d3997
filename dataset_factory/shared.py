"""What several factory workers share: inbox leases and one near-duplicate index.

``Claims``: a worker takes inbox rows in chunks with ``store.claim_inbox`` (SKIP LOCKED on
PostgreSQL), a heartbeat thread renews its leases while it hashes and classifies, and it gives
back what it still holds on exit. A worker killed with -9 renews nothing: its leases run out
and another worker claims the rows (a worker starting on the same host frees them at once
when the dead worker's pid is gone).

``SharedIndex``: each worker holds the index in memory; it is written to the .npz sidecar only
under the factory lock, after the chunk's moves. Before deciding a chunk (under the lock) a
worker reloads the sidecar if another worker saved it since (that brings the view hashes
without re-decoding anything), then reads the DB rows changed since its last sync, minus a
clock slack, and applies them: images kept by a worker that died between its moves and its
save are added (re-hashed), images demoted or rejected since are dropped. The DB stays the
truth; the sidecar only saves work.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
import time
from datetime import timedelta
from pathlib import Path

import numpy as np

from dataset_factory.hash_pool import Analyser
from dataset_factory.dedupe import KEPT, add_kept_rows, index_path, open_index
from dataset_factory.index import NearDuplicateIndex
from storage import files

logger = logging.getLogger(__name__)

LOCK = "factory"  # store.exclusive name held while a chunk is decided and filed
# Rows changed this long before a worker's last sync are read again: covers clocks that differ
# between machines (keep them NTP-synced) and moves whose timestamp precedes their commit.
CLOCK_SLACK = timedelta(seconds=30)


def worker_id() -> str:
    """host:pid:random — unique even when a pid is reused."""
    return f"{files.HOST[:100]}:{os.getpid()}:{secrets.token_hex(4)}"


def dead_local_worker(worker: str) -> bool:
    """Whether ``worker`` ran on this host and its process is gone (its leases can go now)."""
    host, _, rest = worker.partition(":")
    pid = rest.partition(":")[0]
    if host != files.HOST[:100] or not pid.isdigit():
        return False
    return not files.pid_alive(int(pid)) or files.exited(int(pid))


class Claims:
    """This worker's leases on inbox rows (a context manager: released on exit)."""

    def __init__(self, store, worker: str, lease_seconds: float):
        self.store = store
        self.worker = worker
        self.lease = lease_seconds
        self.stuck: set[int] = set()  # rows this run gave up on (a live process is moving them)
        self._waiting: tuple[int, float] | None = None  # (inbox left, since) while waiting
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._heartbeat, daemon=True,
                                        name=f"factory-lease-{worker}")

    def __enter__(self) -> "Claims":
        # A worker killed on this machine need not wait out its lease: its pid says it is gone.
        for holder in self.store.claim_holders():
            if dead_local_worker(holder):
                logger.info("releasing the inbox claims of dead worker %s", holder)
                self.store.release_claims(holder)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        try:
            self.store.release_claims(self.worker)
        except Exception as err:  # leases expire on their own; never mask the real error
            logger.warning("could not release claims of %s: %s", self.worker, err)

    def take(self, n: int) -> list[dict]:
        """Up to ``n`` inbox rows leased to this worker, in id order (its own unfinished first)."""
        rows = self.store.claim_inbox(self.worker, n + len(self.stuck), self.lease)
        return [r for r in rows if r["id"] not in self.stuck][:n]

    def wait_for_others(self) -> bool:
        """Nothing to claim: wait briefly if other workers still hold inbox rows.

        True: try claiming again (a dead worker's lease may have run out). False: the inbox
        is empty (but for rows this run gave up on), or it has not shrunk for two lease
        periods (a live worker stuck on its rows: leave them to it).
        """
        left = sum(self.store.inbox_counts().values()) - len(self.stuck)
        if left <= 0:
            return False
        now = time.monotonic()
        if self._waiting is None or left < self._waiting[0]:
            self._waiting = (left, now)
        elif now - self._waiting[1] > 2 * self.lease:
            logger.warning("%d inbox images stay leased to other workers; leaving them", left)
            return False
        time.sleep(min(1.0, self.lease / 3))
        return True

    def hold(self, ids) -> set[int]:
        """Renew the leases on ``ids``; the ids still ours (call under the factory lock)."""
        return self.store.renew_claims(self.worker, self.lease, ids)

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.lease / 3):
            try:
                self.store.renew_claims(self.worker, self.lease)
            except Exception as exc:
                logger.warning("lease renewal failed (retrying): %s", exc)


class SharedIndex:
    """One worker's copy of the near-duplicate index, kept in step with the others'."""

    def __init__(self, store, analyser: Analyser, method: str, hard: bool):
        self.store = store
        self.analyser = analyser
        self.method = method
        self.hard = hard
        self.path = index_path(store.data_dir, method, hard)
        self.index = NearDuplicateIndex(method)
        self._seen: tuple | None = None   # the sidecar's stat when this worker last read/wrote it
        self._synced_at = None            # start of this worker's last sync (DB clock: UTC)
        self._locked_at = None            # start of its last sync under the factory lock
        self._stale = True                # full reconcile needed (start, or after a failed step)

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
        from storage.store import utcnow
        now = utcnow()
        if self._stale:
            if not locked:
                return []
            self._replace(open_index(self.store, self.analyser, self.method, self.hard))
            self._stale, self._seen = False, _signature(self.path)
            self._synced_at = self._locked_at = now
            return None
        since = self._synced_at
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
        gone = [r["id"] for r in changed
                if present[r["id"]] and not (r["status"] in KEPT and r["path"])]
        missing = [r for r in kept if not present[r["id"]]]
        if gone:
            self.index.remove(gone)
        if missing:  # kept by a worker that died before saving the sidecar, or by a person
            add_kept_rows(self.index, self.store, self.analyser, missing, self.method,
                          self.hard, write_back=False)
        if gone or missing:
            logger.info("near-duplicate index synced: %d added, %d dropped", len(missing),
                        len(gone))


def _signature(path: Path) -> tuple | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size
