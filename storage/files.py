"""Folder layout under data_dir and the only code that writes or renames files there.

Writes go to a temp file in the destination folder, are fsynced, then renamed with os.replace
(atomic on one filesystem) and the folder is fsynced, so a reader never sees half a file.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import tempfile
import time
from pathlib import Path

from pingo.config import check_safe_name

logger = logging.getLogger(__name__)

# status -> top-level folder
STATUS_DIRS = {"inbox": "inbox", "accepted": "dataset", "review": "review",
               "rejected": "rejected"}
STATUSES = tuple(STATUS_DIRS)
OTHER_DIRS = ("models", "reports", "logs")
PART_SUFFIX = ".part"
_EXT = re.compile(r"^[a-z0-9]{1,5}$")
HOST = socket.gethostname().replace("~", "-")
# Work in flight from another host is presumed abandoned after this long.
STALE_SECONDS = 600


def safe_ext(ext: str | None) -> str:
    """A lowercase file extension without the dot; 'bin' when unknown or odd."""
    ext = (ext or "").lower().lstrip(".")
    ext = {"jpeg": "jpg", "tif": "tiff"}.get(ext, ext)
    return ext if _EXT.match(ext) else "bin"


def image_relpath(status: str, sha256: str, ext: str, *, label: str | None = None,
                  reason: str | None = None) -> str:
    """Where an image with this status lives, relative to data_dir (posix separators)."""
    name = f"{sha256[:24]}.{safe_ext(ext)}"
    if status == "inbox":
        return f"inbox/{name}"
    if status in ("accepted", "review"):
        if not label:
            raise ValueError(f"status {status!r} needs a label")
        return f"{STATUS_DIRS[status]}/{check_safe_name(label, 'label')}/{name}"
    if status == "rejected":
        return f"rejected/{check_safe_name(reason or 'unknown', 'reject reason')}/{name}"
    raise ValueError(f"unknown status {status!r}; allowed: {', '.join(STATUSES)}")


def ensure_layout(data_dir: Path) -> None:
    for name in (*STATUS_DIRS.values(), *OTHER_DIRS):
        (data_dir / name).mkdir(parents=True, exist_ok=True)


def fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return  # platforms without directory fds
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_temp(final: Path, data: bytes) -> Path:
    """Write ``data`` durably to a hidden temp file beside ``final``; return its path.

    The name (.<final>~<host>~<pid>~<random>.part) carries host and pid so a repair can tell a dead writer's leftovers from a live
    writer's file in progress.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}~{HOST}~{os.getpid()}~",
                               suffix=PART_SUFFIX)
    try:
        os.fchmod(fd, 0o644)  # mkstemp makes 0600; images and models are meant to be shared
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return Path(tmp)


def replace(src: Path, dst: Path) -> None:
    """Atomically rename ``src`` to ``dst`` (creating dst's folder) and make it durable."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    os.replace(src, dst)
    fsync_dir(dst.parent)


def atomic_write(path: Path, data: bytes | str) -> None:
    """Replace ``path`` with ``data`` so readers see the old or the new content, never half."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    replace(write_temp(path, data), path)


def part_owner_alive(part: Path) -> bool:
    """Whether the process that wrote this temp file may still be writing it.

    On this host the pid in its name answers; a file from another host (shared data_dir) is
    presumed alive until it is STALE_SECONDS old.
    """
    fields = part.name[: -len(PART_SUFFIX)].split("~")
    if len(fields) != 4 or not fields[2].isdigit():
        return False
    host, pid = fields[1], int(fields[2])
    if host == HOST:
        return pid_alive(pid)
    return owner_alive(f"{host}:{pid}", part.stat().st_mtime)


def current_owner() -> str:
    """host:pid of this process (a function: forked workers have their own pid)."""
    return f"{HOST}:{os.getpid()}"


def owner_alive(owner: str, since: float) -> bool:
    """Whether ``host:pid`` (which started something at unix time ``since``) may still run."""
    host, _, pid = owner.rpartition(":")
    if host == HOST and pid.isdigit():
        return pid_alive(int(pid))
    return time.time() - since < STALE_SECONDS


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
