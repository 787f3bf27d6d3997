"""Perceptual hashes as signed 64-bit ints, plus the extra "views" that catch hard edits.

A plain perceptual hash sees the whole frame, so a 10% crop, letterbox bars, a caption band
or a mirror flip moves it far. Each image therefore also gets hashes of a few views that
undo those edits: the frame with uniform borders trimmed, the central 80%, the top 85%
(drops a bottom caption band). A query additionally tries the mirrored views. Two images
whose views meet within ``hard_distance`` are only candidates: the verifier
(dataset_factory.verify) decides.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import imagehash
import numpy as np
from PIL import Image, ImageChops, ImageOps

logger = logging.getLogger(__name__)

METHODS: dict[str, Callable] = {
    "phash": imagehash.phash,
    "dhash": imagehash.dhash,
    "whash": imagehash.whash,
    "ahash": imagehash.average_hash,
}


def to_signed(value: int) -> int:
    """An unsigned 64-bit hash as the signed int the DB column stores."""
    return value - (1 << 64) if value >= (1 << 63) else value


def _bits_to_int(bits: np.ndarray) -> int:
    return to_signed(int.from_bytes(np.packbits(bits.reshape(-1)).tobytes(), "big"))


def _dct_matrix(n: int = 32) -> np.ndarray:
    """The (unnormalised) DCT-II as a matrix: scipy.fftpack.dct(x) == x @ M.T."""
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    return 2.0 * np.cos(np.pi * k * (2 * i + 1) / (2 * n))


_DCT8 = _dct_matrix()[:8]  # only the 8 lowest frequencies are used


def phash_many(images: list[Image.Image]) -> list[int]:
    """imagehash.phash of several images at once: same resize, same DCT, same median rule,
    but the DCT is two small matrix products for the whole stack instead of scipy calls."""
    return _phash_pixels(
        np.stack(
            [
                np.asarray(im.convert("L").resize((32, 32), Image.Resampling.LANCZOS), np.float64)
                for im in images
            ]
        )
    )


def _phash_pixels(pixels: np.ndarray) -> list[int]:
    """phash of a (n, 32, 32) stack of grayscale pixels."""
    low = _DCT8 @ pixels @ _DCT8.T  # (n, 8, 8)
    med = np.median(low.reshape(len(pixels), -1), axis=1)
    return [_bits_to_int(low[j] > med[j]) for j in range(len(pixels))]


def hash_many(images: list[Image.Image], method: str = "phash") -> list[int]:
    """Signed 64-bit hashes of ``images`` (bit order as imagehash's hex string)."""
    if method == "phash":
        return phash_many(images)
    out = []
    for image in images:
        bits = METHODS[method](image).hash
        if bits.size != 64:
            raise ValueError(f"{method} gave {bits.size} bits; pingo stores 64-bit hashes")
        out.append(_bits_to_int(bits))
    return out


def hash_int(image: Image.Image, method: str = "phash") -> int:
    """The image's ``method`` hash as a signed 64-bit int."""
    return hash_many([image], method)[0]


def trim_borders(image: Image.Image, tolerance: int = 24) -> Image.Image | None:
    """The image without uniform bars around it (letterbox, padding); None if nothing to trim."""
    box = trim_box(image.convert("L"), tolerance)
    return None if box is None else image.crop(box)


def trim_box(gray: Image.Image, tolerance: int = 24) -> tuple[int, int, int, int] | None:
    """The box of a grayscale image inside uniform bars around it; None if nothing to trim."""
    w, h = gray.size
    corner_points = ((0, 0), (w - 1, 0), (0, h - 1), (w - 1, h - 1))
    corners = [cast(int, gray.getpixel(p)) for p in corner_points]  # mode L: one int
    best = None
    for bg in {min(corners), max(corners), sorted(corners)[1]}:
        diff = ImageChops.difference(gray, Image.new("L", gray.size, bg))
        box = diff.point(lambda p: 255 if p > tolerance else 0).getbbox()
        if (
            box
            and (box[2] - box[0]) * (box[3] - box[1]) < w * h * 0.97
            and (best is None or _area(box) < _area(best))
        ):
            best = box
    if best is None or _area(best) < w * h * 0.3:
        return None
    return best


def _area(box) -> int:
    return (box[2] - box[0]) * (box[3] - box[1])


Box = tuple[int, int, int, int]


def view_boxes(gray: Image.Image) -> dict[str, Box]:
    """The views of one image as boxes: the whole frame, uniform borders trimmed (only where
    there are some), the central 80% and the top 85% (drops a bottom caption band)."""
    w, h = gray.size
    out: dict[str, Box] = {"full": (0, 0, w, h)}
    trimmed = trim_box(gray)
    if trimmed is not None:
        out["trim"] = trimmed
    out["center"] = (round(w * 0.1), round(h * 0.1), round(w * 0.9), round(h * 0.9))
    out["top"] = (0, 0, w, round(h * 0.85))
    return out


def views(image: Image.Image) -> dict[str, Image.Image]:
    """The views of one RGB image whose hashes are stored and compared (as images)."""
    return {name: image.crop(box) for name, box in view_boxes(image.convert("L")).items()}


@dataclass
class Hashed:
    """One image's hashes and what the verifier's thumbnails are cut from."""

    main: int
    stored: list[int]  # the views' hashes, kept in the index
    mirrored: list[int]  # the mirrored views' hashes, tried only when querying
    gray: Image.Image  # the image in grayscale, decoded once
    boxes: dict[str, Box]


def all_hashes(image: Image.Image, method: str = "phash") -> Hashed:
    """The main hash and the view hashes, computed from one grayscale conversion.

    For phash a mirrored view's hash is that of the mirrored 32x32 resize (the same as
    resizing the mirrored view: the filter is symmetric), so a query's mirrors cost one median
    each, not a resize. (A view is cropped before it is resized, not resized from its box:
    the box form reads pixels outside the box and changed some borderline decisions.)
    """
    gray = image.convert("L")
    boxes = view_boxes(gray)
    if method == "phash":
        small = np.stack(
            [
                np.asarray(gray.crop(b).resize((32, 32), Image.Resampling.LANCZOS), np.float64)
                for b in boxes.values()
            ]
        )
        hashes = _phash_pixels(np.concatenate([small, small[:, :, ::-1]]))
    else:
        found = [gray.crop(b) for b in boxes.values()]
        hashes = hash_many(found + [ImageOps.mirror(v) for v in found], method)
    n = len(boxes)
    stored = list(dict.fromkeys(hashes[:n]))
    mirrored = [h for h in dict.fromkeys(hashes[n:]) if h not in stored]
    return Hashed(hashes[0], stored, mirrored, gray, boxes)
