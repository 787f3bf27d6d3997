"""Read full-size image URLs (and the pages they are on) off a rendered results page.

What to read is a ``core.sources.SourceProfile``; this module applies it to a Scrapy response.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from urllib.parse import parse_qs, urljoin, urlsplit

from core.sources import SourceProfile

logger = logging.getLogger(__name__)


def extract(profile: SourceProfile, response) -> Iterator[tuple[str, str | None]]:
    """Yield (absolute image URL, page URL or None) from a rendered results page."""
    for element in response.css(profile.result_css):
        raw = element.attrib.get(profile.url_attr)
        if not raw:
            continue
        page = None
        if profile.json_key:
            try:
                meta = json.loads(raw)
            except ValueError:
                logger.debug("%s: result attribute is not JSON: %.80r", profile.name, raw)
                continue
            if not isinstance(meta, dict) or not meta.get(profile.json_key):
                continue
            raw = meta[profile.json_key]
            page = meta.get(profile.page_json_key) if profile.page_json_key else None
        if profile.url_param:
            values = parse_qs(urlsplit(raw).query).get(profile.url_param)
            if not values:
                continue
            raw = values[0]
        url = response.urljoin(raw)
        if url.startswith(("http://", "https://")):
            yield url, (urljoin(response.url, page) if isinstance(page, str) else None)
