"""File -> model input pixels, the same way the dataset factory prepares images to classify.

Training and sorting must see the same pixels, or the model learns one thing and is asked
another. So this follows the factory's steps (dataset_factory.validate.decode +
classify.load_image_array): Pillow decode (JPEGs in draft mode at the target size, first frame
of animations), EXIF orientation applied, palette/alpha composited over white, 16-bit scaled
down, then one bilinear resize (Pillow's, which antialiases) to size x size.
tests/test_train_split.py checks the two stay pixel-identical.
"""

from __future__ import annotations

import logging

import numpy as np

logger = logging.getLogger(__name__)

_EXIF_ORIENTATION = 0x0112


def to_rgb(im):
    """RGB from any Pillow mode: alpha over white, CMYK converted, 16-bit scaled to 8."""
    from PIL import Image
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(im, dtype=np.float64)
        top = 65535.0 if im.mode.startswith("I;16") or arr.max() > 255 else 255.0
        im = Image.fromarray((arr * (255.0 / top)).clip(0, 255).astype("uint8"), "L")
    elif im.mode == "F":
        im = im.convert("L")
    if im.mode == "P":
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        im = im.convert("RGBA")
        white = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(white, im)
    return im.convert("RGB") if im.mode != "RGB" else im


def load_pixels(path: str | bytes, size: int) -> np.ndarray:
    """uint8 (size, size, 3); raises OSError/ValueError for a file Pillow cannot decode."""
    from PIL import Image, ImageOps
    if isinstance(path, np.ndarray):  # tf.numpy_function hands over a 0-d array when eager
        path = path.item()
    if isinstance(path, bytes):
        path = path.decode()
    size = int(size)
    with Image.open(path) as im:
        try:
            orientation = int(im.getexif().get(_EXIF_ORIENTATION, 1) or 1)
        except Exception:  # broken EXIF is not a broken image
            orientation = 1
        if getattr(im, "n_frames", 1) > 1:
            im.seek(0)
        if im.format in ("JPEG", "MPO"):
            im.draft("RGB", (size, size))  # decode at reduced scale: big photos cost little
        im.load()
        if orientation in range(2, 9):
            im = ImageOps.exif_transpose(im)
        im = to_rgb(im)
        return np.asarray(im.resize((size, size), Image.Resampling.BILINEAR), np.uint8)
