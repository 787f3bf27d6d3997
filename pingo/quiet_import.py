"""TensorFlow's C++ start-up lines kept off the console, at no start-up cost.

TensorFlow 2.21 prints "oneDNN custom operations are on" and "All log messages before
absl::InitializeLog() ..." on fd 2 while its package is first imported, before
TF_CPP_MIN_LOG_LEVEL or any logging setting applies. ``install`` puts a finder first on
``sys.meta_path`` that lets that one import run with fd 2 pointed at /dev/null, whenever and
wherever a command first imports TensorFlow (or Keras, which imports it); commands that never
need it never load it. Errors still surface as the import's exception.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

PACKAGE = "tensorflow"


@contextmanager
def stderr_to_devnull() -> Iterator[None]:
    """fd 2 (what C++ writes to) points at /dev/null inside the block."""
    sys.stderr.flush()
    saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(null)
        os.close(saved)


class _QuietLoader(importlib.abc.Loader):
    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module) -> None:
        with stderr_to_devnull():
            self.loader.exec_module(module)


class _QuietTensorFlowFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != PACKAGE:
            return None
        sys.meta_path.remove(self)  # once: the real finders locate it
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader)
        return spec


def install() -> None:
    """Quiet TensorFlow's first import in this process (no-op once it is imported)."""
    if PACKAGE in sys.modules or any(isinstance(f, _QuietTensorFlowFinder) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _QuietTensorFlowFinder())
