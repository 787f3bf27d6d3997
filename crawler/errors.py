"""Named crawler errors (PingoError subclasses, so the CLI prints them as one line)."""

from core.errors import ConfigError, PingoError


class CrawlError(PingoError):
    """A crawl could not run or did not finish."""


class UnknownCrawlClassError(ConfigError):
    """A class asked for on the command line that the config does not declare."""


class SourceRefusedError(CrawlError):
    """Every source asked for is one that cannot start as configured (the message says what
    to set)."""


class BrowserError(CrawlError):
    """A browser could not be started or kept rendering pages."""


class DemoSiteError(PingoError):
    """The demo search site cannot serve as asked (missing folder, port taken)."""


class CrawlInterrupted(CrawlError):
    """The crawl was stopped by SIGINT or SIGTERM before it finished (not a crash).

    ``signame`` names the signal; ``stats`` holds what the crawl did until then, if known.
    The exit status follows the shell's convention: 128 + the signal number."""

    def __init__(self, message: str, signame: str = "SIGINT", stats: dict | None = None):
        super().__init__(message)
        self.signame = signame
        self.stats = stats or {}
        self.exit_code = 143 if signame == "SIGTERM" else 130
