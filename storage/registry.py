"""Model registry on disk: models/vNNNN/ folders and the atomically written models/CURRENT."""

from __future__ import annotations

import logging
import re
from pathlib import Path

from storage import files
from storage.errors import StorageError

logger = logging.getLogger(__name__)

_VERSION = re.compile(r"^v\d{4,}$")


class ModelRegistry:
    def __init__(self, root: Path):
        self.root = Path(root)

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
            version = (self.root / "CURRENT").read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            return None
        if not _VERSION.match(version) or not (self.root / version).is_dir():
            logger.error("models/CURRENT names %r, which is not in the registry", version)
            return None
        return version

    def current_path(self) -> Path | None:
        version = self.current()
        return None if version is None else self.root / version

    def promote(self, version: str) -> None:
        """Point models/CURRENT at ``version`` (readers see the old or the new, never half).

        The version's files and folder are fsynced first: after a power loss CURRENT never
        names a model whose bytes did not reach the disk.
        """
        folder = self.path(version)
        if not folder.is_dir():
            raise StorageError(f"model version {version} does not exist")
        self.make_durable(folder)
        files.atomic_write(self.root / "CURRENT", version + "\n")
        logger.info("promoted model %s", version)
