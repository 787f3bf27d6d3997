"""Decode-check one image file and normalise it to RGB, or say why it is refused.

The factory validates with it; hashing, the duplicate verifier, classification and training
(vision.pixels) decode with it. Every image is decoded completely (a truncated file fails
here, not in training). JPEGs are decoded in draft mode: libjpeg scales by 1/2, 1/4 or 1/8
while decoding, which reads every byte of the stream (so damage is still found) but costs a
fraction of a full-size decode. Nothing downstream needs more than ``draft_size`` pixels:
hashes use 32x32, the verifier 64x64.

The pixel limit (``factory.max_pixels``) is this module's: every decoder in pingo (validation
and hashing, the duplicate verifier, classification, training) goes through ``decode`` with
it, so an image is either refused here with its size in the reason's detail or decoded the
same way everywhere. The size is checked explicitly from the header, before any pixel is
decoded. Pillow's own check is switched off because it reads one process-wide setting and
reports through ``warnings``, which cannot be scoped safely in tf.data's decoding threads.
"""

from __future__ import annotations

import logging
import struct
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from core.config import FactoryConfig
from core.imageformats import ALLOWED_FORMATS
from vision.errors import InvalidImage

logger = logging.getLogger(__name__)

# factory.max_pixels's default; callers pass the configured value.
DEFAULT_MAX_PIXELS: int = FactoryConfig.max_pixels
# pingo checks every image against its own limit (check_pixels) before decoding it.
Image.MAX_IMAGE_PIXELS = None
DRAFT_SIZE = 128
_ROTATED = {5, 6, 7, 8}  # EXIF orientations that swap width and height


@dataclass(frozen=True)
class Limits:
    min_size: int = 32
    max_aspect: float = 8.0
    max_pixels: int = DEFAULT_MAX_PIXELS


@dataclass
class Decoded:
    image: Image.Image  # RGB, EXIF orientation applied, at most ~draft size for JPEGs
    width: int  # true size after orientation, before any draft scaling
    height: int
    format: str


def decode(
    path: str | Path, limits: Limits = Limits(), draft_size: int | None = DRAFT_SIZE
) -> Decoded:
    """Open, check and fully decode ``path``; raise InvalidImage(reason) when unusable."""
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise InvalidImage("empty", "zero bytes")
    except FileNotFoundError:
        raise InvalidImage("file_missing", str(path)) from None
    try:
        with Image.open(path) as im:
            return _decode_open(im, limits, draft_size)
    except InvalidImage:
        raise
    except Image.DecompressionBombError as exc:  # e.g. a PNG text chunk over Pillow's limit
        raise InvalidImage("decompression_bomb", str(exc)) from None
    except UnidentifiedImageError as exc:
        raise InvalidImage("undecodable", str(exc)) from None
    except MemoryError:
        raise InvalidImage("decompression_bomb", "out of memory while decoding") from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, struct.error) as exc:
        text = str(exc)
        reason = (
            "truncated"
            if "truncated" in text.lower() or isinstance(exc, EOFError)
            else "undecodable"
        )
        raise InvalidImage(reason, text) from None


def check_pixels(width: int, height: int, max_pixels: int) -> None:
    """Refuse an image with more than ``max_pixels`` pixels (factory.max_pixels)."""
    if width * height > max_pixels:
        raise InvalidImage(
            "too_many_pixels",
            f"{width}x{height} = {width * height:,} pixels, "
            f"over factory.max_pixels ({max_pixels:,})",
        )


def _decode_open(im: Image.Image, limits: Limits, draft_size: int | None) -> Decoded:
    fmt = im.format or "?"
    if fmt not in ALLOWED_FORMATS:
        raise InvalidImage("unsupported_format", fmt)
    width, height = im.size
    check_pixels(width, height, limits.max_pixels)  # from the header: nothing decoded yet
    orientation = _orientation(im)
    if orientation in _ROTATED:
        width, height = height, width
    if min(width, height) < limits.min_size:
        raise InvalidImage("too_small", f"{width}x{height} < {limits.min_size}")
    if max(width, height) / min(width, height) > limits.max_aspect:
        raise InvalidImage("bad_aspect", f"{width}x{height}")
    if getattr(im, "n_frames", 1) > 1:
        im.seek(0)  # animated: the first frame stands for the image
    if fmt in ("JPEG", "MPO") and draft_size:
        im.draft("RGB", (draft_size, draft_size))
    im.load()  # the full decode: truncation and corrupt data fail here
    if orientation in range(2, 9):
        im = ImageOps.exif_transpose(im)
    return Decoded(to_rgb(im), width, height, fmt)


def _orientation(im: Image.Image) -> int:
    try:
        return int(im.getexif().get(0x0112, 1) or 1)
    except Exception:  # broken EXIF is not a broken image
        return 1


def to_rgb(im: Image.Image) -> Image.Image:
    """RGB from any mode: palette and alpha over white, CMYK converted, 16-bit scaled down."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        import numpy as np

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
