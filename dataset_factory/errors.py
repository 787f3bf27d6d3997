"""Named errors of the dataset factory (PingoError subclasses: the CLI prints them cleanly)."""

from core.errors import PingoError


class FactoryError(PingoError):
    """The factory cannot run as asked."""


class ReviewError(FactoryError):
    """A review decision that cannot be applied (wrong id, status or label)."""
