"""Writing one registry entry, models/vNNNN/: file by file, metrics.json last.

The trainer only writes entries; storage.registry owns their contract (file names, what
makes one complete), listing and promotion, and vision.model loads them back.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import platform
import time
import traceback
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.config import TrainConfig
from storage.files import atomic_write, replace
from storage.registry import (
    CALIBRATION,
    CLASSES,
    CONFIG,
    CONFUSION_PLOT,
    FAILED,
    HISTORY,
    MANIFEST,
    METRICS,
    MODEL,
)
from trainer import data
from trainer.evaluate import outcomes, predict_items
from trainer.fit import CHECKPOINT, FitOutcome
from trainer.plots import curve_name, plot_confusion, plot_curves
from vision.calibration import apply_temperature, calibrate
from vision.evidence import scope_profile, validate
from vision.model import load_model
from vision.pixels import RESIZE

if TYPE_CHECKING:
    from trainer.devices import Placement
    from trainer.promotion_gate import PromotionDecision

logger = logging.getLogger(__name__)


@dataclass
class Written:
    version: str
    folder: Path
    classes: list[str]
    image_size: int
    arch: str
    test: dict[str, Any]
    curve_plot: str
    epochs_run: int
    best_epoch: int
    train_seconds: float
    # per test image (plan.split("test") order): right or wrong; the promotion gate pairs it
    test_correct: list[bool] = field(default_factory=list)
    # the temperature fitted on val and the test split's ECE/NLL before and after it
    calibration: dict[str, Any] = field(default_factory=dict)
    weights: str = "none"  # train.weights: none, imagenet or the weights file used
    # per class: the precision and coverage factory.decision "evidence" gives on the test split
    auto_accept: dict[str, Any] = field(default_factory=dict)


def _json(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=True) + "\n"


def save_model(model, path: Path) -> None:
    """Save atomically: Keras writes a temp .keras beside it, then one rename."""
    tmp = path.with_name(f".{path.stem}.partial.keras")
    model.save(str(tmp))
    replace(tmp, path)


def _history_csv(history: dict[str, list[float]]) -> str:
    keys = sorted(history)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["epoch", *keys])
    for i in range(len(history.get("loss", []))):
        writer.writerow([i + 1, *(f"{history[k][i]:.6g}" for k in keys)])
    return buf.getvalue()


def write_entry(
    folder: Path,
    version: str,
    plan: data.DatasetPlan,
    tc: TrainConfig,
    placement: Placement,
    outcome: FitOutcome,
    started: float,
    max_pixels: int | None = None,
    reliability: Mapping[str, float] | None = None,
    target_precision: float | None = None,
) -> Written:
    """Everything but metrics.json: model, classes, config, history, manifest, calibration,
    plots."""
    import keras
    import tensorflow as tf

    save_model(outcome.model, folder / MODEL)
    atomic_write(folder / CLASSES, _json(plan.classes))
    atomic_write(
        folder / CONFIG,
        _json(
            {
                "version": version,
                "arch": tc.arch,
                "weights": tc.weights,  # where the backbone started: none, imagenet or a file
                "image_size": tc.image_size,
                "classes": plan.classes,
                "input": {
                    "dtype": "float32",
                    "range": [0, 255],
                    "channels": "RGB",
                    "resize": RESIZE,
                    "rescaling": "inside the model",
                },
                "train": asdict(tc),
                "train_share": train_share(plan, outcome.class_weights),
                "class_weights": (
                    {plan.classes[i]: w for i, w in outcome.class_weights.items()}
                    if outcome.class_weights
                    else None
                ),
                "epochs_run": outcome.epochs_run,
                "data_cache": outcome.cache.as_json() if outcome.cache else None,
                # the frozen-backbone head on cached embeddings: vectors read and computed
                "embeddings": outcome.embeddings,
                "best_epoch": outcome.best_epoch,
                "device": placement.description,
                "replicas": placement.replicas,
                "mixed_precision": placement.mixed_precision,
                "versions": {
                    "tensorflow": tf.__version__,
                    "keras": keras.__version__,
                    "python": platform.python_version(),
                },
                "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
            }
        ),
    )
    atomic_write(folder / HISTORY, _history_csv(outcome.history))
    atomic_write(
        folder / MANIFEST, _json({**plan.manifest(), "manifest_hash": plan.manifest_hash()})
    )
    (folder / CHECKPOINT).unlink(missing_ok=True)

    # Judge the file the factory will load, not the object in memory.
    loaded = load_model(folder)
    y_test, p_test = predict_items(loaded, plan.split("test"), tc.batch_size, max_pixels)
    test, test_correct = outcomes(y_test, p_test, plan.classes)
    # Calibrate on the validation split: held out from the gradient steps (it only chose the
    # best epoch), while the test split stays untouched for the promotion gate.
    y_val, p_val = predict_items(loaded, plan.split("val"), tc.batch_size, max_pixels)
    calibration = calibrate(y_val, p_val, y_test, p_test)
    calibration["scope"] = scope_profile(apply_temperature(p_val, calibration["temperature"]))
    atomic_write(folder / CALIBRATION, _json(calibration))
    logger.info(
        "%s: temperature %.3g (%s); test ECE %s -> %s",
        version,
        calibration["temperature"],
        calibration["note"] or f"fitted on {calibration['val_images']} validation images",
        calibration["test_ece_before"],
        calibration["test_ece_after"],
    )
    auto_accept = (
        validate(
            apply_temperature(p_test, calibration["temperature"]),
            y_test,
            plan.classes,
            reliability,
            list(train_share(plan, outcome.class_weights).values()),
            target_precision,
            calibration["scope"],
        )
        if reliability is not None and target_precision is not None and len(y_test)
        else {}
    )
    name = curve_name(tc.arch, tc.image_size, outcome.epochs_run, test["accuracy"], test["loss"])
    plot_curves(
        outcome.history,
        folder / name,
        f"{version} {tc.arch} {tc.image_size}px: test accuracy {test['accuracy']:.4f}",
    )
    plot_confusion(
        test["confusion_matrix"],
        plan.classes,
        folder / CONFUSION_PLOT,
        f"{version} test confusion ({test['images']} images)",
    )
    return Written(
        version,
        folder,
        plan.classes,
        tc.image_size,
        tc.arch,
        test,
        name,
        outcome.epochs_run,
        outcome.best_epoch,
        outcome.seconds,
        test_correct,
        calibration,
        tc.weights,
        auto_accept,
    )


def train_share(plan: data.DatasetPlan, class_weights: dict[int, float] | None) -> dict[str, float]:
    """The class shares the model learned under: equal with balancing class weights (or a
    balanced split), else the training split's. The factory's evidence rule divides the
    model's probabilities by them."""
    counts = plan.counts()["train"]
    total = sum(counts.values())
    if class_weights or not total:
        return {c: round(1.0 / len(plan.classes), 6) for c in plan.classes}
    return {c: round(counts[c] / total, 6) for c in plan.classes}


def summary(written: Written, decision: PromotionDecision) -> dict[str, Any]:
    """The compact metrics kept in the DB and returned to callers."""
    return {
        "test_accuracy": round(written.test["accuracy"], 6),
        "test_accuracy_ci": written.test.get("accuracy_ci"),
        "test_loss": round(written.test["loss"], 6),
        "macro_f1": round(written.test["macro_f1"], 6),
        "test_images": written.test["images"],
        "temperature": written.calibration.get("temperature"),
        "auto_accept": written.auto_accept,
        "arch": written.arch,
        "weights": written.weights,
        "image_size": written.image_size,
        "epochs_run": written.epochs_run,
        "train_seconds": round(written.train_seconds, 1),
        "promoted": decision.promoted,
    }


def finish_entry(folder: Path, written: Written, decision: PromotionDecision) -> None:
    """metrics.json, written last: its presence marks the entry complete."""
    atomic_write(
        folder / METRICS,
        _json(
            {
                "version": written.version,
                "test": written.test,
                "epochs_run": written.epochs_run,
                "best_epoch": written.best_epoch,
                "train_seconds": round(written.train_seconds, 1),
                "curve_plot": written.curve_plot,
                "confusion_plot": CONFUSION_PLOT,
                "calibration": written.calibration,
                "auto_accept": written.auto_accept,
                "gate": asdict(decision),
            }
        ),
    )


def mark_failed(folder: Path, exc: BaseException) -> None:
    """Leave the reason beside the incomplete entry (best effort: we are already failing)."""
    try:
        atomic_write(folder / FAILED, "".join(traceback.format_exception(exc)))
        (folder / CHECKPOINT).unlink(missing_ok=True)
    except OSError:
        logger.exception("could not write %s in %s", FAILED, folder)
