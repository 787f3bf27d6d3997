"""Near-duplicate decisions against every image pingo has kept, across classes and runs.

``open_index`` loads the .npz sidecar and reconciles it with the DB (the truth): images kept
since the sidecar was written are added (their views re-hashed from their files), images no
longer kept (a person rejected them, a better copy replaced them) are dropped. So a missing,
stale or damaged sidecar costs time, never correctness.

``Deduper.check`` answers "is this new image a copy of a kept one, and which copy stays":
1. main hash within ``max_distance`` of a kept image's: a near-duplicate candidate;
2. with hard duplicates on, any view within ``hard_distance`` of a kept view is one too;
3. with hard duplicates on, a candidate is a copy only if the verifier's aligned correlation
   reaches ``verify_threshold`` (an identical hash needs no check). Without them, the
   nearest main-hash candidate is the copy (plain perceptual hashing).
The better copy stays: more pixels, then the earlier image; but an image a person labelled
always wins over one that nobody did (a person's decision is never lost to a copy).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, cast

import numpy as np

from dataset_factory.cache import BoundedCache
from dataset_factory.hash_pool import Analyser, Analysis, Job
from dataset_factory.index import NearDuplicateIndex
from dataset_factory.verify import image_thumbs, similarities
from vision.decode import DRAFT_SIZE, Limits, decode

if TYPE_CHECKING:
    from storage import Store

logger = logging.getLogger(__name__)

KEPT = ("accepted", "review")
MAX_VERIFY = 8  # candidates verified per image, nearest first
STREAM_PAGE = 1000  # kept rows held at a time while the index is reconciled
# Kept images' verification thumbnails cached per run (about 55 KB an image: ~1200 images).
THUMB_CACHE_BYTES = 64 << 20


def index_path(data_dir: Path, method: str, hard: bool = True) -> Path:
    """The sidecar for one hash method (with or without hard-edit views)."""
    return Path(data_dir) / "index" / f"near-duplicates-{method}{'' if hard else '-plain'}.npz"


def open_index(store: Store, analyser: Analyser, method: str, hard: bool) -> NearDuplicateIndex:
    """The index of every kept image, in step with the DB.

    Only ids and hashes stay in memory (numpy arrays, about 16 bytes per hash): kept rows are
    streamed from the DB a page at a time, and a row is held only while an image missing
    from the sidecar is hashed. Whatever else the factory needs about a kept image it reads
    from the DB when that image becomes a candidate.
    """
    path = index_path(store.data_dir, method, hard)
    index = NearDuplicateIndex.load(path, method) or NearDuplicateIndex(method)
    # What the sidecar holds, sorted; no copy if it is (a view of the first len(index) ids:
    # images added below are not in it).
    have = index.main.ids
    if len(have) > 1 and not (have[1:] >= have[:-1]).all():
        have = np.sort(have)
    seen = np.zeros(len(have), bool)  # which of them are still kept
    missing: list[dict] = []
    added = 0

    def add_missing() -> None:
        nonlocal added
        add_kept_rows(index, store, analyser, missing, method, hard, write_back=True)
        added += len(missing)
        missing.clear()

    for status in KEPT:
        for page in _pages(store.iter_images(status=status), STREAM_PAGE):
            page = [r for r in page if r["path"]]
            ids = np.fromiter((r["id"] for r in page), np.int64, len(page))
            pos, known = _find_sorted(ids, have)
            seen[pos[known]] = True
            missing.extend(r for r, k in zip(page, known.tolist()) if not k)
            if len(missing) >= STREAM_PAGE:
                add_missing()
    add_missing()
    # Ids not seen at all: a sidecar that lists an id twice must not lose it (remove() drops
    # every copy of an id).
    gone = np.setdiff1d(have[~seen], have[seen])
    if len(gone):
        index.remove(set(gone.tolist()))
    if len(gone) or added:
        logger.info(
            "near-duplicate index: %d added, %d dropped, %d kept images",
            added,
            len(gone),
            len(index),
        )
        index.save(path)
    return index


def _find_sorted(ids: np.ndarray, pool: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(positions in the sorted ``pool``, found) for each of ``ids``."""
    if not len(pool):
        return np.zeros(len(ids), np.int64), np.zeros(len(ids), bool)
    pos = np.minimum(np.searchsorted(pool, ids), len(pool) - 1)
    return pos, pool[pos] == ids


def _pages(rows: Iterable[dict], size: int) -> Iterator[list[dict]]:
    page: list[dict] = []
    for row in rows:
        page.append(row)
        if len(page) == size:
            yield page
            page = []
    if page:
        yield page


def add_kept_rows(
    index: NearDuplicateIndex,
    store: Store,
    analyser: Analyser,
    rows: list[dict],
    method: str,
    hard: bool,
    write_back: bool,
) -> None:
    """Index kept images missing from ``index``, re-hashing those whose stored hash cannot
    serve (every one with hard duplicates on: their view hashes are not in the DB).

    ``write_back`` stores a changed hash in the DB; an image that no longer decodes is left out.
    """
    rehash = [r for r in rows if hard or r["phash"] is None or r["hash_method"] != method]
    analyses = {
        a.image_id: a
        for a in analyser.run(Job(r["id"], str(store.abspath(r["path"]))) for r in rehash)
    }
    for row in rows:
        a = analyses.get(row["id"])
        if a is not None and not a.ok:
            logger.warning("kept image %d no longer decodes (%s); not indexed", row["id"], a.reason)
            continue
        if (
            write_back
            and a is not None
            and (row["phash"] != a.phash or row["hash_method"] != method)
        ):
            store.update_image(row["id"], phash=a.phash, hash_method=method)
        index.add(row["id"], _hash(a.phash if a else row["phash"]), a.views if a else ())


@dataclass
class Kept:
    """What the deduper needs to know about a kept image to pick the better copy."""

    image_id: int
    width: int
    height: int
    human: bool
    path: str | None = None  # absolute, to re-read it for verification


@dataclass
class Verdict:
    duplicate_of: int | None = None  # the new image is a copy of this kept image
    replaces: int | None = None  # the new image is kept; this kept one becomes the copy
    method: str = ""  # "near" or "hard"
    score: float | None = None


class Deduper:
    def __init__(
        self,
        index: NearDuplicateIndex,
        *,
        max_distance: int,
        hard: bool,
        hard_distance: int,
        verify_threshold: float,
        lookup,
        max_pixels: int = Limits.max_pixels,
        thumb_cache_bytes: int = THUMB_CACHE_BYTES,
    ):
        self.index = index
        self.max_distance = max_distance
        self.hard = hard
        self.hard_distance = hard_distance
        self.verify_threshold = verify_threshold
        self.lookup = lookup  # image id -> Kept
        # kept images are re-read under the same pixel limit that let them in
        self.limits = Limits(min_size=1, max_aspect=1e9, max_pixels=max_pixels)
        # kept id -> thumbnails ([] when unreadable); least recently used go past the cap
        self._thumbs: BoundedCache[list] = BoundedCache(
            thumb_cache_bytes, size=lambda thumbs: 64 + sum(t.nbytes for t in thumbs)
        )
        self._scores: dict[tuple[int, int], float | None] = {}  # (new id, kept id) -> score
        self.verified = 0  # candidate verifications run (for benchmarks and the log)

    def find_copy(self, a: Analysis) -> tuple[int, str, float | None] | None:
        """(kept id, "near"/"hard", score) of the kept image ``a`` copies, or None.

        Without hard duplicates this is plain perceptual hashing: the nearest main hash within
        ``max_distance`` is a copy. With them, only an identical hash is taken on trust; every
        other candidate, from the main hash or from the views, must pass the verifier, which
        is what lets distinct photos of one scene sit a few bits apart without being merged.
        """
        near = self.index.near(_hash(a.phash), self.max_distance)
        if not self.hard or not a.thumbs:
            return (near[0][0], "near", None) if near else None
        if near and near[0][1] == 0:
            return near[0][0], "near", None
        near_ids = [i for i, _ in near]
        candidates = self._candidates(a, near_ids)
        self._score_all(a, candidates)
        for kept_id in candidates:
            score = self._scores.get((a.image_id, kept_id))
            if score is not None and score >= self.verify_threshold:
                return kept_id, "near" if kept_id in near_ids else "hard", score
        return None

    def _candidates(self, a: Analysis, near_ids: list[int]) -> list[int]:
        return list(
            dict.fromkeys(
                near_ids[:MAX_VERIFY]
                + self.index.view_candidates(a.views + a.mirror_views, self.hard_distance)
            )
        )[: 2 * MAX_VERIFY]

    def unverified(self, a: Analysis) -> int:
        """How many verifications ``check(a)`` would still have to run (0: scores known)."""
        if not (a.ok and self.hard and a.thumbs):
            return 0
        near = self.index.near(_hash(a.phash), self.max_distance)
        if near and near[0][1] == 0:
            return 0
        todo = 0
        for kept_id in self._candidates(a, [i for i, _ in near]):
            score = self._scores.get((a.image_id, kept_id))
            if score is None:
                todo += self._thumbs.get(kept_id) != []
            elif score >= self.verify_threshold and not todo:
                return 0
        return todo

    def _score_all(self, a: Analysis, candidates: list[int]) -> None:
        """Verifier scores of ``a`` against the candidates not scored yet, in one batch
        (remembered: a score depends only on the two images; an unreadable kept image gets
        none, and is not remembered: the file may have moved)."""
        todo, thumbs = [], []
        for kept_id in candidates:
            if (a.image_id, kept_id) in self._scores:
                continue
            kept = self._kept_thumbs(kept_id)
            if kept:
                todo.append(kept_id)
                thumbs.append(kept)
        if todo:
            self.verified += len(todo)
            for kept_id, score in zip(todo, similarities(a.thumbs, thumbs).tolist()):
                self._scores[(a.image_id, kept_id)] = score

    def prefetch(self, analyses: list[Analysis]) -> None:
        """Verify a chunk against its candidates now, so that ``check`` mostly reuses the scores.

        Called outside the factory lock: the costly verification runs in parallel across
        workers. Each image is also verified against the chunk's images before it (as if all
        were kept), so copies inside a chunk need no work under the lock either. Decisions
        are the same as without it: only scores are remembered.
        """
        if not self.hard:
            return
        present = set(
            self.index.main.ids[
                np.isin(self.index.main.ids, [a.image_id for a in analyses])
            ].tolist()
        )
        added = []
        try:
            for a in analyses:
                if not a.ok or a.image_id in present:
                    continue
                if a.thumbs:
                    self.find_copy(a)
                self.index.add(a.image_id, _hash(a.phash), a.views)
                if a.kept_thumbs and a.image_id not in self._thumbs:
                    self._thumbs[a.image_id] = a.kept_thumbs
                added.append(a.image_id)
        finally:
            self.index.remove(added)

    def clear_scores(self) -> None:
        self._scores.clear()

    def _kept_thumbs(self, kept_id: int) -> list:
        if kept_id in self._thumbs:
            return self._thumbs[kept_id]
        kept = self.lookup(kept_id)
        try:
            image = decode(kept.path, self.limits, DRAFT_SIZE).image
            thumbs = image_thumbs(image, query_too=False).kept  # no tilts: never a query
        except Exception as exc:
            logger.warning("cannot re-read kept image %d for verification: %s", kept_id, exc)
            thumbs = []
        self._thumbs[kept_id] = thumbs
        return thumbs

    def forget(self, image_ids=None) -> None:
        """Images whose rows changed: retry reading those that could not be read (their file
        may have moved; a file's content never changes). All cached thumbnails if None."""
        if image_ids is None:
            self._thumbs.clear()
        for image_id in image_ids or ():
            if self._thumbs.get(image_id) == []:
                del self._thumbs[image_id]

    def remember(self, image_id: int, a: Analysis) -> None:
        self.index.add(image_id, _hash(a.phash), a.views)
        self.forget([image_id])  # thumbnails read while it was a candidate stay valid
        if a.kept_thumbs and image_id not in self._thumbs:
            self._thumbs[image_id] = a.kept_thumbs  # its pixels were decoded once already

    def check(self, a: Analysis, new: Kept) -> Verdict:
        """Decide for a new, valid image; keeps the index up to date with the decision."""
        found = self.find_copy(a)
        if found is None:
            self.remember(a.image_id, a)
            return Verdict()
        kept_id, how, score = found
        old = self.lookup(kept_id)
        if not old.human and (new.human or _better(new, old)):
            self.index.remove([kept_id])
            self._thumbs.pop(kept_id, None)
            self.remember(a.image_id, a)
            return Verdict(replaces=kept_id, method=how, score=score)
        return Verdict(duplicate_of=kept_id, method=how, score=score)


def _better(new: Kept, old: Kept) -> bool:
    """More pixels wins; on a tie the earlier image (smaller id) stays."""
    a, b = new.width * new.height, old.width * old.height
    return a > b or (a == b and new.image_id < old.image_id)


def _hash(phash: int | None) -> int:
    """The hash of a usable image or kept row: always set there (Analysis.ok, status kept)."""
    return cast(int, phash)
