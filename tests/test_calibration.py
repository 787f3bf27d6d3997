"""Calibration by temperature scaling: the fit (numpy), ECE/NLL, the registry's
calibration.json (old entries: T = 1), and one real training whose temperature the factory
applies to every confidence it records."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from train_helpers import CLASSES, CONFIG, Trained, colour_png, fill

from storage.errors import ModelLoadError
from storage.registry import read_entry
from vision.calibration import apply_temperature, calibrate, ece, fit_temperature, nll


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def synthetic(scale: float, n: int = 4000, k: int = 4, seed: int = 0):
    """Labels drawn from softmax(z) (the truth), and a model that outputs softmax(z * scale):
    over-confident for scale > 1 (the right T is ``scale``), under-confident below 1."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 1.5, (n, k))
    truth = softmax(z)
    y = np.array([rng.choice(k, p=p) for p in truth])
    return y, softmax(z * scale)


@pytest.mark.parametrize("scale", [3.0, 0.5, 1.0])
def test_the_fit_recovers_the_temperature_and_lowers_the_nll(scale):
    y, probs = synthetic(scale)
    t = fit_temperature(y, probs)
    assert t == pytest.approx(scale, rel=0.12)
    after = nll(y, apply_temperature(probs, t))
    if scale != 1.0:  # over- or under-confident: the fit must help clearly
        assert after < nll(y, probs) - 0.02
        assert ece(y, apply_temperature(probs, t)) < ece(y, probs)
    else:  # already calibrated: nothing much to gain, T stays near 1
        assert after <= nll(y, probs) + 1e-9


def test_ece_on_a_crafted_example():
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.4, 0.6], [0.4, 0.6]])
    y = np.array([0, 1, 1, 0])
    # bin (0.8, 0.9]: accuracy 0.5 at confidence 0.9; bin (0.5, 0.6]: 0.5 at 0.6
    assert ece(y, probs) == pytest.approx((2 * 0.4 + 2 * 0.1) / 4)
    calibrated = np.array([[0.75, 0.25]] * 4)
    assert ece(np.array([0, 0, 0, 1]), calibrated) == pytest.approx(0.0)
    assert nll(np.array([0, 0, 0, 1]), calibrated) == pytest.approx(
        -(3 * math.log(0.75) + math.log(0.25)) / 4
    )


@pytest.mark.parametrize("t", [0.3, 1.0, 2.7])
def test_apply_temperature_keeps_the_argmax_and_rows_sum_to_one(t):
    rng = np.random.default_rng(1)
    probs = softmax(rng.normal(0, 3, (50, 5)))
    out = apply_temperature(probs, t)
    assert (out.argmax(axis=1) == probs.argmax(axis=1)).all()
    np.testing.assert_allclose(out.sum(axis=1), 1.0, atol=1e-12)
    powered = probs ** (1 / t)
    np.testing.assert_allclose(out, powered / powered.sum(axis=1, keepdims=True), atol=1e-9)
    if t > 1:  # softer: the top probability drops
        assert (out.max(axis=1) < probs.max(axis=1) + 1e-12).all()


def test_small_or_error_free_validation_splits_keep_t_at_one():
    y, probs = synthetic(3.0, n=200)
    few = calibrate(y[:12], probs[:12], y[12:], probs[12:])
    assert few["temperature"] == 1.0 and not few["fitted"]
    assert "too few validation images" in few["note"]
    assert few["test_nll_after"] == few["test_nll_before"]

    right = probs.argmax(axis=1)  # labels the model always gets right
    perfect = calibrate(right[:100], probs[:100], y[100:], probs[100:])
    assert perfect["temperature"] == 1.0 and "classified right" in perfect["note"]

    fitted = calibrate(y[:100], probs[:100], y[100:], probs[100:])
    assert fitted["fitted"] and fitted["note"] is None and fitted["temperature"] > 1.5
    assert fitted["fitted_on"] == "val" and fitted["val_images"] == 100
    assert fitted["test_nll_after"] < fitted["test_nll_before"]


def entry(tmp_path: Path, calibration: str | None) -> Path:
    """A registry entry's metadata files (the Keras file is only checked to exist here)."""
    folder = tmp_path / "v0001"
    folder.mkdir()
    (folder / "classes.json").write_text(json.dumps(CLASSES))
    (folder / "config.json").write_text(json.dumps({"image_size": 32, "arch": "seed_cnn"}))
    (folder / "model.keras").write_bytes(b"")
    if calibration is not None:
        (folder / "calibration.json").write_text(calibration)
    return folder


def test_an_entry_without_calibration_reads_with_t_one(tmp_path):
    assert read_entry(entry(tmp_path, None)).temperature == 1.0


def test_an_entry_reads_its_temperature_and_refuses_a_bad_one(tmp_path):
    folder = entry(tmp_path, json.dumps({"temperature": 1.75}))
    assert read_entry(folder).temperature == 1.75
    for bad in ('{"temperature": -1}', '{"temperature": "hot"}', "[1.5]", "{"):
        (folder / "calibration.json").write_text(bad)
        with pytest.raises(ModelLoadError, match="v0001"):
            read_entry(folder)


def big_colour_png(label: str, i: int) -> bytes:
    """``colour_png`` scaled up to 64x64, large enough for the factory to keep."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.open(io.BytesIO(colour_png(label, i))).resize((64, 64)).save(buf, "PNG")
    return buf.getvalue()


def raw_and_served(store, paths: list[str]) -> tuple[np.ndarray, list]:
    """The promoted model's raw softmax on ``paths`` and the factory's predictions."""
    from dataset_factory.classify import Classifier
    from vision.pixels import load_pixels

    clf = Classifier.from_registry(store.registry)
    assert clf is not None
    images = np.stack([load_pixels(p, clf.image_size) for p in paths]).astype("float32")
    raw = np.asarray(clf.model.predict(images, verbose=0), dtype=np.float64)
    return raw, clf.predict(paths)


@pytest.mark.slow
def test_old_model_without_calibration_serves_raw_probabilities(trained):
    metrics = json.loads((trained.entry() / "metrics.json").read_text())
    # the shared template has ~9 validation images: too few, T = 1, and it says so
    assert metrics["calibration"]["temperature"] == 1.0
    assert "too few validation images" in metrics["calibration"]["note"]
    (trained.entry() / "calibration.json").unlink()  # an entry from before calibration
    with trained.store() as store:
        paths = [str(p) for p in sorted((trained.config.data_dir / "dataset").rglob("*.png"))[:4]]
        raw, served = raw_and_served(store, paths)
        assert store.registry.listing()[0]["temperature"] == 1.0
    np.testing.assert_allclose([p.confidence for p in served], raw.max(axis=1), atol=1e-5)


@pytest.mark.slow
def test_training_calibrates_on_val_and_the_factory_applies_it(tmp_path):
    from dataset_factory import process_inbox
    from trainer.run import train

    root = tmp_path / "project"
    root.mkdir()
    (root / "pingo.toml").write_text(CONFIG, encoding="utf-8")
    t = Trained(root)
    with t.store() as store:
        fill(store, 24)
        # label noise: some images carry another class's label, so val has errors to fit on
        for n, label in enumerate(CLASSES):
            wrong = CLASSES[(n + 1) % len(CLASSES)]
            for i in range(100, 106):
                image_id = store.add_image(
                    colour_png(label, i), keyword_class=wrong, source="test", ext="png"
                )
                store.move(image_id, "accepted", label=wrong, label_source="human")
        result = train(t.config, store, overrides={"val_fraction": 0.35, "epochs": 4})
    assert result.promoted

    metrics = json.loads((t.entry() / "metrics.json").read_text())
    cal = metrics["calibration"]
    stored = json.loads((t.entry() / "calibration.json").read_text())
    assert cal == stored
    assert cal["fitted_on"] == "val" and cal["val_images"] >= 20 and cal["fitted"]
    assert cal["temperature"] > 0 and cal["temperature"] != 1.0
    assert cal["test_images"] == metrics["test"]["images"]
    for key in ("test_ece_before", "test_ece_after", "test_nll_before", "test_nll_after"):
        assert isinstance(cal[key], float) and cal[key] >= 0
    assert cal["test_nll_before"] == pytest.approx(metrics["test"]["loss"], abs=1e-4)

    # how sure the model is of in-scope val images, for out-of-scope evidence in the factory
    assert len(cal["scope"]["counts"]) == len(cal["scope"]["edges"]) - 1
    assert sum(cal["scope"]["counts"]) == cal["val_images"]
    # what auto-accepting at the target gives per class, measured on the test split
    accepting = metrics["auto_accept"]
    assert set(accepting) == set(CLASSES)
    for c in accepting.values():
        assert 0 <= c["coverage"] <= 1 and 0 < c["keyword_reliability"] < 1
        assert c["precision"] is None or 0 <= c["precision"] <= 1
        assert c["test_images"] > 0
    listed = json.loads(t.cli("models", "--json").stdout)
    assert listed[0]["temperature"] == cal["temperature"]
    assert listed[0]["auto_accept"] == accepting
    shown = t.cli("models").output
    assert f"{cal['temperature']:.2f}" in shown and "auto-accept (evidence" in shown
    assert result.metrics["temperature"] == cal["temperature"]

    with t.store() as store:
        for label in CLASSES:  # new images in the inbox, sorted by the promoted model
            for i in range(300, 302):
                store.add_image(
                    big_colour_png(label, i), keyword_class=label, source="test", ext="png"
                )
        inbox = [(r["id"], str(store.abspath(r["path"]))) for r in store.iter_images("inbox")]
        raw, served = raw_and_served(store, [p for _, p in inbox])
        expected = apply_temperature(raw, cal["temperature"])
        np.testing.assert_allclose([p.confidence for p in served], expected.max(axis=1), atol=1e-5)
        assert [p.label for p in served] == [CLASSES[i] for i in raw.argmax(axis=1)]
        assert not np.allclose(expected.max(axis=1), raw.max(axis=1), atol=1e-3)

        process_inbox(t.config, store)
        recorded = {i: store.get_image(i)["confidence"] for i, _ in inbox}
    for (image_id, _), conf in zip(inbox, expected.max(axis=1), strict=True):
        if recorded[image_id] is not None:  # None: filed as a duplicate before classifying
            assert recorded[image_id] == pytest.approx(conf, abs=1e-5)
    assert any(c is not None for c in recorded.values())
