"""The metadata schema (SQLAlchemy Core) and its versioned migrations.

A new DB gets every table at SCHEMA_VERSION. An older DB is brought up step by step by
MIGRATIONS[v] (v = the version it reaches), each an additive change in one transaction, so
rows survive upgrades. To add a column: add it to the table below, bump SCHEMA_VERSION and add
``MIGRATIONS[new] = add_column("images", "column_name")`` (``add_indexes`` for indexes).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Connection,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    inspect,
    select,
)
from sqlalchemy.schema import CreateColumn

from storage.errors import SchemaVersionError

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 5

metadata = MetaData()

meta = Table(
    "meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

images = Table(
    "images",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("sha256", String(64), nullable=False, unique=True),  # of the stored bytes
    Column("phash", BigInteger),  # perceptual hash as a signed 64-bit int
    Column("hash_method", String(16)),  # one of core.names.HASH_METHODS: never mix methods
    Column("source_url", Text),
    Column("page_url", Text),
    Column("source", String(64)),  # search source profile, or "import"
    Column("query", Text),
    Column("keyword_class", String(64), nullable=False),
    Column("status", String(16), nullable=False),  # inbox / accepted / review / rejected
    Column("reason", String(64)),  # why rejected (or sent to review)
    Column("label", String(64)),  # class it is filed under (best guess in review)
    Column("label_source", String(16)),  # keyword / model / human
    Column("confidence", Float),
    Column("model_version", String(16)),
    Column("path", Text),  # relative to data_dir, posix separators
    Column("duplicate_of", Integer, ForeignKey("images.id")),
    Column("width", Integer),
    Column("height", Integer),
    Column("bytes", Integer),
    Column("created_at", DateTime, nullable=False),
    Column("updated_at", DateTime, nullable=False),
    # Distributed factory workers lease inbox rows (SELECT ... FOR UPDATE SKIP LOCKED).
    Column("claimed_by", String(128)),
    Column("claim_expires", DateTime),
    # v3: a row the factory failed on; at two failures it is set aside (rejected,
    # reason processing_error) so that one row never stops a run.
    Column("failures", Integer),  # NULL: none
    Column("last_error", Text),
    # v4: the factory's decision: the probability that the filed label is right (for an
    # out-of-scope rejection: that it is none of the classes) and what it was computed from.
    Column("decision_p", Float),
    Column("evidence", JSON),
    # v5: the image's licence as its source gave it (core.licenses): a normalised SPDX-like
    # id ("CC-BY-4.0", "CC0-1.0", "unknown"; NULL in rows from before v5 and imports), its
    # URL, the creator, the credit line a user must show, and the work's title.
    Column("license", String(64)),
    Column("license_url", Text),
    Column("creator", Text),
    Column("attribution", Text),
    Column("title", Text),
    Index("ix_images_status_label", "status", "label"),
    Index("ix_images_status_keyword", "status", "keyword_class"),
    Index("ix_images_phash", "phash"),
    # v2: repointing a replaced image's duplicates, and factory workers' changed_since().
    Index("ix_images_duplicate_of", "duplicate_of"),
    Index("ix_images_updated_at", "updated_at"),
)

# Every URL the crawler has fetched, whatever came of it, so no URL is fetched twice.
urls = Table(
    "urls",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("url_sha", String(64), nullable=False, unique=True),  # long URLs overflow indexes
    Column("url", Text, nullable=False),
    Column("outcome", String(64), nullable=False),  # "image", "duplicate", or a refusal reason
    Column("image_id", Integer, ForeignKey("images.id")),
    Column("created_at", DateTime, nullable=False),
    # v2: a URL that failed for a passing reason (timeout, 5xx) is tried again later.
    Column("attempts", Integer),  # NULL in rows from v1: one attempt
    Column("last_tried", DateTime),  # NULL in rows from v1: created_at
)

runs = Table(
    "runs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("job", String(32), nullable=False),
    Column("started", DateTime, nullable=False),
    Column("finished", DateTime),
    Column("status", String(16), nullable=False),  # running / succeeded / failed
    Column("counts", JSON),
    Column("error", Text),
    Column("host", String(128)),
    Column("pid", Integer),
    # v3: host:pid:start:boot (storage.files.current_owner), so a reused pid is not taken for
    # the owner; heartbeat: last sign of life, for runs on another host.
    Column("owner", String(160)),
    Column("heartbeat", DateTime),
    Index("ix_runs_job_started", "job", "started"),
)

models = Table(
    "models",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("version", String(16), nullable=False, unique=True),
    Column("created", DateTime, nullable=False),
    Column("metrics", JSON),
    Column("manifest_hash", String(64)),
    Column("promoted", Boolean, nullable=False, default=False),
    Column("note", Text),  # why it was or was not promoted
)

# Per class and day: the counts at the last snapshot that day (`pingo stats` history).
daily_counts = Table(
    "daily_counts",
    metadata,
    Column("day", String(10), primary_key=True),  # YYYY-MM-DD, UTC
    Column("class_name", String(64), primary_key=True),
    Column("accepted", Integer, nullable=False),
    Column("review", Integer, nullable=False),
)

# A file move (or a new file's final rename) in flight: written before the rename, removed
# with the row update after it. Whatever is left here after a crash is finished on next open.
pending_moves = Table(
    "pending_moves",
    metadata,
    Column("image_id", Integer, ForeignKey("images.id", ondelete="CASCADE"), primary_key=True),
    Column("kind", String(8), nullable=False),  # add / move
    Column("src", Text, nullable=False),
    Column("dst", Text, nullable=False),
    Column("changes", JSON, nullable=False),  # column values to apply with the rename
    Column("owner", String(160), nullable=False),  # files.current_owner() of its process
    Column("created_at", DateTime, nullable=False),
)


def add_column(table: str, column: str) -> Callable[[Connection], None]:
    """A migration step that adds ``column`` (as declared above) to an existing table."""

    def step(conn: Connection) -> None:
        col = metadata.tables[table].c[column]
        ddl = CreateColumn(col).compile(dialect=conn.dialect)
        conn.exec_driver_sql(f"ALTER TABLE {table} ADD COLUMN {ddl}")

    return step


def add_indexes(table: str, *names: str) -> Callable[[Connection], None]:
    """A migration step that creates the named indexes (as declared above) on ``table``."""

    def step(conn: Connection) -> None:
        declared = {str(ix.name): ix for ix in metadata.tables[table].indexes}
        for name in names:
            declared[name].create(conn, checkfirst=True)

    return step


def all_of(*steps: Callable[[Connection], None]) -> Callable[[Connection], None]:
    """One migration step made of several, run in order in the same transaction."""

    def step(conn: Connection) -> None:
        for one in steps:
            one(conn)

    return step


# version reached -> step. Steps only add; data already there is never rewritten.
MIGRATIONS: dict[int, Callable[[Connection], None]] = {
    2: all_of(
        add_indexes("images", "ix_images_duplicate_of", "ix_images_updated_at"),
        add_column("urls", "attempts"),
        add_column("urls", "last_tried"),
    ),
    3: all_of(
        add_column("images", "failures"),
        add_column("images", "last_error"),
        add_column("runs", "owner"),
        add_column("runs", "heartbeat"),
    ),
    4: all_of(add_column("images", "decision_p"), add_column("images", "evidence")),
    5: all_of(
        *(
            add_column("images", c)
            for c in ("license", "license_url", "creator", "attribution", "title")
        )
    ),
}


def stored_version(conn: Connection) -> int | None:
    if not inspect(conn).has_table("meta"):
        return None
    value = conn.execute(select(meta.c.value).where(meta.c.key == "schema_version")).scalar()
    return int(value) if value is not None else None


def migrate(conn: Connection) -> int:
    """Create or upgrade the schema inside ``conn``'s transaction; return the version."""
    if conn.dialect.name == "postgresql":
        # Several workers may open a fresh database at once: one creates, the others wait.
        # (SQLite needs nothing: a write transaction there is BEGIN IMMEDIATE.)
        conn.exec_driver_sql("SELECT pg_advisory_xact_lock(7310415)")
    version = stored_version(conn)
    if version is None:
        metadata.create_all(conn)
        conn.execute(meta.insert().values(key="schema_version", value=str(SCHEMA_VERSION)))
        logger.info("created metadata schema v%d", SCHEMA_VERSION)
        return SCHEMA_VERSION
    if version > SCHEMA_VERSION:
        raise SchemaVersionError(
            f"the database has schema v{version} but this pingo knows up to "
            f"v{SCHEMA_VERSION}: upgrade pingo"
        )
    for target in range(version + 1, SCHEMA_VERSION + 1):
        logger.info("migrating metadata schema v%d -> v%d", target - 1, target)
        MIGRATIONS[target](conn)
    metadata.create_all(conn)  # tables added since (checkfirst)
    if version != SCHEMA_VERSION:
        conn.execute(
            meta.update().where(meta.c.key == "schema_version").values(value=str(SCHEMA_VERSION))
        )
    return SCHEMA_VERSION
