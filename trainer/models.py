"""Model definitions. Every model takes float32 RGB 0..255 and rescales inside itself."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
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


@dataclass(frozen=True)
class Backbone:
    """One keras.applications backbone: its constructor and what pixels it expects."""

    constructor: str  # the keras.applications function
    rescale: tuple[float, float] | None  # (scale, offset) applied before it; None: it rescales
    min_size: int = 32  # smallest train.image_size the constructor accepts


# keras.applications backbones train.arch may name. MobileNetV3 and EfficientNetV2 carry their
# own rescaling layer (include_preprocessing=True, their default): they take 0..255 as is.
# MobileNetV2 has none and expects -1..1, so pingo puts a Rescaling layer before it.
BACKBONES: dict[str, Backbone] = {
    "mobilenet_v2": Backbone("MobileNetV2", (1.0 / 127.5, -1.0)),
    "mobilenet_v3_small": Backbone("MobileNetV3Small", None),
    "mobilenet_v3_large": Backbone("MobileNetV3Large", None),
    "efficientnet_v2_b0": Backbone("EfficientNetV2B0", None),
}
BACKBONE_LAYER = "backbone"  # the nested keras.applications model's name inside pingo's model

NO_WEIGHTS = "none"
IMAGENET = "imagenet"


def imagenet_unavailable(reason: object) -> TrainerError:
    return TrainerError(
        f'train.weights = "imagenet": could not download the ImageNet weights ({reason}); '
        'connect once, or set train.weights to a local file, or "none"'
    )


def backbone_model(arch: str, image_size: int, num_classes: int, weights: str = NO_WEIGHTS):
    """A keras.applications backbone (``arch`` in BACKBONES) with a new softmax head.

    ``weights``: "none" (random), "imagenet" (Keras downloads them once into ~/.keras/models)
    or a local weights file. The backbone is the layer named BACKBONE_LAYER, so the trainer
    can freeze it."""
    import keras
    from keras import layers

    spec = BACKBONES[arch]
    if image_size < spec.min_size:
        raise TrainerError(f"{arch} needs train.image_size >= {spec.min_size}, got {image_size}")
    if weights not in (NO_WEIGHTS, IMAGENET) and not Path(weights).is_file():
        raise TrainerError(f"train.weights: no weights file at {weights}")
    constructor = getattr(keras.applications, spec.constructor)
    try:
        with warnings.catch_warnings():
            # "weights for input shape (224, 224) will be loaded": convolutions fit any size.
            warnings.filterwarnings("ignore", message=".*will be loaded as the default")
            base = constructor(
                input_shape=(image_size, image_size, 3),
                include_top=False,
                weights=None if weights == NO_WEIGHTS else weights,
                pooling="avg",
            )
    except TrainerError:
        raise
    except Exception as exc:
        if weights == IMAGENET:
            raise imagenet_unavailable(str(exc).splitlines()[0] if str(exc) else exc) from exc
        if weights != NO_WEIGHTS:
            raise TrainerError(
                f"train.weights: {weights} does not fit {arch} at {image_size} px "
                f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
            ) from exc
        raise
    base.name = BACKBONE_LAYER
    for layer in base.layers:
        if isinstance(layer, layers.BatchNormalization):
            layer.momentum = BN_MOMENTUM
    inputs = keras.Input((image_size, image_size, 3), name="image")
    x = inputs
    if spec.rescale is not None:
        x = layers.Rescaling(spec.rescale[0], offset=spec.rescale[1])(x)
    x = base(x)
    return keras.Model(inputs, _head(x, num_classes), name=arch)


HEAD_DROPOUT = "head_dropout"  # the first head layer: its input is the pooled embedding


def _head(x, num_classes: int):
    """The head on a backbone's pooled embedding: dropout, then the softmax layer "probs"."""
    from keras import layers

    x = layers.Dropout(0.2, name=HEAD_DROPOUT)(x)
    return layers.Dense(num_classes, activation="softmax", dtype="float32", name="probs")(x)


def head_model(dim: int, num_classes: int):
    """The same head as backbone_model's, alone: it trains on cached (N, dim) embeddings, then
    its "probs" weights go into the full model (trainer.embeddings)."""
    import keras

    inputs = keras.Input((dim,), name="embedding")
    return keras.Model(inputs, _head(inputs, num_classes), name="head")


def embedding_model(model):
    """The images -> pooled embedding part of a backbone_model (rescaling and backbone): the
    same inputs, and the tensor the head starts from as output."""
    import keras

    return keras.Model(model.inputs, model.get_layer(HEAD_DROPOUT).input, name="embedding")


# One builder per name in core.names.ARCHITECTURES (the names train.arch accepts);
# tests/test_config.py checks that the two match.
ARCHS: dict[str, Callable] = {
    "small_cnn": small_cnn,
    "seed_cnn": seed_cnn,
    **{name: partial(backbone_model, name) for name in BACKBONES},
}


def build_model(arch: str, image_size: int, num_classes: int, weights: str = NO_WEIGHTS):
    """A fresh model; ``weights`` ("none", "imagenet" or a local file) seeds a
    keras.applications backbone (see backbone_model)."""
    try:
        factory = ARCHS[arch]
    except KeyError:
        raise UnknownArchError(
            f"unknown architecture {arch!r}; known: " + ", ".join(sorted(ARCHS))
        ) from None
    if arch in BACKBONES:
        return factory(image_size, num_classes, weights)
    if weights != NO_WEIGHTS:
        raise TrainerError(
            f"train.weights is set but {arch} has no pretrained backbone; "
            f"use one of {', '.join(BACKBONES)}"
        )
    return factory(image_size, num_classes)
