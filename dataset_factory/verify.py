"""Verification of hard near-duplicate candidates by aligned pixel correlation.

Hash views only propose candidates: at the loose ``hard_distance`` two different photos of
the same scene can meet. The verifier compares small grayscale thumbnails of the matched
views, band-passed (a blur subtracted) so that a shared background and lighting count for
little and the photo's own detail for much, and takes the best normalised correlation over
small shifts (a crop or rotation leaves a residual misalignment of a few percent). A copy
scores near 1; a distinct photo of the same class scores far lower (measured in
bench/factory_recall.py and docs/factory.md).
"""

from __future__ import annotations

import logging

import numpy as np
from PIL import Image, ImageFilter, ImageOps

from dataset_factory.hashing import views

logger = logging.getLogger(__name__)

THUMB = 48
SHIFTS = tuple(range(-4, 5))


def thumb(image: Image.Image) -> np.ndarray:
    """A band-passed, zero-mean THUMBxTHUMB float32 thumbnail of ``image``."""
    gray = image.convert("L").resize((THUMB, THUMB), Image.Resampling.BILINEAR)
    blurred = gray.filter(ImageFilter.GaussianBlur(4))
    arr = np.asarray(gray, np.float32) - np.asarray(blurred, np.float32)
    return arr - arr.mean()


ZOOMS = (0.9, 0.85)  # a 10% crop or a rotation's crop leaves the rest at this scale
TILTS = (-4, 4)  # degrees: a slight rotation


def view_thumbs(image: Image.Image, found: dict[str, Image.Image]) -> list[np.ndarray]:
    """Thumbnails a query tries: its views (``found``, from hashing.views) and their mirrors
    interleaved, then slight tilts of its content."""
    out = []
    for view in found.values():
        out += [thumb(view), thumb(ImageOps.mirror(view))]
    content = found.get("trim", image)  # views() keeps "trim" only where there were borders
    for angle in TILTS:
        out.append(thumb(_center(content.rotate(angle, Image.Resampling.BILINEAR), 0.88)))
    return out


def kept_thumbs(image: Image.Image) -> list[np.ndarray]:
    """Thumbnails a kept image is compared with: its views plus central zooms of its content."""
    found = views(image)
    content = found.get("trim", image)
    return [thumb(v) for v in found.values()] + [thumb(_center(content, z)) for z in ZOOMS]


def _center(image: Image.Image, keep: float) -> Image.Image:
    w, h = image.size
    mx, my = w * (1 - keep) / 2, h * (1 - keep) / 2
    return image.crop((round(mx), round(my), round(w - mx), round(h - my)))


def _normalise(stack: np.ndarray) -> np.ndarray:
    """Zero-mean, unit-norm rows of a (n, h*w) stack (flat zero rows stay zero)."""
    stack = stack - stack.mean(axis=1, keepdims=True)
    norm = np.sqrt((stack * stack).sum(axis=1, keepdims=True))
    return stack / np.maximum(norm, 1e-6)


def similarity(query_thumbs: list[np.ndarray], kept_thumbs: list[np.ndarray]) -> float:
    """Best correlation between any query view and any kept view over small shifts.

    Each shift compares the overlapping parts; all view pairs of one shift are one matrix
    product, so a candidate costs about a millisecond.
    """
    if not query_thumbs or not kept_thumbs:
        return -1.0
    q, k = np.stack(query_thumbs), np.stack(kept_thumbs)
    n = q.shape[1]
    best = -1.0
    for dy in SHIFTS:
        for dx in SHIFTS:
            qy, ky = (
                (slice(dy, n), slice(0, n - dy)) if dy >= 0 else (slice(0, n + dy), slice(-dy, n))
            )
            qx, kx = (
                (slice(dx, n), slice(0, n - dx)) if dx >= 0 else (slice(0, n + dx), slice(-dx, n))
            )
            a = _normalise(q[:, qy, qx].reshape(len(q), -1))
            b = _normalise(k[:, ky, kx].reshape(len(k), -1))
            best = max(best, float((a @ b.T).max()))
    return best
