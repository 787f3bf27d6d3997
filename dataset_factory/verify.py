"""Verification of hard near-duplicate candidates by aligned pixel correlation.

Hash views only propose candidates: at the loose ``hard_distance`` two different photos of
the same scene can meet. The verifier compares small grayscale thumbnails of the matched
views, band-passed (a blur subtracted) so that a shared background and lighting count for
little and the photo's own detail for much, and takes the best normalised correlation over
small shifts (a crop or rotation leaves a residual misalignment of a few percent). A copy
scores near 1; a distinct photo of the same class scores far lower (measured in
bench/factory_recall.py and docs/factory.md).

All candidates of one image are scored in one call (``similarities``): a cheap check at half
resolution clears most distinct photos, and the full check runs only on the view pairs that
came near the best one; both can only lower a score, never raise it (bench/factory_e2e.py).
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
    small = (gray if box is None else gray.crop(box)).resize(
        (THUMB, THUMB), Image.Resampling.BILINEAR
    )
    blurred = small.filter(ImageFilter.GaussianBlur(4))
    arr = np.asarray(small, np.float32) - np.asarray(blurred, np.float32)
    return arr - arr.mean()


@dataclass
class Thumbs:
    """What the verifier compares: a query's thumbnails and, once kept, the image's own."""

    query: list[np.ndarray]  # the views and their mirrors interleaved, then slight tilts
    kept: list[np.ndarray]  # the views, then central zooms of the content


def thumbs(gray: Image.Image, boxes: dict[str, Box], query_too: bool = True) -> Thumbs:
    """Both thumbnail sets of one image from its grayscale pixels and view boxes
    (hashing.all_hashes): a view's mirror is its thumbnail flipped, not a second resize.
    Without ``query_too`` only the kept set (a kept image re-read for verification)."""
    views = [thumb(gray, b) for b in boxes.values()]
    box = boxes.get("trim", boxes["full"])  # "trim" only where there were borders
    content = gray.crop(box)
    kept = views + [thumb(content, _center(content, z)) for z in ZOOMS]
    if not query_too:
        return Thumbs([], kept)
    query = []
    for v in views:
        query += [v, np.ascontiguousarray(v[:, ::-1])]
    for angle in TILTS:
        query.append(
            thumb(content.rotate(angle, Image.Resampling.BILINEAR), _center(content, 0.88))
        )
    return Thumbs(query, kept)


def image_thumbs(image: Image.Image, query_too: bool = True) -> Thumbs:
    """``thumbs`` of a decoded image (a kept image re-read from its file: ``query_too=False``)."""
    gray = image.convert("L")
    return thumbs(gray, view_boxes(gray), query_too)


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
# The full check runs on the view pairs whose half-resolution score came this close to the
# candidate's best pair: a pair far below at half resolution is not the best one in full (a
# pair left out can only lower the score). On bench/factory_e2e.py's 1680 images 0.15 made
# the same decisions as checking every pair; 0.1 lost one 1-12% crop of 400.
PAIR_MARGIN = 0.15


def similarity(query_thumbs: list[np.ndarray], kept_thumbs: list[np.ndarray]) -> float:
    """Best correlation between any query view and any kept view over small shifts."""
    return float(similarities(query_thumbs, [kept_thumbs])[0])


def similarities(query_thumbs: list[np.ndarray], candidates: list[list[np.ndarray]]) -> np.ndarray:
    """``similarity`` of one query with each candidate's thumbnails, all at once.

    The cheap signal first: every view pair at half resolution over a quarter of the shifts
    (~16x less work). A candidate below PREFILTER there is no copy; for the others the full
    check runs on the view pairs that came within PAIR_MARGIN of the candidate's best pair,
    not on all of them. Leaving a pair out can only lower a score (a maximum over fewer
    pairs), so neither shortcut can merge two images that the full check keeps apart.
    """
    out = np.full(len(candidates), -1.0)
    owners = np.array([i for i, c in enumerate(candidates) for _ in c], np.int64)
    if not query_thumbs or not len(owners):
        return out
    q = np.stack(query_thumbs).astype(np.float32)
    k = np.stack([t for c in candidates for t in c]).astype(np.float32)
    coarse_pairs = pair_scores(pooled(q), pooled(k), R // 2)  # (query views, kept views)
    coarse = np.full(len(candidates), -1.0)
    np.maximum.at(coarse, owners, coarse_pairs.max(axis=0))
    out[:] = coarse  # what a cleared candidate reports: far below verify_threshold
    near_best = coarse_pairs >= (coarse[owners] - PAIR_MARGIN)[None, :]
    qi, kj = np.nonzero(near_best & (coarse[owners] >= PREFILTER)[None, :])
    if len(qi):
        fine = pair_scores(q, k, R, (qi, kj))
        full = np.full(len(candidates), -1.0)
        np.maximum.at(full, owners[kj], fine)
        checked = np.unique(owners[kj])
        out[checked] = full[checked]
    return out


def pooled(stack: np.ndarray) -> np.ndarray:
    """A (n, s, s) stack at half the resolution (2x2 means)."""
    return (
        stack[:, 0::2, 0::2] + stack[:, 1::2, 0::2] + stack[:, 0::2, 1::2] + stack[:, 1::2, 1::2]
    ) / 4


def best_correlation(q: np.ndarray, k: np.ndarray, radius: int) -> np.ndarray:
    """For each image of ``k``, the best correlation with any image of ``q`` over shifts of up
    to ``radius`` pixels either way (every pair)."""
    return pair_scores(q, k, radius).max(axis=0)


def pair_scores(
    q: np.ndarray, k: np.ndarray, radius: int, pairs: tuple[np.ndarray, np.ndarray] | None = None
) -> np.ndarray:
    """Best correlation over shifts of up to ``radius`` pixels of each pair of an image of ``q``
    and one of ``k``: (len(q), len(k)) for every pair, or one per pair of ``pairs`` (two index
    arrays, into q and into k).

    For a shift (dy, dx) the score of a pair is the normalised correlation of the parts that
    overlap (zero mean, unit norm over the overlap): the raw dot products of every shift at
    once (``_dots``), the overlap's sums (for the means and norms) from cumulative sums. The
    same scores as normalising each overlap separately (checked to 1e-4 against the
    per-shift loop in tests/test_factory_verify.py) at a fraction of the calls.
    """
    if pairs is not None:  # only the images the pairs use
        uq, qi = np.unique(pairs[0], return_inverse=True)
        uk, kj = np.unique(pairs[1], return_inverse=True)
        q, k = q[uq], k[uk]
    n = q.shape[1]
    shifts = [(dy, dx) for dy in range(-radius, radius + 1) for dx in range(-radius, radius + 1)]
    # the overlap of a shift d along one axis: these rows (columns) of the kept frame, and the
    # same ones moved by d in the query's
    d = np.arange(-radius, radius + 1)
    kept_span = np.array([_span(int(x), n) for x in d])  # (shifts per axis, 2)
    q64, k64 = q.astype(np.float64), k.astype(np.float64)
    q_sum, q_sq = (
        _box_sums(q64, kept_span + d[:, None]),
        _box_sums(q64 * q64, kept_span + d[:, None]),
    )
    k_sum, k_sq = _box_sums(k64, kept_span), _box_sums(k64 * k64, kept_span)
    side = (kept_span[:, 1] - kept_span[:, 0]).astype(np.float64)
    area = np.outer(side, side).reshape(-1, 1)  # (shifts, 1), dy major as in ``shifts``
    if pairs is None:
        dots = _dots_all(q, k, shifts, radius)  # (shifts, query, kept)
        q_sum, q_sq = q_sum[:, :, None], q_sq[:, :, None]
        k_sum, k_sq = k_sum[:, None, :], k_sq[:, None, :]
        area = area[:, :, None]
    else:
        dots = _dots_pairs(q, k, qi, kj, shifts, radius)  # (shifts, pairs)
        q_sum, q_sq, k_sum, k_sq = q_sum[:, qi], q_sq[:, qi], k_sum[:, kj], k_sq[:, kj]
    cov = dots - q_sum * k_sum / area
    var = np.maximum(q_sq - q_sum**2 / area, 0) * np.maximum(k_sq - k_sum**2 / area, 0)
    return (cov / np.maximum(np.sqrt(var), 1e-6)).max(axis=0)


def _dots_all(q: np.ndarray, k: np.ndarray, shifts, radius: int) -> np.ndarray:
    """(shifts, query, kept) raw dot products of the overlaps, sum over y of q[y + s] * k[y],
    for every pair: the query laid out once per shift, zero outside the overlap, times all kept
    images in one product (for small images and few shifts: the half-resolution check)."""
    n = q.shape[1]
    pad = np.zeros((len(q), n + 2 * radius, n + 2 * radius), np.float32)
    pad[:, radius : radius + n, radius : radius + n] = q
    r = radius
    laid = np.stack([pad[:, r + dy : r + dy + n, r + dx : r + dx + n] for dy, dx in shifts])
    laid = laid.reshape(len(shifts) * len(q), n * n)
    # einsum, not @: BLAS would spread a product this small over threads, which costs many
    # times the product itself on a busy machine
    dots = np.einsum("ij,kj->ik", laid, k.reshape(len(k), -1).astype(np.float32))
    return dots.reshape(len(shifts), len(q), len(k)).astype(np.float64)


def _dots_pairs(q, k, qi, kj, shifts, radius: int) -> np.ndarray:
    """(shifts, pairs) raw dot products of the listed pairs: cross-correlation through the FFT,
    zero-padded past the largest shift so that nothing wraps (81 shifts of 48x48: laying the
    query out per shift would copy 81 images per view)."""
    n = q.shape[1]
    size = n + radius + (-(n + radius)) % 4
    fq = np.fft.rfft2(q.astype(np.float64), s=(size, size))
    fk = np.conj(np.fft.rfft2(k.astype(np.float64), s=(size, size)))
    corr = np.fft.irfft2(fq[qi] * fk[kj], s=(size, size))  # (pairs, size, size)
    dy = np.array([d for d, _ in shifts]) % size
    dx = np.array([d for _, d in shifts]) % size
    return corr[:, dy, dx].T


def _span(d: int, n: int) -> tuple[int, int]:
    """Rows (or columns) of the kept frame that a query shifted by ``d`` overlaps."""
    return (0, n - d) if d >= 0 else (-d, n)


def _box_sums(stack: np.ndarray, spans: np.ndarray) -> np.ndarray:
    """(shifts, images) sums of each image of ``stack`` over the overlap of each shift: rows
    spans[dy] x columns spans[dx], for every (dy, dx) in ``shifts`` order (two products with
    0/1 masks: cheaper than cumulative sums for a few shifts)."""
    idx = np.arange(stack.shape[1])
    mask = ((idx >= spans[:, :1]) & (idx < spans[:, 1:])).astype(np.float64)  # (shifts, n)
    rows = np.einsum("ay,iyx->iax", mask, stack)
    sums = np.einsum("iax,bx->abi", rows, mask)  # (dy, dx, images)
    return sums.reshape(-1, len(stack))
