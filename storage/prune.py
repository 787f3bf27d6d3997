"""`pingo prune`: delete what retention no longer asks to keep.

- Rejected images whose rejection is older than ``keep_rejected_days`` (by the row's
  updated_at and the file's mtime, whichever is newer). The file goes; the row stays, with
  status rejected, its reason and no path, so the image is still accounted for exactly once:
  its sha256 still refuses the same bytes and its URL is still never fetched again.
  The row is changed first, then the file deleted: a crash in between leaves a file named for
  a pruned row, which the next prune (or `pingo check --repair`) deletes.
- Model versions beyond the newest ``keep_models``, never the promoted one, the one a
  rollback would return to, nor the newest (so a version number is never reused). A version
  folder is renamed to a hidden name first, then deleted, so a half-deleted entry is never
  seen as a model.

Run it under the job lock (the CLI and the scheduler do): a training run in progress owns the
newest version folder, and a factory run moves rejected files.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select, update

from storage import files
from storage.check import hash_name, is_temp, walk
from storage.errors import StorageError
from storage.registry import CURRENT, ModelRegistry
from storage.schema import images, pending_moves
from storage.store import Store, utcnow

logger = logging.getLogger(__name__)

PRUNED_PREFIX = ".pruned-"  # a model folder being deleted


class PruneError(StorageError):
    """A model version could not be taken out of the registry (permissions, a busy mount)."""


@dataclass
class PruneResult:
    dry_run: bool
    rejected_files: int = 0
    rejected_bytes: int = 0
    leftovers: int = 0  # files of rows pruned before a crash
    models: list[str] = field(default_factory=list)  # versions deleted
    model_bytes: int = 0
    kept_models: dict[str, str] = field(default_factory=dict)  # version -> why it stays
    models_skipped: str | None = None  # why no model was considered

    def as_json(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "rejected_files": self.rejected_files,
            "rejected_bytes": self.rejected_bytes,
            "leftovers": self.leftovers,
            "models": self.models,
            "model_bytes": self.model_bytes,
            "kept_models": self.kept_models,
            "models_skipped": self.models_skipped,
        }


def prune(
    store: Store,
    keep_rejected_days: float,
    keep_models: int,
    dry_run: bool = False,
    now: datetime | None = None,
) -> PruneResult:
    result = PruneResult(dry_run)
    prune_rejected(store, keep_rejected_days, result, now or utcnow())
    prune_models(store.registry, keep_models, result)
    return result


# ---- rejected images -----------------------------------------------------------------------


def prune_rejected(
    store: Store, keep_days: float, result: PruneResult, now: datetime, batch: int = 500
) -> None:
    cutoff = now - timedelta(days=keep_days)
    cutoff_ts = cutoff.replace(tzinfo=UTC).timestamp()
    query = (
        select(images.c.id, images.c.path)
        .where(images.c.status == "rejected")
        .where(images.c.path.is_not(None))
        .where(images.c.updated_at < cutoff)
        .where(images.c.id.not_in(select(pending_moves.c.image_id)))
        .order_by(images.c.id)
    )
    last = 0
    while True:
        with store.engine.connect() as conn:
            rows = conn.execute(query.where(images.c.id > last).limit(batch)).all()
        if not rows:
            break
        last = rows[-1].id
        due = []
        for r in rows:
            try:
                st = store.abspath(r.path).stat()
            except FileNotFoundError:
                continue  # not ours to hide: `pingo check` reports a missing file
            if st.st_mtime < cutoff_ts:
                due.append((r.id, r.path, st.st_size))
        if result.dry_run:
            result.rejected_files += len(due)
            result.rejected_bytes += sum(size for _, _, size in due)
            continue
        gone = []
        with store.engine.begin() as conn:
            for image_id, path, size in due:
                # only if still rejected at that path (a person may have just restored it)
                n = conn.execute(
                    update(images)
                    .where(images.c.id == image_id)
                    .where(images.c.status == "rejected")
                    .where(images.c.path == path)
                    .values(path=None, updated_at=now)
                ).rowcount
                if n:
                    gone.append((path, size))
        for path, size in gone:
            try:
                store.abspath(path).unlink(missing_ok=True)
            except OSError as exc:  # the row is pruned already: the next sweep retries
                logger.warning("could not delete %s (%s); the next prune retries", path, exc)
                continue
            result.rejected_files += 1
            result.rejected_bytes += size
    result.leftovers += sweep_leftovers(store, result.dry_run)
    if result.rejected_files:
        logger.info(
            "pruned %d rejected images (%d bytes)%s",
            result.rejected_files,
            result.rejected_bytes,
            " (dry run)" if result.dry_run else "",
        )


def sweep_leftovers(store: Store, dry_run: bool) -> int:
    """Delete files under rejected/ named for a row already pruned (a prune that crashed)."""
    with store.engine.connect() as conn:
        names = {
            sha[:24]
            for sha in conn.execute(
                select(images.c.sha256)
                .where(images.c.status == "rejected")
                .where(images.c.path.is_(None))
            ).scalars()
        }
    if not names:
        return 0
    with store.engine.connect() as conn:
        live = set(
            conn.execute(
                select(images.c.path)
                .where(images.c.path.is_not(None))
                .where(images.c.status == "rejected")
            ).scalars()
        )
    n = 0
    for p in walk(store.data_dir / "rejected"):
        rel = p.relative_to(store.data_dir).as_posix()
        if not is_temp(p) and rel not in live and hash_name(rel) in names:
            if not dry_run:
                try:
                    p.unlink(missing_ok=True)
                except OSError as exc:
                    logger.warning("could not delete %s (%s)", rel, exc)
                    continue
                logger.warning("deleted %s: its image was pruned before", rel)
            n += 1
    return n


# ---- model versions ------------------------------------------------------------------------


def kept_versions(registry: ModelRegistry, keep: int) -> dict[str, str]:
    """version -> why it stays."""
    versions = registry.versions()
    why: dict[str, str] = {}
    for v in versions[-keep:] if keep > 0 else ():
        why[v] = f"among the newest {keep}"
    if versions:
        why[versions[-1]] = "newest"
    current = registry.current()
    if current:
        why[current] = "promoted"
        prev = registry.previous_version(current)
        if prev:
            why[prev] = "previous (rollback target)"
    return dict(sorted(why.items()))


def prune_models(registry: ModelRegistry, keep: int, result: PruneResult) -> None:
    root = registry.root
    if not root.is_dir():
        return
    for half in root.glob(PRUNED_PREFIX + "*"):  # a prune that was interrupted
        if not result.dry_run:
            shutil.rmtree(half, ignore_errors=True)
    if (root / CURRENT).exists() and registry.current() is None:
        result.models_skipped = (
            "models/CURRENT names no version in the registry, so the "
            "promoted model is unknown; run `pingo check`"
        )
        logger.warning("not pruning models: %s", result.models_skipped)
        return
    result.kept_models = kept_versions(registry, keep)
    for version in registry.versions():
        if version in result.kept_models:
            continue
        folder = registry.path(version)
        size = _size(folder)
        if not result.dry_run:
            doomed = root / f"{PRUNED_PREFIX}{version}"
            try:
                os.replace(folder, doomed)  # gone from the registry at once
            except OSError as exc:
                raise PruneError(
                    f"cannot remove model {version} from {root}: {exc.strerror}"
                ) from exc
            files.fsync_dir(root)
            shutil.rmtree(doomed, ignore_errors=True)
            logger.info("pruned model %s (%d bytes)", version, size)
        result.models.append(version)
        result.model_bytes += size


def _size(folder: Path) -> int:
    total = 0
    for p in walk(folder):
        try:
            total += p.stat(follow_symlinks=False).st_size
        except OSError:
            pass
    return total
