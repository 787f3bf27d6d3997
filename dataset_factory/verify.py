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
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

from dataset_factory.hashing import Box, view_boxes

logger = logging.getLogger(__name__)

THUMB = 48
SHIFTS = tuple(range(-4, 5))
ZOOMS = (0.9, 0.85)  # a 10% crop or a rotation's crop leaves the rest at this scale
TILTS = (-4, 4)  # degrees: a slight rotation


def thumb(image: Image.Image, box: Box | None = None) -> np.ndarray:
    """A band-passed, zero-mean THUMBxTHUMB float32 thumbnail of ``image`` (or of its ``box``)."""
    gray = image if image.mode == "L" else image.convert("L")
    small = gray.resize((THUMB, THUMB), Image.Resampling.BILINEAR, box=box)
    blurred = small.filter(ImageFilter.GaussianBlur(4))
    arr = np.asarray(small, np.float32) - np.asarray(blurred, np.float32)
    return arr - arr.mean()


@dataclass
class Thumbs:
    """What the verifier compares: a query's thumbnails and, once kept, the image's own."""

    query: list[np.ndarray]  # the views and their mirrors interleaved, then slight tilts
    kept: list[np.ndarray]  # the views, then central zooms of the content


def thumbs(gray: Image.Image, boxes: dict[str, Box]) -> Thumbs:
    """Both thumbnail sets of one image from its grayscale pixels and view boxes
    (hashing.all_hashes): a view's mirror is its thumbnail flipped, not a second resize."""
    views = [thumb(gray, b) for b in boxes.values()]
    query = []
    for v in views:
        query += [v, np.ascontiguousarray(v[:, ::-1])]
    box = boxes.get("trim", boxes["full"])  # "trim" only where there were borders
    content = gray.crop(box)
    for angle in TILTS:
        query.append(
            thumb(content.rotate(angle, Image.Resampling.BILINEAR), _center(content, 0.88))
        )
    kept = views + [thumb(content, _center(content, z)) for z in ZOOMS]
    return Thumbs(query, kept)


def image_thumbs(image: Image.Image) -> Thumbs:
    """``thumbs`` of a decoded image (a kept image re-read from its file)."""
    gray = image.convert("L")
    return thumbs(gray, view_boxes(gray))


def _center(image: Image.Image, keep: float) -> Box:
    w, h = image.size
    mx, my = w * (1 - keep) / 2, h * (1 - keep) / 2
    return (round(mx), round(my), round(w - mx), round(h - my))


R = max(SHIFTS)
# A candidate whose half-resolution score is below this is no copy without the full check:
# on 16,149 candidate pairs of real photos and planted copies (bench/factory_e2e.py's set,
# another seed), every pair that reached 0.86 in full scored >= 0.727 at half resolution,
# and 84% of the distinct photos scored below 0.65.
PREFILTER = 0.65


def similarity(query_thumbs: list[np.ndarray], kept_thumbs: list[np.ndarray]) -> float:
    """Best correlation between any query view and any kept view over small shifts."""
    return float(similarities(query_thumbs, [kept_thumbs])[0])


def similarities(query_thumbs: list[np.ndarray], candidates: list[list[np.ndarray]]) -> np.ndarray:
    """``similarity`` of one query with each candidate's thumbnails, all at once."""
    out = np.full(len(candidates), -1.0)
    owners = np.array([i for i, c in enumerate(candidates) for _ in c], np.int64)
    if not query_thumbs or not len(owners):
        return out
    q = np.stack(query_thumbs).astype(np.float32)
    k = np.stack([t for c in candidates for t in c]).astype(np.float32)
    # the cheap signal first: half resolution, a quarter of the shifts (~16x less work)
    coarse = np.full(len(candidates), -1.0)
    np.maximum.at(coarse, owners, best_correlation(pooled(q), pooled(k), R // 2))
    fine = coarse >= PREFILTER
    out[~fine] = coarse[~fine]  # all far below verify_threshold
    if fine.any():
        rows = fine[owners]
        np.maximum.at(out, owners[rows], best_correlation(q, k[rows], R))
    return out


def pooled(stack: np.ndarray) -> np.ndarray:
    """A (n, s, s) stack at half the resolution (2x2 means)."""
    n, s, _ = stack.shape
    return stack.reshape(n, s // 2, 2, s // 2, 2).mean(axis=(2, 4))


def best_correlation(q: np.ndarray, k: np.ndarray, radius: int) -> np.ndarray:
    """For each image of ``k``, the best correlation with any image of ``q`` over shifts of up
    to ``radius`` pixels either way.

    For a shift (dy, dx) the score of a pair is the normalised correlation of the parts that
    overlap (zero mean, unit norm over the overlap): the raw dot products of every shift and
    pair at once (``_dots``), the overlap's sums (for the means and norms) from cumulative
    sums. The same scores as normalising each overlap separately (checked to 1e-6 against
    the per-shift loop) at a fraction of the calls.
    """
    n = q.shape[1]
    shifts = [(dy, dx) for dy in range(-radius, radius + 1) for dx in range(-radius, radius + 1)]
    dots = _dots(q, k, shifts, radius)
    # both sides' sums over the overlap of each shift, from cumulative sums
    ys = np.array([_span(dy, n) for dy, _ in shifts])  # (shifts, 2): rows of the kept frame
    xs = np.array([_span(dx, n) for _, dx in shifts])
    qy = ys + np.array([dy for dy, _ in shifts])[:, None]  # the same rows in the query's frame
    qx = xs + np.array([dx for _, dx in shifts])[:, None]
    q64, k64 = q.astype(np.float64), k.astype(np.float64)
    q_sum = _box_sums(q64, qy, qx).T[:, :, None]  # (shifts, query, 1)
    q_sq = _box_sums(q64 * q64, qy, qx).T[:, :, None]
    k_sum = _box_sums(k64, ys, xs).T[:, None, :]  # (shifts, 1, kept)
    k_sq = _box_sums(k64 * k64, ys, xs).T[:, None, :]
    area = ((ys[:, 1] - ys[:, 0]) * (xs[:, 1] - xs[:, 0])).astype(np.float64)[:, None, None]
    cov = dots - q_sum * k_sum / area
    var = np.maximum(q_sq - q_sum**2 / area, 0) * np.maximum(k_sq - k_sum**2 / area, 0)
    return (cov / np.maximum(np.sqrt(var), 1e-6)).max(axis=(0, 1))


def _dots(q: np.ndarray, k: np.ndarray, shifts, radius: int) -> np.ndarray:
    """(shifts, query, kept) raw dot products of the overlaps: sum over y of q[y + s] * k[y].

    Few shifts of small images (the half-resolution check, many candidates): the query laid
    out once per shift, zero outside the overlap, times all kept images in one matrix product.
    The full check (81 shifts of 48x48): cross-correlation through the FFT, zero-padded past
    the largest shift so that nothing wraps, one inverse transform per pair; about 3x faster
    there than the layout, which would copy 81 shifted images per query view.
    """
    n = q.shape[1]
    if radius <= 2:
        pad = np.zeros((len(q), n + 2 * radius, n + 2 * radius), np.float32)
        pad[:, radius : radius + n, radius : radius + n] = q
        r = radius
        laid = np.stack([pad[:, r + dy : r + dy + n, r + dx : r + dx + n] for dy, dx in shifts])
        laid = laid.reshape(len(shifts) * len(q), n * n)
        flat = k.reshape(len(k), -1).astype(np.float32)
        # einsum, not @: BLAS would spread a product this small over threads, which costs
        # many times the product itself on a busy machine
        dots = np.einsum("ij,kj->ik", laid, flat)
        return dots.reshape(len(shifts), len(q), len(k)).astype(np.float64)
    size = n + radius + (-(n + radius)) % 4  # no wrap-around for |shift| <= radius
    fq = np.fft.rfft2(q.astype(np.float64), s=(size, size))
    fk = np.conj(np.fft.rfft2(k.astype(np.float64), s=(size, size)))
    corr = np.fft.irfft2(fq[:, None] * fk[None], s=(size, size))  # (query, kept, size, size)
    dy = np.array([d for d, _ in shifts]) % size
    dx = np.array([d for _, d in shifts]) % size
    return np.moveaxis(corr[:, :, dy, dx], 2, 0)


def _span(d: int, n: int) -> tuple[int, int]:
    """Rows (or columns) of the kept frame that a query shifted by ``d`` overlaps."""
    return (0, n - d) if d >= 0 else (-d, n)


def _box_sums(stack: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """(kept, shifts) sums of each image of ``stack`` over the boxes rows ys x columns xs."""
    c = np.zeros((len(stack), stack.shape[1] + 1, stack.shape[2] + 1))
    c[:, 1:, 1:] = stack.cumsum(axis=1).cumsum(axis=2)
    y0, y1, x0, x1 = ys[:, 0], ys[:, 1], xs[:, 0], xs[:, 1]
    return c[:, y1, x1] - c[:, y0, x1] - c[:, y1, x0] + c[:, y0, x0]
