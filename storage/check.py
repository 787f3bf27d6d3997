"""Is the data folder sound? Every row against the files under data_dir, and back.

The rules (docs/maintenance.md): every image row with a path has its file there, under the
folder its status and label (or reject reason) name; every file under inbox/, dataset/,
review/ and rejected/ is exactly one row's file; no image is stored in two places; the
per-folder file counts equal the DB's; no file move is left pending by a dead process and no
temp file by a dead writer. A rejected row without a path is sound: its file was pruned (or
found missing), the row stays so the image is still accounted for and never fetched again.

``scan`` only reads. ``repair`` fixes what needs no guess (see FIXABLE) and leaves the rest
reported. Run both under the job lock: a move in flight looks like a problem to a scan.
Nothing here imports TensorFlow; the index and model checks live in pingo.checkup.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC
from pathlib import Path
from typing import Any, cast

from sqlalchemy import select, update

from core.errors import PingoError, UnsafeNameError
from storage import files
from storage.errors import StorageError
from storage.schema import images, pending_moves
from storage.store import Store, utcnow

logger = logging.getLogger(__name__)

# kind -> what it means (the human report prints these)
KINDS = {
    "stale_pending_move": "a file move left half-done by a process that is gone",
    "orphan_temp": "a temp file left by a writer that is gone",
    "missing_file": "a row whose file is not where the row says",
    "misfiled": "a file in the wrong folder for its row's status or label",
    "bad_row": "a row that names no usable place (no label, or an unsafe one)",
    "shared_path": "two rows that name the same file",
    "extra_copy": "a second copy of an image that is stored elsewhere",
    "pruned_leftover": "the file of a pruned image, not yet deleted",
    "unknown_file": "a file that no row accounts for",
    "count_mismatch": "a folder whose file count differs from the DB's",
}
# What ``repair`` fixes without guessing. unknown_file is reported and left alone: it may be
# a person's own copy, and a row for it would have to guess its class (docs/maintenance.md).
FIXABLE = {
    "stale_pending_move",
    "orphan_temp",
    "missing_file",
    "misfiled",
    "extra_copy",
    "pruned_leftover",
}
# What a person does about those --repair leaves (printed under them).
HINTS = {
    "unknown_file": "not pingo's: to keep it, move it out and `pingo import` its folder; "
    "else delete it",
    "shared_path": "decide which image owns the file; `pingo images --json` lists both rows",
    "count_mismatch": "follows from the problems listed with it",
}
MISSING_REASON = "file_missing"
_HEX = set("0123456789abcdef")


class CheckError(StorageError):
    """The data folder cannot be checked (it does not exist, or the DB cannot be read)."""


@dataclass(frozen=True)
class Problem:
    kind: str
    path: str | None = None  # relative to data_dir
    image_id: int | None = None
    detail: str = ""
    found: str | None = None  # missing_file: its one verified copy elsewhere

    def as_json(self) -> dict[str, Any]:
        out = {
            "kind": self.kind,
            "path": self.path,
            "image_id": self.image_id,
            "detail": self.detail,
        }
        return {k: v for k, v in out.items() if v not in (None, "")}


@dataclass
class Report:
    problems: list[Problem] = field(default_factory=list)
    repaired: Counter = field(default_factory=Counter)
    kinds: dict[str, str] = field(default_factory=lambda: dict(KINDS))
    fixable: set[str] = field(default_factory=lambda: set(FIXABLE))

    @property
    def sound(self) -> bool:
        return not self.problems

    def by_kind(self) -> dict[str, list[Problem]]:
        groups: dict[str, list[Problem]] = defaultdict(list)
        for p in self.problems:
            groups[p.kind].append(p)
        return dict(sorted(groups.items()))

    def as_json(self) -> dict[str, Any]:
        return {
            "sound": self.sound,
            "problems": [
                {
                    "kind": kind,
                    "count": len(ps),
                    "what": self.kinds.get(kind, kind),
                    "fixable": kind in self.fixable,
                    "items": [p.as_json() for p in ps],
                }
                for kind, ps in self.by_kind().items()
            ],
            "repaired": dict(sorted(self.repaired.items())),
        }


@dataclass
class _Row:
    id: int
    sha256: str
    status: str
    reason: str | None
    label: str | None
    path: str | None


def pruned(row) -> bool:
    """A rejected row whose file was deleted on purpose (its sha256 and URL stay known)."""
    return row.status == "rejected" and row.path is None and row.reason != MISSING_REASON


# ---- reading -------------------------------------------------------------------------------


def _rows(store: Store, batch: int = 5000) -> Iterator[_Row]:
    cols = (
        images.c.id,
        images.c.sha256,
        images.c.status,
        images.c.reason,
        images.c.label,
        images.c.path,
    )
    last = 0
    while True:
        with store.engine.connect() as conn:
            got = conn.execute(
                select(*cols).where(images.c.id > last).order_by(images.c.id).limit(batch)
            ).all()
        if not got:
            return
        for r in got:
            yield _Row(*r)
        last = got[-1].id


def _pending(store: Store) -> tuple[list, list]:
    """(live, stale) pending moves: live ones belong to a process still running."""
    with store.engine.connect() as conn:
        rows = conn.execute(select(pending_moves)).all()
    live: list = []
    stale: list = []
    for p in rows:
        since = p.created_at.replace(tzinfo=UTC).timestamp()
        (live if files.owner_alive(p.owner, since) else stale).append(p)
    return live, stale


def walk(root: Path) -> Iterator[Path]:
    stack = [root]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except FileNotFoundError:
            continue
        for e in entries:
            if e.is_dir(follow_symlinks=False):
                stack.append(Path(e.path))
            else:
                yield Path(e.path)


def image_files(data_dir: Path) -> tuple[list[str], list[Path]]:
    """(files under the four status folders, relative and posix; temp files anywhere)."""
    from storage.attribution import FILES as CREDITS  # dataset/ATTRIBUTION.md, attribution.csv

    credits = {f"{files.STATUS_DIRS['accepted']}/{name}" for name in CREDITS}
    found = []
    for top in files.STATUS_DIRS.values():
        for p in walk(data_dir / top):
            if not is_temp(p):
                found.append(p.relative_to(data_dir).as_posix())
    found = [rel for rel in found if rel not in credits]
    temps = [p for p in data_dir.glob(f"*/**/.*{files.PART_SUFFIX}") if p.is_file()]
    return found, temps


def is_temp(p: Path) -> bool:
    return p.name.startswith(".") and p.name.endswith(files.PART_SUFFIX)


def hash_name(rel: str) -> str | None:
    """The 24-hex sha256 prefix a stored image's file name carries, if it has one."""
    stem = rel.rsplit("/", 1)[-1].split(".", 1)[0]
    return stem if len(stem) == 24 and set(stem) <= _HEX else None


def _sha256_of(path: Path) -> str | None:
    h = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    except OSError:
        return None
    return h.hexdigest()


def _expected(row: _Row) -> str:
    ext = row.path.rsplit(".", 1)[-1] if row.path and "." in row.path.rsplit("/", 1)[-1] else "bin"
    return files.image_relpath(row.status, row.sha256, ext, label=row.label, reason=row.reason)


def _folder(rel: str) -> str:
    return rel.rsplit("/", 1)[0]


# ---- the scan ------------------------------------------------------------------------------


def scan(store: Store) -> list[Problem]:
    """Every disagreement between the DB and the files; reads only."""
    data_dir = store.data_dir
    if not data_dir.is_dir():
        raise CheckError(f"data folder {data_dir} does not exist")
    problems: list[Problem] = []
    live, stale = _pending(store)
    busy_ids = {p.image_id for p in live}
    busy_paths = {x for p in live for x in (p.src, p.dst)}
    for p in stale:
        problems.append(
            Problem(
                "stale_pending_move", p.dst, p.image_id, f"{p.kind} {p.src} -> {p.dst} by {p.owner}"
            )
        )
        busy_ids.add(p.image_id)  # Store.repair() finishes it; judge the row after that
        busy_paths.update((p.src, p.dst))

    on_disk, temps = image_files(data_dir)
    for t in temps:
        if not files.part_owner_alive(t):
            problems.append(Problem("orphan_temp", t.relative_to(data_dir).as_posix()))
    disk = set(on_disk)

    by_path: dict[str, int] = {}  # only ints and paths per row: a million rows fit
    db_count: Counter = Counter()  # folder -> rows that live there
    missing: list[_Row] = []
    for row in _rows(store):
        if row.id in busy_ids:
            if row.path:
                by_path.setdefault(row.path, row.id)
            continue
        if row.path is None:
            if row.status != "rejected":
                missing.append(row)
            continue
        if row.path in by_path:
            problems.append(
                Problem(
                    "shared_path", row.path, row.id, f"also the file of image {by_path[row.path]}"
                )
            )
            continue
        by_path[row.path] = row.id
        try:
            want = _expected(row)
        except (ValueError, StorageError, UnsafeNameError) as exc:
            problems.append(Problem("bad_row", row.path, row.id, str(exc)))
            continue
        db_count[_folder(want)] += 1  # where the DB says it is: status + label/reason
        if row.path not in disk:
            missing.append(row)
            continue
        if want != row.path:
            problems.append(Problem("misfiled", row.path, row.id, f"belongs at {want}"))

    # Files nobody's row names: copies, pruned leftovers, or unknown. A second pass over the
    # rows picks those whose name such a file carries.
    unnamed = sorted(disk - set(by_path) - busy_paths)
    wanted = {hash_name(rel) for rel in unnamed} - {None}
    by_name = (
        {row.sha256[:24]: row for row in _rows(store) if row.sha256[:24] in wanted}
        if wanted
        else {}
    )
    strays: dict[str, list[str]] = defaultdict(list)  # 24-hex name -> stray paths
    for rel in unnamed:
        name = hash_name(rel)
        owner = by_name.get(name) if name else None
        if name is None or owner is None:
            problems.append(Problem("unknown_file", rel))
        elif owner.id in busy_ids:
            continue
        elif pruned(owner):
            problems.append(Problem("pruned_leftover", rel, owner.id))
        else:
            strays[name].append(rel)
    missing_names = {row.sha256[:24] for row in missing}
    for name, rels in strays.items():
        row = by_name[name]
        if name in missing_names:
            continue  # offered to the missing row below
        for rel in rels:
            same = _sha256_of(data_dir / rel) == row.sha256
            if same and row.path is None:  # the lost file of a file_missing row: a person's call
                problems.append(
                    Problem(
                        "unknown_file",
                        rel,
                        row.id,
                        f"the lost file of image {row.id} (rejected, {row.reason})",
                    )
                )
                continue
            problems.append(
                Problem(
                    "extra_copy" if same else "unknown_file",
                    rel,
                    row.id if same else None,
                    f"image {row.id} is at {row.path}" if same else "",
                )
            )
    for row in missing:
        copies = [
            rel
            for rel in strays.get(row.sha256[:24], [])
            if _sha256_of(data_dir / rel) == row.sha256
        ]
        where = row.path or f"(no path; status {row.status})"
        if len(copies) == 1:
            problems.append(
                Problem(
                    "missing_file", where, row.id, f"its file is at {copies[0]}", found=copies[0]
                )
            )
        else:
            problems.append(
                Problem(
                    "missing_file",
                    where,
                    row.id,
                    f"found {len(copies)} copies" if copies else "no copy under data_dir",
                )
            )
        for rel in strays.get(row.sha256[:24], []):
            if rel not in copies or len(copies) > 1:
                problems.append(Problem("unknown_file", rel))

    # The per-folder counts (what a training run or a person browsing the folders sees).
    disk_count = Counter(_folder(rel) for rel in on_disk if rel not in busy_paths)
    for folder in sorted(set(disk_count) | set(db_count)):
        if (
            folder.split("/", 1)[0] in ("dataset", "review", "inbox")
            and disk_count[folder] != db_count[folder]
        ):
            problems.append(
                Problem(
                    "count_mismatch",
                    folder + "/",
                    None,
                    f"{disk_count[folder]} files, DB has {db_count[folder]} images there",
                )
            )
    return problems


# ---- repair --------------------------------------------------------------------------------


def repair(store: Store, problems: list[Problem]) -> Counter:
    """Fix the problems that need no guess; return how many of each kind were fixed."""
    done: Counter = Counter()
    data_dir = store.data_dir
    for p in problems:
        # every kind repaired below carries the path and image id it needs
        path, image_id = cast(str, p.path), cast(int, p.image_id)
        try:
            if p.kind in ("extra_copy", "pruned_leftover"):
                (data_dir / path).unlink(missing_ok=True)
                logger.warning("check: removed %s (%s)", p.path, KINDS[p.kind])
            elif p.kind == "missing_file" and p.found:
                row = store.get_image(image_id)
                target = row["path"] or _expected(
                    _Row(
                        row["id"],
                        row["sha256"],
                        row["status"],
                        row["reason"],
                        row["label"],
                        p.found,
                    )
                )
                files.replace(data_dir / p.found, data_dir / target)
                if row["path"] is None:
                    _set_path(store, image_id, target)
                logger.warning(
                    "check: put image %d back at %s (was at %s)", image_id, target, p.found
                )
            elif p.kind == "missing_file":
                _mark_missing(store, image_id)
            elif p.kind == "misfiled":
                row = store.get_image(image_id)
                # to where status + label say; the same label source, so a person's
                # decision is carried along, not overridden
                store.move(image_id, row["status"], label_source=row["label_source"])
                logger.warning("check: moved image %d from %s into its folder", image_id, p.path)
            else:
                continue
        except (OSError, PingoError, ValueError) as exc:
            logger.error("check: could not fix %s %s: %s", p.kind, p.path, exc)
            continue
        done[p.kind] += 1
    return done


def _set_path(store: Store, image_id: int, path: str) -> None:
    with store.engine.begin() as conn:
        conn.execute(
            update(images).where(images.c.id == image_id).values(path=path, updated_at=utcnow())
        )


def _mark_missing(store: Store, image_id: int) -> None:
    """No copy anywhere: the row stays (accounted for, never refetched), without a file.

    A rejected row keeps its reason (it is then just like a pruned one); any other becomes
    rejected/file_missing, so nothing counts or trains on an image that is gone.
    """
    with store.engine.begin() as conn:
        row = conn.execute(
            select(images.c.status, images.c.path).where(images.c.id == image_id)
        ).first()
        if row is None:
            return
        values: dict[str, Any] = {
            "path": None,
            "updated_at": utcnow(),
            "claimed_by": None,
            "claim_expires": None,
        }
        if row.status != "rejected":
            values.update(status="rejected", reason=MISSING_REASON)
        conn.execute(update(images).where(images.c.id == image_id).values(**values))
    logger.error(
        "check: image %d has no file anywhere under data_dir; row kept as %s",
        image_id,
        "rejected without a file" if row.status == "rejected" else "rejected/file_missing",
    )


def check_storage(store: Store, repair_too: bool = False) -> Report:
    """Scan; with ``repair_too`` run Store.repair(), fix what needs no guess, scan again."""
    if not repair_too:
        return Report(scan(store))
    report = Report()
    for kind, n in store.repair().items():
        if n:  # Store.repair() counts its own way; fold it into this report's kinds
            report.repaired["orphan_temp" if "temp" in kind else "stale_pending_move"] += n
    for _ in range(2):  # fixing one thing may reveal the next (a misfiled copy, then counts)
        problems = scan(store)
        fixed = repair(store, [p for p in problems if p.kind in FIXABLE])
        report.repaired.update(fixed)
        if not fixed:
            break
    report.problems = scan(store)
    return report
