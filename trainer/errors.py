"""Named trainer errors (all PingoError, so the CLI prints them as one line)."""

from core.errors import PingoError


class TrainerError(PingoError):
    """Training cannot run or cannot finish as asked."""


class NotEnoughDataError(TrainerError):
    """Too few images (per class or per split) to train and evaluate honestly."""


class UnknownArchError(TrainerError):
    """An architecture name that trainer.models does not define."""


class ModelLoadError(TrainerError):
    """A registry model.keras that Keras (safe mode) cannot load, or one that does not fit."""


class RegistryEntryError(TrainerError):
    """A model version that does not exist, is incomplete, or cannot be promoted."""
