"""Loading a registry entry's Keras model: the one loader, for the factory and the trainer.

storage.registry reads and checks the entry's files (classes.json, config.json); this adds
what needs Keras: model.keras deserialised in safe mode without its training state
(compile=False), and checked against the entry (input (None, size, size, 3), one output per
class) and, for promotion, against the configured classes. The entry's calibration
temperature comes with it: ``LoadedModel.calibrated`` is what callers use as probabilities.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from core.names import NONE_CLASS
from storage.errors import ModelLoadError
from storage.registry import cannot_load, read_calibration, read_entry
from vision.calibration import apply_temperature

if TYPE_CHECKING:
    from storage import ModelRegistry

logger = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    """A registry entry's model, checked, with what callers need to feed it."""

    model: Any  # keras.Model: float32 RGB 0..255 in, softmax out
    version: str
    classes: list[str]  # in output order
    image_size: int  # input is (None, image_size, image_size, 3)
    config: dict[str, Any]  # the entry's config.json
    temperature: float = 1.0  # calibration.json's (1: the entry has none)
    # calibration.json's "scope": how sure the model is of held-out in-scope images
    # (vision.evidence.scope_profile); None for entries written before it
    scope: dict[str, Any] | None = None

    def calibrated(self, raw: Any) -> np.ndarray:
        """The model's raw softmax outputs (N, K) as calibrated probabilities."""
        return apply_temperature(np.asarray(raw), self.temperature)

    @property
    def input_shape(self) -> tuple[None, int, int, int]:
        return (None, self.image_size, self.image_size, 3)


def load_model(folder: Path) -> LoadedModel:
    """Load ``folder``'s model (a registry entry); ModelLoadError names what is wrong."""
    import keras

    info = read_entry(folder)
    try:
        model = keras.models.load_model(str(info.model_file), safe_mode=True, compile=False)
    except Exception as exc:  # any reason the archive does not deserialise
        raise cannot_load(info.version, exc) from exc
    scope = (read_calibration(info.folder) or {}).get("scope")
    loaded = LoadedModel(
        model,
        info.version,
        info.classes,
        info.image_size,
        info.config,
        info.temperature,
        scope if isinstance(scope, dict) else None,
    )
    if tuple(model.input_shape) != loaded.input_shape or model.output_shape[-1] != len(
        info.classes
    ):
        raise ModelLoadError(
            f"{info.version}: model takes {model.input_shape} and gives "
            f"{model.output_shape}, but the entry says {loaded.input_shape} "
            f"-> {len(info.classes)} classes"
        )
    logger.info(
        "loaded model %s (%d classes, %dpx, temperature %.3g)",
        info.version,
        len(info.classes),
        info.image_size,
        info.temperature,
    )
    return loaded


def load_current(registry: ModelRegistry) -> LoadedModel | None:
    """The promoted model, or None when nothing is promoted yet."""
    version = registry.current()
    return None if version is None else load_model(registry.path(version))


def check_promotable(registry: ModelRegistry, version: str, classes: Iterable[str]) -> LoadedModel:
    """Raise RegistryEntryError/ModelLoadError unless ``version`` can serve the factory: it
    exists, is complete, loads, and predicts exactly the configured ``classes``."""
    registry.promotable(version)
    loaded = load_model(registry.path(version))
    wanted = sorted(classes)
    # the built-in out-of-scope class, learned when people gave examples of it
    if loaded.classes != wanted and loaded.classes != sorted([*wanted, NONE_CLASS]):
        raise ModelLoadError(
            f"model {version} predicts {loaded.classes} but the config has classes {wanted}"
        )
    return loaded
