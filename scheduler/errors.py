"""Named scheduler errors."""

from core.errors import PingoError


class BusyError(PingoError):
    """Another pingo job holds the job lock; the message says which and since when."""

    exit_code = 75  # EX_TEMPFAIL: try again later
