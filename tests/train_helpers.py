"""Builders shared by the training tests (no tests here): coloured images, a trained project.

The ``trained_template`` / ``trained`` fixtures built from these live in conftest.py, so that
every module shares one session template (one real training run per session).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from click.testing import CliRunner

from core.config import load_config
from storage import Store

CLASSES = ["blue", "green", "red"]  # sorted: the model's output order
BASE = {"red": (200, 40, 40), "green": (40, 190, 60), "blue": (40, 60, 210)}
CONFIG = """
[classes.red]
target = 20

[classes.green]
target = 20

[classes.blue]
target = 20

[train]
image_size = 32
epochs = 6
batch_size = 8
arch = "seed_cnn"
patience = 3
"""


def colour_png(label: str, i: int) -> bytes:
    """A noisy 24x24 image whose dominant colour gives its class; unique per (label, i)."""
    from PIL import Image

    rng = np.random.default_rng([i, len(label)])
    base = np.array(BASE[label]) + rng.integers(-30, 31, 3)
    pixels = np.clip(base + rng.integers(-25, 26, (24, 24, 3)), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buf, "PNG")
    return buf.getvalue()


def fill(store, per_class: int, start: int = 0, labels=CLASSES) -> None:
    """Accepted, human-labelled images in dataset/<class>/ through the Store API."""
    for label in labels:
        for i in range(start, start + per_class):
            image_id = store.add_image(
                colour_png(label, i), keyword_class=label, source="test", ext="png"
            )
            store.move(image_id, "accepted", label=label, label_source="human")


class Trained:
    """A copy of a project whose first model (v0001) is trained and promoted."""

    def __init__(self, root: Path):
        self.root = root
        self.config_path = root / "pingo.toml"

    @property
    def config(self):
        return load_config(self.config_path)

    def store(self) -> Store:
        return Store.from_config(self.config)

    def entry(self, version: str = "v0001") -> Path:
        return self.config.data_dir / "models" / version

    def cli(self, *args: str):
        from pingo.cli import cli

        return CliRunner().invoke(
            cli, ["--config", str(self.config_path), *args], catch_exceptions=False
        )
