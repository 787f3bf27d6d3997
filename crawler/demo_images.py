"""The demo image set: circles, squares and triangles, generated deterministically.

No binary files ship with the code: the set is drawn from a fixed seed the first time it is
needed and cached (one folder per version and size), so every machine gets identical bytes.
Each image is one large, high-contrast shape (varying in size, position, rotation and colours)
on a plain background with a fine grain: the shape is what a small CNN can learn from a few
dozen images a class, and the grain keeps the images perceptually distinct, so the factory's
near-duplicate filter keeps almost all of them.
"""

from __future__ import annotations

import io
import logging
import math
import os
import shutil
import tempfile
from pathlib import Path

from core.names import DEMO_CLASSES

logger = logging.getLogger(__name__)

CLASSES = DEMO_CLASSES
VERSION = 2  # bump whenever draw() changes: it keys the cache
DEFAULT_COUNT = 120
DEFAULT_SIZE = 96


def cache_root() -> Path:
    base = os.environ.get("PINGO_CACHE_DIR") or os.environ.get("XDG_CACHE_HOME")
    return Path(base) / "pingo" if base else Path.home() / ".cache" / "pingo"


def _smooth_noise(rng, cells: int, size: int):
    """Unit-variance random noise on a ``cells`` x ``cells`` grid, smoothly resized to ``size``."""
    import numpy as np
    from PIL import Image

    coarse = rng.normal(0, 1, (cells, cells)).astype(np.float32)
    return np.asarray(Image.fromarray(coarse, "F").resize((size, size), Image.Resampling.BICUBIC))


def draw(class_name: str, index: int, size: int = DEFAULT_SIZE) -> bytes:
    """One PNG: the shape ``class_name`` number ``index``; same arguments, same bytes."""
    import numpy as np
    from PIL import Image, ImageDraw

    seed = (CLASSES.index(class_name) + 1) * 1_000_003 + index
    rng = np.random.default_rng(seed)
    # One large shape, light on a dark background or dark on a light one: its outline is the
    # strongest structure in the picture, so a small CNN learns shapes, not backgrounds.
    dark_background = rng.random() < 0.5
    low, high = (30, 110) if dark_background else (150, 230)
    background = tuple(int(c) for c in rng.uniform(low, high, 3))
    low, high = (170, 255) if dark_background else (0, 90)
    fill = tuple(int(c) for c in rng.uniform(low, high, 3))
    radius = size * rng.uniform(0.25, 0.42)
    cx = rng.uniform(radius + 2, size - radius - 2)
    cy = rng.uniform(radius + 2, size - radius - 2)
    angle = rng.uniform(0, 2 * math.pi)

    scale = 4  # drawn 4x larger, then shrunk: smooth edges
    image = Image.new("RGB", (size * scale, size * scale), background)
    pen = ImageDraw.Draw(image)
    r, x, y = radius * scale, cx * scale, cy * scale
    if class_name == "circle":
        pen.ellipse([x - r, y - r, x + r, y + r], fill=fill)
    else:
        corners = 4 if class_name == "square" else 3
        pen.polygon(
            [
                (
                    x + r * math.cos(angle + 2 * math.pi * k / corners),
                    y + r * math.sin(angle + 2 * math.pi * k / corners),
                )
                for k in range(corners)
            ],
            fill=fill,
        )
    pixels = np.asarray(image.resize((size, size), Image.Resampling.LANCZOS), dtype=np.float32)
    # A fine grain of its own for every image: without it two circles of similar size and
    # place are near duplicates to the factory (its verifier compares band-passed detail).
    # Plus a faint colour cloud. Neither depends on the class, so neither helps to cheat.
    grain = 20 * _smooth_noise(rng, max(2, size // 4), size)[..., None]
    cloud = 12 * np.stack([_smooth_noise(rng, 4, size) for _ in range(3)], -1)
    pixels = (pixels + grain + cloud).clip(0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buf, "PNG", optimize=False)
    return buf.getvalue()


def ensure_demo_images(
    root: Path | None = None, count: int = DEFAULT_COUNT, size: int = DEFAULT_SIZE
) -> Path:
    """Return a folder ``<class>/<class>_NNN.png`` with the demo set, generating it once."""
    root = Path(root) if root else cache_root()
    folder = root / f"demo-images-v{VERSION}-{count}x{size}"
    if (folder / ".complete").exists():
        return folder
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".demo-images-", dir=root))
    try:
        for name in CLASSES:
            (tmp / name).mkdir()
            for i in range(count):
                (tmp / name / f"{name}_{i:03d}.png").write_bytes(draw(name, i, size))
        (tmp / ".complete").write_text("ok\n")
        try:
            os.replace(tmp, folder)  # atomic: readers see all or nothing
        except OSError:
            if not (folder / ".complete").exists():  # another process won the race
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    logger.info("generated the demo image set in %s", folder)
    return folder
