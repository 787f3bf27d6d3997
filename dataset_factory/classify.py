"""Batch classification with the promoted model from the registry.

Registry contract (shared with the trainer): models/vNNNN/model.keras (Keras 3; input float32
RGB (N, size, size, 3) in 0..255, rescaling inside the model; output softmax per class),
classes.json (class names in output order), config.json (at least "image_size", "arch").

Images are fed through tf.data: a parallel map decodes with Pillow (every format the
validator accepted, EXIF orientation applied, JPEGs in draft mode), resizes to the model's
input, batches and prefetches, so decoding overlaps inference and each batch is one call.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from dataset_factory.errors import InvalidImage, ModelLoadError
from core.config import check_safe_name
from core.errors import PingoError
from dataset_factory.validate import DEFAULT_MAX_PIXELS, Limits, decode

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prediction:
    label: str
    confidence: float


def decode_resized(path: str, size: int, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """uint8 (size, size, 3): the validator's decode (any accepted size or aspect, JPEGs in
    draft mode at ``size``), then one bilinear resize (Pillow's, which antialiases).

    The one way a file becomes model input, for classifying here and for training
    (trainer.pixels); raises InvalidImage for a file that cannot be decoded or has more than
    ``max_pixels`` (pass factory.max_pixels: the limit validation let the image in with).
    """
    from PIL import Image
    limits = Limits(min_size=1, max_aspect=1e9, max_pixels=max_pixels)
    image = decode(path, limits, draft_size=size).image
    return np.asarray(image.resize((size, size), Image.Resampling.BILINEAR), np.uint8)


def load_image_array(path: str | bytes, size: int, max_pixels: int = DEFAULT_MAX_PIXELS
                     ) -> np.ndarray:
    """float32 (size, size, 3) in 0..255; a file that fails now gives zeros (it passed
    validation under the same ``max_pixels``, so only a file damaged since gets here)."""
    if isinstance(path, bytes):
        path = path.decode()
    try:
        pixels = decode_resized(path, size, max_pixels)
    except InvalidImage as exc:
        logger.warning("could not re-read %s for classification: %s", path, exc)
        return np.zeros((size, size, 3), np.float32)
    return pixels.astype(np.float32)


class Classifier:
    """The promoted model, loaded once."""

    def __init__(self, model_dir: Path, version: str, max_pixels: int = DEFAULT_MAX_PIXELS):
        self.version = version
        self.max_pixels = max_pixels  # factory.max_pixels: images are read as validated
        self.model_dir = Path(model_dir)
        try:
            self.classes: list[str] = json.loads((self.model_dir / "classes.json").read_text("utf-8"))
            config = json.loads((self.model_dir / "config.json").read_text("utf-8"))
            self.image_size = int(config["image_size"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ModelLoadError(f"model {version}: classes.json/config.json unusable: {exc}") from None
        if not isinstance(self.classes, list) or not all(isinstance(c, str) for c in self.classes):
            raise ModelLoadError(f"model {version}: classes.json must be a list of class names")
        for name in self.classes:  # they become folder names under review/ and dataset/
            try:
                check_safe_name(name)
            except PingoError as exc:
                raise ModelLoadError(f"model {version}: classes.json: {exc}") from None
        try:
            import keras
            self.model = keras.models.load_model(self.model_dir / "model.keras", safe_mode=True)
        except Exception as exc:
            raise ModelLoadError(f"model {version}: cannot load model.keras: {exc}") from None
        outputs = self.model.output_shape[-1]
        if outputs != len(self.classes):
            raise ModelLoadError(f"model {version}: {outputs} outputs but {len(self.classes)} "
                                 "names in classes.json")
        logger.info("loaded model %s (%d classes, %dpx)", version, len(self.classes),
                    self.image_size)

    @classmethod
    def from_registry(cls, registry, max_pixels: int = DEFAULT_MAX_PIXELS
                      ) -> "Classifier | None":
        """The promoted model, or None when nothing is promoted yet."""
        version = registry.current()
        if version is None:
            return None
        return cls(registry.path(version), version, max_pixels)

    def dataset(self, paths: Sequence[str], batch_size: int):
        import tensorflow as tf
        size, max_pixels = self.image_size, self.max_pixels

        def load(path):
            image = tf.numpy_function(lambda p: load_image_array(p, size, max_pixels), [path],
                                      tf.float32,
                                      stateful=False)
            image.set_shape((size, size, 3))
            return image

        return (tf.data.Dataset.from_tensor_slices(list(paths))
                .map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
                .batch(batch_size)
                .prefetch(tf.data.AUTOTUNE))

    def predict_probs(self, paths: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """(len(paths), n_classes) softmax probabilities, in the order of ``paths``."""
        if not paths:
            return np.zeros((0, len(self.classes)), np.float32)
        out = []
        forward = self._forward()
        for batch in self.dataset(paths, batch_size):
            out.append(np.asarray(forward(batch)))
        return np.concatenate(out)

    def _forward(self):
        """The model's inference as one compiled graph (traced once per batch shape)."""
        if getattr(self, "_compiled", None) is None:
            import tensorflow as tf
            self._compiled = tf.function(lambda x: self.model(x, training=False),
                                         reduce_retracing=True)
        return self._compiled

    def predict(self, paths: Sequence[str], batch_size: int = 64) -> list[Prediction]:
        probs = self.predict_probs(paths, batch_size)
        best = probs.argmax(axis=1)
        return [Prediction(self.classes[int(i)], float(probs[n, i])) for n, i in enumerate(best)]
