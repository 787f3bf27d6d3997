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
from dataclasses import dataclass
from pathlib import Path

from core.config import check_safe_name

logger = logging.getLogger(__name__)

# status -> top-level folder
STATUS_DIRS = {"inbox": "inbox", "accepted": "dataset", "review": "review", "rejected": "rejected"}
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


def image_relpath(
    status: str, sha256: str, ext: str, *, label: str | None = None, reason: str | None = None
) -> str:
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


def fsync_file(path: Path) -> None:
    """Flush a file's content to disk (e.g. a model before CURRENT names it)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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


def write_temp(final: Path, data: bytes | memoryview) -> Path:
    """Write ``data`` durably to a hidden temp file beside ``final``; return its path.

    The name (.<final>~<host>~<pid>~<start>~<boot>~<random>.part) carries the writer's
    identity (current_owner) so a repair can tell a dead writer's leftovers from a live
    writer's file in progress.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    owner = current_owner().replace(":", "~")
    fd, tmp = tempfile.mkstemp(
        dir=final.parent, prefix=f".{final.name}~{owner}~", suffix=PART_SUFFIX
    )
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


def atomic_write(path: Path, data: bytes | str | memoryview) -> None:
    """Replace ``path`` with ``data`` so readers see the old or the new content, never half."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    replace(write_temp(path, data), path)


def part_owner_alive(part: Path) -> bool:
    """Whether the process that wrote this temp file may still be writing it.

    The name carries the writer's identity: ~host~pid~ (older pingo) or
    ~host~pid~start~boot~ (see current_owner). A file from another host (shared data_dir) is
    presumed alive until it is STALE_SECONDS old.
    """
    fields = part.name[: -len(PART_SUFFIX)].split("~")
    if len(fields) == 6:
        owner = ":".join(fields[1:5])
    elif len(fields) == 4:
        owner = ":".join(fields[1:3])
    else:
        return False
    try:
        mtime = part.stat().st_mtime
    except FileNotFoundError:
        return True  # already gone (another repair): nothing to remove
    return owner_alive(owner, mtime)


@dataclass(frozen=True)
class Owner:
    """Who is doing something: host, pid, and (since schema v3) the process's start time in
    clock ticks after boot and the boot id, so that a pid reused after a reboot, a container
    restart (the scheduler is often pid 1) or plain wrap-around is not taken for the owner."""

    host: str
    pid: int
    start: str | None = None
    boot: str | None = None

    def __str__(self) -> str:
        return f"{self.host}:{self.pid}:{self.start or '0'}:{self.boot or '0'}"


def parse_owner(owner: str) -> Owner | None:
    """host:pid:start:boot, or the older host:pid; None when it is neither."""
    parts = owner.rsplit(":", 3)
    if len(parts) == 4 and parts[1].isdigit():
        start, boot = parts[2], parts[3]
        return Owner(
            parts[0], int(parts[1]), None if start == "0" else start, None if boot == "0" else boot
        )
    host, _, pid = owner.rpartition(":")
    if host and pid.isdigit():
        return Owner(host, int(pid))
    return None


def current_owner() -> str:
    """host:pid:start:boot of this process (a function: forked workers have their own pid)."""
    pid = os.getpid()
    return str(Owner(HOST, pid, process_start(pid), BOOT_ID))


def owner_alive(owner: str, since: float, last_seen: float | None = None) -> bool:
    """Whether ``owner`` (which started something at unix time ``since``) may still run.

    On this host: its boot, pid and process start time answer. An owner in the older host:pid
    form counts as gone when the pid's process started after ``since`` or before this boot,
    so reused pids are still told apart. On another host: presumed alive until STALE_SECONDS
    after ``last_seen`` (a heartbeat), else after ``since``.
    """
    o = parse_owner(owner)
    if o is None or o.host != HOST:
        return time.time() - (last_seen or since) < STALE_SECONDS
    if o.boot and BOOT_ID and o.boot != BOOT_ID:
        return False  # recorded before a reboot
    if not pid_alive(o.pid) or exited(o.pid):
        return False
    started = process_start(o.pid)
    if started is None:
        return True  # no /proc: the pid is all we know
    if o.start:
        return started == o.start
    began = started_at(started)
    if began is None:
        return True
    # Slack: the owner's start time is read in clock ticks; since is the DB's clock.
    return began <= since + 2.0


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def process_start(pid: int) -> str | None:
    """The process's start time in clock ticks after boot (/proc/<pid>/stat field 22)."""
    fields = _proc_stat(pid)
    return fields[19] if fields and len(fields) > 19 else None


def _proc_stat(pid: int) -> list[str] | None:
    """/proc/<pid>/stat from field 3 (state) on; None without /proc or without the process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name may contain spaces; the fields after the last ")" are fixed.
    return stat.rsplit(")", 1)[1].split()


def exited(pid: int) -> bool:
    """A zombie (or dying) process: it has exited, its parent just has not reaped it yet.

    A crawl child killed with its CLI is reparented to pid 1, which may reap it late; until
    then kill(pid, 0) succeeds and its start time still matches, yet it will never finish
    its move."""
    fields = _proc_stat(pid)
    return fields is not None and bool(fields) and fields[0] in ("Z", "X", "x")


def process_gone(pid: int) -> bool:
    """Whether process ``pid`` of this host is gone: no such process, or one that exited and
    waits to be reaped. For owners recorded as host:pid (e.g. factory workers' inbox claims)."""
    return not pid_alive(pid) or exited(pid)


def started_at(ticks: str) -> float | None:
    """Unix time of a process start read by process_start."""
    boot = _boot_time()
    if boot is None or not ticks.isdigit():
        return None
    return boot + int(ticks) / os.sysconf("SC_CLK_TCK")


def _boot_time() -> float | None:
    try:
        for line in Path("/proc/stat").read_text().splitlines():
            if line.startswith("btime "):
                return float(line.split()[1])
    except OSError:
        pass
    return None


def _boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip().replace("-", "")[:12]
    except OSError:
        return None


BOOT_ID = _boot_id()
