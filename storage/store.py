"""Store: the metadata DB and the image folders, kept in step.

Every image has one row and one file, in exactly one of inbox/, dataset/, review/, rejected/,
and the row says which. Files change place in three steps:

1. one transaction records the intent (pending_moves: src, dst, the column changes);
2. os.replace renames the file (atomic), the folder is fsynced;
3. one transaction applies the changes to the row and drops the intent.

A crash between any two steps leaves an intent behind. ``Store.open`` finishes every intent
whose owner process is gone: it completes the rename if it had not happened and applies the
row changes, so no image is lost or counted twice. New files take the same path, from a
fsynced temp file in the destination folder. An interrupted batch (Ctrl-C) withdraws only the
intents of moves whose source file is still in place, so a rename that happened is never
forgotten. File names are the content hash, so when a row and its file disagree anyway (an
intent lost with the disk cache on power loss, a file moved by hand) ``locate_file`` finds the
file in the known folders and the row is made to follow it; a file found nowhere makes the
row rejected with reason ``file_missing`` (no file, path NULL).

A person's decision wins: a filed row whose label source is ``human`` is only changed by a
move that is itself human (label_source="human"); other moves of it are skipped, as are moves
whose ``expect`` no longer matches the row (see MoveResult).
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from storage import files
from storage.db import begin, iso, make_engine, utcnow
from storage.errors import (
    DuplicateImageError,
    ImageFileMissingError,
    ImageNotFoundError,
    MoveConflictError,
    MoveRefusedError,
)
from storage.registry import ModelRegistry
from storage.schema import daily_counts, images, migrate, pending_moves, runs, urls

if TYPE_CHECKING:
    from core.config import Config

logger = logging.getLogger(__name__)

# Columns a move may change besides status and path.
MOVABLE = {
    "reason",
    "label",
    "label_source",
    "confidence",
    "model_version",
    "duplicate_of",
    "phash",
    "hash_method",
    "width",
    "height",
    "decision_p",
    "evidence",
}
IMAGE_FIELDS = (
    "id",
    "sha256",
    "phash",
    "hash_method",
    "source_url",
    "page_url",
    "source",
    "query",
    "keyword_class",
    "status",
    "reason",
    "label",
    "label_source",
    "confidence",
    "model_version",
    "path",
    "duplicate_of",
    "width",
    "height",
    "bytes",
    "created_at",
    "updated_at",
    "failures",
    "last_error",
    "decision_p",
    "evidence",
    "license",
    "license_url",
    "creator",
    "attribution",
    "title",
)
LICENSE_FIELDS = ("license", "license_url", "creator", "attribution", "title")
# Reasons of rows set aside rather than filed: `pingo stats` and `pingo status` show them.
FILE_MISSING = "file_missing"
PROCESSING_ERROR = "processing_error"
SET_ASIDE = (FILE_MISSING, PROCESSING_ERROR)
# A row the factory failed on this many times is set aside (rejected/processing_error/).
MAX_FAILURES = 2


@dataclass(frozen=True)
class Move:
    """Change an image's status (and so its folder) plus any MOVABLE columns."""

    image_id: int
    status: str
    changes: dict[str, Any] = field(default_factory=dict)
    # Column values the row must still have (what the caller read); else the move is skipped.
    expect: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if self.status not in files.STATUSES:
            raise ValueError(f"unknown status {self.status!r}")
        extra = set(self.changes) - MOVABLE
        if extra:
            raise ValueError(f"a move cannot change {sorted(extra)}")


class MoveResult(dict):
    """image id -> new relative path for the images moved; besides:

    ``skipped``: image id -> why the move was not made (a person decided the image meanwhile,
    or the row no longer matches the move's ``expect``); the row and file are untouched.
    ``missing``: images whose file was found nowhere: now rejected, reason file_missing.
    """

    def __init__(self):
        super().__init__()
        self.skipped: dict[int, str] = {}
        self.missing: list[int] = []


@dataclass(frozen=True)
class UrlRetry:
    """When a URL that failed is worth fetching again: a passing failure, after a pause."""

    outcomes: Callable[[str], bool]  # is this recorded outcome a passing one?
    after: timedelta
    max_attempts: int

    def due(self, row, now: datetime) -> bool:
        if row.image_id is not None or not self.outcomes(row.outcome):
            return False
        if (row.attempts or 1) >= self.max_attempts:
            return False
        return (row.last_tried or row.created_at) + self.after <= now


@dataclass
class Stats:
    classes: dict[str, dict[str, Any]]  # accepted, review: int; target: int or None
    inbox: int
    rejected: dict[str, int]

    @property
    def set_aside(self) -> dict[str, int]:
        """Rejected rows that were set aside (file missing, failed twice), per reason."""
        return {r: self.rejected[r] for r in SET_ASIDE if self.rejected.get(r)}

    def as_json(self) -> dict[str, Any]:
        out = {"classes": self.classes, "inbox": self.inbox, "rejected": self.rejected}
        if self.set_aside:  # only when there are some: the usual output stays as it was
            out["set_aside"] = self.set_aside
        return out


class Store:
    """Open with ``Store.open(data_dir, db_url)``; use as a context manager to dispose."""

    def __init__(self, data_dir: Path, engine: Engine):
        self.data_dir = Path(data_dir).resolve()
        self.engine = engine
        self.registry = ModelRegistry(self.data_dir / "models", engine)

    @classmethod
    def open(cls, data_dir: str | Path, db_url: str | None = None, *, repair: bool = True) -> Store:
        data_dir = Path(data_dir).resolve()
        files.ensure_layout(data_dir)
        engine = make_engine(db_url or f"sqlite:///{data_dir / 'pingo.db'}")
        with engine.begin() as conn:
            migrate(conn)
        store = cls(data_dir, engine)
        if repair:
            store.repair()
        return store

    @classmethod
    def from_config(cls, config: Config, **kw: Any) -> Store:
        return cls.open(config.data_dir, config.db_url, **kw)

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def abspath(self, relpath: str) -> Path:
        return self.data_dir / relpath

    def _rel(self, path: Path) -> str:
        return path.relative_to(self.data_dir).as_posix()

    # ---- adding images -----------------------------------------------------------------------

    def add_image(
        self,
        data: bytes,
        *,
        keyword_class: str,
        source: str,
        ext: str | None = None,
        source_url: str | None = None,
        page_url: str | None = None,
        query: str | None = None,
        label: str | None = None,
        label_source: str | None = None,
        width: int | None = None,
        height: int | None = None,
        license: str | None = None,
        license_url: str | None = None,
        creator: str | None = None,
        attribution: str | None = None,
        title: str | None = None,
    ) -> int:
        """Store new bytes in inbox/ and return the new image id.

        ``license`` (a core.licenses id) and the other licence fields are what the source
        said; None where it said nothing.

        Raises DuplicateImageError when identical bytes are already stored (the caller counts
        it; nothing is written).
        """
        sha = hashlib.sha256(data).hexdigest()
        existing = self.id_for_sha256(sha)
        if existing is not None:
            raise DuplicateImageError(existing, sha)
        rel = files.image_relpath("inbox", sha, ext or "bin")
        final = self.abspath(rel)
        tmp = files.write_temp(final, data)
        now = utcnow()
        try:
            with begin(self.engine, durable=True) as conn:  # the intent outlives power loss
                image_id = conn.execute(
                    insert(images).values(
                        sha256=sha,
                        source_url=source_url,
                        page_url=page_url,
                        source=source,
                        query=query,
                        keyword_class=keyword_class,
                        status="inbox",
                        label=label,
                        label_source=label_source,
                        path=rel,
                        width=width,
                        height=height,
                        license=license,
                        license_url=license_url,
                        creator=creator,
                        attribution=attribution,
                        title=title,
                        bytes=len(data),
                        created_at=now,
                        updated_at=now,
                    )
                ).inserted_primary_key[0]
                conn.execute(
                    insert(pending_moves).values(
                        image_id=image_id,
                        kind="add",
                        src=self._rel(tmp),
                        dst=rel,
                        changes={},
                        owner=files.current_owner(),
                        created_at=now,
                    )
                )
        except IntegrityError:
            tmp.unlink(missing_ok=True)
            existing = self.id_for_sha256(sha)
            if existing is None:
                raise
            raise DuplicateImageError(existing, sha) from None
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        files.replace(tmp, final)
        with self.engine.begin() as conn:
            self._apply(conn, image_id, {}, now)
        return image_id

    def id_for_sha256(self, sha: str) -> int | None:
        with self.engine.connect() as conn:
            return conn.execute(select(images.c.id).where(images.c.sha256 == sha)).scalar()

    # ---- moving images -----------------------------------------------------------------------

    def move(self, image_id: int, status: str, **changes: Any) -> str:
        """Move one image to ``status`` (label for accepted/review, reason for rejected).

        Raises MoveRefusedError when a person's decision protects the image, and
        ImageFileMissingError when its file is gone (the row is then rejected, file_missing).
        """
        result = self.move_many([Move(image_id, status, changes)])
        if image_id in result.skipped:
            raise MoveRefusedError(f"image {image_id} not moved: {result.skipped[image_id]}")
        if image_id in result.missing:
            raise ImageFileMissingError(
                f"image {image_id}: its file is missing; recorded as rejected ({FILE_MISSING})"
            )
        return result[image_id]

    def move_many(self, moves: Iterable[Move]) -> MoveResult:
        """Apply moves in one recoverable batch; see MoveResult for what comes back."""
        moves = list(moves)
        result = MoveResult()
        if not moves:
            return result
        ids = [m.image_id for m in moves]
        if len(set(ids)) != len(ids):
            raise ValueError("an image appears twice in one batch of moves")
        now = utcnow()
        plan: list[tuple[int, str, str, str, dict[str, Any]]] = []
        query = select(images).where(images.c.id.in_(ids)).order_by(images.c.id)
        if self.engine.dialect.name == "postgresql":
            query = query.with_for_update()  # a person's move and the factory's take turns
        with begin(self.engine, durable=True) as conn:  # the intents outlive power loss
            rows = {r.id: r for r in conn.execute(query)}
            for m in moves:
                row = rows.get(m.image_id)
                if row is None:
                    raise ImageNotFoundError(f"no image with id {m.image_id}")
                why = _refusal(row, m)
                if why:
                    result.skipped[m.image_id] = why
                    logger.warning("image %d not moved to %s: %s", m.image_id, m.status, why)
                    continue
                merged = {**row._mapping, **m.changes}
                ext = _ext(row.path)
                dst = files.image_relpath(
                    m.status, row.sha256, ext, label=merged["label"], reason=merged["reason"]
                )
                changes = {**m.changes, "status": m.status, "path": dst}
                # a row without a file (path NULL) has nothing to rename: src = dst
                plan.append((m.image_id, row.sha256, row.path or dst, dst, changes))
            if not plan:
                return result
            try:
                conn.execute(
                    insert(pending_moves),
                    [
                        dict(
                            image_id=i,
                            kind="move",
                            src=src,
                            dst=dst,
                            changes=ch,
                            owner=files.current_owner(),
                            created_at=now,
                        )
                        for i, _, src, dst, ch in plan
                    ],
                )
            except IntegrityError:
                raise MoveConflictError(
                    f"another process is moving one of images {ids[:5]}..."
                ) from None
        done: dict[int, dict[str, Any]] = {}
        try:
            for image_id, sha, src, dst, changes in plan:
                found = self._rename(sha, src, dst)
                done[image_id] = changes if found else _missing(changes)
        finally:
            self._settle(plan, done, now)
        for image_id, _, _, dst, _changes in plan:
            if done[image_id]["path"] is None:
                result.missing.append(image_id)
            else:
                result[image_id] = dst
        return result

    def _settle(self, plan, done: dict[int, dict[str, Any]], now: datetime) -> None:
        """After a batch's renames (all, or some when interrupted): apply what happened.

        A rename that happened but was not counted (an exception, Ctrl-C, between os.replace
        and the bookkeeping) is told by the files: source gone, destination there. Only the
        intents of moves known not to have happened (source still there) are withdrawn; when
        neither file is there the intent stays for repair.
        """
        with self.engine.begin() as conn:
            withdrawn = []
            for image_id, _, src, dst, changes in plan:
                if image_id in done:
                    self._apply(conn, image_id, done[image_id], now)
                    continue
                src_there = self.abspath(src).exists()
                if src == dst:
                    done[image_id] = changes if src_there else _missing(changes)
                    self._apply(conn, image_id, done[image_id], now)
                elif not src_there and self.abspath(dst).exists():
                    done[image_id] = changes
                    self._apply(conn, image_id, changes, now)
                elif src_there:
                    withdrawn.append(image_id)
            if withdrawn:
                conn.execute(delete(pending_moves).where(pending_moves.c.image_id.in_(withdrawn)))

    def _rename(self, sha: str, src: str, dst: str) -> bool:
        """Rename src to dst; False when the file is nowhere (neither there nor elsewhere)."""
        if src == dst:
            return self.abspath(dst).exists()
        try:
            files.replace(self.abspath(src), self.abspath(dst))
            return True
        except FileNotFoundError:
            if self.abspath(dst).exists():
                return True  # a repair already did this rename
        found = self.locate_file(sha, _ext(dst))
        if found is None:
            logger.error("image file %s is missing and %s does not exist", src, dst)
            return False
        logger.warning("image file %s was at %s; moving it to %s", src, found, dst)
        files.replace(self.abspath(found), self.abspath(dst))
        return True

    def locate_file(self, sha256: str, ext: str) -> str | None:
        """Where the file named by this content hash is, among inbox/, dataset/<class>/,
        review/<class>/ and rejected/<reason>/ (a relative path), or None."""
        name = Path(files.image_relpath("inbox", sha256, ext)).name
        if (self.data_dir / "inbox" / name).is_file():
            return f"inbox/{name}"
        for top in ("dataset", "review", "rejected"):
            try:
                subs = sorted(p for p in (self.data_dir / top).iterdir() if p.is_dir())
            except FileNotFoundError:
                continue
            for sub in subs:
                if (sub / name).is_file():
                    return f"{top}/{sub.name}/{name}"
        return None

    def _apply(self, conn, image_id: int, changes: dict[str, Any], now: datetime) -> None:
        if changes.get("duplicate_of") is not None:
            changes = {
                **changes,
                "duplicate_of": self._flatten_duplicates(
                    conn, image_id, changes["duplicate_of"], now
                ),
            }
        conn.execute(
            update(images).where(images.c.id == image_id).values(**changes, updated_at=now)
        )
        conn.execute(delete(pending_moves).where(pending_moves.c.image_id == image_id))

    def _flatten_duplicates(self, conn, image_id: int, kept: int, now: datetime) -> int:
        """Keep every ``duplicate_of`` pointing at an image that is itself kept.

        When ``image_id`` becomes a duplicate of ``kept`` (a larger copy replaced it), the
        images that were duplicates of ``image_id`` now point at ``kept``; and if ``kept`` was
        itself replaced earlier in the same batch, follow it. Returns the final kept id.
        """
        seen = {image_id}
        while True:
            nxt = conn.execute(select(images.c.duplicate_of).where(images.c.id == kept)).scalar()
            if nxt is None or nxt in seen:
                break
            seen.add(kept)
            kept = nxt
        conn.execute(
            update(images)
            .where(images.c.duplicate_of == image_id)
            .where(images.c.id != kept)
            .values(duplicate_of=kept, updated_at=now)
        )
        return kept

    def update_image(self, image_id: int, **changes: Any) -> None:
        """Change columns that do not move the file (e.g. phash, width, height)."""
        bad = set(changes) - (MOVABLE - {"label", "reason"})
        if bad:
            raise ValueError(f"update_image cannot change {sorted(bad)}; use move()")
        with self.engine.begin() as conn:
            conn.execute(
                update(images).where(images.c.id == image_id).values(**changes, updated_at=utcnow())
            )

    # ---- repair ------------------------------------------------------------------------------

    def repair(self, *, full: bool = False) -> dict[str, int]:
        """Finish moves and adds left half-done by dead processes; drop orphan temp files.

        With ``full``, also check every row's file (one stat per image): a row whose file is
        elsewhere follows it, one whose file is nowhere becomes rejected/file_missing.
        Safe to run in several processes at once. Returns counts of what was done.
        """
        done = {"finished": 0, "dropped": 0, "missing": 0, "relinked": 0, "temp_removed": 0}
        with self.engine.connect() as conn:
            left = conn.execute(select(pending_moves)).all()
        for p in left:
            if files.owner_alive(p.owner, p.created_at.replace(tzinfo=UTC).timestamp()):
                continue
            outcome = self._finish_intent(p)
            if outcome:
                done[outcome] += 1
        if full:
            for outcome, n in self.reconcile(self._ids_without_file()).items():
                done[outcome] += n
        for part in self.data_dir.glob(f"*/**/.*{files.PART_SUFFIX}"):
            if not files.part_owner_alive(part):
                try:
                    part.unlink()
                    done["temp_removed"] += 1
                except FileNotFoundError:
                    pass  # another repair removed it
        if any(done.values()):
            logger.info("repair: %s", done)
        return done

    def _finish_intent(self, p) -> str | None:
        """Finish one dead owner's intent; None when another repair got to it first.

        Everything happens inside the write transaction that re-reads (and on PostgreSQL
        locks) the intent, so two repairs never act on the same intent.
        """
        now = utcnow()
        with self.engine.begin() as conn:
            query = (
                select(pending_moves, images.c.sha256)
                .join(images, images.c.id == pending_moves.c.image_id)
                .where(pending_moves.c.image_id == p.image_id)
                .where(pending_moves.c.owner == p.owner)
            )
            if self.engine.dialect.name == "postgresql":
                query = query.with_for_update(of=pending_moves)
            p = conn.execute(query).first()
            if p is None:
                return None
            src, dst = self.abspath(p.src), self.abspath(p.dst)
            if p.src != p.dst and src.exists():
                if dst.exists():
                    src.unlink(missing_ok=True)  # identical content: names come from the sha256
                else:
                    files.replace(src, dst)
            if not dst.exists() and p.kind == "move":
                found = self.locate_file(p.sha256, _ext(p.dst))
                if found is not None:  # the row and the file disagreed before this move
                    logger.warning("image %d: file found at %s", p.image_id, found)
                    files.replace(self.abspath(found), dst)
            if dst.exists():
                self._apply(conn, p.image_id, p.changes, now)
                logger.warning(
                    "finished an interrupted %s of image %d to %s", p.kind, p.image_id, p.dst
                )
                return "finished"
            if p.kind == "add":
                # The bytes never reached disk whole: forget the row, the crawl refetches it.
                conn.execute(delete(pending_moves).where(pending_moves.c.image_id == p.image_id))
                conn.execute(delete(urls).where(urls.c.image_id == p.image_id))
                conn.execute(delete(images).where(images.c.id == p.image_id))
                logger.warning("dropped image %d: its download was interrupted", p.image_id)
                return "dropped"
            self._apply(conn, p.image_id, _missing({}), now)
            logger.error("image %d: file missing at %s and %s", p.image_id, p.src, p.dst)
            return "missing"

    def _ids_without_file(self) -> list[int]:
        """Rows with a path whose file is not there (one stat per image)."""
        gone = []
        for row in self.iter_images():
            if row["path"] and not self.abspath(row["path"]).is_file():
                gone.append(row["id"])
        return gone

    def reconcile(self, ids: Iterable[int]) -> dict[str, int]:
        """Make rows whose file is not at their path agree with the disk.

        The file found by its content-hash name elsewhere (locate_file) is kept where it is
        and the row follows it (status, label or reason from its folder): "relinked". Found
        nowhere: the row becomes rejected, reason file_missing, path NULL: "missing". Rows with
        a move in flight are left to it.
        """
        done = {"relinked": 0, "missing": 0}
        now = utcnow()
        for image_id in ids:
            query = select(images).where(images.c.id == image_id)
            if self.engine.dialect.name == "postgresql":
                query = query.with_for_update()
            with self.engine.begin() as conn:
                row = conn.execute(query).first()
                if row is None or not row.path or self.abspath(row.path).is_file():
                    continue
                if conn.execute(
                    select(pending_moves.c.image_id).where(pending_moves.c.image_id == image_id)
                ).first():
                    continue
                found = self.locate_file(row.sha256, _ext(row.path))
                if found is None:
                    changes = _missing({})
                    done["missing"] += 1
                    logger.error("image %d: file %s is missing", image_id, row.path)
                else:
                    changes = _follow(row, found)
                    done["relinked"] += 1
                    logger.warning(
                        "image %d: row said %s, file is at %s; row follows file",
                        image_id,
                        row.path,
                        found,
                    )
                conn.execute(
                    update(images).where(images.c.id == image_id).values(**changes, updated_at=now)
                )
        return done

    # ---- rows the factory cannot process ---------------------------------------------------

    def record_failure(self, image_id: int, error: str) -> bool:
        """Count one failure to process an inbox image; True when it was set aside.

        At MAX_FAILURES the image is set aside (rejected/processing_error/, the error kept in
        last_error) so that the rest of the inbox is processed; `pingo stats` and `pingo
        status` list it.
        """
        with self.engine.begin() as conn:
            conn.execute(
                update(images)
                .where(images.c.id == image_id)
                .values(
                    failures=func.coalesce(images.c.failures, 0) + 1,
                    last_error=error[:2000],
                    updated_at=utcnow(),
                )
            )
            row = conn.execute(
                select(images.c.failures, images.c.status).where(images.c.id == image_id)
            ).first()
        if row is None or row.failures < MAX_FAILURES or row.status != "inbox":
            return False
        result = self.move_many(
            [Move(image_id, "rejected", {"reason": PROCESSING_ERROR}, expect={"status": "inbox"})]
        )
        set_aside = image_id in result or image_id in result.missing
        if set_aside:
            logger.error("image %d set aside after %d failures: %s", image_id, row.failures, error)
        return set_aside

    def set_aside_rows(self, limit: int = 20) -> list[dict[str, Any]]:
        """The most recently set-aside images (file missing, failed twice), newest first."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(
                    images.c.id,
                    images.c.reason,
                    images.c.path,
                    images.c.keyword_class,
                    images.c.failures,
                    images.c.last_error,
                    images.c.updated_at,
                )
                .where(images.c.status == "rejected")
                .where(images.c.reason.in_(SET_ASIDE))
                .order_by(images.c.updated_at.desc(), images.c.id.desc())
                .limit(limit)
            ).all()
        return [{**r._mapping, "updated_at": iso(r.updated_at)} for r in rows]

    # ---- reading -----------------------------------------------------------------------------

    def get_image(self, image_id: int) -> dict[str, Any]:
        with self.engine.connect() as conn:
            row = conn.execute(select(images).where(images.c.id == image_id)).first()
        if row is None:
            raise ImageNotFoundError(f"no image with id {image_id}")
        return _image_dict(row)

    def ids_with_files(self, statuses: Iterable[str]) -> set[int]:
        """Ids of the rows in ``statuses`` that have a file (their path is set)."""
        with self.engine.connect() as conn:
            return set(
                conn.execute(
                    select(images.c.id)
                    .where(images.c.status.in_(list(statuses)))
                    .where(images.c.path.is_not(None))
                ).scalars()
            )

    def iter_images(
        self, status: str | None = None, class_name: str | None = None, batch: int = 1000
    ) -> Iterator[dict[str, Any]]:
        """Images in id order; ``class_name`` matches the label, else the keyword class."""
        query = select(images).order_by(images.c.id)
        if status:
            query = query.where(images.c.status == status)
        if class_name:
            query = query.where(func.coalesce(images.c.label, images.c.keyword_class) == class_name)
        last = 0
        while True:  # keyset pages: no long-lived read transaction blocks writers
            with self.engine.connect() as conn:
                rows = conn.execute(query.where(images.c.id > last).limit(batch)).all()
            if not rows:
                return
            for row in rows:
                yield _image_dict(row)
            last = rows[-1].id

    def stats(self, targets: dict[str, int]) -> Stats:
        """Per class: accepted, review, target; inbox total; rejected per reason."""
        with self.engine.connect() as conn:
            per_label = conn.execute(
                select(images.c.label, images.c.status, func.count())
                .where(images.c.status.in_(["accepted", "review"]))
                .group_by(images.c.label, images.c.status)
            ).all()
            inbox = conn.execute(select(func.count()).where(images.c.status == "inbox")).scalar()
            rejected: dict[str | None, int] = dict(
                conn.execute(
                    select(images.c.reason, func.count())
                    .where(images.c.status == "rejected")
                    .group_by(images.c.reason)
                ).all()
            )
        classes: dict[str, dict[str, Any]] = {
            name: {"accepted": 0, "review": 0, "target": target} for name, target in targets.items()
        }
        for label, status, n in per_label:
            entry = classes.setdefault(label, {"accepted": 0, "review": 0, "target": None})
            entry[status] = n
        return Stats(
            classes,
            inbox or 0,
            {
                str(r or "unknown"): n
                for r, n in sorted(rejected.items(), key=lambda kv: str(kv[0]))
            },
        )

    def snapshot_counts(self, targets: dict[str, int]) -> None:
        """Record today's per-class counts (one row per class and day, last one wins)."""
        day = utcnow().strftime("%Y-%m-%d")
        current = self.stats(targets).classes
        with self.engine.begin() as conn:
            conn.execute(delete(daily_counts).where(daily_counts.c.day == day))
            if current:
                conn.execute(
                    insert(daily_counts),
                    [
                        {
                            "day": day,
                            "class_name": name,
                            "accepted": c["accepted"],
                            "review": c["review"],
                        }
                        for name, c in current.items()
                    ],
                )

    def count_history(self) -> dict[str, dict[str, dict[str, int]]]:
        """{day: {class: {"accepted": n, "review": n}}}, oldest day first."""
        history: dict[str, dict[str, dict[str, int]]] = {}
        with self.engine.connect() as conn:
            for row in conn.execute(select(daily_counts).order_by(daily_counts.c.day)):
                history.setdefault(row.day, {})[row.class_name] = {
                    "accepted": row.accepted,
                    "review": row.review,
                }
        return history

    def yield_by_query(self) -> list[dict[str, Any]]:
        """Per search source and query: images kept, sent to review, rejected as duplicate..."""
        from sqlalchemy import case

        def n(cond):
            return func.sum(case((cond, 1), else_=0))

        query = (
            select(
                images.c.source,
                images.c.query,
                func.count().label("images"),
                n(images.c.status == "accepted").label("accepted"),
                n(images.c.status == "review").label("review"),
                n(images.c.reason == "duplicate").label("duplicates"),
                n(images.c.status == "rejected").label("rejected"),
            )
            .group_by(images.c.source, images.c.query)
            .order_by(images.c.source, images.c.query)
        )
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(query)]

    def license_mix(self) -> dict[str, dict[str, int]]:
        """Accepted images per class and licence id (core.licenses; a row without one, as
        imports and rows from before schema v5, counts as ``unknown``)."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(images.c.label, images.c.license, func.count())
                .where(images.c.status == "accepted")
                .group_by(images.c.label, images.c.license)
            ).all()
        out: dict[str, dict[str, int]] = {}
        for label, license_id, n in rows:
            mix = out.setdefault(str(label), {})
            key = str(license_id or "unknown")
            mix[key] = mix.get(key, 0) + int(n)
        return out

    def review_reasons(self) -> dict[str, dict[str, int]]:
        """Review images per best-guess class and reason (e.g. label_issue: flagged by the
        label check before training)."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(images.c.label, images.c.reason, func.count())
                .where(images.c.status == "review")
                .group_by(images.c.label, images.c.reason)
            ).all()
        out: dict[str, dict[str, int]] = {}
        for label, reason, n in rows:
            out.setdefault(str(label), {})[str(reason or "unknown")] = int(n)
        return out

    def keyword_judgements(self) -> dict[tuple[str, str | None], tuple[int, int]]:
        """People's decisions on crawled images, per keyword class and search source:
        (right, wrong) for the keyword label. Accepted under the keyword class is right;
        accepted under another class, or rejected, is wrong. Imported images are not
        crawled and are left out."""
        from sqlalchemy import case

        right = (images.c.status == "accepted") & (images.c.label == images.c.keyword_class)
        query = (
            select(
                images.c.keyword_class,
                images.c.source,
                func.sum(case((right, 1), else_=0)),
                func.count(),
            )
            .where(
                images.c.label_source == "human",
                images.c.status.in_(["accepted", "rejected"]),
                images.c.source.is_distinct_from("import"),
            )
            .group_by(images.c.keyword_class, images.c.source)
        )
        with self.engine.connect() as conn:
            return {
                (cls, source): (int(ok or 0), int(n) - int(ok or 0))
                for cls, source, ok, n in conn.execute(query)
            }

    def inbox_counts(self) -> dict[str, int]:
        """Images waiting in the inbox per keyword class."""
        return self.counts_by_keyword_class("inbox")

    def counts_by_keyword_class(self, status: str) -> dict[str, int]:
        """Images with ``status`` per keyword class (the class they were crawled or imported
        for, whatever their label)."""
        with self.engine.connect() as conn:
            return dict(
                conn.execute(
                    select(images.c.keyword_class, func.count())
                    .where(images.c.status == status)
                    .group_by(images.c.keyword_class)
                ).all()
            )

    # ---- claiming inbox work (several factory workers) -----------------------------------------

    def claim_inbox(
        self,
        worker: str,
        limit: int,
        lease_seconds: float = 600.0,
    ) -> list[dict[str, Any]]:
        """Lease up to ``limit`` unclaimed (or expired) inbox images to ``worker``.

        PostgreSQL: SELECT ... FOR UPDATE SKIP LOCKED, so concurrent workers never take the
        same row and never wait on each other. SQLite: every transaction is BEGIN IMMEDIATE,
        so the select-then-update is already atomic. A worker that dies simply lets its lease
        expire; another worker then takes the rows.
        """
        now = utcnow()
        query = (
            select(images.c.id)
            .where(images.c.status == "inbox")
            .where(
                (images.c.claim_expires.is_(None))
                | (images.c.claim_expires < now)
                | (images.c.claimed_by == worker)
            )
            .order_by(images.c.id)
            .limit(limit)
        )
        if self.engine.dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True)
        with self.engine.begin() as conn:
            ids = list(conn.execute(query).scalars())
            if not ids:
                return []
            conn.execute(
                update(images)
                .where(images.c.id.in_(ids))
                .values(claimed_by=worker, claim_expires=now + timedelta(seconds=lease_seconds))
            )
            rows = conn.execute(
                select(images).where(images.c.id.in_(ids)).order_by(images.c.id)
            ).all()
        return [_image_dict(r) for r in rows]

    def release_claims(self, worker: str) -> None:
        """Give back whatever ``worker`` still holds (its images stay in the inbox)."""
        with self.engine.begin() as conn:
            conn.execute(
                update(images)
                .where(images.c.claimed_by == worker)
                .values(claimed_by=None, claim_expires=None)
            )

    def renew_claims(
        self, worker: str, lease_seconds: float, ids: Iterable[int] | None = None
    ) -> set[int]:
        """Extend ``worker``'s leases (only on ``ids`` if given); return the ids it still holds.

        An id is held while its image is in the inbox and claimed by ``worker``: one whose
        lease expired and that another worker took, or that was filed meanwhile, is not.
        """
        cond = (images.c.claimed_by == worker) & (images.c.status == "inbox")
        if ids is not None:
            ids = list(ids)
            if not ids:
                return set()
            cond = cond & images.c.id.in_(ids)
        with self.engine.begin() as conn:
            conn.execute(
                update(images)
                .where(cond)
                .values(claim_expires=utcnow() + timedelta(seconds=lease_seconds))
            )
            return set(conn.execute(select(images.c.id).where(cond)).scalars())

    def claim_holders(self) -> set[str]:
        """Workers holding unexpired leases on inbox images."""
        with self.engine.connect() as conn:
            return set(
                conn.execute(
                    select(images.c.claimed_by)
                    .distinct()
                    .where(images.c.status == "inbox")
                    .where(images.c.claimed_by.is_not(None))
                    .where(images.c.claim_expires >= utcnow())
                ).scalars()
            )

    def changed_since(self, since: datetime) -> list[dict[str, Any]]:
        """Images that left the inbox or changed at or after ``since`` (naive UTC), in id order."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(images)
                .where(images.c.updated_at >= since)
                .where(images.c.status != "inbox")
                .order_by(images.c.id)
            ).all()
        return [_image_dict(r) for r in rows]

    @contextmanager
    def exclusive(self, name: str) -> Iterator[None]:
        """Hold the lock ``name`` against every process using this DB and data_dir.

        PostgreSQL: a transaction-level advisory lock (several machines; freed when the
        transaction ends or the holder's connection dies). SQLite: flock on
        data_dir/.<name>.lock (one machine; freed when the holder dies). Not re-entrant.
        """
        if not name.replace("-", "").replace("_", "").isalnum():
            raise ValueError(f"lock name {name!r}: letters, digits, - and _ only")
        if self.engine.dialect.name == "postgresql":
            key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)
            with self.engine.begin() as conn:
                conn.execute(select(func.pg_advisory_xact_lock(key)))
                yield
            return
        import fcntl

        with open(self.data_dir / f".{name}.lock", "a+b") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    # ---- URLs the crawler has seen -----------------------------------------------------------

    def seen_urls(self, candidates: Iterable[str], retry: UrlRetry | None = None) -> set[str]:
        """The candidates fetched before, less the failures ``retry`` says are due again."""
        shas = {_url_sha(u): u for u in candidates}
        seen: set[str] = set()
        keys = list(shas)
        now = utcnow()
        cols = (
            urls.c.url_sha,
            urls.c.outcome,
            urls.c.image_id,
            urls.c.attempts,
            urls.c.last_tried,
            urls.c.created_at,
        )
        with self.engine.connect() as conn:
            for i in range(0, len(keys), 500):
                for row in conn.execute(select(*cols).where(urls.c.url_sha.in_(keys[i : i + 500]))):
                    if retry is None or not retry.due(row, now):
                        seen.add(shas[row.url_sha])
        return seen

    def record_url(self, url: str, outcome: str, image_id: int | None = None) -> bool:
        """Remember a fetched URL and what came of it; False when it was already recorded.

        Fetching a recorded URL again (a retry of a passing failure) counts one more attempt
        and keeps the newest outcome, unless the URL already gave an image: that is kept.
        """
        now = utcnow()
        sha = _url_sha(url)
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    insert(urls).values(
                        url_sha=sha,
                        url=url,
                        outcome=outcome,
                        image_id=image_id,
                        created_at=now,
                        attempts=1,
                        last_tried=now,
                    )
                )
        except IntegrityError:
            with self.engine.begin() as conn:
                conn.execute(
                    update(urls)
                    .where(urls.c.url_sha == sha)
                    .where(urls.c.image_id.is_(None))
                    .values(
                        outcome=outcome,
                        image_id=image_id,
                        last_tried=now,
                        attempts=func.coalesce(urls.c.attempts, 1) + 1,
                    )
                )
            return False
        return True

    # ---- runs --------------------------------------------------------------------------------

    def start_run(self, job: str) -> int:
        owner = files.current_owner()
        now = utcnow()
        with self.engine.begin() as conn:
            inserted = conn.execute(
                insert(runs).values(
                    job=job,
                    started=now,
                    status="running",
                    host=files.HOST,
                    pid=os.getpid(),
                    owner=owner,
                    heartbeat=now,
                )
            ).inserted_primary_key
        assert inserted is not None  # an INSERT of one row always has its key
        return int(inserted[0])

    def heartbeat_run(self, run_id: int) -> None:
        """Say the run is alive (read by fail_stale_runs on other hosts)."""
        with self.engine.begin() as conn:
            conn.execute(
                update(runs)
                .where(runs.c.id == run_id)
                .where(runs.c.status == "running")
                .values(heartbeat=utcnow())
            )

    def finish_run(
        self, run_id: int, status: str, counts: dict | None = None, error: str | None = None
    ) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(runs)
                .where(runs.c.id == run_id)
                .values(finished=utcnow(), status=status, counts=counts, error=error)
            )

    def fail_stale_runs(self) -> list[int]:
        """Mark failed the runs left 'running' by a process that is gone (killed, crashed)."""
        with self.engine.connect() as conn:
            running = conn.execute(select(runs).where(runs.c.status == "running")).all()
        stale = [
            r
            for r in running
            if not files.owner_alive(
                r.owner or f"{r.host}:{r.pid}", _ts(r.started) or 0.0, _ts(r.heartbeat)
            )
        ]
        for r in stale:
            logger.warning(
                "run %d (%s) was left running by dead process %s:%s; marked failed",
                r.id,
                r.job,
                r.host,
                r.pid,
            )
            with self.engine.begin() as conn:  # only if still running: another may have done it
                conn.execute(
                    update(runs)
                    .where(runs.c.id == r.id)
                    .where(runs.c.status == "running")
                    .values(
                        finished=utcnow(),
                        status="failed",
                        error=f"process {r.host}:{r.pid} died before the run finished",
                    )
                )
        return [r.id for r in stale]

    def recent_runs(self, limit: int = 20) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(runs).order_by(runs.c.id.desc()).limit(limit)).all()
        return [
            {**r._mapping, "started": iso(r.started), "finished": iso(r.finished)} for r in rows
        ]


def _ts(value: datetime | None) -> float | None:
    return None if value is None else value.replace(tzinfo=UTC).timestamp()


def _ext(path: str | None) -> str:
    return path.rsplit(".", 1)[-1] if path and "." in path else "bin"


def _missing(changes: dict[str, Any]) -> dict[str, Any]:
    """A move's changes turned into: no file anywhere, so rejected, file_missing, no path."""
    return {**changes, "status": "rejected", "reason": FILE_MISSING, "path": None}


def _refusal(row, move: Move) -> str | None:
    """Why ``move`` must not be applied to ``row`` now, or None."""
    for column, value in move.expect.items():
        if row._mapping[column] != value:
            return f"its {column} is now {row._mapping[column]!r}, not {value!r}"
    if (
        row.label_source == "human"
        and row.status != "inbox"
        and move.changes.get("label_source") != "human"
    ):
        return "a person decided where it goes"
    return None


def _follow(row, found: str) -> dict[str, Any]:
    """Row changes that make ``row`` describe its file found at ``found``."""
    top, *rest = found.split("/")
    status = {d: s for s, d in files.STATUS_DIRS.items()}[top]
    changes: dict[str, Any] = {"status": status, "path": found}
    if status in ("accepted", "review"):
        label = rest[0]
        changes["label"] = label
        if row.label != label:
            changes["label_source"] = "keyword" if label == row.keyword_class else None
    elif status == "rejected":
        changes["reason"] = rest[0]
    return changes


def _url_sha(url: str) -> str:
    return hashlib.sha256(url.encode("utf-8")).hexdigest()


def _image_dict(row) -> dict[str, Any]:
    m = row._mapping
    out = {k: m[k] for k in IMAGE_FIELDS}
    out["created_at"] = iso(out["created_at"])
    out["updated_at"] = iso(out["updated_at"])
    return out
