"""storage: the metadata DB, the folder layout, atomic file moves and the model registry.

Nothing else in pingo writes SQL or moves files between the dataset folders.
"""

from storage.errors import (DuplicateImageError, ImageFileMissingError, ImageNotFoundError,
                            ModelLoadError, MoveConflictError, MoveRefusedError,
                            RegistryEntryError, SchemaVersionError, StorageError,
                            UnknownClassError)
from storage.registry import ModelRegistry
from storage.store import Move, MoveResult, Stats, Store, UrlRetry

__all__ = ["Store", "Move", "MoveResult", "Stats", "UrlRetry", "ModelRegistry", "StorageError",
           "DuplicateImageError", "ImageFileMissingError", "ImageNotFoundError",
           "MoveConflictError", "MoveRefusedError", "SchemaVersionError", "UnknownClassError",
           "ModelLoadError", "RegistryEntryError"]
