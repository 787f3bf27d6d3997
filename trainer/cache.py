"""Where the decoded training images are cached between epochs: memory, or a file.

The pipeline caches each decoded, resized image (uint8, ``size * size * 3`` bytes: 48 KiB at
128 px, 49 GB per million images). Below ``train.cache_memory_mb`` the cache lives in memory
(fastest); above it, tf.data writes it to files under ``data_dir/cache/`` instead, read back
sequentially each epoch, so a big dataset trains in bounded memory without decoding every
image again. The files belong to one run: they are removed when it ends, and a run killed
before it could remove them leaves them for the next run on this host to delete.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

PREFIX = "train-"


def estimate_bytes(n_images: int, image_size: int) -> int:
    """Bytes the decoded uint8 images take in the cache."""
    return n_images * image_size * image_size * 3


@dataclass
class CachePlan:
    kind: str  # "memory" or "file"
    estimate: int  # bytes the cached images take
    folder: Path | None = None  # the run's cache folder (file caches only)
    written: int = 0  # bytes the file cache held when the run ended

    def target(self, split: str) -> bool | str:
        """make_dataset's ``cache`` argument for one split."""
        return True if self.folder is None else str(self.folder / split)

    def as_json(self) -> dict:
        return {"kind": self.kind, "estimate_bytes": self.estimate, "written_bytes": self.written}


def cache_key(paths: Sequence[str], image_size: int, max_pixels: int) -> str:
    """A short hash of what the cache holds: these files at this size."""
    h = hashlib.sha256(f"{image_size}:{max_pixels}".encode())
    for p in sorted(paths):
        h.update(p.encode("utf-8", "surrogateescape") + b"\0")
    return h.hexdigest()[:16]


@contextmanager
def dataset_cache(
    n_images: int, image_size: int, budget_mb: int, cache_dir: Path | None, key: str
) -> Iterator[CachePlan]:
    """A CachePlan for one training run; a file cache's folder is removed on exit."""
    estimate = estimate_bytes(n_images, image_size)
    if estimate <= budget_mb * 2**20 or cache_dir is None:
        if cache_dir is None and estimate > budget_mb * 2**20:
            logger.warning(
                "the image cache (%.0f MB) is over train.cache_memory_mb (%d) but "
                "there is no cache folder; caching in memory",
                estimate / 2**20,
                budget_mb,
            )
        yield CachePlan("memory", estimate)
        return
    from storage import files

    cache_dir = Path(cache_dir)
    _remove_dead(cache_dir, files)
    folder = cache_dir / f"{PREFIX}{key}~{files.HOST[:100]}~{os.getpid()}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    logger.info(
        "caching %d decoded images (%.0f MB, over train.cache_memory_mb = %d) in %s",
        n_images,
        estimate / 2**20,
        budget_mb,
        folder,
    )
    plan = CachePlan("file", estimate, folder)
    try:
        yield plan
    finally:
        plan.written = sum(f.stat().st_size for f in folder.iterdir() if f.is_file())
        shutil.rmtree(folder, ignore_errors=True)


def _remove_dead(cache_dir: Path, files) -> None:
    """Delete cache folders left by runs on this host whose process is gone."""
    if not cache_dir.is_dir():
        return
    for old in cache_dir.glob(f"{PREFIX}*~*~*"):
        _, host, pid = old.name.rsplit("~", 2)
        if host == files.HOST[:100] and pid.isdigit() and not files.pid_alive(int(pid)):
            logger.info("removing the image cache of a dead training run: %s", old)
            shutil.rmtree(old, ignore_errors=True)
