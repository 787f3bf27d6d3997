"""One registry entry, models/vNNNN/: written file by file, metrics.json last.

The registry contract (the factory loads these): model.keras (Keras 3, float32 RGB 0..255 in,
softmax out), classes.json (class names in output order), config.json (at least image_size and
arch). An entry is complete once metrics.json exists; an interrupted run leaves an entry
without it (and a failed one leaves FAILED.txt), which is never promoted.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import platform
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from core.config import TrainConfig
from storage.files import atomic_write, replace
from trainer import data
from trainer.errors import ModelLoadError
from trainer.evaluate import metrics as compute_metrics
from trainer.evaluate import predict
from trainer.fit import CHECKPOINT, FitOutcome
from trainer.plots import curve_name, plot_confusion, plot_curves

logger = logging.getLogger(__name__)

MODEL = "model.keras"
CLASSES = "classes.json"
CONFIG = "config.json"
METRICS = "metrics.json"
HISTORY = "history.csv"
MANIFEST = "manifest.json"
CONFUSION_PLOT = "confusion_matrix.png"
FAILED = "FAILED.txt"


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


@dataclass
class LoadedModel:
    model: Any
    classes: list[str]
    config: dict[str, Any]

    @property
    def image_size(self) -> int:
        return int(self.config["image_size"])


def _json(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=True) + "\n"


def save_model(model, path: Path) -> None:
    """Save atomically: Keras writes a temp .keras beside it, then one rename."""
    tmp = path.with_name(f".{path.stem}.partial.keras")
    model.save(str(tmp))
    replace(tmp, path)


def load_entry_model(folder: Path) -> LoadedModel:
    """Load a registry entry's model with Keras safe mode and check it fits classes.json."""
    import keras
    try:
        classes = json.loads((folder / CLASSES).read_text(encoding="utf-8"))
        config = json.loads((folder / CONFIG).read_text(encoding="utf-8"))
        model = keras.models.load_model(str(folder / MODEL), safe_mode=True, compile=False)
    except Exception as exc:  # any reason a file is missing or unreadable
        raise ModelLoadError(f"{folder.name}: cannot load the model ({type(exc).__name__}: "
                             f"{str(exc)[:200]})") from exc
    if not (isinstance(classes, list) and all(isinstance(c, str) for c in classes)):
        raise ModelLoadError(f"{folder.name}: {CLASSES} is not a list of class names")
    size = config.get("image_size")
    expected_in = (None, size, size, 3)
    if tuple(model.input_shape) != expected_in or model.output_shape[-1] != len(classes):
        raise ModelLoadError(f"{folder.name}: model takes {model.input_shape} and gives "
                             f"{model.output_shape}, but the entry says {expected_in} -> "
                             f"{len(classes)} classes")
    return LoadedModel(model, classes, config)


def evaluate_on(loaded: LoadedModel, items, batch_size: int, max_pixels: int | None = None
                ) -> dict[str, Any]:
    ds = data.make_dataset(items, loaded.classes, loaded.image_size, batch_size,
                           training=False, cache=False, max_pixels=max_pixels)
    y_true, probs = predict(loaded.model, ds)
    return compute_metrics(y_true, probs, loaded.classes)


def _history_csv(history: dict[str, list[float]]) -> str:
    keys = sorted(history)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["epoch", *keys])
    for i in range(len(history.get("loss", []))):
        writer.writerow([i + 1, *(f"{history[k][i]:.6g}" for k in keys)])
    return buf.getvalue()


def write_entry(folder: Path, version: str, plan: data.DatasetPlan, tc: TrainConfig,
                placement, outcome: FitOutcome, started: float,
                max_pixels: int | None = None) -> Written:
    """Everything but metrics.json: model, classes, config, history, manifest, plots."""
    import keras
    import tensorflow as tf
    save_model(outcome.model, folder / MODEL)
    atomic_write(folder / CLASSES, _json(plan.classes))
    atomic_write(folder / CONFIG, _json({
        "version": version,
        "arch": tc.arch,
        "image_size": tc.image_size,
        "classes": plan.classes,
        "input": {"dtype": "float32", "range": [0, 255], "channels": "RGB",
                  "resize": data.RESIZE, "rescaling": "inside the model"},
        "train": asdict(tc),
        "class_weights": ({plan.classes[i]: w for i, w in outcome.class_weights.items()}
                          if outcome.class_weights else None),
        "epochs_run": outcome.epochs_run,
        "data_cache": outcome.cache.as_json() if outcome.cache else None,
        "best_epoch": outcome.best_epoch,
        "device": placement.description,
        "replicas": placement.replicas,
        "mixed_precision": placement.mixed_precision,
        "versions": {"tensorflow": tf.__version__, "keras": keras.__version__,
                     "python": platform.python_version()},
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
    }))
    atomic_write(folder / HISTORY, _history_csv(outcome.history))
    atomic_write(folder / MANIFEST, _json({**plan.manifest(),
                                           "manifest_hash": plan.manifest_hash()}))
    (folder / CHECKPOINT).unlink(missing_ok=True)

    # Judge the file the factory will load, not the object in memory.
    loaded = load_entry_model(folder)
    test = evaluate_on(loaded, plan.split("test"), tc.batch_size, max_pixels)
    name = curve_name(tc.arch, tc.image_size, outcome.epochs_run, test["accuracy"],
                      test["loss"])
    plot_curves(outcome.history, folder / name,
                f"{version} {tc.arch} {tc.image_size}px: test accuracy {test['accuracy']:.4f}")
    plot_confusion(test["confusion_matrix"], plan.classes, folder / CONFUSION_PLOT,
                   f"{version} test confusion ({test['images']} images)")
    return Written(version, folder, plan.classes, tc.image_size, tc.arch, test, name,
                   outcome.epochs_run, outcome.best_epoch, outcome.seconds)


def summary(written: Written, decision) -> dict[str, Any]:
    """The compact metrics kept in the DB and returned to callers."""
    return {"test_accuracy": round(written.test["accuracy"], 6),
            "test_loss": round(written.test["loss"], 6),
            "macro_f1": round(written.test["macro_f1"], 6),
            "test_images": written.test["images"], "arch": written.arch,
            "image_size": written.image_size, "epochs_run": written.epochs_run,
            "train_seconds": round(written.train_seconds, 1), "promoted": decision.promoted}


def finish_entry(folder: Path, written: Written, decision) -> None:
    """metrics.json, written last: its presence marks the entry complete."""
    atomic_write(folder / METRICS, _json({
        "version": written.version,
        "test": written.test,
        "epochs_run": written.epochs_run,
        "best_epoch": written.best_epoch,
        "train_seconds": round(written.train_seconds, 1),
        "curve_plot": written.curve_plot,
        "confusion_plot": CONFUSION_PLOT,
        "gate": asdict(decision),
    }))


def mark_failed(folder: Path, exc: BaseException) -> None:
    """Leave the reason beside the incomplete entry (best effort: we are already failing)."""
    try:
        atomic_write(folder / FAILED, "".join(traceback.format_exception(exc)))
        (folder / CHECKPOINT).unlink(missing_ok=True)
    except OSError:
        logger.exception("could not write %s in %s", FAILED, folder)


def entry_state(folder: Path) -> str:
    """complete / failed / incomplete (interrupted or still training)."""
    if (folder / METRICS).is_file():
        return "complete"
    if (folder / FAILED).is_file():
        return "failed"
    return "incomplete"


def read_metrics(folder: Path) -> dict[str, Any] | None:
    try:
        return json.loads((folder / METRICS).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
