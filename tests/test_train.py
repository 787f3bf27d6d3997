"""Real tiny Keras training (32 px, a few epochs on 60 generated images): the registry entry,
the training gate, the promotion gate, failures that must leave models/CURRENT alone."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import kill_9_once
from train_helpers import CLASSES, CONFIG, fill

pytestmark = pytest.mark.slow


def test_first_model_is_a_complete_registry_entry_and_is_promoted(trained, trained_template):
    import keras

    from vision.pixels import load_pixels

    result = trained_template[1]
    assert result.promoted and "first model" in result.reason
    folder = trained.entry()
    assert (folder.parent / "CURRENT").read_text().strip() == "v0001"

    assert json.loads((folder / "classes.json").read_text()) == CLASSES
    config = json.loads((folder / "config.json").read_text())
    assert config["image_size"] == 32 and config["arch"] == "seed_cnn"
    assert config["train"]["epochs"] == 6  # the config used is saved beside the model

    metrics = json.loads((folder / "metrics.json").read_text())
    test = metrics["test"]
    assert set(test["per_class"]) == set(CLASSES)
    assert all(
        {"precision", "recall", "f1", "support"} <= set(v) for v in test["per_class"].values()
    )
    matrix = np.array(test["confusion_matrix"])
    assert matrix.shape == (3, 3) and matrix.sum() == test["images"] > 0
    assert test["accuracy"] == pytest.approx(np.trace(matrix) / matrix.sum())
    assert metrics["gate"]["promoted"] is True

    rows = list(csv.DictReader((folder / "history.csv").open()))
    assert len(rows) == metrics["epochs_run"] >= 1
    assert {"epoch", "loss", "accuracy", "val_loss", "val_accuracy"} <= set(rows[0])

    curve = f"seed_cnn_32_{metrics['epochs_run']}_{test['accuracy']:.4f}_{test['loss']:.4f}.png"
    assert metrics["curve_plot"] == curve
    for plot in (curve, "confusion_matrix.png"):
        assert (folder / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (folder / "checkpoint.weights.h5").exists()

    # The manifest names exactly the accepted images, by content hash, split three ways.
    manifest = json.loads((folder / "manifest.json").read_text())
    with trained.store() as store:
        accepted = {f"{r['label']}/{r['sha256']}": r for r in store.iter_images(status="accepted")}
        (row,) = store.registry.rows()
    listed = [h for split in ("train", "val", "test") for h in manifest["splits"][split]]
    assert sorted(listed) == sorted(accepted)
    assert len(manifest["splits"]["test"]) == test["images"]
    assert row["promoted"] and row["manifest_hash"] == manifest["manifest_hash"]

    # The factory's view: safe-mode load, float32 RGB 0..255 in, probabilities out, and the
    # recorded accuracy is what this file really scores on the test images.
    model = keras.models.load_model(folder / "model.keras", safe_mode=True)
    test_rows = [accepted[h] for h in manifest["splits"]["test"]]
    images = np.stack(
        [load_pixels(str(trained.config.data_dir / r["path"]), 32) for r in test_rows]
    ).astype("float32")
    probs = model.predict(images, verbose=0)
    assert probs.shape == (len(test_rows), 3)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-4)
    labels = np.array([CLASSES.index(r["label"]) for r in test_rows])
    assert (probs.argmax(axis=1) == labels).mean() == pytest.approx(test["accuracy"])


def test_training_waits_until_every_class_is_at_target(project):
    from trainer.run import should_train, train

    project.write(CONFIG)
    with project.store() as store:
        fill(store, 20, labels=["red", "green"])
        fill(store, 12, labels=["blue"])
        ok, reason = should_train(project.config, store)
        assert not ok and "blue 12/20" in reason
        result = train(project.config, store)
        assert not result.trained and result.version is None
        assert store.registry.versions() == []
        fill(store, 8, start=12, labels=["blue"])
        ok, reason = should_train(project.config, store)
        assert ok and "no model yet" in reason


def test_training_waits_until_the_dataset_changes(trained):
    from trainer.run import should_train, train

    with trained.store() as store:
        ok, reason = should_train(trained.config, store)
        assert not ok and "not changed since model v0001" in reason
        assert train(trained.config, store).trained is False
        fill(store, 1, start=100, labels=["red"])
        ok, reason = should_train(trained.config, store)
        assert ok and "changed since model v0001" in reason


def test_new_model_is_judged_against_the_current_one_on_the_same_test_split(trained):
    """After images are added, the gate scores the current model on the *new* test split,
    and every image keeps the split it had."""
    from trainer.evaluate import evaluate_on
    from trainer.run import train
    from vision.model import load_model

    old_manifest = json.loads((trained.entry() / "manifest.json").read_text())
    with trained.store() as store:
        fill(store, 10, start=20)
        result = train(trained.config, store)
        current = store.registry.current()
    assert result.trained and result.version == "v0002"
    new_manifest = json.loads((trained.entry("v0002") / "manifest.json").read_text())
    for split, hashes in old_manifest["splits"].items():
        assert set(hashes) <= set(new_manifest["splits"][split])

    gate = json.loads((trained.entry("v0002") / "metrics.json").read_text())["gate"]
    assert gate["current_version"] == "v0001"
    # Re-score v0001 ourselves on v0002's test split: the gate must have used the same one.
    from trainer.data import plan_from_store

    with trained.store() as store:
        plan = plan_from_store(store, CLASSES, 0.15, 0.15)
    old = evaluate_on(load_model(trained.entry("v0001")), plan.split("test"), 8)
    assert gate["current_accuracy"] == pytest.approx(old["accuracy"])
    assert gate["test_images"] == old["images"] == len(new_manifest["splits"]["test"])
    assert result.promoted == (gate["new_accuracy"] >= gate["current_accuracy"])
    assert current == ("v0002" if result.promoted else "v0001")


def test_worse_model_is_not_promoted(trained):
    from trainer.run import train

    with trained.store() as store:
        # learning_rate 0: the weights never move, so the model stays at its random start.
        result = train(
            trained.config,
            store,
            force=True,
            overrides={"learning_rate": 0.0, "epochs": 1, "seed": 7},
        )
        rows = {r["version"]: r for r in store.registry.rows()}
        current = store.registry.current()
    gate = json.loads((trained.entry("v0002") / "metrics.json").read_text())["gate"]
    assert gate["new_accuracy"] < gate["current_accuracy"]
    assert not result.promoted and result.reason.startswith("not promoted")
    assert current == "v0001"
    assert rows["v0001"]["promoted"] and not rows["v0002"]["promoted"]
    assert rows["v0002"]["note"] == gate["reason"]


def test_a_margin_makes_promotion_stricter(trained):
    from trainer.run import train

    with trained.store() as store:
        result = train(
            trained.config, store, force=True, overrides={"promote_margin": 1.0, "epochs": 1}
        )
        assert store.registry.current() == "v0001"
    gate = json.loads((trained.entry("v0002") / "metrics.json").read_text())["gate"]
    assert gate["current_accuracy"] > 0  # so accuracy + 1.0 is out of reach
    assert not result.promoted and "margin +1.0000" in result.reason


def test_a_model_file_that_does_not_load_leaves_the_previous_model_in_service(trained, monkeypatch):
    from storage.errors import ModelLoadError
    from trainer import registry_writer
    from trainer.run import train

    def broken_save(model, path):  # a disk that garbles the file: nothing else provokes it
        path.write_bytes(b"PK\x03\x04 not really a keras archive")

    monkeypatch.setattr(registry_writer, "save_model", broken_save)
    with trained.store() as store:
        with pytest.raises(ModelLoadError, match="v0002: cannot load the model"):
            train(trained.config, store, force=True, overrides={"epochs": 1})
        assert store.registry.current() == "v0001"
        assert [r["version"] for r in store.registry.rows()] == ["v0001"]
    assert (trained.entry("v0002") / "FAILED.txt").exists()
    assert not (trained.entry("v0002") / "metrics.json").exists()
    listing = trained.cli("models")
    assert re.search(r"v0002\s+failed", listing.output)
    refused = trained.cli("models", "promote", "v0002")
    assert refused.exit_code == 1 and "failed" in refused.stderr
    assert (trained.entry().parent / "CURRENT").read_text().strip() == "v0001"


def test_cli_train_reports_the_gate_and_accepts_overrides(trained):
    quiet = trained.cli("train")
    assert quiet.exit_code == 0 and "not training: the dataset has not changed" in quiet.output
    bad = trained.cli("train", "--force", "--image-size", "4")
    assert bad.exit_code == 2 and "train.image_size" in bad.stderr
    run = trained.cli("train", "--force", "--arch", "small_cnn", "--epochs", "1", "--json")
    assert run.exit_code == 0, run.output
    result = json.loads(run.stdout)
    assert result["trained"] and result["version"] == "v0002"
    config = json.loads((trained.entry("v0002") / "config.json").read_text())
    assert config["arch"] == "small_cnn" and config["train"]["epochs"] == 1


def test_sigkill_mid_training_never_touches_current_and_the_next_run_carries_on(trained):
    text = trained.config_path.read_text().replace("patience = 3", "patience = 1000")
    trained.config_path.write_text(text.replace("epochs = 6", "epochs = 1000"))
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from pingo.cli import main; main()",
            "--config",
            str(trained.config_path),
            "train",
            "--force",
        ],
        cwd=root,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    checkpoint = trained.entry("v0002") / "checkpoint.weights.h5"

    # at least one epoch done: training is under way
    kill_9_once(proc, checkpoint.exists, "training writes a checkpoint")
    from storage.registry import entry_state

    assert entry_state(trained.entry("v0002")) == "incomplete"
    assert (trained.entry().parent / "CURRENT").read_text().strip() == "v0001"

    trained.config_path.write_text(CONFIG)
    from trainer.run import train

    with trained.store() as store:
        assert [r["version"] for r in store.registry.rows()] == ["v0001"]
        result = train(trained.config, store, force=True, overrides={"epochs": 1})
        assert result.version == "v0003"
        assert store.registry.current() == ("v0003" if result.promoted else "v0001")
    listing = json.loads(trained.cli("models", "--json").stdout)
    assert [(m["version"], m["state"]) for m in listing] == [
        ("v0001", "complete"),
        ("v0002", "incomplete"),
        ("v0003", "complete"),
    ]


def test_backbone_weights_come_only_from_a_local_file(trained):
    """mobilenet_v2 starts from the user's weights file (relative to pingo.toml); a missing
    file or a backbone-less arch with weights is a named error, and nothing is downloaded."""
    import keras

    from trainer.errors import TrainerError
    from trainer.models import build_model
    from trainer.run import train

    donor = keras.applications.MobileNetV2(
        input_shape=(32, 32, 3), include_top=False, weights=None, pooling="avg"
    )
    donor.save_weights(trained.root / "mnv2.weights.h5")
    built = build_model("mobilenet_v2", 32, 3, str(trained.root / "mnv2.weights.h5"))
    backbone = built.get_layer("backbone")
    for mine, theirs in zip(backbone.get_weights(), donor.get_weights()):
        np.testing.assert_array_equal(mine, theirs)
    with pytest.raises(TrainerError, match="no weights file"):
        build_model("mobilenet_v2", 32, 3, str(trained.root / "missing.weights.h5"))
    with pytest.raises(TrainerError, match="no pretrained backbone"):
        build_model("small_cnn", 32, 3, str(trained.root / "mnv2.weights.h5"))

    # The nested keras.applications model survives the registry's save / safe-mode load.
    from trainer.registry_writer import save_model
    from vision.model import load_model

    folder = trained.root / "entry"
    folder.mkdir()
    save_model(built, folder / "model.keras")
    (folder / "classes.json").write_text(json.dumps(CLASSES))
    (folder / "config.json").write_text(json.dumps({"image_size": 32, "arch": "mobilenet_v2"}))
    loaded = load_model(folder)
    probe = np.full((1, 32, 32, 3), 128.0, dtype="float32")
    np.testing.assert_allclose(
        loaded.model.predict(probe, verbose=0),
        built.predict(probe, verbose=0),
        rtol=1e-5,
        atol=1e-6,
    )

    # A relative weights_path is read beside pingo.toml; a missing one is refused before
    # anything is written.
    with trained.store() as store:
        with pytest.raises(TrainerError, match=re.escape(str(trained.root / "gone.weights.h5"))):
            train(
                trained.config,
                store,
                force=True,
                overrides={"arch": "mobilenet_v2", "weights_path": "gone.weights.h5", "epochs": 1},
            )
        assert store.registry.versions() == ["v0001"]


def test_the_same_images_and_seed_train_the_same_model(trained):
    """train.deterministic: retraining on unchanged images gives the very same weights, so a
    promotion decision compares data and settings, not thread-scheduling luck."""
    import keras

    from trainer.run import train

    with trained.store() as store:
        again = train(trained.config, store, force=True)
    assert again.version == "v0002"
    first = keras.models.load_model(trained.entry("v0001") / "model.keras", compile=False)
    second = keras.models.load_model(trained.entry("v0002") / "model.keras", compile=False)
    pairs = list(zip(first.get_weights(), second.get_weights(), strict=True))
    assert pairs and all(np.array_equal(a, b) for a, b in pairs)
    metrics = json.loads((trained.entry("v0001") / "metrics.json").read_text())
    assert again.metrics["test_accuracy"] == metrics["test"]["accuracy"]
