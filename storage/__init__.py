"""storage: the metadata DB, the folder layout, atomic file moves and the model registry.

Nothing else in pingo writes SQL or moves files between the dataset folders.
"""

from storage.errors import (DuplicateImageError, ImageNotFoundError, MoveConflictError,
                            SchemaVersionError, StorageError, UnknownClassError)
from storage.registry import ModelRegistry
from storage.store import Move, Stats, Store, UrlRetry

__all__ = ["Store", "Move", "Stats", "UrlRetry", "ModelRegistry", "StorageError",
           "DuplicateImageError", "ImageNotFoundError", "MoveConflictError", "SchemaVersionError",
           "UnknownClassError"]
