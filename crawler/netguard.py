"""No downloads from loopback, link-local or private addresses (server-side request forgery).

A results page is remote data: it can name ``http://169.254.169.254/`` (cloud metadata),
``http://10.0.0.5/admin`` or ``http://127.0.0.1:6379/`` as an image URL, or an image URL can
redirect there. :class:`PrivateAddressMiddleware` (a downloader middleware, before robots.txt,
so every request, redirects and retries included, passes it) resolves each request's host
and refuses it with :class:`PrivateAddressRefused` (reason ``private_address``) when any
address is not public, before any connection is made. The checked address is put into
Scrapy's DNS cache, so the connection goes to the address that was checked (a DNS answer
that changes in between cannot slip a private address in).

Allowed anyway: ``PINGO_TRUSTED_ORIGINS`` (host:port pairs; the crawl's demo site,
crawl.demo_url) and everything when ``PINGO_ALLOW_PRIVATE_NETWORKS`` is on
(crawl.allow_private_networks, for an intranet crawl). Result pages rendered by the browser
come from the configured search sources and are not checked here, nor is the robots.txt
fetched to decide whether such a page may be rendered (crawler.robots).
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import time
from urllib.parse import urlsplit

from scrapy.exceptions import IgnoreRequest

logger = logging.getLogger(__name__)

CACHE_SECONDS = 60.0  # how long one host's verdict is reused within a crawl


class PrivateAddressRefused(IgnoreRequest):
    """A request to a loopback, link-local, private or otherwise non-public address."""

    reason = "private_address"


def is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def origin(url: str) -> tuple[str, int] | None:
    """(host, port) of an http(s) URL, the host lower-case; None for anything else."""
    try:
        parts = urlsplit(url)
        port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname or port is None:
        return None
    return parts.hostname.lower(), port


def resolve(host: str, port: int) -> list[str]:
    """IPv4 addresses of ``host`` (an IP literal resolves to itself, without DNS).

    IPv4 only, like Scrapy's own resolver, which is what the connection will use."""
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        infos = socket.getaddrinfo(host, port, socket.AF_INET, socket.SOCK_STREAM)
        return list(dict.fromkeys(str(info[4][0]) for info in infos))  # AF_INET: already str
    return [str(literal)]


class PrivateAddressMiddleware:
    """Settings: PINGO_ALLOW_PRIVATE_NETWORKS (bool), PINGO_TRUSTED_ORIGINS (URLs whose
    host:port may be private). Stats: pingo/refused_private_address."""

    def __init__(self, crawler, trusted: set[tuple[str, int]], allow_all: bool = False):
        self.crawler = crawler
        self.trusted = trusted
        self.allow_all = allow_all
        self._verdicts: dict[tuple[str, int], tuple[float, str | None]] = {}

    @classmethod
    def from_crawler(cls, crawler):
        settings = crawler.settings
        trusted = {o for o in map(origin, settings.getlist("PINGO_TRUSTED_ORIGINS")) if o}
        return cls(crawler, trusted, settings.getbool("PINGO_ALLOW_PRIVATE_NETWORKS"))

    async def process_request(self, request):
        from crawler.robots import SOURCE_ROBOTS_META
        from crawler.selenium_request import SeleniumRequest

        if isinstance(request, SeleniumRequest) or request.url.startswith("data:"):
            return None  # a configured source's results page, rendered by the browser
        if request.meta.get(SOURCE_ROBOTS_META):
            return None  # that page's robots.txt: the same configured host
        where = origin(request.url)
        if where is None:
            raise PrivateAddressRefused(f"not an http(s) URL: {request.url[:200]}")
        if self.allow_all or where in self.trusted:
            return None
        refusal = await self._check(where)
        if refusal:
            self.crawler.stats.inc_value("pingo/refused_private_address")
            logger.info("refused %s: %s", request.url[:200], refusal)
            raise PrivateAddressRefused(f"{request.url[:200]}: {refusal}")
        return None

    async def _check(self, where: tuple[str, int]) -> str | None:
        """None when every address of the host is public, else why not."""
        from scrapy.resolver import dnscache
        from scrapy.utils.defer import maybe_deferred_to_future
        from twisted.internet.threads import deferToThread

        now = time.monotonic()
        cached = self._verdicts.get(where)
        if cached and now - cached[0] < CACHE_SECONDS:
            return cached[1]
        host, port = where
        try:
            addresses = await maybe_deferred_to_future(deferToThread(resolve, host, port))
        except (OSError, ValueError) as exc:  # ValueError: e.g. an over-long IDNA label
            # Fail the download here, as the network error it is: letting it through would
            # have Scrapy resolve the name again, and a second answer may be private.
            from twisted.internet.error import DNSLookupError

            raise DNSLookupError(f"{host}: {exc}") from None
        private = [a for a in addresses if not is_public(a)]
        verdict = f"{host} is {', '.join(private)}, a private address" if private else None
        if not private and addresses:
            dnscache[host] = addresses[0]  # connect to the address that was checked
        self._verdicts[where] = (now, verdict)
        return verdict
