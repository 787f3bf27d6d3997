"""File -> model input pixels, the same way the dataset factory prepares images to classify.

Training and sorting must see the same pixels, or the model learns one thing and is asked
another. So this calls the factory's decoder (dataset_factory.validate.decode: JPEGs in draft
mode at the target size, first frame of animations, EXIF orientation applied, palette/alpha
composited over white, 16-bit scaled down), then one bilinear resize (Pillow's, which
antialiases) to size x size, as classify.load_image_array does.
tests/test_train_split.py checks the two stay pixel-identical.
"""

from __future__ import annotations

import logging

import numpy as np

logger = logging.getLogger(__name__)


def load_pixels(path: str | bytes, size: int) -> np.ndarray:
    """uint8 (size, size, 3); raises ValueError for a file Pillow cannot decode.

    Decoding is the factory's own (dataset_factory.validate.decode), so the two cannot drift.
    """
    from PIL import Image

    from dataset_factory.errors import InvalidImage
    from dataset_factory.validate import Limits, decode
    if isinstance(path, np.ndarray):  # tf.numpy_function hands over a 0-d array when eager
        path = path.item()
    if isinstance(path, bytes):
        path = path.decode()
    size = int(size)
    try:
        image = decode(path, Limits(min_size=1, max_aspect=1e9), draft_size=size).image
    except InvalidImage as exc:
        raise ValueError(f"{path}: {exc}") from None
    return np.asarray(image.resize((size, size), Image.Resampling.BILINEAR), np.uint8)
