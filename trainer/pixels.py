"""File -> model input pixels, the same way the dataset factory prepares images to classify.

Training and sorting must see the same pixels, or the model learns one thing and is asked
another. So this calls the factory's own loader (dataset_factory.classify.decode_resized: the
validator's decode, i.e. JPEGs in draft mode at the target size, first frame of animations,
EXIF orientation applied, palette/alpha composited over white, 16-bit scaled down; then one
bilinear resize, Pillow's, which antialiases, to size x size), the one that
classify.load_image_array wraps. tests/test_train_split.py checks the two stay pixel-identical.
"""

from __future__ import annotations

import logging

import numpy as np

logger = logging.getLogger(__name__)


def load_pixels(path: str | bytes, size: int, max_pixels: int | None = None) -> np.ndarray:
    """uint8 (size, size, 3); raises ValueError for a file Pillow cannot decode or one over
    ``max_pixels`` (factory.max_pixels; None: its default).

    Decoding and resizing are the factory's own (dataset_factory.classify.decode_resized), so
    the two cannot drift.
    """
    from dataset_factory.classify import decode_resized
    from dataset_factory.errors import InvalidImage
    from dataset_factory.validate import DEFAULT_MAX_PIXELS
    if isinstance(path, np.ndarray):  # tf.numpy_function hands over a 0-d array when eager
        path = path.item()
    if isinstance(path, bytes):
        path = path.decode()
    size = int(size)
    max_pixels = DEFAULT_MAX_PIXELS if max_pixels is None else int(max_pixels)
    try:
        return decode_resized(path, size, max_pixels)
    except InvalidImage as exc:
        raise ValueError(f"{path}: {exc}") from None
