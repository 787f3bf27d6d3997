"""Browsers that outlive their crawl: prevented where the kernel can, cleaned up where not.

Each local browser gets one folder, ``<tmp>/pingo-chrome-*``, holding its profile, an
``owner.json`` (the crawl process and the driver process, with their start times) and two
launchers. The launchers start chromedriver, and chromedriver starts Chromium, with
``PR_SET_PDEATHSIG`` = SIGKILL (``setpriv --pdeathsig``, or a Python stand-in): when the crawl
process dies, even by SIGKILL or the OOM killer, the kernel kills its chromedriver, which
kills its Chromium, whose helpers end with it. (The signal follows the *thread* that started
the process, so the pool's threads outlive their browsers: see ``BrowserPool.close``.)

What the kernel cannot do is remove the folders. :func:`remove_leftovers`, run by every
crawl before it starts, removes the folders whose owning crawl is gone, killing first any
process of theirs still running (a driver started before this version, or on a system
without PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import shlex
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

logger = logging.getLogger(__name__)

PREFIX = "pingo-chrome-"
OWNER = "owner.json"
GRACE_SECONDS = 60.0  # a folder without an owner file may be a browser starting right now


def new_browser_dir() -> Path:
    """A fresh folder for one browser, marked as this process's."""
    folder = Path(tempfile.mkdtemp(prefix=PREFIX))
    write_owner(folder)
    return folder


def write_owner(folder: Path, driver_pid: int | None = None) -> None:
    me = os.getpid()
    data = {"pid": me, "start": _start_time(me)}
    if driver_pid:
        data.update(driver_pid=driver_pid, driver_start=_start_time(driver_pid))
    tmp = folder / (OWNER + ".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, folder / OWNER)


def launcher(folder: Path, name: str, executable: str) -> str:
    """A script in ``folder`` that runs ``executable`` so that it dies with its parent."""
    script = folder / name
    if shutil.which("setpriv"):
        line = f'exec setpriv --pdeathsig KILL -- {shlex.quote(executable)} "$@"'
    else:  # no util-linux: prctl from a Python stand-in, then exec
        code = (
            "import ctypes,os,sys;ctypes.CDLL(None).prctl(1,9);os.execv(sys.argv[1],sys.argv[1:])"
        )
        line = (
            f"exec {shlex.quote(sys.executable)} -c {shlex.quote(code)} "
            f'{shlex.quote(executable)} "$@"'
        )
    script.write_text(f"#!/bin/sh\n{line}\n")
    script.chmod(0o700)
    return str(script)


def ties_supported() -> bool:
    """Linux, and launchers in $TMPDIR can run (not a noexec mount)."""
    return sys.platform.startswith("linux") and _can_exec(tempfile.gettempdir())


@functools.lru_cache(maxsize=8)
def _can_exec(folder: str) -> bool:
    try:
        noexec = os.statvfs(folder).f_flag & os.ST_NOEXEC
    except (OSError, AttributeError):
        return False
    if noexec:  # said once per folder
        logger.warning(
            "%s is mounted noexec: browsers are not tied to the crawl process "
            "(a later crawl still removes what a killed one left)",
            folder,
        )
    return not noexec


def remove_leftovers(tmp_dir: str | None = None) -> int:
    """Remove the browser folders (and processes) of crawls that are gone; how many."""
    removed = 0
    root = Path(tmp_dir or tempfile.gettempdir())
    try:
        folders = [p for p in root.glob(PREFIX + "*") if p.is_dir() and _mine(p)]
    except OSError:
        return 0
    for folder in folders:
        owner = _read_owner(folder)
        if owner is None:
            if time.time() - _mtime(folder) < GRACE_SECONDS or _users(folder):
                continue  # being set up now, or a live browser of an older pingo
        elif _alive(owner.get("pid"), owner.get("start")):
            continue
        _kill(folder, owner or {})
        shutil.rmtree(folder, ignore_errors=True)
        if not folder.exists():
            removed += 1
    if removed:
        logger.info("removed %d browser folder(s) left by crawls that were killed", removed)
    return removed


def _kill(folder: Path, owner: dict) -> None:
    pids = set(_users(folder))
    if _alive(owner.get("driver_pid"), owner.get("driver_start")):
        pids.add(owner["driver_pid"])
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def _users(folder: Path) -> list[int]:
    """Live processes whose command line names ``folder`` (Chromium's --user-data-dir)."""
    needle = str(folder).encode()
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            if needle in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except (OSError, ValueError):
            continue
    return found


def _read_owner(folder: Path) -> dict | None:
    try:
        data = json.loads((folder / OWNER).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _mine(path: Path) -> bool:
    try:
        return path.stat().st_uid == os.getuid()
    except OSError:
        return False


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _start_time(pid: int) -> str | None:
    from crawler.browser import _start_time as start_time

    return start_time(pid)


def _alive(pid, start) -> bool:
    return isinstance(pid, int) and start is not None and _start_time(pid) == start
