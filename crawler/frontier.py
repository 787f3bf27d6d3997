"""The Redis frontier: several `pingo crawl` processes share one request queue and budget.

Built on scrapy-redis: its priority queue holds every request (result pages and images) and
its dupefilter makes sure one URL is requested once per crawl round, whichever worker yields
it. What scrapy-redis lacks, and this module adds:

* **Rounds.** The first worker to start (no live worker registered) starts a round: it writes
  each class's budget (images still to store, from the DB) and the (source, keyword) queries
  to render, and clears the previous round's queue and dupefilter (the DB's urls table is
  the memory across rounds). Workers that start while others are alive join that round.
* **A budget that holds across workers.** ``left[class]`` is charged atomically just before
  an image is stored; a charge that would go below zero is refused (``over_budget``), so no
  class is overfilled. ``open[class]`` counts image requests admitted and not finished; an
  image request is admitted to the queue only while ``left - open > 0``, the rest wait in a
  shared leftovers list (used when downloads are refused or turn out to be duplicates).
* **In-flight tracking.** A pop moves the request from the queue into the worker's
  ``inflight`` hash in one Lua script. Each worker refreshes an ``alive`` key with a TTL; when
  it stops refreshing (SIGKILL, power loss), any other worker puts its in-flight requests back
  on the queue and corrects ``open``, so the survivors finish its work.
* **Idle exit.** A worker stops when every class has what it lacked, or when the shared
  queue has been empty, this worker had nothing to do and no other worker held requests for
  ``idle_timeout`` seconds.

Every key is under one prefix (``crawl.redis_key_prefix``, default derived from the metadata
DB), so two projects can share a Redis server. The Lua scripts touch keys built from the
prefix, so Redis Cluster is not supported (a standalone Redis, or one behind Sentinel).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import time
import uuid
from typing import Any

from scrapy.exceptions import NotConfigured

from crawler.errors import CrawlError
from crawler.settings import default, get

logger = logging.getLogger(__name__)

REQUEUE_SCORE = -100  # requests taken back from a dead worker go to the front of the queue

# Pop the best request (with a score up to ARGV[1]) and remember it as this worker's,
# atomically (a kill in between cannot lose it). Returns {id, data} or nil.
_POP = """
local r = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, 1)
if #r == 0 then return false end
redis.call('ZREM', KEYS[1], r[1])
local id = redis.sha1hex(r[1])
redis.call('HSET', KEYS[2], id, r[1])
return {id, r[1]}
"""

# Admit an image request while its class still needs candidates; park it otherwise.
# KEYS: queue, left, open, leftovers. ARGV: class, data, score. Returns 1 admitted, 0 parked.
_ADMIT = """
local left = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
local open = tonumber(redis.call('HGET', KEYS[3], ARGV[1]) or '0')
if left - open > 0 then
  redis.call('HINCRBY', KEYS[3], ARGV[1], 1)
  redis.call('ZADD', KEYS[1], ARGV[3], ARGV[2])
  return 1
end
redis.call('RPUSH', KEYS[4], ARGV[2])
return 0
"""

# Move parked requests of a class into the queue while it needs candidates. Same KEYS;
# ARGV: class, score. Returns how many were admitted.
_ADMIT_LEFTOVERS = """
local n = 0
while true do
  local left = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
  local open = tonumber(redis.call('HGET', KEYS[3], ARGV[1]) or '0')
  if left - open <= 0 then break end
  local data = redis.call('LPOP', KEYS[4])
  if not data then break end
  redis.call('HINCRBY', KEYS[3], ARGV[1], 1)
  redis.call('ZADD', KEYS[1], ARGV[2], data)
  n = n + 1
end
return n
"""

# Take one image of a class's budget before storing it. KEYS: left, charged. ARGV: class, id.
_CHARGE = """
local left = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
if left <= 0 then return 0 end
redis.call('HINCRBY', KEYS[1], ARGV[1], -1)
if ARGV[2] ~= '' then redis.call('HSET', KEYS[2], ARGV[2], ARGV[1]) end
return 1
"""

# The image was not stored after all (duplicate bytes, refused): give the charge back.
_REFUND = """
redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
if ARGV[2] ~= '' then redis.call('HDEL', KEYS[2], ARGV[2]) end
return 1
"""

# A popped request is done. KEYS: inflight, charged, open. ARGV: id, class ('' for pages).
# Only the holder of the in-flight entry counts it off, so a request a reaper already took
# back is not counted twice.
_FINISH = """
local had = redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
if had == 1 and ARGV[2] ~= '' then redis.call('HINCRBY', KEYS[3], ARGV[2], -1) end
return had
"""

# A retry or redirect of a popped request: queue the follow-up, drop the old entry.
# KEYS: queue, inflight. ARGV: id, data, score.
_FOLLOW_UP = """
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[2])
redis.call('HDEL', KEYS[2], ARGV[1])
return 1
"""

# Take back the work of workers whose alive key expired (or of ARGV[3] when ARGV[4] == '1':
# a worker leaving). Requests not yet charged go back on the queue; charged ones (the image
# is being or was stored) only leave ``open``. KEYS: workers, queue, open.
# ARGV: prefix, score, worker id, force. Returns {workers reaped, requests requeued}.
_REAP = """
local reaped, requeued = 0, 0
for _, wid in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local dead
  if ARGV[4] == '1' then dead = (wid == ARGV[3])
  else dead = (wid ~= ARGV[3] and redis.call('EXISTS', ARGV[1] .. ':alive:' .. wid) == 0) end
  if dead then
    local inflight = ARGV[1] .. ':inflight:' .. wid
    local charged = ARGV[1] .. ':charged:' .. wid
    local entries = redis.call('HGETALL', inflight)
    for i = 1, #entries, 2 do
      local cls = redis.call('HGET', charged, entries[i])
      if cls then
        redis.call('HINCRBY', KEYS[3], cls, -1)
      else
        redis.call('ZADD', KEYS[2], ARGV[2], entries[i + 1])
        requeued = requeued + 1
      end
    end
    redis.call('DEL', inflight, charged)
    redis.call('SREM', KEYS[1], wid)
    reaped = reaped + 1
  end
end
return {reaped, requeued}
"""


def default_key_prefix(db_url: str | None, data_dir: str) -> str:
    """``pingo:<hash of the metadata DB>``: the same for every worker of one project.

    The DB is named by its URL without the password (or by the data folder for the default
    SQLite), so workers given different credentials for one DB still share its keys.
    """
    if db_url:
        from sqlalchemy.engine import make_url

        identity = make_url(db_url).render_as_string(hide_password=True)
    else:
        identity = str(data_dir)
    return "pingo:" + hashlib.sha1(identity.encode()).hexdigest()[:12]


def redis_client(url: str):
    try:
        import redis
    except ImportError:  # pragma: no cover - the distributed extra is missing
        raise CrawlError(
            "crawl.redis_url needs the redis and scrapy-redis packages "
            "(pip install 'pingo[distributed]')"
        ) from None
    return redis.Redis.from_url(
        url, socket_timeout=30, socket_connect_timeout=10, retry_on_timeout=True
    )


def check_redis(url: str) -> None:
    """Fail early, with a clear CrawlError, when Redis cannot be reached."""
    client = redis_client(url)  # CrawlError when the redis package is missing
    import redis

    try:
        client.ping()
    except redis.RedisError as exc:
        raise CrawlError(
            f"cannot reach Redis at {redact_url(url)} (crawl.redis_url): {exc}"
        ) from None


def redact_url(url: str) -> str:
    """``url`` with its password (if any) replaced by ``***``: safe for messages and logs."""
    from urllib.parse import urlsplit, urlunsplit

    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
    except ValueError:  # not parseable: say nothing of it rather than risk the password
        return "<unparseable URL>"
    user = f"{parts.username}:***" if parts.username else ":***"
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{user}@{host}"))


class SharedFrontier:
    """The round state of one project in Redis, seen by one worker."""

    def __init__(
        self,
        server,
        prefix: str,
        worker_ttl: float = default("PINGO_REDIS_WORKER_TTL"),
        idle_timeout: float = default("PINGO_IDLE_TIMEOUT"),
        worker_id: str | None = None,
    ):
        self.server = server
        self.prefix = prefix
        self.worker_ttl = worker_ttl
        self.idle_timeout = idle_timeout
        self.worker_id = worker_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.queue_key = f"{prefix}:requests"
        self.dupefilter_key = f"{prefix}:dupefilter"
        self.left_key = f"{prefix}:left"
        self.open_key = f"{prefix}:open"
        self.workers_key = f"{prefix}:workers"
        self.round_key = f"{prefix}:round"
        self.inflight_key = self._inflight(self.worker_id)
        self.charged_key = f"{prefix}:charged:{self.worker_id}"
        self.alive_key = f"{prefix}:alive:{self.worker_id}"
        self._scripts = {
            name: server.register_script(src)
            for name, src in (
                ("pop", _POP),
                ("admit", _ADMIT),
                ("admit_leftovers", _ADMIT_LEFTOVERS),
                ("charge", _CHARGE),
                ("refund", _REFUND),
                ("finish", _FINISH),
                ("follow_up", _FOLLOW_UP),
                ("reap", _REAP),
            )
        }
        self.started_round = False
        self.last_pop = time.monotonic()  # when this worker last took a request
        self.renders = 0  # result pages this worker took and has not finished

    @classmethod
    def from_crawler(cls, crawler) -> SharedFrontier:
        """One frontier per crawler, shared by the scheduler, the spider and the pipeline."""
        frontier = getattr(crawler, "_pingo_frontier", None)
        if frontier is None:
            settings = crawler.settings
            url = settings.get("REDIS_URL")
            if not url:
                raise NotConfigured("REDIS_URL is not set: not a distributed crawl")
            prefix = settings.get("PINGO_REDIS_PREFIX") or default_key_prefix(
                settings.get("PINGO_DB_URL"), settings.get("PINGO_DATA_DIR") or ""
            )
            frontier = cls(
                redis_client(url),
                prefix,
                worker_ttl=get(settings, "PINGO_REDIS_WORKER_TTL"),
                idle_timeout=get(settings, "PINGO_IDLE_TIMEOUT"),
            )
            crawler._pingo_frontier = frontier
        return frontier

    # ---- keys ----------------------------------------------------------------------------

    def _inflight(self, worker_id: str) -> str:
        return f"{self.prefix}:inflight:{worker_id}"

    def queries_key(self, class_name: str) -> str:
        return f"{self.prefix}:queries:{class_name}"

    def leftovers_key(self, class_name: str) -> str:
        return f"{self.prefix}:leftovers:{class_name}"

    # ---- rounds and workers --------------------------------------------------------------

    def join(self, plan, queries: dict[str, list[tuple[str, str]]]) -> bool:
        """Join the running round, or start one from ``plan`` (ClassPlans) if no worker is
        alive. Returns True when this worker started a new round."""
        with self.server.lock(f"{self.prefix}:lock", timeout=30, blocking_timeout=60):
            self.reap()
            alive = [w for w in self._members() if self.server.exists(f"{self.prefix}:alive:{w}")]
            self.started_round = not alive
            if self.started_round:
                self._start_round(plan, queries)
            self.heartbeat()
        logger.info(
            "%s crawl round under %s as worker %s",
            "started a new" if self.started_round else "joined the",
            self.prefix,
            self.worker_id,
        )
        return self.started_round

    def _start_round(self, plan, queries: dict[str, list[tuple[str, str]]]) -> None:
        stale = [self.queue_key, self.dupefilter_key, self.left_key, self.open_key]
        for pattern in ("queries:*", "leftovers:*", "inflight:*", "charged:*"):
            stale += list(self.server.scan_iter(match=f"{self.prefix}:{pattern}", count=500))
        pipe = self.server.pipeline()
        pipe.delete(*stale)
        for p in plan:
            pipe.hset(self.left_key, p.name, p.lacking)
            pipe.hset(self.open_key, p.name, 0)
            pairs = queries.get(p.name) or []
            if pairs:
                pipe.rpush(self.queries_key(p.name), *(json.dumps(q) for q in pairs))
        pipe.set(
            self.round_key,
            json.dumps(
                {
                    "started": time.time(),
                    "by": self.worker_id,
                    "plan": {p.name: p.lacking for p in plan},
                }
            ),
        )
        pipe.execute()

    def _members(self) -> list[str]:
        return [m.decode() for m in self.server.smembers(self.workers_key)]

    def heartbeat(self) -> None:
        pipe = self.server.pipeline()
        pipe.sadd(self.workers_key, self.worker_id)
        pipe.set(self.alive_key, b"1", px=int(self.worker_ttl * 1000))
        pipe.execute()

    def _reap(self, leaving: bool) -> tuple[int, int]:
        """The reap script: dead workers' in-flight work back to the queue (and this
        worker's own too, when ``leaving``)."""
        return self._scripts["reap"](
            keys=[self.workers_key, self.queue_key, self.open_key],
            args=[self.prefix, REQUEUE_SCORE, self.worker_id, "1" if leaving else "0"],
        )

    def reap(self) -> tuple[int, int]:
        """Take back the in-flight work of dead workers: (workers reaped, requests requeued)."""
        reaped, requeued = self._reap(leaving=False)
        if reaped:
            logger.warning(
                "took back the work of %d crawler(s) that stopped answering: %d requests requeued",
                reaped,
                requeued,
            )
        return int(reaped), int(requeued)

    def leave(self) -> int:
        """Unregister; requests still in flight here go back to the queue for the others.
        The last worker out deletes the round (the next crawl starts a new one anyway)."""
        with self.server.lock(f"{self.prefix}:lock", timeout=30, blocking_timeout=60):
            _, requeued = self._reap(leaving=True)
            self.server.delete(self.alive_key)
            if not self.server.scard(self.workers_key):
                self.clear(keep_lock=True)
        return int(requeued)

    def others_busy(self) -> bool:
        """Does another registered worker hold requests (alive, or dead and not reaped)?"""
        return any(
            self.server.hlen(self._inflight(w)) for w in self._members() if w != self.worker_id
        )

    # ---- the queue -----------------------------------------------------------------------

    def queue_length(self) -> int:
        return int(self.server.zcard(self.queue_key))

    def pop(self, max_score: str = "+inf") -> tuple[str, bytes] | None:
        """The best request (score = -priority; ``"(0"``: only those with priority > 0)."""
        got = self._scripts["pop"](keys=[self.queue_key, self.inflight_key], args=[max_score])
        if not got:
            return None
        self.last_pop = time.monotonic()
        return got[0].decode(), got[1]

    def push(self, data: bytes, score: float) -> None:
        self.server.zadd(self.queue_key, {data: score})

    def admit(self, class_name: str, data: bytes, score: float) -> bool:
        return bool(
            self._scripts["admit"](
                keys=[self.queue_key, self.left_key, self.open_key, self.leftovers_key(class_name)],
                args=[class_name, data, score],
            )
        )

    def admit_leftovers(self, class_name: str, score: float) -> int:
        return int(
            self._scripts["admit_leftovers"](
                keys=[self.queue_key, self.left_key, self.open_key, self.leftovers_key(class_name)],
                args=[class_name, score],
            )
        )

    def follow_up(self, old_id: str, data: bytes, score: float) -> None:
        self._scripts["follow_up"](
            keys=[self.queue_key, self.inflight_key], args=[old_id, data, score]
        )

    def finish(self, inflight_id: str | None, class_name: str = "") -> None:
        if inflight_id:
            self._scripts["finish"](
                keys=[self.inflight_key, self.charged_key, self.open_key],
                args=[inflight_id, class_name],
            )

    # ---- budgets -------------------------------------------------------------------------

    def classes(self) -> list[str]:
        return sorted(k.decode() for k in self.server.hkeys(self.left_key))

    def left(self) -> dict[str, int]:
        return {k.decode(): int(v) for k, v in self.server.hgetall(self.left_key).items()}

    def need(self, class_name: str) -> int:
        """Candidates this class still needs: images to store minus requests under way."""
        pipe = self.server.pipeline(transaction=False)
        pipe.hget(self.left_key, class_name)
        pipe.hget(self.open_key, class_name)
        left, open_ = pipe.execute()
        return int(left or 0) - int(open_ or 0)

    def charge(self, class_name: str, inflight_id: str | None) -> bool:
        return bool(
            self._scripts["charge"](
                keys=[self.left_key, self.charged_key], args=[class_name, inflight_id or ""]
            )
        )

    def refund(self, class_name: str, inflight_id: str | None) -> None:
        self._scripts["refund"](
            keys=[self.left_key, self.charged_key], args=[class_name, inflight_id or ""]
        )

    def pop_query(self, class_name: str) -> tuple[str, str] | None:
        data = self.server.lpop(self.queries_key(class_name))
        return tuple(json.loads(data)) if data else None

    def round_complete(self) -> bool:
        left = self.left()
        return bool(left) and all(v <= 0 for v in left.values())

    def snapshot(self) -> dict[str, Any]:
        """The shared state, for logs, stats and tests."""
        return {
            "left": self.left(),
            "open": {k.decode(): int(v) for k, v in self.server.hgetall(self.open_key).items()},
            "queue": self.queue_length(),
            "workers": sorted(self._members()),
        }

    def clear(self, keep_lock: bool = False) -> None:
        """Delete every key of this project (the last worker out, or a deliberate reset)."""
        keys = list(self.server.scan_iter(match=f"{self.prefix}:*", count=500))
        if keep_lock:
            keys = [k for k in keys if k != f"{self.prefix}:lock".encode()]
        if keys:
            self.server.delete(*keys)
