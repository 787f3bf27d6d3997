"""dataset_factory: validation, hashing, near-duplicate index, batch classification, routing.

Entry point: ``process_inbox(config, store, progress=None)`` (``from dataset_factory import
process_inbox``); it returns a ``FactorySummary``.

hashing     perceptual hashes as signed 64-bit ints, plus hard-edit views
hash_pool   the worker pool running vision.decode + hashing under time/memory bounds
index       the persistent XOR + popcount index of every kept image
verify      aligned thumbnail correlation that confirms hard-duplicate candidates
dedupe      duplicate decisions (which copy stays) and index/DB reconciliation
leases      inbox claims, so that several workers never take the same image
index_sync  each worker's copy of the index kept in step with the others' (the factory lock)
classify    the promoted model (vision.model), batched through vision.pixels
run         process_inbox and FactoryRun: chunks, routing, crash-safe moves through storage
review      a person's accept / relabel / reject decisions

Importing the package is cheap: the entry point is imported on first use (it brings numpy,
Pillow and SQLAlchemy; TensorFlow only when a model is loaded), so ``dataset_factory.review``
or ``dataset_factory.errors`` alone do not pay for it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dataset_factory.run import FactorySummary, process_inbox

__all__ = ["FactorySummary", "process_inbox"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from dataset_factory import run

        return getattr(run, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
