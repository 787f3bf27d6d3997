"""Disk use per folder of data_dir (`pingo stats`): what prune would free, what grows."""

from __future__ import annotations

import os
from pathlib import Path

from storage import files

# The DB file and SQLite's companions, when the DB lives in data_dir.
DB_FILES = ("pingo.db", "pingo.db-wal", "pingo.db-shm")


def disk_usage(data_dir: Path) -> dict[str, dict[str, int]]:
    """{folder: {"files": n, "bytes": size}} for each top-level folder, plus "db" and "other"
    (loose files such as lock files). Sizes are file sizes (like `du --apparent-size`)."""
    data_dir = Path(data_dir)
    usage = {
        name: {"files": 0, "bytes": 0}
        for name in (*files.STATUS_DIRS.values(), *files.OTHER_DIRS, "index", "db", "other")
    }
    try:
        entries = list(os.scandir(data_dir))
    except FileNotFoundError:
        return usage
    for e in entries:
        if e.is_dir(follow_symlinks=False):
            n, size = _tree(e.path)
            slot = usage.setdefault(e.name, {"files": 0, "bytes": 0})
        else:
            n, size = 1, _size(e)
            slot = usage["db" if e.name in DB_FILES else "other"]
        slot["files"] += n
        slot["bytes"] += size
    return usage


def _tree(path: str) -> tuple[int, int]:
    n = size = 0
    stack = [path]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            continue
        for e in entries:
            if e.is_dir(follow_symlinks=False):
                stack.append(e.path)
            else:
                n += 1
                size += _size(e)
    return n, size


def _size(entry: os.DirEntry) -> int:
    try:
        return entry.stat(follow_symlinks=False).st_size
    except OSError:
        return 0  # removed meanwhile


def human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1024 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"
