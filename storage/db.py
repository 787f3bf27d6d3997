"""Engine creation: SQLite in WAL mode with a busy timeout by default, any SQLAlchemy URL else.

On SQLite, ``engine.begin()`` (every write) starts with BEGIN IMMEDIATE, so writers queue on
the busy timeout instead of failing when a read upgrades to a write; ``engine.connect()``
(reads) starts with a plain deferred BEGIN, which in WAL takes no write lock, so a long read
(a report, ``pingo stats``) never blocks the crawler's writes.

Commits are synchronous=NORMAL (in WAL: synced at checkpoints) except those made with
``engine.begin(durable=True)``, which are synchronous=FULL: storage commits a file move's
intent that way, so a committed intent survives a power loss like the fsynced rename after it
(a FULL commit also makes every earlier commit durable). Use ``begin(engine, durable=True)``
from code that may run on any backend.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import time
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url

logger = logging.getLogger(__name__)

BUSY_TIMEOUT_MS = 60_000


def utcnow() -> datetime:
    """Naive UTC (SQLite keeps no zone; every timestamp pingo writes is UTC)."""
    return datetime.now(UTC).replace(tzinfo=None)


def iso(value: datetime | None) -> str | None:
    return None if value is None else value.replace(tzinfo=UTC).isoformat()


def make_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True, future=True)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, future=True, connect_args={"timeout": BUSY_TIMEOUT_MS / 1000})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):
        # pysqlite's own BEGIN handling is turned off so that _on_begin chooses the BEGIN.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        _use_wal(cur)
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        options = conn.get_execution_options()
        if options.get(_WRITE):
            # NORMAL in WAL syncs only at checkpoints: a committed intent could vanish on
            # power loss while the fsynced rename it describes survives.
            level = "FULL" if options.get(_DURABLE) else "NORMAL"
            conn.exec_driver_sql(f"PRAGMA synchronous={level}")
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            conn.exec_driver_sql("BEGIN")

    @contextlib.contextmanager
    def begin_write(durable: bool = False):
        # Engine.begin, but marked as a write: writers take the write lock up front.
        with engine.connect() as conn:
            conn.execution_options(**{_WRITE: True, _DURABLE: durable})
            with conn.begin():
                yield conn

    engine.begin = begin_write  # type: ignore[method-assign]
    return engine


_WRITE = "pingo_write"
_DURABLE = "pingo_durable"


def begin(engine: Engine, durable: bool = False):
    """``engine.begin()``; with ``durable``, the commit survives power loss on SQLite too
    (other databases commit durably anyway)."""
    if durable and engine.dialect.name == "sqlite":
        return engine.begin(durable=True)  # type: ignore[call-arg]  # begin_write above
    return engine.begin()


def _use_wal(cur) -> None:
    """Switch the file to WAL (persistent, so usually a no-op read of the current mode).

    Two processes opening a fresh database at once can both try the switch; the loser gets
    "database is locked" straight away, because SQLite does not run the busy handler for a
    journal-mode change. Retry it for as long as the busy timeout allows.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    delay = 0.01
    while True:
        try:
            if cur.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                cur.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.2)
