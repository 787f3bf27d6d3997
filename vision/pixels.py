"""Image file -> model input pixels: the one way, for training and for sorting alike.

Training and sorting must see the same pixels, or the model learns one thing and is asked
another, so the trainer's tf.data pipeline and the factory's classifier both read images with
``image_dataset`` (and so ``load_pixels``): vision.decode's decode (JPEGs in draft mode at the
target size, first frame of animations, EXIF orientation applied, palette/alpha composited
over white, 16-bit scaled down) under factory.max_pixels, then one bilinear resize (Pillow's,
which antialiases) to size x size. tests/test_train_split.py checks the two pipelines agree.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from vision.decode import DEFAULT_MAX_PIXELS, Limits, decode
from vision.errors import InvalidImage

logger = logging.getLogger(__name__)

# How a file becomes model input (recorded in each registry entry's config.json).
RESIZE = {
    "library": "pillow",
    "method": "bilinear",
    "exif_transpose": True,
    "alpha": "composited over white",
    "jpeg_draft": True,
    "keep_aspect": False,
}


def load_pixels(
    path: str | bytes | np.ndarray, size: int, max_pixels: int | None = None
) -> np.ndarray:
    """uint8 (size, size, 3); raises InvalidImage for a file that cannot be decoded or has
    more than ``max_pixels`` (pass factory.max_pixels, the limit validation let the image in
    with; None: its default). Any size or aspect the validator accepted is fine here."""
    from PIL import Image

    if isinstance(path, np.ndarray):  # tf.numpy_function hands over a 0-d array when eager
        path = path.item()
    if isinstance(path, bytes):
        path = path.decode()
    assert isinstance(path, (str, Path)), path
    size = int(size)
    limit = DEFAULT_MAX_PIXELS if max_pixels is None else int(max_pixels)
    limits = Limits(min_size=1, max_aspect=1e9, max_pixels=limit)
    image = decode(path, limits, draft_size=size).image
    return np.asarray(image.resize((size, size), Image.Resampling.BILINEAR), np.uint8)


def image_dataset(
    paths: Sequence[str],
    size: int,
    max_pixels: int | None = None,
    *,
    labels: Sequence[int] | None = None,
    unreadable: str = "skip",
):
    """tf.data of uint8 (size, size, 3) images in the order of ``paths`` ((image, label)
    pairs when ``labels`` is given), decoded by ``load_pixels`` in parallel (AUTOTUNE).

    ``unreadable``: "skip" drops a file that fails (tf.data logs it; the trainer), "zeros"
    puts a black image in its place, so the output stays aligned with ``paths`` (the factory:
    the file passed validation under the same ``max_pixels``, so only one damaged since gets
    here). Callers batch, cache and cast to float32 (0..255) as they need.
    """
    import tensorflow as tf

    if unreadable not in ("skip", "zeros"):
        raise ValueError(f"unreadable must be 'skip' or 'zeros', not {unreadable!r}")
    size = int(size)

    def read(path) -> np.ndarray:
        try:
            return load_pixels(path, size, max_pixels)
        except InvalidImage as exc:
            name = path.item() if isinstance(path, np.ndarray) else path
            name = name.decode() if isinstance(name, bytes) else name
            if unreadable == "skip":
                raise ValueError(f"{name}: {exc}") from None
            logger.warning("could not re-read %s: %s (a black image stands in)", name, exc)
            return np.zeros((size, size, 3), np.uint8)

    def pixels(path):
        image = tf.numpy_function(read, [path], tf.uint8, stateful=False)
        image.set_shape((size, size, 3))
        return image

    autotune = tf.data.AUTOTUNE
    if labels is None:
        ds = tf.data.Dataset.from_tensor_slices(list(paths))
        ds = ds.map(pixels, num_parallel_calls=autotune, deterministic=True)
    else:
        ds = tf.data.Dataset.from_tensor_slices((list(paths), list(labels)))
        ds = ds.map(lambda p, y: (pixels(p), y), num_parallel_calls=autotune, deterministic=True)
    if unreadable == "skip":
        ds = ds.ignore_errors(log_warning=True)
    return ds
