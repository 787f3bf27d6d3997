"""Image licences: normalised SPDX-like ids, the families `crawl.licenses` names, attribution.

Sources say a licence in their own words: Openverse as a code and a version ("by-sa", "4.0"),
Wikimedia Commons as a short name and a URL ("CC BY-SA 4.0",
"https://creativecommons.org/licenses/by-sa/4.0"). Every stored image gets one id from
``normalise``: an SPDX identifier where one exists (``CC0-1.0``, ``CC-BY-4.0``,
``CC-BY-SA-3.0-DE``, ``CC-PDM-1.0``), ``public-domain`` or ``other`` for the rest, and
``unknown`` when the source says nothing (every rendered search page). ``family`` maps an id
to the coarse names ``crawl.licenses`` filters on, which are Openverse's own codes.
"""

from __future__ import annotations

import re

UNKNOWN = "unknown"
# Openverse's licence codes (its ``license`` search parameter), then pingo's three for what
# they do not cover: Wikimedia's public-domain templates, GFDL/FAL/..., and no data at all.
CC_FAMILIES = ("cc0", "pdm", "by", "by-sa", "by-nd", "by-nc", "by-nc-sa", "by-nc-nd")
FAMILIES = (*CC_FAMILIES, "public-domain", "other", UNKNOWN)

_CC_CODES = {"by", "by-sa", "by-nd", "by-nc", "by-nc-sa", "by-nc-nd"}
_URL = re.compile(
    r"creativecommons\.org/(?:licenses/(?P<code>[a-z-]+)/(?P<version>\d\.\d)(?:/(?P<port>[a-z]{2}))?"
    r"|publicdomain/(?P<pd>zero|mark)/(?P<pd_version>\d\.\d))",
    re.I,
)
_SHORT = re.compile(
    r"^cc[ -]?(?P<code>by(?:[ -](?:nc|nd|sa)){0,2})[ -]?(?P<version>\d\.\d)?"
    r"(?:[ ,].*?(?P<port>\b[a-z]{2})\s*$)?",
    re.I,
)


def check_families(values: list[str]) -> str | None:
    """Config check for ``crawl.licenses``: None when every value is a known family."""
    bad = [v for v in values if v not in FAMILIES]
    if bad or not values:
        return "a non-empty list of " + ", ".join(repr(f) for f in FAMILIES)
    return None


def normalise(code: str | None = None, version: str | None = None, url: str | None = None) -> str:
    """One SPDX-like id from what a source says: a code ("by-sa", "cc0", "CC BY-SA 4.0",
    "Public domain"), a version ("4.0"), a licence URL. ``unknown`` when nothing is said."""
    if url:
        m = _URL.search(url)
        if m and m["pd"]:
            return "CC0-1.0" if m["pd"].lower() == "zero" else "CC-PDM-1.0"
        if m and m["code"].lower() in _CC_CODES:
            return _cc(m["code"], m["version"], m["port"])
    text = " ".join((code or "").split())
    low = text.lower()
    if not low:
        return UNKNOWN if not url else "other"
    if low in ("cc0", "cc-zero", "cc0 1.0", "cc0-1.0"):
        return "CC0-1.0"
    if low in ("pdm", "public domain mark", "pdm-owner") or low.startswith("public domain mark"):
        return "CC-PDM-1.0"
    if low.startswith(("public domain", "pd-", "pd ")) or low == "pd":
        return "public-domain"
    if low in _CC_CODES:  # an Openverse code with its version beside it
        return _cc(low, version, None)
    m = _SHORT.match(low)
    if m:
        return _cc(m["code"], m["version"] or version, m["port"])
    return "other"


def _cc(code: str, version: str | None, port: str | None) -> str:
    parts = ["CC", *re.split(r"[ -]+", code.upper())]
    if version:
        parts.append(version)
    if port:
        parts.append(port.upper())
    return "-".join(parts)


def family(license_id: str | None) -> str:
    """The ``crawl.licenses`` family of a normalised id (None, as in rows stored before
    licences were recorded, is ``unknown``)."""
    if not license_id or license_id == UNKNOWN:
        return UNKNOWN
    if license_id == "CC0-1.0":
        return "cc0"
    if license_id == "CC-PDM-1.0":
        return "pdm"
    if license_id == "public-domain":
        return "public-domain"
    m = re.match(r"^CC-(BY(?:-(?:NC|ND|SA))*)\b", license_id)
    if m:
        return m[1].lower()
    return "other"


def allowed(license_id: str | None, families: list[str] | tuple[str, ...]) -> bool:
    return family(license_id) in families


def display_name(license_id: str) -> str:
    """How a licence is written for people: ``CC-BY-SA-3.0-DE`` -> ``CC BY-SA 3.0 DE``."""
    m = re.match(
        r"^CC-((?:BY|NC|ND|SA)(?:-(?:NC|ND|SA))*)(?:-(\d\.\d))?(?:-([A-Z]{2}))?$", license_id
    )
    if not m:
        return license_id
    return " ".join(p for p in ("CC", m[1], m[2], m[3]) if p)


def attribution_text(
    title: str | None,
    creator: str | None,
    license_id: str,
    license_url: str | None,
    where: str | None = None,
) -> str:
    """The credit line a user must show, in the form Creative Commons recommends
    ("Title" by Creator, licensed under CC BY 4.0 (url)), when a source gives none."""
    parts = [f'"{title}"' if title else "This image"]
    if creator:
        parts.append(f"by {creator}")
    if license_id in ("CC0-1.0", "CC-PDM-1.0", "public-domain"):
        parts.append("is marked as public domain" if license_id != "CC0-1.0" else "is under CC0")
    elif license_id not in (UNKNOWN, "other"):
        parts.append(f"is licensed under {display_name(license_id)}")
    text = " ".join(parts)
    if license_url:
        text += f" ({license_url})"
    if where:
        text += f", via {where}"
    return text + "."
