"""The model registry: models/vNNNN/ entries, models/CURRENT and the `models` DB table.

This module is the registry's one owner. The entry contract (the trainer writes it, the
factory loads it): model.keras (Keras 3; float32 RGB (N, size, size, 3) in 0..255, rescaling
inside the model; softmax out), classes.json (class names in output order, each a safe folder
name), config.json (at least image_size and arch), and optionally calibration.json (the
temperature to apply to the model's probabilities; entries without it use T = 1). An entry
is complete once metrics.json exists; an interrupted run leaves an entry without it (and a
failed one leaves FAILED.txt), which is never promoted.

Everything but deserialising Keras is here (storage never imports TensorFlow): reading and
checking an entry's files, listing versions, promoting (CURRENT and the DB row together) and
rolling back. vision.model loads the Keras model on top of ``read_entry``.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, insert, select, update

from core.config import check_safe_name
from core.errors import PingoError
from core.stats import accuracy_interval
from storage import files
from storage.db import iso, utcnow
from storage.errors import ModelLoadError, RegistryEntryError, StorageError
from storage.schema import models

logger = logging.getLogger(__name__)

MODEL = "model.keras"
CLASSES = "classes.json"
CONFIG = "config.json"
CALIBRATION = "calibration.json"  # optional: {"temperature": T, ...}; absent: T = 1
METRICS = "metrics.json"  # written last: its presence marks the entry complete
HISTORY = "history.csv"
MANIFEST = "manifest.json"
CONFUSION_PLOT = "confusion_matrix.png"
FAILED = "FAILED.txt"
CURRENT = "CURRENT"  # models/CURRENT: the promoted version, written atomically

_VERSION = re.compile(r"^v\d{4,}$")


@dataclass(frozen=True)
class EntryInfo:
    """An entry's metadata, checked: what a loader needs besides the Keras file."""

    version: str
    folder: Path
    classes: list[str]
    config: dict[str, Any]
    temperature: float = 1.0  # calibration.json's; apply to the model's probabilities

    @property
    def image_size(self) -> int:
        return int(self.config["image_size"])

    @property
    def model_file(self) -> Path:
        return self.folder / MODEL


def cannot_load(version: str, exc: BaseException) -> ModelLoadError:
    """The one message for an entry file that is missing or does not read back."""
    return ModelLoadError(
        f"{version}: cannot load the model ({type(exc).__name__}: {str(exc)[:200]})"
    )


def read_entry(folder: Path) -> EntryInfo:
    """An entry's classes.json and config.json, checked; raise ModelLoadError if unusable.

    Checks: every contract file is there, classes.json is a list of safe class names (they
    become folders), config.json records an integer image_size (the model's input size), and
    calibration.json, when there, a finite temperature > 0 (entries without one: T = 1).
    """
    folder = Path(folder)
    version = folder.name
    try:
        classes = json.loads((folder / CLASSES).read_text(encoding="utf-8"))
        config = json.loads((folder / CONFIG).read_text(encoding="utf-8"))
        if not (folder / MODEL).is_file():
            raise FileNotFoundError(f"no {MODEL} in {folder}")
    except (OSError, ValueError) as exc:
        raise cannot_load(version, exc) from exc
    if not (isinstance(classes, list) and all(isinstance(c, str) for c in classes)):
        raise ModelLoadError(f"{version}: {CLASSES} is not a list of class names")
    for name in classes:
        try:
            check_safe_name(name)
        except PingoError as exc:
            raise ModelLoadError(f"{version}: {CLASSES}: {exc}") from None
    size = config.get("image_size") if isinstance(config, dict) else None
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise ModelLoadError(f"{version}: {CONFIG} records no image_size (got {size!r})")
    return EntryInfo(version, folder, classes, config, read_temperature(folder))


def read_calibration(folder: Path) -> dict[str, Any] | None:
    """The entry's calibration.json, or None when it has none (written before pingo
    calibrated models); ModelLoadError when it is there but unreadable."""
    path = Path(folder) / CALIBRATION
    try:
        calibration = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise cannot_load(Path(folder).name, exc) from exc
    if not isinstance(calibration, dict):
        raise ModelLoadError(f"{Path(folder).name}: {CALIBRATION} is not a JSON object")
    return calibration


def read_temperature(folder: Path) -> float:
    """The temperature to apply to the entry's probabilities: 1 when it has no calibration."""
    calibration = read_calibration(folder)
    if calibration is None:
        return 1.0
    t = calibration.get("temperature")
    if not isinstance(t, int | float) or isinstance(t, bool) or not math.isfinite(t) or t <= 0:
        raise ModelLoadError(
            f"{Path(folder).name}: {CALIBRATION} records no temperature > 0 (got {t!r})"
        )
    return float(t)


def entry_state(folder: Path) -> str:
    """complete / failed / incomplete (interrupted or still training)."""
    if (folder / METRICS).is_file():
        return "complete"
    if (folder / FAILED).is_file():
        return "failed"
    return "incomplete"


def read_metrics(folder: Path) -> dict[str, Any] | None:
    try:
        metrics = json.loads((folder / METRICS).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return metrics if isinstance(metrics, dict) else None


def test_interval(test: dict[str, Any]) -> list[float] | None:
    """The test accuracy's 95% interval: metrics.json's, or (entries written before pingo
    recorded it) the Wilson interval of its accuracy and image count."""
    ci = test.get("accuracy_ci")
    if isinstance(ci, list) and len(ci) == 2:
        return ci
    accuracy, images = test.get("accuracy"), test.get("images")
    if isinstance(accuracy, int | float) and isinstance(images, int) and images > 0:
        return accuracy_interval(float(accuracy), images)
    return None


def passed_gate(folder: Path) -> bool:
    """Whether the entry was promoted when it was trained (it served before)."""
    return bool(((read_metrics(folder) or {}).get("gate") or {}).get("promoted"))


def _listed_temperature(folder: Path) -> float | None:
    """What ``listing`` shows: the entry's temperature (1 without calibration.json), None
    when calibration.json is unreadable (the entry will not load either)."""
    try:
        return read_temperature(folder)
    except ModelLoadError:
        return None


class ModelRegistry:
    """models/ under data_dir and the `models` table; ``Store.registry`` is the instance."""

    def __init__(self, root: Path, engine: Engine):
        self.root = Path(root)
        self.engine = engine

    # ---- folders -------------------------------------------------------------------------

    def versions(self) -> list[str]:
        """Existing version folders, oldest first."""
        if not self.root.is_dir():
            return []
        names = [p.name for p in self.root.iterdir() if p.is_dir() and _VERSION.match(p.name)]
        return sorted(names, key=lambda n: int(n[1:]))

    def path(self, version: str) -> Path:
        if not _VERSION.match(version or ""):
            raise StorageError(f"{version!r} is not a model version (like v0001)")
        return self.root / version

    def new_version(self) -> tuple[str, Path]:
        """Reserve the next version folder (mkdir is exclusive, so two trainers never clash)."""
        self.root.mkdir(parents=True, exist_ok=True)
        existing = self.versions()
        n = int(existing[-1][1:]) + 1 if existing else 1
        while True:
            version = f"v{n:04d}"
            try:
                (self.root / version).mkdir()
                return version, self.root / version
            except FileExistsError:
                n += 1

    @staticmethod
    def make_durable(folder: Path) -> None:
        """fsync every file under ``folder`` (Keras writes without fsync), then the folders."""
        dirs = [folder]
        for path in sorted(folder.rglob("*")):
            if path.is_dir():
                dirs.append(path)
            elif path.is_file():
                files.fsync_file(path)
        for d in reversed(dirs):
            files.fsync_dir(d)
        files.fsync_dir(folder.parent)

    def current(self) -> str | None:
        """The promoted version, or None when nothing is promoted yet."""
        try:
            version = (self.root / CURRENT).read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            return None
        if not _VERSION.match(version) or not (self.root / version).is_dir():
            logger.error("models/CURRENT names %r, which is not in the registry", version)
            return None
        return version

    def current_path(self) -> Path | None:
        version = self.current()
        return None if version is None else self.root / version

    # ---- entries -------------------------------------------------------------------------

    def entry(self, version: str) -> EntryInfo:
        """``version``'s checked metadata (read_entry); ModelLoadError when unusable."""
        return read_entry(self.path(version))

    def promotable(self, version: str) -> EntryInfo:
        """Raise RegistryEntryError/ModelLoadError unless ``version`` exists, is complete and
        its files are usable; the Keras model itself is vision.model's to check."""
        folder = self.path(version)
        if not folder.is_dir():
            raise RegistryEntryError(f"model version {version} does not exist")
        state = entry_state(folder)
        if state != "complete":
            raise RegistryEntryError(
                f"model {version} is {state} (its training did not finish); it cannot be promoted"
            )
        return read_entry(folder)

    def listing(self) -> list[dict[str, Any]]:
        """Every version folder, oldest first, with its state, test metrics and gate note."""
        current = self.current()
        rows = {r["version"]: r for r in self.rows()}
        out = []
        for version in self.versions():
            folder = self.path(version)
            metrics = read_metrics(folder) or {}
            test = metrics.get("test", {})
            row = rows.get(version, {})
            out.append(
                {
                    "version": version,
                    "state": entry_state(folder),
                    "current": version == current,
                    "created": row.get("created"),
                    "test_accuracy": test.get("accuracy"),
                    "test_accuracy_ci": test_interval(test),
                    "test_loss": test.get("loss"),
                    "test_images": test.get("images"),
                    "arch": (row.get("metrics") or {}).get("arch"),
                    "image_size": (row.get("metrics") or {}).get("image_size"),
                    "passed_gate": (metrics.get("gate") or {}).get("promoted"),
                    "temperature": _listed_temperature(folder),
                    # per class: the precision and coverage of auto-accepting, on its test split
                    "auto_accept": metrics.get("auto_accept") or None,
                    "note": row.get("note") or (metrics.get("gate") or {}).get("reason"),
                    "path": str(folder),
                }
            )
        return out

    # ---- the models table ------------------------------------------------------------------

    def record(
        self,
        version: str,
        metrics: dict | None,
        manifest_hash: str | None,
        promoted: bool = False,
        note: str = "",
    ) -> None:
        """One row per trained version: its summary metrics, dataset hash and gate note."""
        with self.engine.begin() as conn:
            if promoted:
                conn.execute(update(models).values(promoted=False))
            conn.execute(
                insert(models).values(
                    version=version,
                    created=utcnow(),
                    metrics=metrics,
                    manifest_hash=manifest_hash,
                    promoted=promoted,
                    note=note,
                )
            )

    def register(
        self,
        version: str,
        metrics: dict | None,
        manifest_hash: str | None,
        *,
        promote: bool,
        reason: str,
    ) -> None:
        """Record a newly trained version; only then, when it passed the promotion gate, put
        it in service (a crash in between leaves it recorded, not promoted)."""
        self.record(version, metrics, manifest_hash, promoted=False, note=reason)
        if promote:
            self.promote(version, reason)

    def rows(self) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(models).order_by(models.c.version)).all()
        return [{**r._mapping, "created": iso(r.created)} for r in rows]

    def latest_row(self) -> dict[str, Any] | None:
        """The newest trained version's row (promoted or not)."""
        rows = self.rows()
        return max(rows, key=lambda r: int(r["version"][1:])) if rows else None

    # ---- promotion -----------------------------------------------------------------------

    def promote(self, version: str, reason: str = "") -> None:
        """Put ``version`` in service: models/CURRENT (atomically), then its DB row.

        The version's files and folder are fsynced first: after a power loss CURRENT never
        names a model whose bytes did not reach the disk. ``reason`` becomes the row's note
        (empty: the note stays). Callers check the entry first (``promotable`` and
        vision.model) unless they have just evaluated it.
        """
        folder = self.path(version)
        if not folder.is_dir():
            raise RegistryEntryError(f"model version {version} does not exist")
        previous = self.current()
        self.make_durable(folder)
        files.atomic_write(self.root / CURRENT, version + "\n")
        with self.engine.begin() as conn:
            conn.execute(update(models).values(promoted=False))
            conn.execute(
                update(models)
                .where(models.c.version == version)
                .values(promoted=True, note=reason or models.c.note)
            )
        logger.info("models/CURRENT: %s -> %s", previous, version)

    def rollback_order(self, current: str) -> list[str]:
        """Versions older than ``current`` in the order a rollback tries them: those that
        passed their promotion gate when trained (they served before) first, newest first."""
        older = [v for v in reversed(self.versions()) if int(v[1:]) < int(current[1:])]
        served = [v for v in older if passed_gate(self.path(v))]
        return served + [v for v in older if v not in served]

    def previous_version(self, current: str) -> str | None:
        """The version a rollback returns to first, when it loads: the newest older one that
        was promoted when trained, else the newest older complete one."""
        complete = [
            v for v in self.rollback_order(current) if entry_state(self.path(v)) == "complete"
        ]
        return complete[0] if complete else None

    def rollback(self, check: Callable[[str], Any]) -> tuple[str, str]:
        """Promote the newest usable version older than CURRENT; return (old, new).

        ``check(version)`` raises RegistryEntryError/ModelLoadError for a version that cannot
        serve (vision.model.check_promotable: files and the Keras model).
        """
        current = self.current()
        if current is None:
            raise RegistryEntryError("no model is promoted, so there is nothing to roll back from")
        problems = []
        for version in self.rollback_order(current):
            try:
                check(version)
            except (RegistryEntryError, ModelLoadError) as exc:
                problems.append(str(exc))
                continue
            self.promote(version, f"rolled back from {current}")
            return current, version
        detail = ("; ".join(problems[:3])) if problems else "it is the oldest version"
        raise RegistryEntryError(f"no older usable model to roll back to from {current}: {detail}")
