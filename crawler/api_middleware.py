"""ApiMiddleware: every JSON API request waits for its budget, carries its token, backs off.

Requests the spider marks with ``meta["pingo_api"]`` (a profile name) pass here just before
they go out (after robots.txt and the private-address guard):

* the budget (crawler.rate_limit; in Redis for a distributed crawl) is asked first; the request
  waits its turn, or, when the day's quota is spent, the source stops for this crawl with
  ``ApiSourceStopped`` ("openverse: daily quota spent (200 requests); resumes on the next
  scheduled crawl");
* Openverse with OPENVERSE_CLIENT_ID / OPENVERSE_CLIENT_SECRET in the environment: a token from
  ``/v1/auth_tokens/token/`` (client credentials), fetched through Scrapy, renewed before it
  expires and after a 401;
* a 429 or 503 pauses the whole budget for its Retry-After (else 2, 4, 8 s) and tries the same
  page again, up to PINGO_API_RETRIES times; a Retry-After longer than PINGO_API_MAX_WAIT
  stops the source for this crawl instead of holding the crawl up.

Stats: pingo/source/<name>/api_requests, .../api_waits, .../backoffs; a stopped source's
message is in pingo/source/<name>/stopped.
"""

from __future__ import annotations

import logging
import os
import time
from typing import TYPE_CHECKING

from scrapy.exceptions import IgnoreRequest
from scrapy.utils.defer import maybe_deferred_to_future

from crawler.rate_limit import Budget, Limits, budget_for, retry_after
from crawler.settings import get

if TYPE_CHECKING:
    from core.sources import SourceProfile

logger = logging.getLogger(__name__)

OPENVERSE_ENV = ("OPENVERSE_CLIENT_ID", "OPENVERSE_CLIENT_SECRET")
TOKEN_MARGIN = 60.0  # renew a token this many seconds before it expires
BACKOFF_STATUSES = (429, 503)


class ApiSourceStopped(IgnoreRequest):
    """A source that cannot be asked again in this crawl; the message says why and when."""


def openverse_credentials() -> tuple[str, str] | None:
    client_id, secret = (os.environ.get(name, "").strip() for name in OPENVERSE_ENV)
    return (client_id, secret) if client_id and secret else None


def budget_key(profile: SourceProfile, base_url: str) -> str:
    """One budget per API host and client: every project and worker with the same identity
    shares it."""
    from urllib.parse import urlsplit

    creds = openverse_credentials() if profile.api == "openverse" else None
    return f"{profile.api}:{urlsplit(base_url).netloc}:{creds[0] if creds else 'anon'}"


def limits_for(profile: SourceProfile) -> Limits:
    from crawler.api_sources import OPENVERSE_AUTH

    if profile.api == "openverse" and openverse_credentials():
        return Limits(
            max(profile.per_minute, OPENVERSE_AUTH["per_minute"]),
            max(profile.per_day, OPENVERSE_AUTH["per_day"]) if profile.per_day else 0,
        )
    return Limits(profile.per_minute, profile.per_day)


class _Token:
    def __init__(self) -> None:
        from twisted.internet.defer import DeferredLock

        self.value: str | None = None
        self.expires = 0.0
        self.lock = DeferredLock()


class ApiMiddleware:
    def __init__(self, crawler, budget: Budget, max_wait: float, retries: int):
        self.crawler = crawler
        self.budget = budget
        self.max_wait = max_wait
        self.retries = retries
        self.stopped: dict[str, str] = {}
        self.tokens: dict[str, _Token] = {}

    @classmethod
    def from_crawler(cls, crawler):
        settings = crawler.settings
        return cls(
            crawler,
            budget_for(crawler),
            get(settings, "PINGO_API_MAX_WAIT"),
            get(settings, "PINGO_API_RETRIES"),
        )

    def _profile(self, name: str) -> SourceProfile:
        return self.crawler.spider.sources[name]

    def _stat(self, name: str, what: str) -> None:
        self.crawler.stats.inc_value(f"pingo/source/{name}/{what}")

    def stop(self, name: str, message: str) -> ApiSourceStopped:
        if name not in self.stopped:
            self.stopped[name] = message
            self.crawler.stats.set_value(f"pingo/source/{name}/stopped", message)
            logger.warning("%s", message)
        return ApiSourceStopped(self.stopped[name])

    async def process_request(self, request):
        name = request.meta.get("pingo_api")
        if not name:
            return None
        if name in self.stopped:
            raise ApiSourceStopped(self.stopped[name])
        profile = self._profile(name)
        base = request.meta["pingo_api_base"]
        key, limits = budget_key(profile, base), limits_for(profile)
        token = await self._token(name, profile, base) if profile.api == "openverse" else None
        while True:
            verdict = self.budget.acquire(key, limits)
            if verdict.kind == "go":
                break
            if name in self.stopped:  # stopped by another request while this one waited
                raise ApiSourceStopped(self.stopped[name])
            if verdict.kind == "spent":
                raise self.stop(
                    name,
                    f"{name}: daily quota spent ({limits.per_day} requests); resumes on the "
                    "next scheduled crawl",
                )
            self._stat(name, "api_waits")
            await _sleep(min(verdict.seconds, 5.0))  # look again: another worker may pause it
        self._stat(name, "api_requests")
        if token:
            request.headers["Authorization"] = f"Bearer {token}"
        return None

    def process_response(self, request, response):
        name = request.meta.get("pingo_api")
        if not name:
            return response
        tries = request.meta.get("pingo_api_tries", 0)
        if response.status == 401 and b"Authorization" in request.headers and tries == 0:
            self.tokens.pop(name, None)  # expired or revoked: fetch a new one, once
            return self._again(request, tries)
        if response.status not in BACKOFF_STATUSES:
            return response
        wait = retry_after(response.headers.get(b"Retry-After"))
        profile = self._profile(name)
        key = budget_key(profile, request.meta["pingo_api_base"])
        if wait is not None and wait > self.max_wait:
            self.budget.pause(key, wait)
            raise self.stop(
                name,
                f"{name}: rate limited (HTTP {response.status}, Retry-After {wait:.0f} s); "
                "resumes on the next scheduled crawl",
            )
        if tries >= self.retries:
            if response.status == 429:
                raise self.stop(
                    name,
                    f"{name}: still rate limited (HTTP 429) after {tries} back-offs; "
                    "resumes on the next scheduled crawl",
                )
            return response  # a 503 that stays: the spider counts the page as failed
        wait = 2.0 ** (tries + 1) if wait is None else wait
        self.budget.pause(key, wait)
        self._stat(name, "backoffs")
        logger.info(
            "%s answered %d; waiting %.1f s before asking again", name, response.status, wait
        )
        return self._again(request, tries)

    def _again(self, request, tries: int):
        meta = {**request.meta, "pingo_api_tries": tries + 1}
        headers = request.headers.copy()
        headers.pop(b"Authorization", None)
        return request.replace(meta=meta, headers=headers, dont_filter=True)

    async def _token(self, name: str, profile: SourceProfile, base: str) -> str | None:
        creds = openverse_credentials()
        if creds is None:
            return None
        token = self.tokens.setdefault(name, _Token())
        await maybe_deferred_to_future(token.lock.acquire())
        try:
            if token.value is None or time.time() > token.expires - TOKEN_MARGIN:
                await self._fetch_token(name, token, base, creds)
        finally:
            token.lock.release()
        return token.value

    async def _fetch_token(self, name: str, token: _Token, base: str, creds) -> None:
        import json

        from scrapy import FormRequest

        request = FormRequest(
            f"{base}/v1/auth_tokens/token/",
            formdata={
                "grant_type": "client_credentials",
                "client_id": creds[0],
                "client_secret": creds[1],
            },
            meta={"handle_httpstatus_all": True, "dont_obey_robotstxt": True, "dont_retry": True},
            dont_filter=True,
        )
        response = await self.crawler.engine.download_async(request)
        try:
            data = json.loads(response.body)
            value, expires_in = data["access_token"], float(data.get("expires_in", 3600))
        except (ValueError, KeyError, TypeError):
            raise self.stop(
                name,
                f"{name}: no token for OPENVERSE_CLIENT_ID (HTTP {response.status} from "
                f"{request.url}); check OPENVERSE_CLIENT_ID and OPENVERSE_CLIENT_SECRET",
            ) from None
        token.value, token.expires = str(value), time.time() + expires_in
        self._stat(name, "tokens")


async def _sleep(seconds: float) -> None:
    from twisted.internet import reactor
    from twisted.internet.task import deferLater

    await maybe_deferred_to_future(deferLater(reactor, max(seconds, 0.0), lambda: None))
