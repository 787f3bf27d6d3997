"""process_inbox: the factory's one entry point (CLI `pingo factory`, `pingo demo`, scheduler).

Inbox rows are taken in id order, in chunks leased with ``store.claim_inbox``, so any number of
workers (processes, on one machine or several sharing data_dir and a PostgreSQL DB) can run
process_inbox at once and never take the same image. For each chunk: hash and decode-check in
the worker pool and classify the valid images in batches (in parallel across workers); then,
under the shared factory lock, bring the near-duplicate index up to date with what other
workers kept, decide duplicates one image at a time against it (it grows as images are kept,
so copies inside one chunk are caught too), apply every decision of the chunk with one
``store.move_many`` and save the index.

Crash safety comes from that order: nothing leaves the inbox before its chunk's moves are
recorded, storage finishes or rolls back half-done moves on the next open, the index is
reconciled with the DB on load and synced from it before every chunk, and a killed worker's
leases expire so another takes its rows. Rerunning after kill -9 redoes at most one chunk.

No single row stops a run. A row whose file vanished is recorded as rejected, file_missing
(or follows its file when it is found elsewhere) before the chunk is analysed. When a chunk
fails, its rows are filed one at a time; a row that fails alone has the failure counted in
the DB and is left for this run; at its second failure (``storage.store.MAX_FAILURES``) it is
set aside as rejected, processing_error. Only when every row of a chunk of several fails alone
(a broken model, not a bad row) does the run fail.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from dataset_factory.cache import BoundedCache
from dataset_factory.classify import Classifier
from dataset_factory.decide import Filing
from dataset_factory.dedupe import Deduper, Kept
from dataset_factory.hash_pool import Analyser, Analysis, Job, Pending, Settings
from dataset_factory.index_sync import LOCK, SharedIndex
from dataset_factory.leases import Claims, worker_id
from storage import Move, MoveConflictError, MoveResult
from storage.errors import ModelLoadError
from vision.decode import Limits
from vision.evidence import KeywordReliability, reliability_from_store

if TYPE_CHECKING:
    from core.config import Config
    from storage import ModelRegistry, Store

# A failing chunk of at least this many rows whose rows all fail alone fails the run: the
# fault is not in the rows (e.g. a broken model), and setting them all aside would hide it.
SYSTEMIC = 3
# A chunk goes back to verifying outside the lock (at most DEFER times) when more than this
# many verifications (~10 ms each) would otherwise run under it.
DEFER = 2
DEFER_VERIFICATIONS = 8

logger = logging.getLogger(__name__)


@dataclass
class FactorySummary:
    """What one run did, per keyword class: accepted / review / rejected (per reason)."""

    classes: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    processed: int = 0
    replaced: int = 0  # kept images demoted because a better copy arrived
    model_version: str | None = None
    index_size: int = 0
    worker: str | None = None  # host:pid:random, the claim owner
    lock_wait: float = 0.0  # seconds spent waiting for the factory lock (other workers)
    lock_held: float = 0.0  # seconds spent deciding and filing chunks under it
    deferred: int = 0  # times a chunk left the lock to verify new candidates first
    failed: int = 0  # rows that failed once, left in the inbox for the next run
    set_aside: int = 0  # rows that failed twice: now rejected, processing_error
    relinked: int = 0  # rows whose file was elsewhere: the row now follows the file
    verified: int = 0  # duplicate candidates the verifier compared pixel by pixel

    def merge(self, other: FactorySummary) -> None:
        for name, c in other.classes.items():
            self.classes[name].update(c)
        self.replaced += other.replaced

    def count(self, keyword_class: str, outcome: str) -> None:
        self.classes[keyword_class][outcome] += 1

    @property
    def rejected(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for c in self.classes.values():
            total.update(
                {k[len("rejected:") :]: v for k, v in c.items() if k.startswith("rejected:")}
            )
        return total

    def totals(self, keyword_class: str) -> dict[str, int]:
        c = self.classes.get(keyword_class, Counter())
        return {
            "accepted": c["accepted"],
            "review": c["review"],
            "rejected": sum(v for k, v in c.items() if k.startswith("rejected:")),
            "duplicates": c["rejected:duplicate"],
        }

    def as_json(self) -> dict[str, Any]:
        return {
            "processed": self.processed,
            "replaced": self.replaced,
            "worker": self.worker,
            "model_version": self.model_version,
            "index_size": self.index_size,
            "lock_wait_s": round(self.lock_wait, 3),
            "lock_held_s": round(self.lock_held, 3),
            "deferred": self.deferred,
            "failed": self.failed,
            "set_aside": self.set_aside,
            "relinked": self.relinked,
            "verified": self.verified,
            "classes": {k: self.totals(k) for k in sorted(self.classes)},
            "rejected": dict(sorted(self.rejected.items())),
        }


def settings_from(config: Config) -> Settings:
    f = config.factory
    return Settings(
        method=f.hash,
        timeout=f.decode_timeout,
        hard=f.hard_duplicates,
        limits=Limits(min_size=f.min_size, max_aspect=f.max_aspect, max_pixels=f.max_pixels),
    )


def process_inbox(
    config: Config,
    store: Store,
    progress: Callable[[int], None] | None = None,
    *,
    limit: int | None = None,
    chunk_size: int | None = None,
    lease_seconds: float | None = None,
    worker: str | None = None,
) -> FactorySummary:
    """Validate, dedupe, classify and file inbox images (at most ``limit``) until none is left.

    Safe to run in several processes at once: each claims its own chunks of ``chunk_size``
    (default ``factory.chunk_size``). When only rows leased to other workers are left, it
    waits for them to be filed, or for a dead worker's lease (``lease_seconds``, default
    ``factory.claim_lease``) to run out and takes them over, so a run ends with an empty inbox.
    """
    f = config.factory
    lease = f.claim_lease if lease_seconds is None else lease_seconds
    chunk_size = chunk_size or f.chunk_size
    worker = worker or worker_id()
    summary = FactorySummary(worker=worker)
    with (
        Analyser(settings_from(config), f.workers) as analyser,
        Claims(store, worker, lease) as claims,
    ):
        FactoryRun(config, store, analyser, claims, summary, progress).process(limit, chunk_size)
    logger.info("factory: %s", summary.as_json())
    return summary


@dataclass
class Taken:
    """A chunk claimed by this worker: its rows whose files are in place, their analyses
    under way, and how many rows were claimed (missing files included)."""

    rows: list[dict]
    pending: Pending
    claimed: int


class FactoryRun:
    """One process_inbox call: what its chunks share.

    The worker's leases (``claims``), its copy of the near-duplicate index (``shared``) and the
    deduper over it, what it has read about kept images (``kept_cache``), the promoted model
    (loaded on first use) and the ``summary`` it fills in.
    """

    def __init__(
        self,
        config: Config,
        store: Store,
        analyser: Analyser,
        claims: Claims,
        summary: FactorySummary,
        progress: Callable[[int], None] | None = None,
    ):
        f = config.factory
        self.config = config
        self.store = store
        self.analyser = analyser
        self.claims = claims
        self.summary = summary
        self.progress = progress
        self.shared = SharedIndex(store, analyser, f.hash, f.hard_duplicates)
        self.model = LazyModel(store.registry, f.max_pixels)
        self._filing: Filing | None = None
        self._reliability: KeywordReliability | None = None
        # LRU: a long run must not hold every kept row
        self.kept_cache: BoundedCache[Kept] = BoundedCache(50_000)
        self.deduper = Deduper(
            self.shared.index,
            max_distance=f.max_distance,
            hard=f.hard_duplicates,
            hard_distance=f.hard_distance,
            verify_threshold=f.verify_threshold,
            lookup=self.lookup,
            max_pixels=f.max_pixels,
        )

    def process(self, limit: int | None, chunk_size: int) -> None:
        """Take chunks until the inbox is empty (or ``limit`` rows were taken) and file them."""
        summary = self.summary
        with self.store.exclusive(LOCK):
            self.shared.sync()
        summary.index_size = len(self.shared.index)
        summary.model_version = self.store.registry.current()
        taken = 0
        ahead: Taken | None = None  # the next chunk, being hashed
        while True:
            now = ahead or self._take(limit, taken, chunk_size)
            ahead = None
            if now is None:
                break
            chunk, pending = now.rows, now.pending
            taken += now.claimed
            if not chunk:
                continue
            try:
                analyses = list(pending.results(self.progress))
                # the workers hash the next chunk while this one is decided
                ahead = self._take(limit, taken, chunk_size, busy=chunk, wait=False)
                summary.processed += self.file_rows(chunk, analyses)
            except ModelLoadError:
                raise  # the model, not the rows: the run fails and says so
            except Exception as exc:
                self.forget_unfiled()
                logger.warning(
                    "a chunk of %d images failed (%s: %s); filing them one at a time",
                    len(chunk),
                    type(exc).__name__,
                    exc,
                )
                summary.processed += self._one_at_a_time(chunk, exc)
        summary.index_size = len(self.shared.index)
        summary.verified = self.deduper.verified

    def _take(
        self,
        limit: int | None,
        taken: int,
        chunk_size: int,
        busy: list[dict] = (),  # type: ignore[assignment]
        wait: bool = True,
    ) -> Taken | None:
        """The next chunk (its rows with files in place) with its analyses under way; None
        when the inbox is empty (after waiting for other workers' leases if ``wait``) or
        ``limit`` rows were taken."""
        while limit is None or taken < limit:
            n = chunk_size if limit is None else min(chunk_size, limit - taken)
            chunk = self.claims.take(n, busy=[r["id"] for r in busy])
            if not chunk:
                if wait and self.claims.wait_for_others():
                    continue  # rows leased to a worker that may have died
                break
            rows = self._without_missing_files(chunk)
            jobs = [Job(r["id"], str(self.store.abspath(r["path"]))) for r in rows]
            return Taken(rows, self.analyser.submit(jobs), len(chunk))
        return None

    def lookup(self, image_id: int) -> Kept:
        """What the deduper needs about a kept image (read from the DB once, then cached)."""
        if image_id not in self.kept_cache:
            self.kept_cache[image_id] = _kept(self.store, self.store.get_image(image_id))
        return self.kept_cache[image_id]

    def file_rows(self, chunk: list[dict], analyses: list[Analysis] | None = None) -> int:
        """Hash (unless ``analyses`` are given), classify, decide and file ``chunk``; returns
        how many rows were filed."""
        summary = self.summary
        if analyses is None:
            jobs = [Job(r["id"], str(self.store.abspath(r["path"]))) for r in chunk]
            analyses = list(self.analyser.run(jobs, self.progress))
        predicted = _predict(self.config, self.store, chunk, analyses, self.model)
        for attempt in range(DEFER + 1):
            # verification against the index as other workers left it, in parallel
            self._refresh(locked=False)
            self.deduper.prefetch(analyses)
            asked = time.perf_counter()
            with self.store.exclusive(LOCK):
                got = time.perf_counter()
                done = self._file_chunk(chunk, analyses, predicted, may_defer=attempt < DEFER)
            summary.lock_wait += got - asked
            summary.lock_held += time.perf_counter() - got
            if done is not None:
                break
            summary.deferred += 1
        self.deduper.clear_scores()
        assert done is not None  # the last attempt may not defer
        return done

    def forget_unfiled(self) -> None:
        """After a failed attempt: it may have changed the in-memory index and caches only."""
        self.shared.invalidate()
        self.kept_cache.clear()
        self.deduper.forget()
        self.deduper.clear_scores()

    def _without_missing_files(self, chunk: list[dict]) -> list[dict]:
        """The rows of ``chunk`` whose file is in place; the others are reconciled by storage
        (the row follows a file found elsewhere, or is rejected as file_missing). A row storage
        leaves alone (a live process has its add or move in flight) is not taken again in this
        run: claims hand a worker its own rows first, so it would be taken forever."""
        store, summary = self.store, self.summary
        gone = [r for r in chunk if not r["path"] or not store.abspath(r["path"]).is_file()]
        if not gone:
            return chunk
        done = store.reconcile([r["id"] for r in gone])
        summary.relinked += done["relinked"]
        for r in gone:
            row = store.get_image(r["id"])
            if row["status"] == "rejected" and row["reason"] == "file_missing":
                summary.count(r["keyword_class"], "rejected:file_missing")
                summary.processed += 1
            elif row["status"] == "inbox" and row["path"] == r["path"]:
                self.claims.stuck.add(r["id"])  # the next run retries it
        logger.warning("%d inbox images had no file at their path: %s", len(gone), done)
        ids = {r["id"] for r in gone}
        return [r for r in chunk if r["id"] not in ids]

    def _one_at_a_time(self, chunk: list[dict], first: Exception) -> int:
        """File the rows of a chunk that failed one by one; count the failure of each row that
        fails alone (set aside at its second); returns how many were filed."""
        failed: list[tuple[dict, Exception]] = []
        done = 0
        if len(chunk) == 1:
            failed.append((chunk[0], first))
        else:
            for row in chunk:
                try:
                    done += self.file_rows([row])
                except Exception as exc:
                    self.forget_unfiled()
                    failed.append((row, exc))
        if len(chunk) >= SYSTEMIC and len(failed) == len(chunk):
            raise first  # every row fails alone: the fault is not in the rows
        for row, err in failed:
            error = f"{type(err).__name__}: {err}"
            logger.error("image %d could not be processed: %s", row["id"], error)
            if self.store.record_failure(row["id"], error):
                self.summary.set_aside += 1
                self.summary.count(row["keyword_class"], "rejected:processing_error")
                done += 1
            else:
                self.summary.failed += 1
                self.claims.stuck.add(row["id"])  # not again in this run; the next run retries it
        return done

    def _file_chunk(
        self, chunk: list[dict], analyses: list[Analysis], predicted, *, may_defer: bool = False
    ) -> int | None:
        """Under the factory lock: decide and move the rows of ``chunk`` this worker still holds.

        With ``may_defer``, returns None (nothing done) when other workers kept so many
        candidates since the prefetch that verifying them would hold the lock for long: the
        caller verifies them outside the lock and comes back.

        A row whose lease ran out and that another worker took is left to it. A half-done move
        left by a dead worker (storage refuses to move that image) is finished by a repair, and
        the chunk decided again from a fully reconciled index.
        """
        store, shared, kept_cache = self.store, self.shared, self.kept_cache
        for attempt in range(2):
            held = self.claims.hold([r["id"] for r in chunk])
            mine = [r for r in chunk if r["id"] in held]
            if len(mine) < len(chunk):
                logger.warning(
                    "%d images of this chunk were taken over by another worker",
                    len(chunk) - len(mine),
                )
            self._refresh(locked=True)
            if not mine:
                return 0
            if (
                may_defer
                and sum(self.deduper.unverified(a) for a in analyses if a.image_id in held)
                > DEFER_VERIFICATIONS
            ):
                return None
            counts = FactorySummary()
            moves = self._decide(
                mine, [a for a in analyses if a.image_id in held], predicted, counts
            )
            try:
                moved = store.move_many(moves)
            except MoveConflictError as exc:
                shared.invalidate()  # this attempt's decisions were applied in memory only
                if attempt:
                    self.claims.stuck.update(r["id"] for r in mine)
                    logger.warning("leaving %d images for later: %s", len(mine), exc)
                    return 0
                logger.warning("%s; repairing and deciding the chunk again", exc)
                store.repair()
                continue
            for image_id, path in moved.items():  # kept images are re-read from their new place
                if image_id in kept_cache:
                    kept_cache[image_id].path = str(store.abspath(path))
            if moved.skipped or moved.missing:
                _recount(counts, mine, moves, moved)
                shared.invalidate()  # decisions not filed as made: reconcile from the DB
                for image_id in (*moved.skipped, *moved.missing):
                    kept_cache.pop(image_id, None)
            shared.save()
            self.summary.merge(counts)
            return len(mine)
        return 0

    def _decide(
        self, chunk: list[dict], analyses: list[Analysis], predicted, counts: FactorySummary
    ) -> list[Move]:
        """The moves that file ``chunk``: rejections, duplicates (and kept images from earlier
        chunks that a better copy replaces), and each survivor accepted or sent to review."""
        rows = {r["id"]: r for r in chunk}
        plans: dict[int, tuple[str, dict]] = {}  # image id -> (status, changes)
        survivors: list[int] = []
        demoted: list[tuple[int, int]] = []  # (kept id from an earlier chunk, replaced by)
        for a in analyses:
            row = rows[a.image_id]
            if not a.ok:
                logger.debug("image %d rejected: %s %s", a.image_id, a.reason, a.detail)
                plans[a.image_id] = ("rejected", {"reason": a.reason})
                continue
            base = {
                "phash": a.phash,
                "hash_method": self.config.factory.hash,
                "width": a.width,
                "height": a.height,
            }
            new = Kept(
                a.image_id,
                cast(int, a.width),  # a usable image (a.ok) has its size
                cast(int, a.height),
                row["label_source"] == "human",
                str(self.store.abspath(row["path"])),
            )
            verdict = self.deduper.check(a, new)
            if verdict.duplicate_of is not None:
                plans[a.image_id] = (
                    "rejected",
                    {**base, "reason": "duplicate", "duplicate_of": verdict.duplicate_of},
                )
                continue
            self.kept_cache[a.image_id] = new
            plans[a.image_id] = ("keep", base)
            survivors.append(a.image_id)
            if verdict.replaces is not None:
                old = verdict.replaces
                if old in plans:  # kept earlier in this chunk, not moved yet
                    survivors.remove(old)
                    plans[old] = (
                        "rejected",
                        {**plans[old][1], "reason": "duplicate", "duplicate_of": a.image_id},
                    )
                else:
                    demoted.append((old, a.image_id))
                self.kept_cache.pop(old, None)

        classifier, probs = predicted
        filing = self._filing_for(classifier)
        for image_id in survivors:
            plans[image_id] = filing.file(rows[image_id], probs.get(image_id), plans[image_id][1])
        moves = []
        for image_id, (status, changes) in plans.items():
            move = Move(image_id, status, changes, expect={"status": "inbox"})
            moves.append(move)
            counts.count(rows[image_id]["keyword_class"], _outcome(move))
        for old, new_id in demoted:
            moves.append(Move(old, "rejected", {"reason": "duplicate", "duplicate_of": new_id}))
            counts.replaced += 1
            logger.info("image %d replaced by its larger copy %d", old, new_id)
        return moves

    def _filing_for(self, classifier: Classifier | None) -> Filing:
        """The decision rule for this run's model (keyword reliability read once a run)."""
        if self._filing is None or self._filing.classifier is not classifier:
            if self._reliability is None:
                self._reliability = reliability_from_store(
                    self.store, self.config.factory.keyword_prior
                )
            self._filing = Filing(self.config, classifier, self._reliability)
        return self._filing

    def _refresh(self, *, locked: bool) -> None:
        """Sync the index; update what is cached about kept images whose rows changed."""
        changed = self.shared.sync(locked)
        if changed is None:
            self.kept_cache.clear()
            self.deduper.forget()
            return
        for r in changed:
            # e.g. filed by another worker, or a person relabelled it
            if r["id"] in self.kept_cache:
                self.kept_cache[r["id"]] = _kept(self.store, r)
        self.deduper.forget([r["id"] for r in changed])


def _recount(
    counts: FactorySummary, rows: list[dict], moves: list[Move], moved: MoveResult
) -> None:
    """Correct a chunk's counts for moves storage skipped (a person decided the image
    meanwhile) or found without a file (recorded as rejected, file_missing)."""
    classes = {r["id"]: r["keyword_class"] for r in rows}
    for move in moves:
        if move.image_id not in classes:
            continue  # a demotion of an image from an earlier chunk
        if move.image_id in moved.skipped or move.image_id in moved.missing:
            counts.classes[classes[move.image_id]][_outcome(move)] -= 1
        if move.image_id in moved.missing:
            counts.count(classes[move.image_id], "rejected:file_missing")


def _outcome(move: Move) -> str:
    return move.status if move.status != "rejected" else f"rejected:{move.changes['reason']}"


class LazyModel:
    """The promoted model, loaded (TensorFlow imported) only when an image needs it."""

    def __init__(self, registry: ModelRegistry, max_pixels: int):
        self.registry = registry
        self.max_pixels = max_pixels
        self._loaded = False
        self._classifier: Classifier | None = None

    def get(self) -> Classifier | None:
        if not self._loaded:
            self._classifier = Classifier.from_registry(self.registry, self.max_pixels)
            self._loaded = True
        return self._classifier


def _kept(store: Store, row: dict) -> Kept:
    return Kept(
        row["id"],
        row["width"] or 0,
        row["height"] or 0,
        row["label_source"] == "human",
        str(store.abspath(row["path"])) if row["path"] else None,
    )


def _predict(
    config: Config, store: Store, chunk: list[dict], analyses: list[Analysis], model: LazyModel
) -> tuple[Classifier | None, dict[int, np.ndarray]]:
    """(classifier, {image id: calibrated probabilities}) for every valid image the model
    should look at (crawled, of a class the model knows).

    Runs before the factory lock, so workers classify in parallel; images that turn out to be
    duplicates were classified for nothing, which costs less than serialising the model.
    """
    rows = {r["id"]: r for r in chunk}
    need = [a.image_id for a in analyses if a.ok and rows[a.image_id]["label_source"] != "human"]
    if config.factory.decision == "keyword":
        need = []
    classifier = model.get() if need and model.registry.current() else None
    if classifier is None:
        return None, {}
    by_model = [i for i in need if rows[i]["keyword_class"] in classifier.classes]
    if not by_model:
        return classifier, {}
    probs = classifier.predict_probs(
        [str(store.abspath(rows[i]["path"])) for i in by_model], config.factory.batch_size
    )
    return classifier, dict(zip(by_model, probs, strict=True))
