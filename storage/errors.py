"""Named storage errors (all PingoError, so the CLI prints them cleanly)."""

from core.errors import PingoError


class StorageError(PingoError):
    """The metadata DB or the data folders cannot be used as asked."""


class SchemaVersionError(StorageError):
    """The DB was written by a newer pingo than this one."""


class DuplicateImageError(StorageError):
    """The exact bytes are already stored; ``existing_id`` is the row that has them."""

    def __init__(self, existing_id: int, sha256: str):
        super().__init__(f"identical bytes already stored as image {existing_id}")
        self.existing_id = existing_id
        self.sha256 = sha256


class ImageNotFoundError(StorageError):
    """No image row with that id."""


class MoveConflictError(StorageError):
    """Another process has a move of the same image in flight."""


class MoveRefusedError(StorageError):
    """The move was not made: a person decided the image, or its row changed meanwhile."""


class ImageFileMissingError(StorageError):
    """The image's file is nowhere in data_dir; its row now says rejected, file_missing."""


class UnknownClassError(StorageError):
    """A class folder or label that the config does not declare."""


class RegistryEntryError(StorageError):
    """A model version that does not exist, is incomplete, or cannot be promoted."""


class ModelLoadError(StorageError):
    """A registry entry whose files are missing or unreadable, or whose model.keras does not
    load (Keras safe mode) or does not fit its classes, input size or the configured classes.

    Raised by storage.registry (the files) and vision.model (the Keras model) alike.
    """
