"""Named trainer errors (all PingoError, so the CLI prints them as one line)."""

from core.errors import PingoError


class TrainerError(PingoError):
    """Training cannot run or cannot finish as asked."""


class NotEnoughDataError(TrainerError):
    """Too few images (per class or per split) to train and evaluate honestly."""


class UnknownArchError(TrainerError):
    """An architecture name that trainer.models does not define."""
