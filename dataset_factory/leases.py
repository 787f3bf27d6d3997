"""Inbox leases: how several factory workers take inbox rows without taking the same one.

``Claims``: a worker takes inbox rows in chunks with ``store.claim_inbox`` (SKIP LOCKED on
PostgreSQL), a heartbeat thread renews its leases while it hashes and classifies, and it gives
back what it still holds on exit. A worker killed with -9 renews nothing: its leases run out
and another worker claims the rows (a worker starting on the same host frees them at once
when the dead worker's pid is gone).
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from storage import HOST, process_gone

if TYPE_CHECKING:
    from storage import Store

logger = logging.getLogger(__name__)


def worker_id() -> str:
    """host:pid:random — unique even when a pid is reused."""
    return f"{HOST[:100]}:{os.getpid()}:{secrets.token_hex(4)}"


def dead_local_worker(worker: str) -> bool:
    """Whether ``worker`` ran on this host and its process is gone (its leases can go now)."""
    host, _, rest = worker.partition(":")
    pid = rest.partition(":")[0]
    if host != HOST[:100] or not pid.isdigit():
        return False
    return process_gone(int(pid))


class Claims:
    """This worker's leases on inbox rows (a context manager: released on exit)."""

    def __init__(self, store: Store, worker: str, lease_seconds: float):
        self.store = store
        self.worker = worker
        self.lease = lease_seconds
        self.stuck: set[int] = set()  # rows this run gave up on (a live process is moving them)
        self._waiting: tuple[int, float] | None = None  # (inbox left, since) while waiting
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._heartbeat, daemon=True, name=f"factory-lease-{worker}"
        )

    def __enter__(self) -> Claims:
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

    def take(self, n: int, busy: Iterable[int] = ()) -> list[dict]:
        """Up to ``n`` inbox rows leased to this worker, in id order (its own unfinished first),
        leaving out ``busy`` (rows it took already and is still working on)."""
        skip = self.stuck.union(busy)
        rows = self.store.claim_inbox(self.worker, n + len(skip), self.lease)
        return [r for r in rows if r["id"] not in skip][:n]

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

    def hold(self, ids: Iterable[int]) -> set[int]:
        """Renew the leases on ``ids``; the ids still ours (call under the factory lock)."""
        return self.store.renew_claims(self.worker, self.lease, ids)

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.lease / 3):
            try:
                self.store.renew_claims(self.worker, self.lease)
            except Exception as exc:
                logger.warning("lease renewal failed (retrying): %s", exc)
