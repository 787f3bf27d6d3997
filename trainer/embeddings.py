"""A frozen backbone's pooled embedding of every image, computed once and cached on disk.

With ``train.weights`` set, the first training phase only trains the head on a frozen
backbone, so the backbone's output for an image never changes: it is computed once (inference,
no augmentation) and kept under ``data_dir/cache/embeddings/<fingerprint>/``, one ``.npy`` per
image named by the image's sha256. A retrain of the head then reads vectors instead of running
the backbone, and its epochs take milliseconds.

The fingerprint covers everything the vectors depend on: the architecture, the image size,
the weights (the file's sha256, or "imagenet" with the Keras version) and this module's
pixel-pipeline version, so another backbone never reads them. Each file is written to a
uniquely named temporary file and renamed into place, so a run killed at any point leaves
whole files only, and two runs computing the same image at once both write a whole file (the
same vector; the last rename wins). A file that does not read back as a finite vector of the
right length (truncated by a crash of the disk, not of pingo) is computed again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from core.config import TrainConfig
from trainer.models import BACKBONES, IMAGENET, NO_WEIGHTS, build_model, embedding_model

logger = logging.getLogger(__name__)

FOLDER = "embeddings"  # under data_dir/cache
META = "meta.json"
# Bump when what an image's vector depends on changes outside the fingerprint's other parts
# (decoding, resizing, the embedding layer): old caches are then left unused.
VERSION = 1
TEMP_SUFFIX = ".tmp"
STALE_TEMP_SECONDS = 24 * 3600  # a temp file older than this belongs to a run that died
BATCH = 64


class Image(Protocol):
    """What embed() needs of an image: trainer.data.Item has it, and so may other callers."""

    @property
    def path(self) -> str: ...

    @property
    def sha256(self) -> str: ...


@dataclass
class EmbedStats:
    """What one embed() call did: vectors read from the cache, computed, unreadable images."""

    fingerprint: str
    cached: int = 0
    computed: int = 0
    unreadable: int = 0
    seconds: float = 0.0

    def as_json(self) -> dict:
        return {
            "fingerprint": self.fingerprint,
            "cached": self.cached,
            "computed": self.computed,
            "unreadable": self.unreadable,
            "seconds": round(self.seconds, 3),
        }


def _file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fingerprint(tc: TrainConfig) -> str:
    """A short hash of what the vectors depend on: arch, image size, weights, VERSION.

    ``tc.weights`` must be "imagenet" or a weights file (resolved, as trainer.run does)."""
    import keras

    if tc.arch not in BACKBONES or tc.weights == NO_WEIGHTS:
        raise ValueError(f"embeddings need a backbone with weights, not {tc.arch}/{tc.weights}")
    weights = (
        f"imagenet:keras-{keras.__version__}"
        if tc.weights == IMAGENET
        else f"file:{_file_sha256(tc.weights)}"
    )
    body = json.dumps(
        {"v": VERSION, "arch": tc.arch, "size": tc.image_size, "weights": weights},
        sort_keys=True,
    )
    return hashlib.sha256(body.encode()).hexdigest()[:24]


def cache_folder(cache_dir: Path, tc: TrainConfig) -> Path:
    """Where ``tc``'s vectors live: ``cache_dir/embeddings/<fingerprint>``."""
    return Path(cache_dir) / FOLDER / fingerprint(tc)


def _vector_path(folder: Path, sha256: str) -> Path:
    return folder / sha256[:2] / f"{sha256}.npy"


def _read(path: Path, dim: int | None) -> np.ndarray | None:
    """The cached vector, or None when absent or not a whole finite float32 vector."""
    try:
        vec = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, EOFError) as exc:
        logger.warning("embedding cache file %s is unreadable (%s); computing it again", path, exc)
        return None
    if (
        vec.ndim != 1
        or vec.dtype != np.float32
        or (dim is not None and vec.shape[0] != dim)
        or not np.isfinite(vec).all()
    ):
        logger.warning("embedding cache file %s is damaged; computing it again", path)
        return None
    return vec


def _write_atomic(path: Path, data: bytes) -> None:
    """Write through a unique temporary file and a rename: readers see a whole file or none."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:12]}{TEMP_SUFFIX}"
    try:
        with open(temp, "wb") as f:
            f.write(data)
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def _save(path: Path, vec: np.ndarray) -> None:
    import io

    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(vec, np.float32), allow_pickle=False)
    _write_atomic(path, buf.getvalue())


def _remove_stale_temps(folder: Path) -> None:
    """Temporary files of runs killed mid-write (a live run's are minutes old at most)."""
    now = time.time()
    for temp in folder.glob(f"*/.*{TEMP_SUFFIX}"):
        try:
            if now - temp.stat().st_mtime > STALE_TEMP_SECONDS:
                temp.unlink()
        except OSError:
            pass


def _write_meta(folder: Path, tc: TrainConfig, dim: int) -> None:
    """A human-readable note of what the folder holds (not read back for correctness)."""
    meta = folder / META
    if meta.exists():
        return
    weights = tc.weights if tc.weights == IMAGENET else os.path.basename(tc.weights)
    body = {"arch": tc.arch, "image_size": tc.image_size, "weights": weights, "dim": dim}
    _write_atomic(meta, (json.dumps(body, indent=2) + "\n").encode())


def _read_dim(folder: Path) -> int | None:
    try:
        return int(json.loads((folder / META).read_text())["dim"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def embed(
    items: Sequence[Image],
    tc: TrainConfig,
    cache_dir: Path | None,
    *,
    max_pixels: int | None = None,
    embedder: Callable[[], Any] | None = None,
    stats: EmbedStats | None = None,
) -> np.ndarray:
    """(N, D) float32 pooled embeddings of ``items`` under ``tc``'s backbone and weights.

    Vectors are read from ``cache_dir/embeddings/<fingerprint>/`` (data_dir/cache) and only
    the missing ones are computed (float32, inference, no augmentation) and written there;
    ``cache_dir=None`` computes everything and keeps nothing. A row is NaN for an image that
    cannot be decoded (logged). ``tc.weights`` must be "imagenet" or a resolved file path.
    ``embedder``: returns the images -> embedding Keras model (default: built from ``tc``);
    ``stats``: filled with what was read and computed."""
    started = time.time()
    fp = fingerprint(tc)
    stats = stats if stats is not None else EmbedStats(fp)
    stats.fingerprint = fp
    folder = Path(cache_dir) / FOLDER / fp if cache_dir is not None else None
    dim = _read_dim(folder) if folder is not None else None

    found: dict[int, np.ndarray] = {}
    missing: list[int] = []
    for i, item in enumerate(items):
        vec = _read(_vector_path(folder, item.sha256), dim) if folder is not None else None
        if vec is None:
            missing.append(i)
        else:
            found[i] = vec
            dim = vec.shape[0] if dim is None else dim
    stats.cached += len(found)

    if missing:
        model = embedder() if embedder is not None else _build_embedder(tc)
        out_dim = int(model.output_shape[-1])
        if dim is not None and dim != out_dim:
            # The fingerprint matched but the vectors do not fit: recompute every one.
            logger.warning(
                "embedding cache %s has %d-d vectors, model gives %d", folder, dim, out_dim
            )
            missing, found = list(range(len(items))), {}
            stats.cached = 0
        dim = out_dim
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)
            _remove_stale_temps(folder)
            _write_meta(folder, tc, dim)
        computed = _compute(model, [items[i] for i in missing], tc.image_size, max_pixels)
        for j, i in enumerate(missing):
            vec = computed.get(j)
            if vec is None:
                continue
            found[i] = vec
            if folder is not None:
                _save(_vector_path(folder, items[i].sha256), vec)
        stats.computed += sum(1 for j in range(len(missing)) if j in computed)
        logger.info(
            "embeddings (%s at %d px): %d computed, %d from the cache",
            tc.arch,
            tc.image_size,
            len(computed),
            len(items) - len(missing),
        )

    out = np.full((len(items), dim or 0), np.nan, np.float32)
    for i, vec in found.items():
        out[i] = vec
    stats.unreadable += len(items) - len(found)
    if len(items) > len(found):
        logger.warning("%d images could not be decoded: no embedding", len(items) - len(found))
    stats.seconds += time.time() - started
    return out


def _build_embedder(tc: TrainConfig):
    """The float32 images -> embedding model of ``tc``'s backbone with its weights, whatever
    policy (mixed precision) or strategy the caller trains under, so the cached vectors do not
    depend on the device."""
    import keras

    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("float32")
    try:
        return embedding_model(build_model(tc.arch, tc.image_size, 1, tc.weights))
    finally:
        keras.mixed_precision.set_global_policy(previous)


def _compute(
    model: Any, items: Sequence[Image], image_size: int, max_pixels: int | None
) -> dict[int, np.ndarray]:
    """Position in ``items`` -> vector, for every image that decodes (the training pipeline's
    decoding and resizing, vision.pixels), in batches of BATCH."""
    import tensorflow as tf

    from vision.pixels import image_dataset

    ds = image_dataset(
        [i.path for i in items],
        image_size,
        max_pixels,
        labels=list(range(len(items))),
        unreadable="skip",
    )
    ds = ds.batch(BATCH).map(lambda x, i: (tf.cast(x, tf.float32), i)).prefetch(tf.data.AUTOTUNE)
    out: dict[int, np.ndarray] = {}
    for pixels, index in ds:
        vectors = np.asarray(model.predict_on_batch(pixels), np.float32)
        for j, vec in zip(index.numpy().tolist(), vectors, strict=True):
            out[int(j)] = vec
    return out
