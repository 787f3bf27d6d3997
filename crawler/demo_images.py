"""The demo image set: circles, squares and triangles, generated deterministically.

No binary files ship with the code: the set is drawn from a fixed seed the first time it is
needed and cached (one folder per version and size), so every machine gets identical bytes.
Shapes vary in size, position, rotation, colours and background texture, so most images are
perceptually distinct (the factory's near-duplicate filter keeps them).
"""

from __future__ import annotations

import io
import logging
import math
import os
import shutil
import tempfile
from pathlib import Path

logger = logging.getLogger(__name__)

CLASSES = ("circle", "square", "triangle")
VERSION = 1
DEFAULT_COUNT = 120
DEFAULT_SIZE = 96


def cache_root() -> Path:
    base = os.environ.get("PINGO_CACHE_DIR") or os.environ.get("XDG_CACHE_HOME")
    return Path(base) / "pingo" if base else Path.home() / ".cache" / "pingo"


def draw(class_name: str, index: int, size: int = DEFAULT_SIZE) -> bytes:
    """One PNG: the shape ``class_name`` number ``index``; same arguments, same bytes."""
    import numpy as np
    from PIL import Image, ImageDraw

    seed = (CLASSES.index(class_name) + 1) * 1_000_003 + index
    rng = np.random.default_rng(seed)
    bg = rng.integers(0, 256, 3)
    # A smooth random background (low-frequency noise) gives each image its own structure.
    coarse = rng.integers(0, 256, (4, 4, 3)).astype(np.uint8)
    texture = np.asarray(Image.fromarray(coarse).resize((size, size), Image.BICUBIC), dtype=float)
    pixels = (0.55 * bg + 0.45 * texture).clip(0, 255).astype(np.uint8)
    image = Image.fromarray(pixels, "RGB")
    pen = ImageDraw.Draw(image)
    fg = tuple(int(c) for c in (255 - bg + rng.integers(-40, 41, 3)).clip(0, 255))
    radius = size * rng.uniform(0.18, 0.38)
    cx = size * rng.uniform(0.3, 0.7)
    cy = size * rng.uniform(0.3, 0.7)
    angle = rng.uniform(0, 2 * math.pi)
    if class_name == "circle":
        pen.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=fg)
    else:
        corners = 4 if class_name == "square" else 3
        points = [(cx + radius * math.cos(angle + 2 * math.pi * k / corners),
                   cy + radius * math.sin(angle + 2 * math.pi * k / corners))
                  for k in range(corners)]
        pen.polygon(points, fill=fg)
    buf = io.BytesIO()
    image.save(buf, "PNG", optimize=False)
    return buf.getvalue()


def ensure_demo_images(root: Path | None = None, count: int = DEFAULT_COUNT,
                       size: int = DEFAULT_SIZE) -> Path:
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
