"""Search-source profiles as config: how to search one engine and where its image URLs sit.

A profile says how to build the results URL for a keyword, which elements on the rendered page
are results, where on each element the full-size image URL sits (an attribute; optionally a
JSON object inside that attribute, or a URL inside a query parameter of that attribute), and
whether scrolling loads more: to the bottom at once, or ``scroll_step`` pixels at a time for
pages whose tiles load only in view, clicking ``more_css`` (a "see more" button) when
scrolling adds nothing. ``obey_robots`` decides robots.txt for this source's result pages
(unset: ``crawl.obey_robots``). Live engines change their markup; a profile can be fixed or
added in ``[crawl.profiles.<name>]`` without touching code (see docs/crawler.md). The crawler
reads results pages with a profile (``crawler.sources.extract``); the config checks profiles
here, below the crawler.

A profile of kind "api" is a JSON search API instead (Openverse, Wikimedia Commons): its
format, base URL, page size and documented limits; ``crawler.api_sources`` builds its requests
and reads its answers, licence included (docs/sources.md).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote_plus

from core.errors import BadProfileError, UnknownSourceError


@dataclass(frozen=True)
class SourceProfile:
    name: str
    # "{query}" is replaced by the url-encoded keyword, "{demo_url}" by crawl.demo_url
    search_url: str
    result_css: str  # one element per result
    url_attr: str = "href"  # attribute of a result element that holds the image URL
    json_key: str | None = None  # the attribute holds JSON; the URL is under this key
    page_json_key: str | None = None  # ... and the page the image is on, under this key
    url_param: str | None = None  # the attribute is a proxy URL; the image URL is this parameter
    wait_css: str | None = None  # wait for this before reading (default: result_css)
    scroll: bool = True  # more results appear when the page is scrolled
    max_scrolls: int = 30  # stop scrolling after this many tries
    scroll_pause: float = 1.5  # most seconds to wait for new results after one scroll
    # -- page actions and per-source robots.txt (issue 13, part B: page sources) --
    more_css: str | None = None  # a "see more" button: clicked when scrolling adds nothing
    scroll_step: int = 0  # pixels per scroll step (lazy tiles load in view); 0 = to the bottom
    obey_robots: bool | None = None  # honour robots.txt for its result pages; None: crawl's

    # ---- JSON search APIs (kind = "api"; crawler.api_sources reads them, no browser) ----
    kind: str = "page"  # "page": a rendered results page; "api": a JSON search API
    api: str | None = None  # which API's format: one of API_FORMATS
    api_url: str | None = None  # the API's base URL; "{demo_url}" is replaced as above
    page_size: int = 20  # results asked for per request
    max_pages: int = 20  # pages read per query, at most
    per_minute: int = 0  # requests a minute, shared by every worker; 0: no limit
    per_day: int = 0  # requests a UTC day, shared by every worker; 0: no limit
    needs_contact: bool = False  # refuse to start while crawl.user_agent is the default
    query_params: str = ""  # more query parameters, e.g. "license_type=commercial"

    def results_url(self, query: str, demo_url: str = "") -> str:
        return self.search_url.format(query=quote_plus(query), demo_url=demo_url.rstrip("/"))


BUILTIN: dict[str, SourceProfile] = {
    # The local demo search site (crawler/demo_site.py).
    "demo": SourceProfile(
        name="demo",
        search_url="{demo_url}/search?q={query}",
        result_css="#results a.result",
        url_attr="data-meta",
        json_key="murl",
        page_json_key="purl",
        scroll_pause=1.0,
    ),
    # Bing Images: each result is <a class="iusc" m='{"murl": full image, "purl": page, ...}'>.
    "bing": SourceProfile(
        name="bing",
        search_url="https://www.bing.com/images/search?q={query}&form=HDRSC2&first=1",
        result_css="a.iusc",
        url_attr="m",
        json_key="murl",
        page_json_key="purl",
        # After the first few dozen results Bing stops loading on scroll and shows this.
        more_css="a.btn_seemore",
    ),
    # Naver image search: thumbnails are served through search.pstatic.net, the original
    # image URL is the thumbnail URL's "src" parameter.
    "naver": SourceProfile(
        name="naver",
        search_url="https://search.naver.com/search.naver?where=image&query={query}",
        result_css="img._fe_image_tab_content_thumbnail_image",
        url_attr="src",
        url_param="src",
        # Tiles get their src only once scrolled into view: a jump to the bottom leaves
        # data: placeholders behind.
        scroll_step=700,
        max_scrolls=60,
        scroll_pause=1.0,
    ),
}

# JSON search APIs: their documented limits are the defaults (docs/sources.md).
API_FORMATS = ("openverse", "wikimedia")
BUILTIN.update(
    {
        # Openverse: openly licensed images from Flickr, museums, Wikimedia and more.
        # Anonymous: 20 requests a minute, 200 a day, 20 results a page, 20 pages a query
        # (with OPENVERSE_CLIENT_ID/_SECRET: 100 a minute, 10,000 a day).
        "openverse": SourceProfile(
            name="openverse",
            search_url="",
            result_css="",
            kind="api",
            api="openverse",
            api_url="https://api.openverse.org",
            page_size=20,
            max_pages=20,
            per_minute=20,
            per_day=200,
        ),
        # Wikimedia Commons: files found by full-text search in the File namespace, with
        # their licence metadata. Asks for a User-Agent with contact details; no fixed quota,
        # but requests one at a time (the per_minute pace keeps to that).
        "wikimedia": SourceProfile(
            name="wikimedia",
            search_url="",
            result_css="",
            kind="api",
            api="wikimedia",
            api_url="https://commons.wikimedia.org/w/api.php",
            page_size=50,
            max_pages=20,
            per_minute=60,
            needs_contact=True,
        ),
    }
)

_FIELDS = {f.name: f for f in dataclasses.fields(SourceProfile)}
_FIELD_TYPES: dict[str, type | tuple[type, ...]] = {
    "scroll": bool,
    "max_scrolls": int,
    "scroll_pause": (int, float),
    "scroll_step": int,
    "obey_robots": bool,
    "page_size": int,
    "max_pages": int,
    "per_minute": int,
    "per_day": int,
    "needs_contact": bool,
}  # others: str


def profile_from_mapping(name: str, table: Any, base: SourceProfile | None = None) -> SourceProfile:
    """A profile from a ``[crawl.profiles.<name>]`` table, over a built-in one of that name."""
    if not isinstance(table, dict):
        raise BadProfileError(f"crawl.profiles.{name}: must be a table")
    unknown = sorted(set(table) - set(_FIELDS) - {"name"})
    if unknown:
        raise BadProfileError(
            f"crawl.profiles.{name}.{unknown[0]}: unknown key; allowed keys "
            "are " + ", ".join(k for k in _FIELDS if k != "name")
        )
    values = dataclasses.asdict(base) if base else {}
    values.update(table, name=name)
    if values.get("kind", "page") == "api":
        _check_api(name, values)
    else:
        if values.get("kind", "page") != "page":
            raise BadProfileError(f"crawl.profiles.{name}.kind: 'page' or 'api'")
        for key in ("search_url", "result_css"):
            if not isinstance(values.get(key), str) or not values[key]:
                raise BadProfileError(f"crawl.profiles.{name}.{key}: required, a non-empty string")
        if "{query}" not in values["search_url"]:
            raise BadProfileError(f"crawl.profiles.{name}.search_url: must contain {{query}}")
    for key, value in values.items():
        expected = _FIELD_TYPES.get(key, str)
        if (
            value is not None
            and not isinstance(value, expected)
            or (expected is int and isinstance(value, bool))
        ):
            raise BadProfileError(f"crawl.profiles.{name}.{key}: got {value!r}; wrong type")
    if values.get("scroll_step", 0) < 0:
        raise BadProfileError(f"crawl.profiles.{name}.scroll_step: pixels, 0 or more")
    values["scroll_pause"] = float(values.get("scroll_pause", 1.5))
    if values.get("more_css") == "":  # an empty string switches a built-in's button off
        values["more_css"] = None
    return SourceProfile(**values)


def _check_api(name: str, values: dict) -> None:
    if values.get("api") not in API_FORMATS:
        raise BadProfileError(
            f"crawl.profiles.{name}.api: required for kind = 'api'; one of "
            + ", ".join(API_FORMATS)
        )
    url = values.get("api_url")
    if not isinstance(url, str) or not url.startswith(("http://", "https://", "{demo_url}")):
        raise BadProfileError(f"crawl.profiles.{name}.api_url: required, an http(s) URL")
    values.setdefault("search_url", "")
    values.setdefault("result_css", "")
    for key in ("page_size", "max_pages"):
        if isinstance(values.get(key), int) and values[key] < 1:
            raise BadProfileError(f"crawl.profiles.{name}.{key}: a number >= 1")
    for key in ("per_minute", "per_day"):
        if isinstance(values.get(key), int) and values[key] < 0:
            raise BadProfileError(f"crawl.profiles.{name}.{key}: a number >= 0 (0: no limit)")


def check_profiles(profiles: dict) -> str | None:
    """Config check for ``crawl.profiles``: None when fine, else what is allowed."""
    try:
        for name, table in profiles.items():
            profile_from_mapping(name, table, BUILTIN.get(name))
    except BadProfileError as exc:
        return str(exc)
    return None


def load_profiles(configured: dict | None = None) -> dict[str, SourceProfile]:
    """Built-in profiles, overridden or extended by the config's ``crawl.profiles``."""
    profiles = dict(BUILTIN)
    for name, table in (configured or {}).items():
        profiles[name] = profile_from_mapping(name, table, BUILTIN.get(name))
    return profiles


def resolve_sources(names: list[str], configured: dict | None = None) -> list[SourceProfile]:
    profiles = load_profiles(configured)
    missing = [n for n in names if n not in profiles]
    if missing:
        raise UnknownSourceError(
            f"unknown search source {missing[0]!r}; known sources are "
            + ", ".join(sorted(profiles))
            + " (add one in [crawl.profiles.<name>])"
        )
    return [profiles[n] for n in names]
