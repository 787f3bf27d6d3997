"""Decode-check and hash inbox files in worker processes, each file under a time and memory bound.

One worker per core (``factory.workers``). A worker runs each file under SIGALRM
(``decode_timeout``) and an address-space limit, so a hostile file costs at most that; a
worker that dies anyway (segfault, OOM kill) breaks the pool, and the files it may have held
are retried one by one in a fresh pool so that only the culprit is rejected
(``decode_crash``). Workers are started with forkserver/spawn: forking a process that has
loaded TensorFlow is unsafe.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import CancelledError, ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dataset_factory.errors import FactoryError
from dataset_factory.hashing import all_hashes, hash_int
from dataset_factory.verify import thumbs
from vision.decode import Limits, decode
from vision.errors import InvalidImage

logger = logging.getLogger(__name__)

TASK = 8  # files per task sent to a worker
# How often a wait for a task looks whether a worker process has died. The executor usually
# says so itself (BrokenProcessPool), but a worker killed at the wrong moment can leave it
# waiting until the watchdog budget (minutes) runs out.
POLL = 0.5
MEMORY_LIMIT = 3 << 30  # bytes of address space per worker beyond what it has at start


@dataclass(frozen=True)
class Job:
    image_id: int
    path: str


@dataclass(frozen=True)
class Settings:
    method: str = "phash"
    limits: Limits = Limits()
    timeout: float = 30.0
    hard: bool = True


@dataclass
class Analysis:
    image_id: int
    reason: str | None = None  # None: a usable image
    detail: str = ""
    width: int | None = None
    height: int | None = None
    phash: int | None = None  # signed 64-bit, of ``Settings.method``
    views: list[int] = field(default_factory=list)  # stored for kept images
    mirror_views: list[int] = field(default_factory=list)  # tried only when querying
    thumbs: list[np.ndarray] = field(default_factory=list)  # for verification, as a query
    kept_thumbs: list[np.ndarray] = field(default_factory=list)  # the same, once it is kept

    @property
    def ok(self) -> bool:
        return self.reason is None


class _Timeout(BaseException):
    """Raised by SIGALRM; a BaseException so that no ``except Exception`` in a decoder eats it."""


def _alarm(signum, frame):
    raise _Timeout()


def analyse(job: Job, settings: Settings) -> Analysis:
    """Decode, check and hash one file (runs in a worker, or inline)."""
    try:
        return _analyse_bounded(job, settings)
    except _Timeout:  # the alarm fired while the result was being handed back
        return Analysis(job.image_id, reason="decode_timeout", detail=f"over {settings.timeout:g}s")


def _analyse_bounded(job: Job, settings: Settings) -> Analysis:
    use_alarm = hasattr(signal, "SIGALRM") and settings.timeout > 0 and _in_main_thread()
    if use_alarm:
        old = signal.signal(signal.SIGALRM, _alarm)
        signal.setitimer(signal.ITIMER_REAL, settings.timeout)
    try:
        decoded = decode(job.path, settings.limits)
        image = decoded.image
        result = Analysis(job.image_id, width=decoded.width, height=decoded.height)
        if settings.hard:
            hashed = all_hashes(image, settings.method)
            result.phash, result.views, result.mirror_views = (
                hashed.main,
                hashed.stored,
                hashed.mirrored,
            )
            found = thumbs(hashed.gray, hashed.boxes)
            result.thumbs, result.kept_thumbs = found.query, found.kept
        else:
            result.phash = hash_int(image, settings.method)
        return result
    except InvalidImage as exc:
        return Analysis(job.image_id, reason=exc.reason, detail=exc.detail[:300])
    except _Timeout:
        return Analysis(job.image_id, reason="decode_timeout", detail=f"over {settings.timeout:g}s")
    except MemoryError:
        return Analysis(job.image_id, reason="decompression_bomb", detail="memory limit")
    except Exception as exc:  # a decoder bug on one odd file must not stop the run
        logger.warning(
            "image %d: unexpected %s while decoding %s",
            job.image_id,
            type(exc).__name__,
            job.path,
            exc_info=True,
        )
        return Analysis(job.image_id, reason="undecodable", detail=f"{type(exc).__name__}: {exc}")
    finally:
        if use_alarm:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)


def analyse_many(jobs: list[Job], settings: Settings) -> list[Analysis]:
    return [analyse(job, settings) for job in jobs]


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _worker_init() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    try:  # one process per core already: BLAS threads would only fight over the cores
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except ImportError:
        pass
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        with open("/proc/self/statm") as fh:
            used = int(fh.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        limit = used + MEMORY_LIMIT
        if hard == resource.RLIM_INFINITY or limit < hard:
            resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    except (ImportError, OSError, ValueError):
        pass  # no rlimit here: the pixel limit and the timeout still bound the work


def _probe() -> bool:
    return True


def _context():
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")


def worker_count(configured: int) -> int:
    return configured or max(
        1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    )


class Analyser:
    """A pool of hashing workers; use as a context manager."""

    def __init__(self, settings: Settings, workers: int = 0):
        self.settings = settings
        self.workers = worker_count(workers)
        self._pool: ProcessPoolExecutor | None = None

    def __enter__(self) -> Analyser:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def _executor(self, workers: int | None = None) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            workers or self.workers, mp_context=_context(), initializer=_worker_init
        )

    def run(
        self, jobs: Iterable[Job], progress: Callable[[int], None] | None = None
    ) -> Iterator[Analysis]:
        """Analyses in the order of ``jobs`` (sent to workers in small groups: less IPC)."""
        return self.submit(jobs).results(progress)

    def submit(self, jobs: Iterable[Job]) -> Pending:
        """Queue ``jobs`` on the workers now; their analyses come from ``.results()``.

        The factory submits the next chunk before deciding the current one, so the workers
        hash while the main process decides.
        """
        jobs = list(jobs)
        if not jobs:
            return Pending(self, [], [], [], None)
        if self._pool is None:
            self._pool = self._executor()
        size = max(1, min(TASK, len(jobs) // (self.workers * 4) or 1))
        groups = [jobs[i : i + size] for i in range(0, len(jobs), size)]
        futures = [self._pool.submit(analyse_many, group, self.settings) for group in groups]
        return Pending(self, jobs, groups, futures, self._pool)

    def _wait(self, fut, budget: float | None):
        """``fut``'s result; BrokenProcessPool as soon as a worker is seen dead, FutureTimeout
        once ``budget`` seconds have passed (None: no bound)."""
        deadline = None if budget is None else time.monotonic() + budget
        while True:
            try:
                return fut.result(timeout=POLL)
            except FutureTimeout:
                if self._a_worker_died():
                    raise BrokenProcessPool("a hashing worker process died") from None
                if deadline is not None and time.monotonic() > deadline:
                    raise

    def _a_worker_died(self) -> bool:
        processes = getattr(self._pool, "_processes", None) or {}
        return any(p.exitcode is not None for p in list(processes.values()))

    def _budget(self, files: int) -> float | None:
        """Seconds to wait for a task before the watchdog presumes its worker hung in C code
        (where SIGALRM cannot reach): twice every file's own bound, plus start-up slack."""
        if self.settings.timeout <= 0:
            return None
        return 2 * files * (self.settings.timeout + 1) + 30

    def _kill_pool(self, pool: ProcessPoolExecutor | None = None, broken: bool = False) -> None:
        pool = pool or self._pool
        if pool is None:
            return
        for pid in list(getattr(pool, "_processes", {}) or {}):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if broken:
            _unstick_manager(pool)
        pool.shutdown(wait=False, cancel_futures=True)
        if pool is self._pool:
            self._pool = None

    def _one_by_one(self, jobs: list[Job], progress) -> Iterator[Analysis]:
        for job in jobs:
            pool = self._executor(1)
            broken = False
            try:
                try:
                    pool.submit(_probe).result(timeout=120)
                except (BrokenProcessPool, FutureTimeout):
                    raise FactoryError(
                        "hashing worker processes cannot start (is the main module import-safe?)"
                    ) from None
                try:
                    result = pool.submit(analyse, job, self.settings).result(
                        timeout=self._budget(1)
                    )
                except BrokenProcessPool:
                    broken = True
                    logger.error("image %d crashed its decoder: %s", job.image_id, job.path)
                    result = Analysis(
                        job.image_id, reason="decode_crash", detail="the decoder process died"
                    )
                except FutureTimeout:
                    broken = True
                    logger.error("image %d hung its decoder: %s", job.image_id, job.path)
                    result = Analysis(
                        job.image_id, reason="decode_timeout", detail="the decoder process hung"
                    )
            finally:
                self._kill_pool(pool, broken)
            if progress:
                progress(1)
            yield result


class Pending:
    """Jobs queued on the pool by ``Analyser.submit``."""

    def __init__(self, analyser: Analyser, jobs, groups, futures, pool):
        self.analyser = analyser
        self.jobs, self.groups, self.futures, self.pool = jobs, groups, futures, pool

    def results(self, progress: Callable[[int], None] | None = None) -> Iterator[Analysis]:
        """The analyses in the order of the jobs; when a worker dies or hangs, the files not
        answered yet are retried one by one, so only the culprit is rejected."""
        a, done = self.analyser, 0
        for group, fut in zip(self.groups, self.futures):
            try:
                if self.pool is not a._pool and not fut.done():
                    raise CancelledError()  # its pool was killed for an earlier submission
                results = a._wait(fut, a._budget(len(group)))
            except (BrokenProcessPool, FutureTimeout, CancelledError) as exc:
                if self.pool is a._pool:  # else already killed, for jobs submitted before
                    logger.warning(
                        "a hashing worker %s; retrying %d files one by one",
                        "hung" if isinstance(exc, FutureTimeout) else "died",
                        len(self.jobs) - done,
                    )
                    a._kill_pool(broken=True)
                yield from a._one_by_one(self.jobs[done:], progress)
                return
            for result in results:
                done += 1
                if progress:
                    progress(1)
                yield result


def _unstick_manager(pool: ProcessPoolExecutor) -> None:
    """Let a broken pool's manager thread end.

    A worker killed while it was sending a result leaves the executor's manager thread (not a
    daemon) blocked in recv() for bytes that never come (CPython), and interpreter exit then
    waits for it forever. Filling the result pipe from a daemon thread ends that read: the
    manager sees garbage, marks the pool broken and exits. A manager that was not stuck reads
    the same garbage while the pool is being killed anyway.
    """
    thread = getattr(pool, "_executor_manager_thread", None)
    writer = getattr(getattr(pool, "_result_queue", None), "_writer", None)
    if thread is None or writer is None or not thread.is_alive():
        return

    def fill() -> None:
        chunk = b"\0" * 65536
        for _ in range(256):  # up to 16 MB: more than any task's result
            if not thread.is_alive():
                return
            try:
                writer.send_bytes(chunk)
            except (OSError, ValueError):
                return

    threading.Thread(target=fill, name="pingo-hash-pool-unstick", daemon=True).start()


def analyse_paths(
    paths: Iterable[str | Path], settings: Settings = Settings(), workers: int = 0
) -> list[Analysis]:
    """Convenience for benchmarks and tools: analyse files without a Store."""
    with Analyser(settings, workers) as analyser:
        return list(analyser.run(Job(i, str(p)) for i, p in enumerate(paths)))
