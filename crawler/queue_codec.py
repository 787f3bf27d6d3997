"""How requests are written into the shared Redis queue: JSON, never pickle.

scrapy-redis serialises requests with pickle by default, so whoever can write one key in that
Redis runs code on every crawler that pops it. This codec is the queue's serializer (a module
with ``dumps``/``loads``, as scrapy-redis expects): ``Request.to_dict`` as JSON, with bytes,
tuples, dicts with non-text keys and :class:`Scroll` tagged, and only pingo's request classes
accepted back. Anything else fails with :class:`UndecodableRequest`; the scheduler logs it,
counts it (``pingo/redis/undecodable``) and drops the entry.

Tags: ``{"$b": base64}`` bytes, ``{"$t": [...]}`` tuple, ``{"$d": [[k, v], ...]}`` a dict
whose keys are not all text or one of which starts with "$", ``{"$scroll": {...}}``.
"""

from __future__ import annotations

import base64
import dataclasses
import json
from typing import Any

from crawler.errors import CrawlError

# The request classes a queue entry may name (request_from_dict would import any other).
ALLOWED_CLASSES = frozenset(
    {"scrapy.http.request.Request", "scrapy.Request", "crawler.selenium_request.SeleniumRequest"}
)


class UndecodableRequest(CrawlError):
    """A queue entry that is not a request pingo wrote (pickle, garbage, a foreign class)."""


def dumps(obj: dict[str, Any]) -> bytes:
    return json.dumps(_encode(obj), separators=(",", ":")).encode()


def loads(data: bytes | str) -> dict[str, Any]:
    try:
        raw = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        head = bytes(data[:8]) if isinstance(data, (bytes, bytearray)) else data[:8].encode()
        kind = "a pickle" if head[:1] == b"\x80" else "garbage"  # pickle protocol 2+
        raise UndecodableRequest(f"not JSON ({kind}, starts {head!r}): {exc}") from None
    obj = _decode(raw)
    if not isinstance(obj, dict) or not isinstance(obj.get("url"), str):
        raise UndecodableRequest("not a request: no url")
    cls = obj.get("_class")
    if cls is not None and cls not in ALLOWED_CLASSES:
        raise UndecodableRequest(f"request class {cls!r} is not one pingo queues")
    return obj


def _encode(value: Any) -> Any:
    from crawler.selenium_request import Scroll

    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, (bytes, bytearray)):
        return {"$b": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, list):
        return [_encode(v) for v in value]
    if isinstance(value, tuple):
        return {"$t": [_encode(v) for v in value]}
    if isinstance(value, Scroll):
        return {"$scroll": dataclasses.asdict(value)}
    if isinstance(value, dict):
        if all(isinstance(k, str) and not k.startswith("$") for k in value):
            return {k: _encode(v) for k, v in value.items()}
        return {"$d": [[_encode(k), _encode(v)] for k, v in value.items()]}
    raise TypeError(f"a {type(value).__name__} cannot go into the shared queue (JSON only)")


def _decode(value: Any) -> Any:
    from crawler.selenium_request import Scroll

    if isinstance(value, list):
        return [_decode(v) for v in value]
    if not isinstance(value, dict):
        return value
    if len(value) == 1:
        ((tag, inner),) = value.items()
        try:
            if tag == "$b":
                return base64.b64decode(inner, validate=True)
            if tag == "$t":
                return tuple(_decode(v) for v in inner)
            if tag == "$d":
                return {_freeze(_decode(k)): _decode(v) for k, v in inner}
            if tag == "$scroll":
                return Scroll(**inner)
        except (TypeError, ValueError) as exc:
            raise UndecodableRequest(f"bad {tag} entry: {exc}") from None
    if any(k.startswith("$") for k in value):
        raise UndecodableRequest(f"unknown tag in {sorted(value)[:3]}")
    return {k: _decode(v) for k, v in value.items()}


def _freeze(key: Any) -> Any:
    return tuple(key) if isinstance(key, list) else key
