"""JSON search APIs as sources: the request for one page of results, and what a page holds.

A profile with ``kind = "api"`` (core.sources) names its format in ``api``:

* ``openverse``: ``GET {api_url}/v1/images/?q=..&page=N&page_size=..[&license=..]``; the answer
  has ``page_count`` and ``results`` with ``url``, ``foreign_landing_url``, ``license``,
  ``license_version``, ``license_url``, ``creator``, ``title`` and a ready ``attribution``.
  The next page is N + 1 while N < page_count and N < max_pages.
* ``wikimedia``: the MediaWiki Action API, ``generator=search`` in the File namespace (6)
  with ``prop=imageinfo&iiprop=url|extmetadata``; the licence is in ``extmetadata``
  (LicenseShortName, LicenseUrl, Artist as HTML, ObjectName, AttributionRequired). The next
  page is ``continue.gsroffset``.

The cursor (Openverse's page number, Wikimedia's offset) travels in the request's cb_kwargs,
so a page of a query can come from any worker of a shared crawl. Licence filtering happens
here: in the search request where the API can (Openverse's ``license``), and on each result
otherwise (``core.licenses.allowed``), before anything is downloaded.
"""

from __future__ import annotations

import html
import json
import logging
import re
from dataclasses import dataclass
from urllib.parse import urlencode

from core.licenses import CC_FAMILIES, attribution_text, normalise
from core.sources import SourceProfile

logger = logging.getLogger(__name__)

# Openverse with OAuth2 client credentials (docs.openverse.org, "Authentication and
# throttling"): the standard tier's limits, and its largest page.
OPENVERSE_AUTH = {"per_minute": 100, "per_day": 10_000, "page_size": 50}
OPENVERSE_ANON_MAX_PAGE_SIZE = 20  # larger pages need a token (401 otherwise)
WIKIMEDIA_THUMB_WIDTH = 1280  # ask for a thumbnail this wide: Commons originals can be huge


class ApiAnswerError(ValueError):
    """A page that is not the JSON the API documents (the message says what is off)."""


@dataclass(frozen=True)
class ApiResult:
    image_url: str
    page_url: str | None
    license: str  # core.licenses.normalise id
    license_url: str | None
    creator: str | None
    attribution: str
    title: str | None

    def licence_fields(self) -> dict[str, str | None]:
        return {
            "license": self.license,
            "license_url": self.license_url,
            "creator": self.creator,
            "attribution": self.attribution,
            "title": self.title,
        }


@dataclass(frozen=True)
class ApiPage:
    results: list[ApiResult]
    next_cursor: int | None  # None: the query has no more pages
    total: int | None = None  # how many results the API says the query has


def base_url(profile: SourceProfile, demo_url: str = "") -> str:
    return (profile.api_url or "").replace("{demo_url}", demo_url.rstrip("/")).rstrip("/")


def page_size(profile: SourceProfile, authenticated: bool) -> int:
    if profile.api == "openverse":
        most = OPENVERSE_AUTH["page_size"] if authenticated else OPENVERSE_ANON_MAX_PAGE_SIZE
        return min(profile.page_size, most)
    return profile.page_size


def request_url(
    profile: SourceProfile,
    keyword: str,
    cursor: int | None,
    licenses: tuple[str, ...] | list[str],
    demo_url: str = "",
    authenticated: bool = False,
) -> str:
    """The URL of one page of results for ``keyword`` (cursor None: the first page)."""
    root = base_url(profile, demo_url)
    size = page_size(profile, authenticated)
    if profile.api == "openverse":
        params: dict[str, str | int] = {"q": keyword, "page": cursor or 1, "page_size": size}
        wanted = [f for f in CC_FAMILIES if f in licenses]
        if len(wanted) < len(CC_FAMILIES):  # the API filters; everything else it has is CC
            params["license"] = ",".join(wanted)
        url = f"{root}/v1/images/?{urlencode(params)}"
    elif profile.api == "wikimedia":
        params = {
            "action": "query",
            "format": "json",
            "formatversion": 2,
            "generator": "search",
            "gsrnamespace": 6,
            "gsrsearch": keyword,
            "gsrlimit": size,
            "gsroffset": cursor or 0,
            "prop": "imageinfo",
            "iiprop": "url|extmetadata",
            "iiurlwidth": WIKIMEDIA_THUMB_WIDTH,
            "iiextmetadatafilter": (
                "LicenseShortName|LicenseUrl|License|Artist|ObjectName|AttributionRequired"
            ),
        }
        url = f"{root}?{urlencode(params)}"
    else:  # profiles are checked when the config loads
        raise ValueError(f"{profile.name}: unknown api {profile.api!r}")
    return url + (f"&{profile.query_params}" if profile.query_params else "")


def parse_page(profile: SourceProfile, body: bytes, cursor: int | None) -> ApiPage:
    """What one answer holds. Raises ApiAnswerError when it is not the documented JSON."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiAnswerError(f"the answer is not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ApiAnswerError("the answer is not a JSON object")
    if profile.api == "openverse":
        return _openverse(profile, data, cursor or 1)
    return _wikimedia(profile, data)


def _text(value) -> str | None:
    return value.strip() or None if isinstance(value, str) else None


def _openverse(profile: SourceProfile, data: dict, page: int) -> ApiPage:
    results = data.get("results")
    if not isinstance(results, list):
        raise ApiAnswerError("no 'results' list in the answer")
    out = []
    for r in results:
        if not isinstance(r, dict) or not _text(r.get("url")):
            continue
        license_id = normalise(r.get("license"), r.get("license_version"), r.get("license_url"))
        title, creator = _text(r.get("title")), _text(r.get("creator"))
        license_url = _text(r.get("license_url"))
        out.append(
            ApiResult(
                image_url=r["url"],
                page_url=_text(r.get("foreign_landing_url")),
                license=license_id,
                license_url=license_url,
                creator=creator,
                attribution=_text(r.get("attribution"))
                or attribution_text(title, creator, license_id, license_url),
                title=title,
            )
        )
    page_count = data.get("page_count")
    last = min(page_count if isinstance(page_count, int) else page, profile.max_pages)
    total = data.get("result_count")
    return ApiPage(out, page + 1 if page < last and results else None, _int(total))


_TAG = re.compile(r"<[^>]+>")


def strip_html(value) -> str | None:
    """extmetadata values are HTML fragments (Artist is often a link): their text."""
    if not isinstance(value, str):
        return None
    return " ".join(html.unescape(_TAG.sub(" ", value)).split()) or None


def _meta(info: dict, key: str) -> str | None:
    entry = (info.get("extmetadata") or {}).get(key)
    return strip_html(entry.get("value")) if isinstance(entry, dict) else None


def _wikimedia(profile: SourceProfile, data: dict) -> ApiPage:
    if "error" in data:
        error = data["error"] if isinstance(data["error"], dict) else {}
        raise ApiAnswerError(
            f"the API answered an error: {error.get('code', '?')}: {error.get('info', '')}"
        )
    query = data.get("query")
    pages = query.get("pages", []) if isinstance(query, dict) else []
    if isinstance(pages, dict):  # formatversion 1: keyed by page id
        pages = list(pages.values())
    if query is not None and not isinstance(pages, list):
        raise ApiAnswerError("'query.pages' is not a list")
    out = []
    for page in sorted(
        (p for p in pages if isinstance(p, dict)), key=lambda p: _int(p.get("index")) or 0
    ):
        infos = page.get("imageinfo")
        if not isinstance(infos, list) or not infos or not isinstance(infos[0], dict):
            continue
        info = infos[0]
        url = _text(info.get("thumburl")) or _text(info.get("url"))
        if not url:
            continue
        short, license_url = _meta(info, "LicenseShortName"), _meta(info, "LicenseUrl")
        license_id = normalise(short or _meta(info, "License"), None, license_url)
        title = _meta(info, "ObjectName") or _file_title(page.get("title"))
        creator = _meta(info, "Artist")
        out.append(
            ApiResult(
                image_url=url,
                page_url=_text(info.get("descriptionurl")),
                license=license_id,
                license_url=license_url,
                creator=creator,
                attribution=attribution_text(
                    title, creator, license_id, license_url, "Wikimedia Commons"
                ),
                title=title,
            )
        )
    more = data.get("continue")
    offset = _int(more.get("gsroffset")) if isinstance(more, dict) else None
    if offset is not None and offset // max(profile.page_size, 1) >= profile.max_pages:
        offset = None
    total = (query or {}).get("searchinfo", {}).get("totalhits") if query else None
    return ApiPage(out, offset, _int(total))


def _file_title(title) -> str | None:
    if not isinstance(title, str):
        return None
    name = title.split(":", 1)[-1]
    return name.rsplit(".", 1)[0].replace("_", " ") or None


def _int(value) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
