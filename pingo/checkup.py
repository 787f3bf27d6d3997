"""`pingo check`: the storage checks (storage.check) plus the two that need other layers:
the near-duplicate index sidecars against the kept rows (dataset_factory), and models/CURRENT
naming a model that loads (trainer). Everything runs under the job lock, so no job moves
files while it looks.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from pathlib import Path

from core.config import Config
from core.errors import PingoError
from core.names import HASH_METHODS
from scheduler.lock import JobLock
from storage import Store
from storage.check import Problem, Report, check_storage
from storage.registry import CURRENT

logger = logging.getLogger(__name__)

MORE_KINDS = {
    "index_unreadable": "a near-duplicate index file that cannot be read",
    "index_mismatch": "a near-duplicate index that does not list exactly the kept images",
    "current_model": "models/CURRENT names no model the factory can load",
}
MORE_FIXABLE = {"index_unreadable", "index_mismatch"}
_SIDECAR = re.compile(rf"^near-duplicates-({'|'.join(HASH_METHODS)})(-plain)?\.npz$")


def check(config: Config, repair: bool = False, wait: float = 0.0) -> Report:
    """Check the data folder (and with ``repair`` fix what needs no guess); never raises for
    a problem found, only when the folder cannot be checked at all (BusyError, CheckError)."""
    # repair=False: opening must not hide what the check is meant to find
    with (
        JobLock(config.data_dir).hold("check", wait=wait),
        Store.from_config(config, repair=False) as store,
    ):
        report = check_storage(store, repair_too=repair)
        report.kinds.update(MORE_KINDS)
        report.fixable |= MORE_FIXABLE
        found = index_problems(store)
        if repair and found:
            report.repaired.update(rebuild_indexes(config, store, found))
            found = index_problems(store)
        report.problems += found + model_problems(store, config)
    logger.info(
        "check: %s, %d problems, repaired %s",
        "sound" if report.sound else "NOT sound",
        len(report.problems),
        dict(report.repaired) or "nothing",
    )
    return report


def _kept_ids(store: Store) -> set[int]:
    from dataset_factory.dedupe import KEPT

    return store.ids_with_files(KEPT)


def _sidecars(store: Store) -> list[tuple[Path, str, bool]]:
    folder = store.data_dir / "index"
    out = []
    for p in sorted(folder.glob("near-duplicates-*.npz")) if folder.is_dir() else ():
        m = _SIDECAR.match(p.name)
        if m:
            out.append((p, m.group(1), not m.group(2)))
    return out


def index_problems(store: Store) -> list[Problem]:
    """Each sidecar must list every kept image once and nothing else.

    A missing sidecar is sound: the next factory run builds it from the DB.
    """
    from dataset_factory.index import NearDuplicateIndex

    kept = _kept_ids(store)
    problems = []
    for path, method, _hard in _sidecars(store):
        rel = path.relative_to(store.data_dir).as_posix()
        index = NearDuplicateIndex.load(path, method)
        if index is None:
            problems.append(Problem("index_unreadable", rel, detail="damaged or another format"))
            continue
        ids = index.main.ids.tolist()
        have = set(ids)
        lacking, extra = kept - have, have - kept
        twice = len(ids) - len(have)
        stray_views = set(index.views.ids.tolist()) - have
        if lacking or extra or twice or stray_views:
            parts = [
                f"{n} {what}"
                for n, what in (
                    (len(lacking), "kept images missing"),
                    (len(extra), "ids not kept"),
                    (twice, "ids listed twice"),
                    (len(stray_views), "views of unlisted ids"),
                )
                if n
            ]
            example = sorted(lacking or extra)[:5]
            problems.append(
                Problem(
                    "index_mismatch",
                    rel,
                    detail=", ".join(parts) + (f" (e.g. images {example})" if example else ""),
                )
            )
    return problems


def rebuild_indexes(config: Config, store: Store, problems: list[Problem]) -> dict[str, int]:
    """Rebuild each named sidecar from the kept rows (re-hashing their files), under the
    factory lock so no factory worker saves over it meanwhile."""
    from dataset_factory.dedupe import open_index
    from dataset_factory.hash_pool import Analyser
    from dataset_factory.index_sync import LOCK
    from dataset_factory.run import settings_from

    done: dict[str, int] = {}
    bad = {p.path: p.kind for p in problems}
    for path, method, hard in _sidecars(store):
        kind = bad.get(path.relative_to(store.data_dir).as_posix())
        if kind is None:
            continue
        settings = dataclasses.replace(settings_from(config), method=method, hard=hard)
        with store.exclusive(LOCK), Analyser(settings, config.factory.workers) as analyser:
            path.unlink(missing_ok=True)  # from scratch: a sidecar in doubt is not reused
            index = open_index(store, analyser, method, hard)
            index.save(path)
        logger.warning("check: rebuilt %s from %d kept images", path.name, len(index))
        done[kind] = done.get(kind, 0) + 1
    return done


def model_problems(store: Store, config: Config) -> list[Problem]:
    """models/CURRENT, when present, must name a complete entry that loads and fits the
    configured classes (what `pingo models promote` demands). No CURRENT is sound."""
    current = store.registry.root / CURRENT
    try:
        version = current.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return []
    except OSError as exc:
        version, error = None, f"unreadable: {exc.strerror}"
    if version is not None:
        from vision.model import check_promotable

        try:
            check_promotable(store.registry, version, config.classes)
            return []
        except PingoError as exc:
            error = str(exc)
    return [
        Problem(
            "current_model",
            "models/CURRENT",
            detail=f"{error}; fix it with "
            "`pingo models rollback` or `pingo models promote VERSION`",
        )
    ]
