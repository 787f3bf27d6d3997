"""The registry as users see it: list versions, promote one by hand, roll back.

Nothing here trains. Promotion always checks that the entry is complete and that its
model.keras loads in Keras safe mode and matches the configured classes, so CURRENT never
names a model the factory cannot use.
"""

from __future__ import annotations

import logging
from typing import Any

from trainer import entry
from trainer.errors import ModelLoadError, RegistryEntryError

logger = logging.getLogger(__name__)


def list_models(store) -> list[dict[str, Any]]:
    """Every version folder, oldest first, with its state, test metrics and gate note."""
    registry = store.registry
    current = registry.current()
    rows = {r["version"]: r for r in store.model_rows()}
    out = []
    for version in registry.versions():
        folder = registry.path(version)
        metrics = entry.read_metrics(folder) or {}
        test = metrics.get("test", {})
        row = rows.get(version, {})
        out.append({
            "version": version,
            "state": entry.entry_state(folder),
            "current": version == current,
            "created": row.get("created"),
            "test_accuracy": test.get("accuracy"),
            "test_loss": test.get("loss"),
            "test_images": test.get("images"),
            "arch": (row.get("metrics") or {}).get("arch"),
            "image_size": (row.get("metrics") or {}).get("image_size"),
            "passed_gate": (metrics.get("gate") or {}).get("promoted"),
            "note": row.get("note") or (metrics.get("gate") or {}).get("reason"),
            "path": str(folder),
        })
    return out


def check_promotable(store, config, version: str) -> entry.LoadedModel:
    """Raise RegistryEntryError/ModelLoadError unless ``version`` can serve the factory."""
    folder = store.registry.path(version)
    if not folder.is_dir():
        raise RegistryEntryError(f"model version {version} does not exist")
    state = entry.entry_state(folder)
    if state != "complete":
        raise RegistryEntryError(f"model {version} is {state} (its training did not finish); "
                                 "it cannot be promoted")
    loaded = entry.load_entry_model(folder)
    wanted = sorted(config.classes)
    if loaded.classes != wanted:
        raise ModelLoadError(f"model {version} predicts {loaded.classes} but the config has "
                             f"classes {wanted}")
    return loaded


def promote(store, config, version: str, note: str | None = None) -> str:
    """Make ``version`` the model in service (after checking it loads); return it."""
    check_promotable(store, config, version)
    previous = store.registry.current()
    store.registry.promote(version)
    store.mark_promoted(version, note=note or f"promoted by hand (was {previous or 'none'})")
    logger.info("models/CURRENT: %s -> %s", previous, version)
    return version


def rollback(store, config) -> tuple[str, str]:
    """Promote the newest usable version older than CURRENT; return (old, new).

    Versions that passed their promotion gate when trained (they served before) come first;
    otherwise any older complete version that loads.
    """
    current = store.registry.current()
    if current is None:
        raise RegistryEntryError("no model is promoted, so there is nothing to roll back from")
    older = [v for v in reversed(store.registry.versions()) if int(v[1:]) < int(current[1:])]
    served = [v for v in older
              if ((entry.read_metrics(store.registry.path(v)) or {}).get("gate") or {})
              .get("promoted")]
    problems = []
    for version in served + [v for v in older if v not in served]:
        try:
            check_promotable(store, config, version)
        except (RegistryEntryError, ModelLoadError) as exc:
            problems.append(str(exc))
            continue
        store.registry.promote(version)
        store.mark_promoted(version, note=f"rolled back from {current}")
        logger.info("rolled back models/CURRENT: %s -> %s", current, version)
        return current, version
    detail = ("; ".join(problems[:3])) if problems else "it is the oldest version"
    raise RegistryEntryError(f"no older usable model to roll back to from {current}: {detail}")
