"""Model definitions. Every model takes float32 RGB 0..255 and rescales inside itself."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from trainer.errors import TrainerError, UnknownArchError

logger = logging.getLogger(__name__)

# Keras' default (0.99) needs hundreds of steps before the moving statistics that inference
# uses catch up; small datasets give a few dozen steps per epoch, and validation then sits at
# chance for many epochs (long enough to fool early stopping). 0.9 catches up in ~30 steps.
BN_MOMENTUM = 0.9


def seed_cnn(image_size: int, num_classes: int):
    """The plain Conv-MaxPool stack the project started from (kept as a baseline)."""
    import keras
    from keras import layers

    inputs = keras.Input((image_size, image_size, 3), name="image")
    x = layers.Rescaling(1.0 / 255)(inputs)
    for filters in (32, 64, 128):
        x = layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
        x = layers.MaxPooling2D()(x)
    x = layers.Flatten()(x)
    x = layers.Dense(128, activation="relu")(x)
    outputs = layers.Dense(num_classes, activation="softmax", dtype="float32", name="probs")(x)
    return keras.Model(inputs, outputs, name="seed_cnn")


def small_cnn(image_size: int, num_classes: int):
    """The default for small datasets: a mini Xception (keras-io's from-scratch recipe).

    Batch norm and separable convolutions learn fast from few images; residual shortcuts keep
    gradients healthy; global average pooling and dropout keep the head small, so it overfits
    less than Flatten + Dense.
    """
    import keras
    from keras import layers

    inputs = keras.Input((image_size, image_size, 3), name="image")
    x = layers.Rescaling(1.0 / 255)(inputs)
    x = layers.Conv2D(32, 3, strides=2, padding="same", use_bias=False)(x)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM)(x)
    x = layers.Activation("relu")(x)
    shortcut = x
    for filters in (64, 128, 256):
        for _ in range(2):
            x = layers.SeparableConv2D(filters, 3, padding="same", use_bias=False)(x)
            x = layers.BatchNormalization(momentum=BN_MOMENTUM)(x)
            x = layers.Activation("relu")(x)
        x = layers.MaxPooling2D(3, strides=2, padding="same")(x)
        residual = layers.Conv2D(filters, 1, strides=2, padding="same")(shortcut)
        x = layers.add([x, residual])
        shortcut = x
    x = layers.SeparableConv2D(256, 3, padding="same", use_bias=False)(x)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM)(x)
    x = layers.Activation("relu")(x)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(0.3)(x)
    outputs = layers.Dense(num_classes, activation="softmax", dtype="float32", name="probs")(x)
    return keras.Model(inputs, outputs, name="small_cnn")


def mobilenet_v2(image_size: int, num_classes: int, weights_path: str | None = None):
    """keras.applications MobileNetV2 with a new head; ImageNet weights only from a local
    file the user supplies (train.weights_path), never downloaded. Needs image_size >= 32."""
    import keras
    from keras import layers

    if image_size < 32:
        raise TrainerError(f"mobilenet_v2 needs train.image_size >= 32, got {image_size}")
    if weights_path is not None and not Path(weights_path).is_file():
        raise TrainerError(f"train.weights_path: no weights file at {weights_path}")
    base = keras.applications.MobileNetV2(
        input_shape=(image_size, image_size, 3),
        include_top=False,
        weights=weights_path,
        pooling="avg",
    )
    for layer in base.layers:
        if isinstance(layer, layers.BatchNormalization):
            layer.momentum = BN_MOMENTUM
    inputs = keras.Input((image_size, image_size, 3), name="image")
    x = layers.Rescaling(1.0 / 127.5, offset=-1.0)(inputs)  # MobileNetV2 expects -1..1
    x = base(x)
    x = layers.Dropout(0.2)(x)
    outputs = layers.Dense(num_classes, activation="softmax", dtype="float32", name="probs")(x)
    return keras.Model(inputs, outputs, name="mobilenet_v2")


# One builder per name in core.names.ARCHITECTURES (the names train.arch accepts);
# tests/test_config.py checks that the two match.
ARCHS: dict[str, Callable] = {
    "small_cnn": small_cnn,
    "seed_cnn": seed_cnn,
    "mobilenet_v2": mobilenet_v2,
}
PRETRAINABLE = {"mobilenet_v2"}


def build_model(arch: str, image_size: int, num_classes: int, weights_path: str | None = None):
    """A fresh model; ``weights_path`` (a local file) seeds a keras.applications backbone."""
    try:
        factory = ARCHS[arch]
    except KeyError:
        raise UnknownArchError(
            f"unknown architecture {arch!r}; known: " + ", ".join(sorted(ARCHS))
        ) from None
    if arch in PRETRAINABLE:
        return factory(image_size, num_classes, weights_path)
    if weights_path is not None:
        raise TrainerError(
            f"train.weights_path is set but {arch} has no pretrained backbone; "
            f"use one of {', '.join(sorted(PRETRAINABLE))}"
        )
    return factory(image_size, num_classes)
