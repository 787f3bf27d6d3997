"""keras.applications backbones: each builds and takes 0..255; training from a weights file
freezes the backbone for the head; "imagenet" offline fails as one line, nothing changed."""

from __future__ import annotations

import json

import numpy as np
import pytest
from train_helpers import CLASSES

from core.config import ConfigError, TrainConfig, override
from trainer.models import BACKBONE_LAYER, BACKBONES, build_model

pytestmark = pytest.mark.slow

NEW = ["mobilenet_v3_small", "mobilenet_v3_large", "efficientnet_v2_b0"]


@pytest.mark.parametrize("arch", NEW)
def test_backbone_builds_small_and_takes_0_to_255(arch):
    import keras

    model = build_model(arch, BACKBONES[arch].min_size, 3)
    assert model.output_shape == (None, 3)
    backbone = model.get_layer(BACKBONE_LAYER)
    # pingo adds no rescaling before these: the backbone's own first layer takes 0..255.
    assert not any(isinstance(layer, keras.layers.Rescaling) for layer in model.layers)
    assert any(isinstance(layer, keras.layers.Rescaling) for layer in backbone.layers[:3])
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (2, 32, 32, 3)).astype("float32")
    probs = model.predict(pixels, verbose=0)
    assert probs.shape == (2, 3) and np.isfinite(probs).all()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-4)


def test_backbone_refuses_images_below_its_minimum():
    from trainer.errors import TrainerError

    with pytest.raises(TrainerError, match="needs train.image_size >= 32"):
        build_model("mobilenet_v3_small", 24, 3)


def test_weights_path_is_a_deprecated_alias_of_weights():
    assert override(TrainConfig(), {"weights_path": "w.h5"}).weights == "w.h5"
    with pytest.raises(ConfigError, match="train.weights_path and train.weights"):
        override(TrainConfig(), {"weights_path": "w.h5", "weights": "imagenet"})


def test_training_from_a_weights_file_freezes_the_backbone(trained):
    """A weights file the test builds (a random backbone, saved): `pingo train` starts from
    it, trains only the head (fine_tune_epochs = 0), and the entry says where it started."""
    import keras

    donor = keras.applications.MobileNetV3Small(
        input_shape=(32, 32, 3), include_top=False, weights=None, pooling="avg"
    )
    donor.save_weights(trained.root / "small.weights.h5")
    result = trained.cli(
        "train",
        "--force",
        "--json",
        "--arch",
        "mobilenet_v3_small",
        "--weights",
        "small.weights.h5",  # relative: read beside pingo.toml
        "--epochs",
        "2",
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["trained"] and out["version"] == "v0002"
    assert out["metrics"]["arch"] == "mobilenet_v3_small"
    assert out["metrics"]["weights"] == str(trained.root / "small.weights.h5")
    folder = trained.entry("v0002")
    config = json.loads((folder / "config.json").read_text())
    assert config["arch"] == "mobilenet_v3_small"
    assert config["weights"] == str(trained.root / "small.weights.h5")
    assert json.loads((folder / "classes.json").read_text()) == CLASSES

    saved = keras.models.load_model(folder / "model.keras", safe_mode=True)
    backbone = saved.get_layer(BACKBONE_LAYER)
    # Frozen: every backbone weight (BN statistics included) is the file's, the head is not.
    for mine, theirs in zip(backbone.get_weights(), donor.get_weights(), strict=True):
        np.testing.assert_array_equal(mine, theirs)
    fresh = build_model("mobilenet_v3_small", 32, 3)
    assert not np.array_equal(
        saved.get_layer("probs").get_weights()[0], fresh.get_layer("probs").get_weights()[0]
    )


def test_fine_tuning_runs_after_the_head_on_the_top_of_the_backbone(trained):
    """fine_tune_epochs = 2: one head epoch, then two at learning_rate / 100 with the top
    layers of the backbone trainable and its batch norm layers still frozen."""
    import csv

    import keras

    from trainer.fit import FINE_TUNE_LR_FACTOR, _unfreeze_top

    donor = keras.applications.MobileNetV3Small(
        input_shape=(32, 32, 3), include_top=False, weights=None, pooling="avg"
    )
    donor.save_weights(trained.root / "small.weights.h5")
    text = trained.config_path.read_text().replace(
        "[train]", '[train]\nweights = "small.weights.h5"\nfine_tune_epochs = 2'
    )
    trained.config_path.write_text(text)
    result = trained.cli("train", "--force", "--arch", "mobilenet_v3_small", "--epochs", "1")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader((trained.entry("v0002") / "history.csv").open()))
    assert len(rows) == 3
    rates = [float(r["learning_rate"]) for r in rows]
    assert rates[1] == pytest.approx(rates[0] * FINE_TUNE_LR_FACTOR)

    model = build_model("mobilenet_v3_small", 32, 3)
    backbone = model.get_layer(BACKBONE_LAYER)
    backbone.trainable = False
    assert _unfreeze_top(backbone) > 0
    flags = [layer.trainable for layer in backbone.layers]
    assert not any(flags[: len(flags) // 2]) and any(flags[-10:])
    assert not any(
        layer.trainable
        for layer in backbone.layers
        if isinstance(layer, keras.layers.BatchNormalization)
    )


def test_imagenet_offline_fails_as_one_line_and_keeps_the_model(trained, tmp_path, monkeypatch):
    """No network here; to be sure anywhere, Keras gets an empty cache and a dead proxy."""
    import urllib.request

    import keras.src.backend.config as keras_config

    monkeypatch.setattr(keras_config, "_KERAS_DIR", str(tmp_path / "keras"))
    # urlopen builds its global opener (with the proxies of that moment) on first use: one
    # built under the dead proxy must not outlive this test, or later local requests fail
    monkeypatch.setattr(urllib.request, "_opener", None)
    for var in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    current = (trained.config.data_dir / "models" / "CURRENT").read_text()
    result = trained.cli(
        "train", "--force", "--arch", "mobilenet_v3_small", "--weights", "imagenet"
    )
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    error = [line for line in lines if line.startswith("pingo: error:")]
    assert error == [error[0]] and error[0].startswith(
        'pingo: error: train.weights = "imagenet": could not download the ImageNet weights ('
    )
    assert error[0].endswith('connect once, or set train.weights to a local file, or "none"')
    assert (trained.config.data_dir / "models" / "CURRENT").read_text() == current
    with trained.store() as store:
        assert store.registry.versions() == ["v0001"]  # nothing written before the download
        (run,) = [r for r in store.recent_runs() if r["job"] == "train"]
        assert run["status"] == "failed" and "ImageNet weights" in (run["error"] or "")
