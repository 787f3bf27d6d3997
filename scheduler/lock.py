"""One pingo job at a time per data_dir, across processes.

An exclusive flock on data_dir/.job.lock: the kernel drops it when the holder exits or is
killed, so a crash never leaves a stale lock. The holder writes who it is beside it, so a
refused caller can say what it is waiting for.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from scheduler.errors import BusyError
from storage import HOST, atomic_write

logger = logging.getLogger(__name__)


class JobLock:
    def __init__(self, data_dir: Path):
        self.path = Path(data_dir) / ".job.lock"
        self.info_path = Path(data_dir) / ".job.lock.json"

    def holder(self) -> str:
        try:
            info = json.loads(self.info_path.read_text())
            return f"{info['job']} (pid {info['pid']} on {info['host']}, since {info['since']})"
        except (OSError, ValueError, KeyError):
            return "another pingo process"

    @contextmanager
    def hold(
        self, job: str, wait: float = 0.0, poll: float = 0.5, shared: bool = False
    ) -> Iterator[None]:
        """Hold the lock for ``job``; wait up to ``wait`` seconds, then raise BusyError.

        ``shared``: jobs built to run side by side (distributed crawl and factory workers)
        hold it together, and still exclude every exclusive job such as training.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            deadline = time.monotonic() + wait
            announced = False
            while True:
                try:
                    fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise BusyError(
                            f"busy: {self.holder()} is running; {job} not started (try again later)"
                        ) from None
                    if not announced:
                        logger.info("%s waits for %s", job, self.holder())
                        announced = True
                    time.sleep(poll)
            atomic_write(
                self.info_path,
                json.dumps(
                    {
                        "job": job,
                        "pid": os.getpid(),
                        "host": HOST,
                        "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    }
                ),
            )
            yield
        finally:
            os.close(fd)  # releases the flock
