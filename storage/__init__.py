"""storage: the metadata DB, the folder layout, atomic file moves and the model registry.

Nothing else in pingo writes SQL or moves files between the dataset folders.
"""

from storage.errors import (
    DuplicateImageError,
    ImageFileMissingError,
    ImageNotFoundError,
    ModelLoadError,
    MoveConflictError,
    MoveRefusedError,
    RegistryEntryError,
    SchemaVersionError,
    StorageError,
    UnknownClassError,
)
from storage.files import HOST, atomic_write, process_gone
from storage.registry import ModelRegistry
from storage.store import Move, MoveResult, Stats, Store, UrlRetry, utcnow

__all__ = [
    "Store",
    "Move",
    "MoveResult",
    "Stats",
    "UrlRetry",
    "ModelRegistry",
    "StorageError",
    "DuplicateImageError",
    "ImageFileMissingError",
    "ImageNotFoundError",
    "MoveConflictError",
    "MoveRefusedError",
    "SchemaVersionError",
    "UnknownClassError",
    "ModelLoadError",
    "RegistryEntryError",
    # for processes that record owners and timestamps the way storage does
    "HOST",
    "atomic_write",
    "process_gone",
    "utcnow",
]
