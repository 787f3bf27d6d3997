"""`pingo import DIR`: copy a folder of class subfolders into the inbox, labelled by a person.

Besides the configured classes, DIR/none/ holds examples of images that are none of them (out
of scope); once there are MIN_NONE_EXAMPLES, the trainer learns "none" as a class.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from core.names import NONE_CLASS
from storage.errors import DuplicateImageError, StorageError, UnknownClassError
from storage.store import Store

logger = logging.getLogger(__name__)

# Larger files are left where they are and listed: no photo worth training on is this big.
MAX_IMPORT_BYTES = 64 * 1024 * 1024


@dataclass
class ImportResult:
    added: Counter = field(default_factory=Counter)  # class -> new images
    duplicates: Counter = field(default_factory=Counter)  # class -> bytes already stored
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, why)

    @property
    def total_added(self) -> int:
        return sum(self.added.values())


def plan_import(root: Path, classes: Iterable[str]) -> list[tuple[str, Path]]:
    """(class, file) pairs to import; refuses the whole import if a folder is not a class."""
    root = Path(root)
    if not root.is_dir():
        raise StorageError(f"{root} is not a folder")
    known = {*classes, NONE_CLASS}  # none/: examples of what is none of the classes
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    unknown = [p.name for p in folders if p.name not in known]
    if unknown:
        raise UnknownClassError(
            f"folder {unknown[0]!r} in {root} is not a class in the config "
            f"(classes: {', '.join(sorted(known)) or 'none'})"
        )
    if not folders:
        raise StorageError(f"{root} has no class subfolders (expected {root}/<class>/<image>)")
    return [
        (folder.name, f)
        for folder in folders
        for f in sorted(folder.rglob("*"))
        if f.is_file() and not f.name.startswith(".")
    ]


def import_folder(
    store: Store, root: Path, classes: Iterable[str], progress: Callable[[int], None] | None = None
) -> ImportResult:
    """Copy every file under root/<class>/ into the inbox as a human-labelled image.

    Files are read and copied, never moved or changed. Identical bytes already in the store
    are counted as duplicates, so importing the same folder twice adds nothing.
    """
    result = ImportResult()
    for class_name, path in plan_import(root, classes):
        try:
            size = path.stat().st_size
            if size > MAX_IMPORT_BYTES:
                result.skipped.append((str(path), f"larger than {MAX_IMPORT_BYTES} bytes"))
                continue
            data = path.read_bytes()
        except OSError as exc:
            result.skipped.append((str(path), exc.strerror or str(exc)))
            continue
        try:
            store.add_image(
                data,
                keyword_class=class_name,
                source="import",
                source_url=str(path.resolve()),
                ext=path.suffix,
                label=class_name,
                label_source="human",
            )
            result.added[class_name] += 1
        except DuplicateImageError:
            result.duplicates[class_name] += 1
        if progress:
            progress(1)
    for skipped, why in result.skipped:
        logger.warning("not imported: %s (%s)", skipped, why)
    return result
