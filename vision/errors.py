"""Named errors of vision. ModelLoadError lives in storage.errors (the registry raises it too)."""


class InvalidImage(Exception):
    """One file is not a usable image; ``reason`` becomes its rejected/<reason>/ folder.

    Not a PingoError: it never reaches the user as an error, it becomes a recorded rejection.
    """

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
