"""Request budgets for JSON APIs: a pace per minute, a quota per UTC day, Retry-After pauses.

One budget per API client (the API's host and the client id, or ``anon``): ``acquire`` says
whether one more request may go now (``go``), in how many seconds to ask again (``wait``), or
that the day's quota is spent (``spent``: the source stops until the next UTC day). The pace
spaces requests ``60 / per_minute`` seconds apart, so no minute ever holds more than the
limit. ``pause`` makes every holder of the budget wait (a 429's Retry-After).

Two backends with the same rules:

* ``LocalBudget``: a JSON file in the data folder, so crawls of one machine (one at a time,
  under the job lock) share one day's quota: a crawl every six hours cannot spend it four
  times.
* ``RedisBudget``: distributed crawls (crawl.redis_url). The count lives in Redis and one Lua
  script decides atomically, on Redis's clock, so every worker on every machine draws on the
  same budget (Openverse's terms forbid several machines to get round its limits).

Both also remember where each query's pages left off (``cursor`` / ``remember``), so the next
crawl goes on from there instead of spending its quota on pages it has read.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

logger = logging.getLogger(__name__)

DAY = 86400


@dataclass(frozen=True)
class Limits:
    per_minute: int = 0  # 0: no pace
    per_day: int = 0  # 0: no quota

    @property
    def interval(self) -> float:
        return 60.0 / self.per_minute if self.per_minute > 0 else 0.0


@dataclass(frozen=True)
class Verdict:
    kind: str  # "go", "wait" or "spent"
    seconds: float = 0.0  # wait: how long; spent: until the quota renews


class Budget(Protocol):
    def acquire(self, key: str, limits: Limits) -> Verdict: ...

    def pause(self, key: str, seconds: float) -> None: ...

    def used_today(self, key: str) -> int: ...

    def cursor(self, key: str) -> int | None: ...

    def remember(self, key: str, cursor: int | None) -> None: ...


def _decide(state: dict[str, Any], limits: Limits, now: float) -> Verdict:
    """The shared rule, on one budget's state {next, pause, day, used}; updates it on go."""
    if state.get("pause", 0.0) > now:
        return Verdict("wait", state["pause"] - now)
    day = int(now // DAY)
    if state.get("day") != day:
        state["day"], state["used"] = day, 0
    if limits.per_day and state["used"] >= limits.per_day:
        return Verdict("spent", (day + 1) * DAY - now)
    if state.get("next", 0.0) > now:
        return Verdict("wait", state["next"] - now)
    state["next"] = now + limits.interval
    state["used"] += 1
    return Verdict("go")


class LocalBudget:
    """Budgets kept in a JSON file (``path``; None: in memory only)."""

    def __init__(self, path: str | Path | None, clock: Callable[[], float] = time.time):
        self.path = Path(path) if path else None
        self.clock = clock
        self.states: dict[str, dict[str, Any]] = self._load()

    def _load(self) -> dict[str, dict[str, Any]]:
        if self.path is None or not self.path.exists():
            return {}
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:  # a torn or foreign file: start afresh, say so
            logger.warning("API budget file %s unreadable (%s); starting a new one", self.path, exc)
            return {}
        return data if isinstance(data, dict) else {}

    def _save(self) -> None:
        if self.path is not None:
            from storage.files import atomic_write

            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(self.path, json.dumps(self.states, sort_keys=True))

    def acquire(self, key: str, limits: Limits) -> Verdict:
        verdict = _decide(self.states.setdefault(key, {}), limits, self.clock())
        if verdict.kind == "go":
            self._save()
        return verdict

    def pause(self, key: str, seconds: float) -> None:
        state = self.states.setdefault(key, {})
        state["pause"] = max(state.get("pause", 0.0), self.clock() + seconds)
        self._save()

    def used_today(self, key: str) -> int:
        state = self.states.get(key, {})
        return state.get("used", 0) if state.get("day") == int(self.clock() // DAY) else 0

    def cursor(self, key: str) -> int | None:
        value = self.states.get("cursors", {}).get(key)
        return value if isinstance(value, int) else None

    def remember(self, key: str, cursor: int | None) -> None:
        cursors = self.states.setdefault("cursors", {})
        if cursors.get(key) != cursor:
            if cursor is None:
                cursors.pop(key, None)
            else:
                cursors[key] = cursor
            self._save()


# KEYS: next, pause, day-count base; ARGV: interval (s), per_day. Redis's clock for everyone.
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local pause = tonumber(redis.call('GET', KEYS[2]) or '0')
if pause > now then return {'wait', tostring(pause - now)} end
local day = math.floor(now / 86400)
local daykey = KEYS[3] .. ':' .. day
local per_day = tonumber(ARGV[2])
if per_day > 0 and tonumber(redis.call('GET', daykey) or '0') >= per_day then
  return {'spent', tostring((day + 1) * 86400 - now)}
end
local interval = tonumber(ARGV[1])
local nxt = tonumber(redis.call('GET', KEYS[1]) or '0')
if nxt > now then return {'wait', tostring(nxt - now)} end
if interval > 0 then
  redis.call('SET', KEYS[1], tostring(now + interval), 'PX', math.ceil(interval * 1000) + 1000)
end
redis.call('INCR', daykey)
redis.call('EXPIRE', daykey, 2 * 86400)
return {'go', '0'}
"""

_PAUSE = """
local t = redis.call('TIME')
local until_ = tonumber(t[1]) + tonumber(t[2]) / 1000000 + tonumber(ARGV[1])
if until_ > tonumber(redis.call('GET', KEYS[1]) or '0') then
  redis.call('SET', KEYS[1], tostring(until_), 'PX', math.ceil(tonumber(ARGV[1]) * 1000) + 1000)
end
return 1
"""


class RedisBudget:
    """Budgets in Redis under ``prefix``, shared by every crawler that uses the same prefix."""

    def __init__(self, server, prefix: str = "pingo-api"):
        self.server = server
        self.prefix = prefix
        self._acquire = server.register_script(_ACQUIRE)
        self._pause = server.register_script(_PAUSE)

    def _keys(self, key: str) -> list[str]:
        base = f"{self.prefix}:{key}"
        return [f"{base}:next", f"{base}:pause", f"{base}:day"]

    def acquire(self, key: str, limits: Limits) -> Verdict:
        kind, seconds = self._acquire(keys=self._keys(key), args=[limits.interval, limits.per_day])
        kind = kind.decode() if isinstance(kind, bytes) else kind
        return Verdict(kind, float(seconds))

    def pause(self, key: str, seconds: float) -> None:
        self._pause(keys=[self._keys(key)[1]], args=[max(seconds, 0.001)])

    def used_today(self, key: str) -> int:
        seconds, _ = self.server.time()
        value = self.server.get(f"{self._keys(key)[2]}:{math.floor(seconds / DAY)}")
        return int(value or 0)

    def cursor(self, key: str) -> int | None:
        value = self.server.hget(f"{self.prefix}:cursors", key)
        return int(value) if value is not None else None

    def remember(self, key: str, cursor: int | None) -> None:
        if cursor is None:
            self.server.hdel(f"{self.prefix}:cursors", key)
        else:
            self.server.hset(f"{self.prefix}:cursors", key, cursor)


def budget_for(crawler) -> Budget:
    """The crawl's one budget object (the middleware and the spider share it): in Redis for a
    distributed crawl, else in data_dir/cache/api-budget.json."""
    budget = getattr(crawler, "_pingo_api_budget", None)
    if budget is None:
        from crawler.settings import get

        settings = crawler.settings
        if settings.get("REDIS_URL"):
            import redis

            budget = RedisBudget(
                redis.Redis.from_url(settings.get("REDIS_URL")),
                get(settings, "PINGO_API_BUDGET_PREFIX"),
            )
        else:
            data_dir = settings.get("PINGO_DATA_DIR")
            budget = LocalBudget(Path(data_dir) / "cache" / "api-budget.json" if data_dir else None)
        crawler._pingo_api_budget = budget
    return budget


def retry_after(value: bytes | str | None, now: float | None = None) -> float | None:
    """Seconds a Retry-After header asks to wait (delta-seconds or an HTTP date), or None."""
    if not value:
        return None
    text = value.decode("latin-1") if isinstance(value, bytes) else value
    text = text.strip()
    try:
        return max(float(text), 0.0)
    except ValueError:
        pass
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(text).timestamp()
    except (TypeError, ValueError):
        return None
    return max(when - (time.time() if now is None else now), 0.0)
