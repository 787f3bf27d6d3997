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
from dataclasses import dataclass
from pathlib import Path

from dataset_factory.analyse import Analyser, Analysis, Job
from dataset_factory.index import NearDuplicateIndex
from dataset_factory.validate import DRAFT_SIZE, Limits, decode
from dataset_factory.verify import kept_thumbs, similarity

logger = logging.getLogger(__name__)

KEPT = ("accepted", "review")
MAX_VERIFY = 8  # candidates verified per image, nearest first


def index_path(data_dir: Path, method: str, hard: bool = True) -> Path:
    """The sidecar for one hash method (with or without hard-edit views)."""
    return Path(data_dir) / "index" / f"near-duplicates-{method}{'' if hard else '-plain'}.npz"


def open_index(store, analyser: Analyser, method: str, hard: bool) -> NearDuplicateIndex:
    """The index of every kept image, in step with the DB."""
    path = index_path(store.data_dir, method, hard)
    index = NearDuplicateIndex.load(path, method) or NearDuplicateIndex(method)
    kept = {}
    for status in KEPT:
        for row in store.iter_images(status=status):
            if row["path"]:
                kept[row["id"]] = row
    have = set(index.main.ids.tolist())
    gone = have - set(kept)
    if gone:
        index.remove(gone)
    missing = [kept[i] for i in sorted(set(kept) - have)]
    rehash = [r for r in missing
              if hard or r["phash"] is None or r["hash_method"] != method]
    analyses = {a.image_id: a for a in analyser.run(
        Job(r["id"], str(store.abspath(r["path"]))) for r in rehash)}
    for row in missing:
        a = analyses.get(row["id"])
        if a is not None and not a.ok:
            logger.warning("kept image %d no longer decodes (%s); not indexed", row["id"], a.reason)
            continue
        if a is not None and (row["phash"] != a.phash or row["hash_method"] != method):
            store.update_image(row["id"], phash=a.phash, hash_method=method)
        index.add(row["id"], a.phash if a else row["phash"], a.views if a else ())
    if gone or missing:
        logger.info("near-duplicate index: %d added, %d dropped, %d kept images",
                    len(missing), len(gone), len(index))
        index.save(path, source_count=len(kept))
    return index


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
    duplicate_of: int | None = None   # the new image is a copy of this kept image
    replaces: int | None = None       # the new image is kept; this kept one becomes the copy
    method: str = ""                  # "near" or "hard"
    score: float | None = None


class Deduper:
    def __init__(self, index: NearDuplicateIndex, *, max_distance: int, hard: bool,
                 hard_distance: int, verify_threshold: float, lookup):
        self.index = index
        self.max_distance = max_distance
        self.hard = hard
        self.hard_distance = hard_distance
        self.verify_threshold = verify_threshold
        self.lookup = lookup  # image id -> Kept
        self._thumbs: dict[int, list] = {}

    def find_copy(self, a: Analysis) -> tuple[int, str, float | None] | None:
        """(kept id, "near"/"hard", score) of the kept image ``a`` copies, or None.

        Without hard duplicates this is plain perceptual hashing: the nearest main hash within
        ``max_distance`` is a copy. With them, only an identical hash is taken on trust; every
        other candidate, from the main hash or from the views, must pass the verifier, which
        is what lets distinct photos of one scene sit a few bits apart without being merged.
        """
        near = self.index.near(a.phash, self.max_distance)
        if not self.hard or not a.thumbs:
            return (near[0][0], "near", None) if near else None
        if near and near[0][1] == 0:
            return near[0][0], "near", None
        near_ids = [i for i, _ in near]
        candidates = list(dict.fromkeys(
            near_ids[:MAX_VERIFY]
            + self.index.view_candidates(a.views + a.mirror_views, self.hard_distance)))
        for kept_id in candidates[:2 * MAX_VERIFY]:
            thumbs = self._kept_thumbs(kept_id)
            if not thumbs:
                continue
            score = similarity(a.thumbs, thumbs)
            if score >= self.verify_threshold:
                return kept_id, "near" if kept_id in near_ids else "hard", score
        return None

    def _kept_thumbs(self, kept_id: int) -> list:
        if kept_id not in self._thumbs:
            kept = self.lookup(kept_id)
            try:
                image = decode(kept.path, Limits(min_size=1, max_aspect=1e9), DRAFT_SIZE).image
                self._thumbs[kept_id] = kept_thumbs(image)
            except Exception as exc:
                logger.warning("cannot re-read kept image %d for verification: %s", kept_id, exc)
                self._thumbs[kept_id] = []
        return self._thumbs[kept_id]

    def remember(self, image_id: int, a: Analysis) -> None:
        self.index.add(image_id, a.phash, a.views)
        self._thumbs.pop(image_id, None)  # re-read from its file when needed as a kept image

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
