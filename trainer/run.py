"""The library entry points: ``should_train`` (the gate) and ``train`` (one full run).

A run reads the accepted images, splits them by content hash, moves keyword-labelled images
that out-of-fold predictions contradict to review/ (trainer.cleaning, train.clean_labels),
trains with early stopping, a best checkpoint and a plateau schedule, writes a complete
registry entry, evaluates the saved model.keras as Keras will load it, and promotes it only if
it is at least as good as the current model on the same test split. models/CURRENT is written
last and only on success, so a failed or interrupted run never changes the model in service.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.config import Config, TrainConfig, override
from storage.registry import MODEL
from trainer import cleaning, data, promotion_gate, registry_writer, training_gate
from trainer.errors import TrainerError
from trainer.models import BACKBONES, IMAGENET, NO_WEIGHTS, build_model

if TYPE_CHECKING:
    from storage import Store

logger = logging.getLogger(__name__)


@dataclass
class TrainResult:
    trained: bool
    reason: str  # why it did not train, or the promotion decision
    version: str | None = None
    promoted: bool = False
    path: Path | None = None
    metrics: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "trained": self.trained,
            "reason": self.reason,
            "version": self.version,
            "promoted": self.promoted,
            "path": str(self.path) if self.path else None,
            "metrics": self.metrics,
        }


def effective_train_config(base: TrainConfig, overrides: dict[str, Any] | None) -> TrainConfig:
    """``base`` with one run's overrides, checked like the config file (None values ignored)."""
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    return override(base, overrides)


def should_train(config: Config, store: Store) -> tuple[bool, str]:
    """True when every class has reached its target and the dataset changed since the last
    model (any model trained, promoted or not); the reason says which condition decided."""
    return training_gate.should_train(config, store)


def train(
    config: Config,
    store: Store,
    force: bool = False,
    overrides: dict[str, Any] | None = None,
    progress: bool = False,
) -> TrainResult:
    """Train, register and maybe promote one model; ``force`` skips the should_train gate."""
    tc = effective_train_config(config.train, overrides)
    tc = _resolve_weights(tc, config.base_dir)
    if not force:
        ok, reason = should_train(config, store)
        if not ok:
            logger.info("not training: %s", reason)
            return TrainResult(False, reason)
    plan = data.plan_from_store(
        store,
        training_gate.training_classes(config, store),
        tc.val_fraction,
        tc.test_fraction,
        tc.learn_from_review,
    )
    data.check_enough(plan)

    from trainer.devices import choose_placement
    from trainer.fit import fit

    if tc.weights == IMAGENET:
        # Download (or find in Keras' cache) before anything is written: offline, the run
        # fails here with one line and no registry entry.
        build_model(tc.arch, tc.image_size, len(plan.classes), tc.weights)

    placement = choose_placement()
    if tc.deterministic:
        _make_deterministic()
    if not placement.is_chief:
        return _train_as_worker(
            plan, tc, placement, progress, store.data_dir / "cache", config.factory.max_pixels
        )
    version, folder = store.registry.new_version()
    logger.info(
        "training %s: %s at %d px on %s; images per split %s",
        version,
        tc.arch,
        tc.image_size,
        placement.description,
        {s: sum(c.values()) for s, c in plan.counts().items()},
    )
    started = time.time()
    checked: cleaning.Cleaning | None = None
    try:
        if tc.clean_labels and _multi_worker(placement):
            # Workers read the accepted images themselves and must not move any: a chief
            # that trained on fewer images would leave them out of step.
            checked = cleaning.skip(plan, tc, folder, "multi-worker run (TF_CONFIG)")
        elif tc.clean_labels:
            # Before fit, inside the try: a failed or killed check marks the entry failed;
            # the images it moved stay in review/ (storage's moves are crash-safe).
            plan, checked = cleaning.clean(
                store, config, tc, plan, folder, version, progress=progress
            )
        outcome = fit(
            plan,
            tc,
            placement,
            folder,
            progress=progress,
            cache_dir=store.data_dir / "cache",
            max_pixels=config.factory.max_pixels,
        )
        written = registry_writer.write_entry(
            folder,
            version,
            plan,
            tc,
            placement,
            outcome,
            started=started,
            max_pixels=config.factory.max_pixels,
            reliability=keyword_reliability(config, store, plan.classes, checked),
            target_precision=config.factory.target_precision,
        )
        decision = promotion_gate.promotion_decision(store, config, tc, plan, written)
        registry_writer.finish_entry(folder, written, decision)
    except BaseException as exc:
        registry_writer.mark_failed(folder, exc)
        logger.error(
            "training %s failed (%s); models/CURRENT is unchanged", version, type(exc).__name__
        )
        raise
    store.registry.register(
        version,
        registry_writer.summary(written, decision),
        plan.manifest_hash(),
        promote=decision.promoted,
        reason=decision.reason,
    )
    logger.info(
        "%s: test accuracy %.4f, loss %.4f; %s",
        version,
        written.test["accuracy"],
        written.test["loss"],
        decision.reason,
    )
    metrics = registry_writer.summary(written, decision)
    if checked is not None:
        metrics["cleaning"] = checked.summary()
    return TrainResult(True, decision.reason, version, decision.promoted, folder, metrics)


def _make_deterministic() -> None:
    """TensorFlow op determinism for the rest of this process (it cannot be turned off).

    Without it, two trainings on the same images with the same seed differed by up to 0.19
    held-out accuracy (thread scheduling in reductions and in tf.data), and which model
    got promoted was partly chance. On 2 CPU cores it cost no measurable time.
    """
    import tensorflow as tf

    tf.config.experimental.enable_op_determinism()


def _multi_worker(placement) -> bool:
    import tensorflow as tf

    return isinstance(placement.strategy, tf.distribute.MultiWorkerMirroredStrategy)


def keyword_reliability(
    config: Config, store: Store, classes: list[str], checked: cleaning.Cleaning | None
) -> dict[str, float]:
    """How often each class's keyword is right, as the factory will estimate it once this
    model is promoted (people's review decisions and this run's label check): the auto-accept
    precision and coverage recorded with the model are measured at these."""
    from vision.evidence import reliability_from_store

    report = checked.reliability_report() if checked else {}
    estimate = reliability_from_store(store, config.factory.keyword_prior, report)
    return {c: estimate.of_class(c) for c in classes}


def _resolve_weights(tc: TrainConfig, base_dir: Path) -> TrainConfig:
    """train.weights checked before anything is written: a file is read beside pingo.toml
    and must exist; weights need a keras.applications backbone."""
    if tc.weights == NO_WEIGHTS:
        return tc
    if tc.arch not in BACKBONES:
        raise TrainerError(
            f"train.weights is set but {tc.arch} has no pretrained backbone; "
            f"use one of {', '.join(BACKBONES)}"
        )
    if tc.weights == IMAGENET:
        return tc
    path = base_dir / tc.weights  # an absolute tc.weights stays as it is
    if not path.is_file():
        raise TrainerError(f"train.weights: no weights file at {path}")
    return dataclasses.replace(tc, weights=str(path))


def _train_as_worker(
    plan, tc: TrainConfig, placement, progress: bool, cache_dir: Path, max_pixels: int
) -> TrainResult:
    """A non-chief worker of a multi-worker run: trains in step with the chief (every worker
    must run every step and save), but writes nothing to the registry."""
    import tempfile

    from trainer.fit import fit
    from trainer.registry_writer import save_model

    with tempfile.TemporaryDirectory(prefix="pingo-worker-") as scratch:
        outcome = fit(
            plan,
            tc,
            placement,
            Path(scratch),
            progress=progress,
            cache_dir=cache_dir,
            max_pixels=max_pixels,
        )
        save_model(outcome.model, Path(scratch) / MODEL)
    return TrainResult(
        True, f"trained as a worker on {placement.description}; the chief writes the registry entry"
    )
