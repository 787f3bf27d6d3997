"""Batch classification with the promoted model from the registry.

The model comes from vision.model (the one loader: every check of the registry contract,
storage.registry) and the pixels from vision.pixels (the way the trainer reads them): a
parallel tf.data map decodes and resizes each file to the model's input, batches and
prefetches, so decoding overlaps inference and each batch is one call. The probabilities are
calibrated: the model's softmax rescaled by its registry entry's temperature
(vision.calibration), so a confidence of 0.9 means about 9 in 10 right for every model.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from vision.decode import DEFAULT_MAX_PIXELS
from vision.model import LoadedModel, load_current

if TYPE_CHECKING:
    from storage import ModelRegistry

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prediction:
    label: str
    confidence: float


def model_input(
    paths: Sequence[str], image_size: int, batch_size: int, max_pixels: int = DEFAULT_MAX_PIXELS
):
    """float32 (N, size, size, 3) batches in 0..255, in the order of ``paths``; a file that
    fails now reads as black (it passed validation under the same ``max_pixels``, so only a
    file damaged since gets here)."""
    import tensorflow as tf

    from vision.pixels import image_dataset

    return (
        image_dataset(paths, image_size, max_pixels, unreadable="zeros")
        .batch(batch_size)
        .map(lambda x: tf.cast(x, tf.float32), num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(tf.data.AUTOTUNE)
    )


class Classifier:
    """The promoted model (a vision.model.LoadedModel), loaded once."""

    def __init__(self, loaded: LoadedModel, max_pixels: int = DEFAULT_MAX_PIXELS):
        self.loaded = loaded
        self.max_pixels = max_pixels  # factory.max_pixels: images are read as validated
        self._compiled = None

    @property
    def version(self) -> str:
        return self.loaded.version

    @property
    def classes(self) -> list[str]:
        return self.loaded.classes

    @property
    def image_size(self) -> int:
        return self.loaded.image_size

    @property
    def model(self):
        return self.loaded.model

    @classmethod
    def from_registry(
        cls, registry: ModelRegistry, max_pixels: int = DEFAULT_MAX_PIXELS
    ) -> Classifier | None:
        """The promoted model, or None when nothing is promoted yet."""
        loaded = load_current(registry)
        return None if loaded is None else cls(loaded, max_pixels)

    def dataset(self, paths: Sequence[str], batch_size: int):
        return model_input(paths, self.image_size, batch_size, self.max_pixels)

    def predict_probs(self, paths: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """(len(paths), n_classes) calibrated probabilities (the model's softmax rescaled by
        its temperature), in the order of ``paths``."""
        return self.loaded.calibrated(self.raw_probs(paths, batch_size))

    def raw_probs(self, paths: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """(len(paths), n_classes) softmax outputs of the model as it is, uncalibrated."""
        if not paths:
            return np.zeros((0, len(self.classes)), np.float32)
        out = []
        forward = self._forward()
        for batch in self.dataset(paths, batch_size):
            out.append(np.asarray(forward(batch)))
        return np.concatenate(out)

    def _forward(self):
        """The model's inference as one compiled graph (traced once per batch shape)."""
        if self._compiled is None:
            import tensorflow as tf

            self._compiled = tf.function(
                lambda x: self.model(x, training=False), reduce_retracing=True
            )
        return self._compiled

    def predict(self, paths: Sequence[str], batch_size: int = 64) -> list[Prediction]:
        probs = self.predict_probs(paths, batch_size)
        best = probs.argmax(axis=1)
        return [Prediction(self.classes[int(i)], float(probs[n, i])) for n, i in enumerate(best)]
