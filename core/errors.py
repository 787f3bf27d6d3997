"""Named exceptions shared by every package. The CLI maps them to messages and exit codes."""


class PingoError(Exception):
    """Base class: anything pingo refuses or cannot do, with a message meant for a person."""

    exit_code = 1


class ConfigError(PingoError):
    """The configuration is missing, unreadable or has a bad value (names the key)."""

    exit_code = 2


class UnsafeNameError(ConfigError):
    """A class name that would not be a safe single folder name."""


class UnknownSourceError(ConfigError):
    """A search source that no built-in or configured profile defines."""


class BadProfileError(ConfigError):
    """A search-source profile in the config is malformed."""
