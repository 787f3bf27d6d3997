"""Train/validation/test split decided by content, so it never moves as images are added.

Each image gets a *group key*: its perceptual hash when the factory recorded one (so a resized
or re-encoded copy, which has the same hash, lands in the same split), else its SHA-256. The
split is a fixed function of that key alone, hashed to a number in [0, 1). Adding images never
moves an existing one, and a group can never straddle two splits.
"""

from __future__ import annotations

import hashlib
import logging

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
_SALT = b"pingo-split-v1:"


def group_key(sha256: str, phash: int | None = None, hash_method: str | None = None) -> str:
    """The key an image is split by: its perceptual hash if known, else its content hash."""
    if phash is not None:
        return f"{hash_method or 'phash'}:{int(phash) & 0xFFFFFFFFFFFFFFFF:016x}"
    return f"sha256:{sha256}"


def unit_interval(key: str) -> float:
    """A stable, uniformly spread number in [0, 1) for ``key``."""
    digest = hashlib.sha256(_SALT + key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def assign_split(key: str, val_fraction: float, test_fraction: float) -> str:
    """'test' for the first test_fraction of the interval, then 'val', else 'train'."""
    u = unit_interval(key)
    if u < test_fraction:
        return "test"
    if u < test_fraction + val_fraction:
        return "val"
    return "train"
