"""Is a downloaded body an image pingo keeps? Checked in worker processes, under a time limit.

A crawled body is remote, untrusted data. :func:`inspect` opens it only as one of
``core.imageformats.ALLOWED_FORMATS`` (Pillow would otherwise hand an EPS body to
Ghostscript), refuses it from its header when it is over the pixel limit, and decodes it fully.
:class:`ImageChecker` runs :func:`inspect` in long-lived worker processes so that a body that
decodes for minutes (a progressive JPEG with thousands of scans) or crashes the decoder costs
one killed worker, never the crawl: past ``timeout`` seconds the worker is killed and the
body refused.

A verdict is ``("ok", ext, width, height)`` or ``("refused", reason, detail)``; reasons:
``not_image`` (not an allowed format, or undecodable within the time limit, or it crashed
the decoder), ``corrupt`` (an allowed format's header, damaged data), ``too_small``,
``too_large``. This module imports no Scrapy, so workers start light.
"""

from __future__ import annotations

import io
import json
import logging
import os
import queue
import select
import signal
import struct
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO

from core.imageformats import ALLOWED_FORMATS, EXTENSIONS, looks_like_allowed

logger = logging.getLogger(__name__)

MEMORY_LIMIT = 2 << 30  # bytes of address space a worker may add to what it has at start
START_TIMEOUT = 60.0  # seconds a new worker may take to start (not counted as decoding)
PROJECT_ROOT = Path(__file__).resolve().parents[1]

Verdict = tuple  # ("ok", ext, width, height) | ("refused", reason, detail)


def inspect(body: bytes, content_type: str, min_side: int, max_pixels: int) -> Verdict:
    """Open and fully decode ``body`` in this process (no time limit: see ImageChecker)."""
    from PIL import Image, UnidentifiedImageError

    Image.init()
    openers = [f for f in sorted(ALLOWED_FORMATS) if f in Image.OPEN]  # MPO opens as JPEG
    try:
        # The pixel limit is checked here, from the header, before anything is decoded; not
        # through Pillow's process-wide MAX_IMAGE_PIXELS, which would also change the limit
        # of every other decoder in the process (the factory's, in tests and `pingo demo`).
        with Image.open(io.BytesIO(body), formats=openers) as img:
            fmt, (width, height) = img.format or "", img.size  # opened: it has a format
            if width * height > max_pixels:
                return ("refused", "too_large", f"{width}x{height} pixels")
            if min(width, height) < min_side:
                return ("refused", "too_small", f"{width}x{height} pixels")
            if fmt in ("JPEG", "MPO"):
                img.draft("RGB", (max(1, width // 8), max(1, height // 8)))  # fast full pass
            img.load()  # decodes everything: truncated or garbled data fails here
    except (Image.DecompressionBombError, MemoryError) as exc:
        return ("refused", "too_large", str(exc)[:120])
    except UnidentifiedImageError:
        reason = "corrupt" if looks_like_allowed(body[:16]) else "not_image"
        return ("refused", reason, content_type or "no content type")
    except Exception as exc:  # any decoder error is the body's fault, never the network's
        return ("refused", "corrupt", f"{type(exc).__name__}: {str(exc)[:120]}")
    return ("ok", EXTENSIONS[fmt], width, height)


class ImageChecker:
    """Check bodies in worker processes, at most ``timeout`` seconds each.

    Thread-safe: each calling thread borrows an idle worker (or starts one), so as many
    checks run at once as there are callers (the pipeline's writer threads). A worker is a
    plain ``python -m crawler.imagecheck`` child talking over its stdin/stdout: no pickle,
    no fork of the threaded crawl process.
    """

    def __init__(self, min_side: int, max_pixels: int, timeout: float):
        self.min_side = min_side
        self.max_pixels = max_pixels
        self.timeout = timeout
        self._idle: queue.SimpleQueue[_Worker] = queue.SimpleQueue()
        self._all: set[_Worker] = set()
        self._lock = threading.Lock()
        self._closed = False
        self.timeouts = 0  # bodies refused for taking too long (the pipeline counts them)
        self.crashes = 0

    def check(self, body: bytes, content_type: str) -> Verdict:
        worker = self._borrow()
        verdict = worker.ask(
            body,
            {
                "content_type": content_type,
                "min_side": self.min_side,
                "max_pixels": self.max_pixels,
            },
            self.timeout,
        )
        if verdict is not None:
            self._idle.put(worker)
            return verdict
        self._drop(worker)
        if worker.timed_out:
            self.timeouts += 1
            logger.warning("an image took over %gs to decode; refused as not_image", self.timeout)
            return ("refused", "not_image", f"decoding took over {self.timeout:g}s")
        self.crashes += 1
        logger.warning(
            "an image crashed its decoder (exit code %s); refused as not_image",
            worker.process.returncode,
        )
        return ("refused", "not_image", "the decoder crashed")

    def close(self) -> None:
        self._closed = True
        with self._lock:
            workers, self._all = list(self._all), set()
        for worker in workers:
            worker.stop()

    def _borrow(self) -> _Worker:
        while True:
            try:
                worker = self._idle.get_nowait()
            except queue.Empty:
                break
            if worker.process.poll() is None:
                return worker
            self._drop(worker)  # died while idle (e.g. killed from outside)
        if self._closed:
            raise RuntimeError("the image checker is closed")
        worker = _Worker()
        with self._lock:
            self._all.add(worker)
        return worker

    def _drop(self, worker: _Worker) -> None:
        with self._lock:
            self._all.discard(worker)
        worker.kill()


class _Worker:
    def __init__(self):
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")])
        )
        # Its own session: Ctrl-C or SIGTERM sent to the crawl's process group must not kill
        # a worker, not even while it starts (before it ignores them); a killed check would be
        # recorded as a body that crashed the decoder and the image refused for good. It ends
        # when the crawl closes its stdin, or dies with the crawl (PR_SET_PDEATHSIG, EOF).
        self.process = subprocess.Popen(
            [sys.executable, "-m", "crawler.imagecheck"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            close_fds=True,
            start_new_session=True,
        )
        stdin, stdout = self.process.stdin, self.process.stdout
        assert stdin is not None and stdout is not None  # both PIPE: always set
        self.stdin: IO[bytes] = stdin
        self.stdout: IO[bytes] = stdout
        self.timed_out = False
        self._ready = False

    def ask(self, body: bytes, meta: dict, timeout: float) -> Verdict | None:
        """The worker's verdict, or None when it took too long or died."""
        try:
            if not self._ready:  # starting is not decoding: its own, generous limit
                if self._read(START_TIMEOUT) != "ready":
                    return None
                self._ready = True
            head = json.dumps(meta).encode()
            self.stdin.write(struct.pack(">II", len(head), len(body)) + head + body)
            self.stdin.flush()
            answer = self._read(timeout)
        except (OSError, ValueError):  # the worker is gone (broken pipe)
            return None
        if answer is None:
            self.timed_out = self.process.poll() is None
            return None
        return tuple(json.loads(answer))

    def _read(self, timeout: float) -> str | None:
        out = self.stdout
        ready, _, _ = select.select([out], [], [], timeout)
        if not ready:
            return None
        line = out.readline()  # the worker writes each answer as one whole line
        return line.decode().strip() if line else None

    def kill(self) -> None:
        try:
            self.process.kill()
        except OSError:
            pass
        self.process.wait(5)
        self._close_pipes()

    def stop(self) -> None:
        try:
            self.stdin.close()  # end of input: the worker exits
            self.process.wait(2)
        except (OSError, subprocess.TimeoutExpired):
            self.kill()
        self._close_pipes()

    def _close_pipes(self) -> None:
        for pipe in (self.stdin, self.stdout):
            try:
                pipe.close()
            except OSError:
                pass


def _serve() -> None:
    """A worker: one verdict line per request on stdin, until stdin ends."""
    from PIL import Image

    # The crawl decides when to stop (see _Worker): a stop signal sent to this pid is ignored.
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
    _die_with_parent()
    _limit_memory()
    Image.MAX_IMAGE_PIXELS = None  # inspect() applies the configured limit itself
    Image.init()  # load the format plugins now, not within the first body's time limit
    inp, out = sys.stdin.buffer, sys.stdout.buffer
    out.write(b"ready\n")
    out.flush()
    while True:
        sizes = inp.read(8)
        if len(sizes) < 8:
            return
        head_len, body_len = struct.unpack(">II", sizes)
        meta = json.loads(inp.read(head_len))
        body = inp.read(body_len)
        verdict = inspect(body, meta["content_type"], meta["min_side"], meta["max_pixels"])
        out.write(json.dumps(verdict).encode() + b"\n")
        out.flush()


def _die_with_parent() -> None:
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass


def _limit_memory() -> None:
    try:
        import resource

        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[0])
        limit = pages * os.sysconf("SC_PAGE_SIZE") + MEMORY_LIMIT
        resource.setrlimit(resource.RLIMIT_AS, (limit, resource.RLIM_INFINITY))
    except (ImportError, OSError, ValueError):
        pass


if __name__ == "__main__":
    _serve()
