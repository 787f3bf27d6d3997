"""Named errors of the dataset factory (PingoError subclasses: the CLI prints them cleanly)."""

from core.errors import PingoError


class FactoryError(PingoError):
    """The factory cannot run as asked."""


class ModelLoadError(FactoryError):
    """The promoted model in the registry is missing, unreadable or breaks the contract."""


class ReviewError(FactoryError):
    """A review decision that cannot be applied (wrong id, status or label)."""


class InvalidImage(Exception):
    """One file is not a usable image; ``reason`` becomes its rejected/<reason>/ folder.

    Not a PingoError: it never reaches the user as an error, it becomes a recorded rejection.
    """

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
