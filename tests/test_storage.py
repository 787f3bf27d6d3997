"""Storage: one row and one file per image, atomic placement, crash repair, schema versions."""

import os
import signal
import sqlite3
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from child_process import run_script, start_script
from conftest import png_bytes
from factory_helpers import assert_consistent
from sqlalchemy import inspect, select

from core.errors import UnsafeNameError
from storage import (
    DuplicateImageError,
    ImageNotFoundError,
    Move,
    SchemaVersionError,
    StorageError,
    Store,
    UrlRetry,
    schema,
)
from storage.files import atomic_write


@pytest.fixture
def store(tmp_path, db_url):
    """The same tests on the embedded default and on PostgreSQL (several machines)."""
    with Store.open(tmp_path / "data", db_url) as s:
        yield s


def test_open_creates_layout_and_wal_db(tmp_path):
    with Store.open(tmp_path / "d"):
        pass
    for sub in ("inbox", "dataset", "review", "rejected", "models", "reports", "logs"):
        assert (tmp_path / "d" / sub).is_dir()
    mode = sqlite3.connect(tmp_path / "d" / "pingo.db").execute("PRAGMA journal_mode").fetchone()
    assert mode[0] == "wal"


def test_add_image_keeps_original_bytes_and_metadata(store):
    data = png_bytes()
    image_id = store.add_image(
        data,
        keyword_class="cat",
        source="demo",
        ext=".PNG",
        source_url="http://x/1.png",
        page_url="http://x/s?q=cat",
        query="cat photo",
    )
    row = store.get_image(image_id)
    assert row["status"] == "inbox" and row["path"].startswith("inbox/")
    assert row["path"].endswith(".png")
    assert store.abspath(row["path"]).read_bytes() == data
    assert row["bytes"] == len(data) and row["query"] == "cat photo"
    assert row["created_at"].endswith("+00:00")
    assert_consistent(store)


def test_identical_bytes_are_refused_as_duplicate(store):
    first = store.add_image(png_bytes(), keyword_class="cat", source="demo", ext="png")
    with pytest.raises(DuplicateImageError) as err:
        store.add_image(png_bytes(), keyword_class="dog", source="demo", ext="png")
    assert err.value.existing_id == first
    assert len(list(store.iter_images())) == 1
    assert_consistent(store)


def test_move_between_folders_updates_row_and_file(store):
    a = store.add_image(png_bytes((1, 2, 3)), keyword_class="cat", source="demo", ext="png")
    b = store.add_image(png_bytes((4, 5, 6)), keyword_class="cat", source="demo", ext="png")
    store.move(a, "accepted", label="cat", label_source="keyword", confidence=None)
    store.move_many([Move(b, "rejected", {"reason": "duplicate", "duplicate_of": a})])
    ra, rb = store.get_image(a), store.get_image(b)
    assert ra["path"].startswith("dataset/cat/") and ra["status"] == "accepted"
    assert rb["path"].startswith("rejected/duplicate/") and rb["duplicate_of"] == a
    store.move(a, "review", label="dog")
    assert store.get_image(a)["path"].startswith("review/dog/")
    assert_consistent(store)


def test_moves_refuse_unsafe_labels_and_unknown_images(store):
    a = store.add_image(png_bytes(), keyword_class="cat", source="demo", ext="png")
    with pytest.raises(UnsafeNameError):
        store.move(a, "accepted", label="../escape")
    with pytest.raises(ImageNotFoundError):
        store.move(999, "accepted", label="cat")
    with pytest.raises(ValueError):
        store.move(a, "accepted", label="cat", sha256="x")
    assert store.get_image(a)["status"] == "inbox"
    assert_consistent(store)


def test_stats_counts_per_class_inbox_and_rejections(store):
    ids = [
        store.add_image(png_bytes((i, 0, 0)), keyword_class="cat", source="demo", ext="png")
        for i in range(6)
    ]
    store.move(ids[0], "accepted", label="cat")
    store.move(ids[1], "accepted", label="cat")
    store.move(ids[2], "review", label="dog")
    store.move(ids[3], "rejected", reason="duplicate")
    store.move(ids[4], "rejected", reason="undecodable")
    stats = store.stats({"cat": 10, "dog": 4, "bird": 1}).as_json()
    assert stats == {
        "classes": {
            "cat": {"accepted": 2, "review": 0, "target": 10},
            "dog": {"accepted": 0, "review": 1, "target": 4},
            "bird": {"accepted": 0, "review": 0, "target": 1},
        },
        "inbox": 1,
        "rejected": {"duplicate": 1, "undecodable": 1},
    }
    assert store.inbox_counts() == {"cat": 1}


def test_passing_failures_are_due_again_after_the_pause_up_to_max_attempts(store):
    from crawler.pipeline import passing_failure
    from storage.store import utcnow

    urls = {o: f"http://a/{o}.jpg" for o in ("timeout", "http_503", "http_404", "not_image")}
    for outcome, url in urls.items():
        assert store.record_url(url, outcome)
    store.record_url(
        "http://a/ok.jpg",
        "stored",
        store.add_image(png_bytes((3, 3, 3)), keyword_class="cat", source="demo", ext="png"),
    )
    everything = [*urls.values(), "http://a/ok.jpg"]
    a_day = UrlRetry(passing_failure, timedelta(hours=24), max_attempts=2)
    assert store.seen_urls(everything, a_day) == set(everything)  # too soon for any
    now = UrlRetry(passing_failure, timedelta(0), max_attempts=2)
    passing = {urls["timeout"], urls["http_503"]}
    assert store.seen_urls(everything, now) == set(everything) - passing
    # the second attempt: one recovers and gives an image, one fails again
    image_id = store.add_image(png_bytes((4, 4, 4)), keyword_class="cat", source="demo", ext="png")
    assert not store.record_url(urls["timeout"], "stored", image_id)  # recorded before
    assert not store.record_url(urls["http_503"], "http_503")
    assert store.seen_urls(everything, now) == set(everything)  # one gave an image; 2 attempts
    assert store.seen_urls(everything, UrlRetry(passing_failure, timedelta(0), 3)) == set(
        everything
    ) - {urls["http_503"]}
    store.record_url(urls["timeout"], "timeout")  # a stale retry never undoes an image
    with store.engine.connect() as conn:
        rows = {r.url: r for r in conn.execute(select(schema.urls))}
    assert (rows[urls["timeout"]].outcome, rows[urls["timeout"]].image_id) == ("stored", image_id)
    assert rows[urls["http_503"]].attempts == 2
    assert rows[urls["http_503"]].last_tried >= rows[urls["http_503"]].created_at
    assert rows[urls["http_503"]].last_tried <= utcnow()


def test_seen_urls_and_runs(store):
    assert store.record_url("http://a/1.jpg", "image") is True
    assert store.record_url("http://a/1.jpg", "image") is False
    assert store.seen_urls(["http://a/1.jpg", "http://a/2.jpg"]) == {"http://a/1.jpg"}
    run = store.start_run("crawl")
    store.finish_run(run, "succeeded", {"downloaded": 3})
    (last,) = store.recent_runs(1)
    assert last["job"] == "crawl" and last["status"] == "succeeded"
    assert last["counts"] == {"downloaded": 3} and last["finished"]


def test_registry_versions_and_atomic_current(store):
    reg = store.registry
    assert reg.current() is None
    v1, p1 = reg.new_version()
    v2, _ = reg.new_version()
    assert (v1, v2) == ("v0001", "v0002") and p1.is_dir()
    reg.promote(v1)
    assert reg.current() == "v0001"
    assert (store.data_dir / "models" / "CURRENT").read_text() == "v0001\n"
    with pytest.raises(StorageError):
        reg.promote("v0009")
    reg.record(v1, {"accuracy": 0.5}, "abc", promoted=True)
    reg.record(v2, {"accuracy": 0.7}, "abd", promoted=False, note="worse")
    reg.promote(v2)
    assert [m["promoted"] for m in reg.rows()] == [False, True]


def test_atomic_write_leaves_no_temp_files(tmp_path):
    target = tmp_path / "f.txt"
    atomic_write(target, "one")
    atomic_write(target, "two")
    assert target.read_text() == "two"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]


# ---- crash between the two halves of a move: a real process killed with SIGKILL -----------

CRASH_SCRIPT = """
    import os, signal
    from storage import Store, Move
    from storage import store as store_mod
    store = Store.open({data!r})
    point = {point!r}
    if point == "before_rename":
        # intent recorded, file not yet renamed
        store_mod.files.replace = lambda *a: os.kill(os.getpid(), signal.SIGKILL)
    elif point == "after_rename":
        # file renamed, row not yet updated
        store_mod.Store._apply = lambda *a: os.kill(os.getpid(), signal.SIGKILL)
    if {op!r} == "add":
        store.add_image(b"new image bytes", keyword_class="cat", source="demo", ext="jpg")
    else:
        store.move_many([Move(i, "accepted", {{"label": "cat"}}) for i in {ids!r}])
    print("not killed")
"""


def run_and_kill(data_dir: Path, point: str, op: str, ids=()) -> None:
    script = CRASH_SCRIPT.format(data=str(data_dir), point=point, op=op, ids=list(ids))
    proc = run_script(data_dir.parent, script, capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr + proc.stdout


@pytest.mark.parametrize("point", ["before_rename", "after_rename"])
def test_interrupted_move_is_finished_on_next_open(tmp_path, point):
    data_dir = tmp_path / "data"
    with Store.open(data_dir) as store:
        ids = [
            store.add_image(png_bytes((i, 9, 9)), keyword_class="cat", source="demo", ext="png")
            for i in range(3)
        ]
    run_and_kill(data_dir, point, "move", ids)
    with Store.open(data_dir, repair=False) as half, half.engine.connect() as conn:
        assert len(conn.execute(select(schema.pending_moves)).all()) == 3
    with Store.open(data_dir) as store:  # opening repairs
        rows = list(store.iter_images())
        assert len(rows) == 3
        assert {r["status"] for r in rows} == {"accepted"}
        assert all(r["path"].startswith("dataset/cat/") for r in rows)
        assert_consistent(store)
        with store.engine.connect() as conn:
            assert conn.execute(select(schema.pending_moves)).all() == []


@pytest.mark.parametrize("point", ["before_rename", "after_rename"])
def test_interrupted_add_leaves_one_image_or_none(tmp_path, point):
    data_dir = tmp_path / "data"
    Store.open(data_dir).close()
    run_and_kill(data_dir, point, "add")
    with Store.open(data_dir) as store:
        rows = list(store.iter_images())
        # The fsynced temp file holds the whole download: the add is finished, not lost.
        assert len(rows) == 1 and rows[0]["status"] == "inbox"
        assert store.abspath(rows[0]["path"]).read_bytes() == b"new image bytes"
        assert_consistent(store)
        assert not list(data_dir.rglob("*.part"))
        # and the same bytes are still recognised as already stored
        with pytest.raises(DuplicateImageError):
            store.add_image(b"new image bytes", keyword_class="cat", source="demo")


def test_orphan_temp_file_of_dead_writer_is_removed(tmp_path):
    data_dir = tmp_path / "data"
    Store.open(data_dir).close()
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    ).stdout.strip()
    from storage.files import HOST

    orphan = data_dir / "inbox" / f".abc.jpg~{HOST}~{dead}~xyz.part"
    orphan.write_bytes(b"half")
    live = data_dir / "inbox" / f".abd.jpg~{HOST}~{os.getpid()}~xyz.part"
    live.write_bytes(b"being written")
    with Store.open(data_dir):
        pass
    assert not orphan.exists()
    assert live.exists()  # a live writer's file is never touched


def test_repair_of_a_move_whose_file_vanished_records_it(tmp_path):
    data_dir = tmp_path / "data"
    with Store.open(data_dir) as store:
        a = store.add_image(png_bytes(), keyword_class="cat", source="demo", ext="png")
    run_and_kill(data_dir, "before_rename", "move", [a])
    (data_dir / Store.open(data_dir, repair=False).get_image(a)["path"]).unlink()
    with Store.open(data_dir) as store:
        row = store.get_image(a)
        assert (row["status"], row["reason"], row["path"]) == ("rejected", "file_missing", None)


# ---- schema versions ------------------------------------------------------------------------


def test_newer_schema_is_refused(tmp_path):
    data_dir = tmp_path / "data"
    Store.open(data_dir).close()
    con = sqlite3.connect(data_dir / "pingo.db")
    con.execute(
        "UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(schema.SCHEMA_VERSION + 1),)
    )
    con.commit()
    con.close()
    with pytest.raises(SchemaVersionError, match="upgrade pingo"):
        Store.open(data_dir)


def test_duplicates_of_a_replaced_image_point_at_its_replacement(store):
    a, b, c, d, e, f, g = [
        store.add_image(png_bytes((i, 2, 2)), keyword_class="cat", source="demo", ext="png")
        for i in range(7)
    ]
    store.move(b, "rejected", reason="duplicate", duplicate_of=a)
    store.move(a, "rejected", reason="duplicate", duplicate_of=c)  # c replaces a
    assert store.get_image(b)["duplicate_of"] == c
    # in one batch, in either order: e -> d and d -> f leave e pointing at f
    store.move_many(
        [
            Move(e, "rejected", {"reason": "duplicate", "duplicate_of": d}),
            Move(d, "rejected", {"reason": "duplicate", "duplicate_of": f}),
        ]
    )
    assert (store.get_image(e)["duplicate_of"], store.get_image(d)["duplicate_of"]) == (f, f)
    store.move_many(
        [
            Move(f, "rejected", {"reason": "duplicate", "duplicate_of": g}),
            Move(d, "rejected", {"reason": "duplicate", "duplicate_of": f}),
        ]
    )
    assert {store.get_image(i)["duplicate_of"] for i in (d, e, f)} == {g}
    assert_consistent(store)


def test_a_version_1_database_is_upgraded_to_the_current_version_and_keeps_its_rows(
    tmp_path, db_url
):
    data_dir = tmp_path / "data"
    with Store.open(data_dir, db_url) as store:
        image_id = store.add_image(png_bytes(), keyword_class="cat", source="demo", ext="png")
        store.record_url("http://a/slow.jpg", "timeout")
        with store.engine.begin() as conn:  # what a v1 pingo left behind
            for ddl in (
                "DROP INDEX ix_images_duplicate_of",
                "DROP INDEX ix_images_updated_at",
                "ALTER TABLE urls DROP COLUMN attempts",
                "ALTER TABLE urls DROP COLUMN last_tried",
                "ALTER TABLE images DROP COLUMN failures",
                "ALTER TABLE images DROP COLUMN last_error",
                "ALTER TABLE runs DROP COLUMN owner",
                "ALTER TABLE runs DROP COLUMN heartbeat",
                "ALTER TABLE images DROP COLUMN decision_p",
                "ALTER TABLE images DROP COLUMN evidence",
                *(
                    f"ALTER TABLE images DROP COLUMN {c}"
                    for c in ("license", "license_url", "creator", "attribution", "title")
                ),
                "UPDATE meta SET value = '1' WHERE key = 'schema_version'",
            ):
                conn.exec_driver_sql(ddl)
    with Store.open(data_dir, db_url) as store:
        assert store.get_image(image_id)["keyword_class"] == "cat"
        assert store.get_image(image_id)["license"] is None  # v5: the source said nothing
        licensed = store.add_image(
            png_bytes((1, 2, 3)), keyword_class="cat", source="openverse", license="CC0-1.0",
            license_url="https://creativecommons.org/publicdomain/zero/1.0/", creator="A",
            attribution='"T" by A is under CC0.', title="T",
        )  # fmt: skip
        assert store.get_image(licensed)["attribution"] == '"T" by A is under CC0.'
        # the v1 row (no attempts, no last_tried) reads as one attempt at its creation time
        retry = UrlRetry(lambda outcome: True, timedelta(0), max_attempts=2)
        assert store.seen_urls(["http://a/slow.jpg"], retry) == set()
        store.record_url("http://a/slow.jpg", "timeout")
        assert store.seen_urls(["http://a/slow.jpg"], retry) == {"http://a/slow.jpg"}
        with store.engine.connect() as conn:
            indexes = {ix["name"] for ix in inspect(conn).get_indexes("images")}
            version = conn.execute(select(schema.meta.c.value)).scalar()
    assert {"ix_images_duplicate_of", "ix_images_updated_at"} <= indexes
    assert version == str(schema.SCHEMA_VERSION) == "5"


MIGRATION_SCRIPT = """
    from sqlalchemy import Column, Text, select
    from storage import Store, schema
    # What a later release does: declare the column, bump the version, add the step.
    schema.images.append_column(Column("caption", Text))
    schema.SCHEMA_VERSION += 1
    schema.MIGRATIONS[schema.SCHEMA_VERSION] = schema.add_column("images", "caption")
    with Store.open({data!r}) as store:
        with store.engine.connect() as conn:
            print(conn.execute(select(schema.images.c.keyword_class,
                                      schema.images.c.caption)).all())
            print(conn.execute(select(schema.meta.c.value)).scalar())
"""


def test_migration_adds_a_column_and_keeps_rows(tmp_path):
    """A later schema version adds a column: existing rows survive the upgrade."""
    data_dir = tmp_path / "data"
    with Store.open(data_dir) as store:
        store.add_image(png_bytes(), keyword_class="cat", source="demo", ext="png")
    script = MIGRATION_SCRIPT.format(data=str(data_dir))
    out = run_script(tmp_path, script, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:2] == ["[('cat', None)]", str(schema.SCHEMA_VERSION + 1)]
    with pytest.raises(SchemaVersionError):  # and this older pingo now refuses the DB
        Store.open(data_dir)


# ---- claims: several factory workers share the inbox ----------------------------------------


def test_claims_split_the_inbox_and_expire(store):
    ids = [
        store.add_image(png_bytes((i, 1, 1)), keyword_class="cat", source="demo", ext="png")
        for i in range(5)
    ]
    a = [r["id"] for r in store.claim_inbox("worker-a", 3)]
    b = [r["id"] for r in store.claim_inbox("worker-b", 3)]
    assert a == ids[:3] and b == ids[3:]
    assert store.claim_inbox("worker-c", 3) == []
    # worker-b gives its rows back; worker-c takes them with a lease that expires at once,
    # as a dead worker's does, so worker-d gets them next
    store.release_claims("worker-b")
    assert [r["id"] for r in store.claim_inbox("worker-c", 5, lease_seconds=0)] == ids[3:]
    assert [r["id"] for r in store.claim_inbox("worker-d", 5)] == ids[3:]  # c's lease expired


OPEN_TOGETHER_SCRIPT = """
    import sys
    from storage import Store
    print("ready", flush=True)
    for data_dir in sys.stdin:
        try:
            Store.open(data_dir.strip(), {url!r}).close()
            print("ok", flush=True)
        except Exception as exc:
            print(repr(exc).replace("\\n", " "), flush=True)
"""


def open_together(data_dirs: list[Path], url: str | None = None, workers: int = 4) -> None:
    """``workers`` processes open each of ``data_dirs`` (all on ``url``) at the same moment."""
    script = OPEN_TOGETHER_SCRIPT.format(url=url)
    procs = [
        start_script(
            data_dirs[0].parent, script, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        for _ in range(workers)
    ]
    try:
        assert [p.stdout.readline().strip() for p in procs] == ["ready"] * workers
        for n, data_dir in enumerate(data_dirs):
            for p in procs:  # the same folder to every worker, as close together as pipes go
                p.stdin.write(f"{data_dir}\n")
                p.stdin.flush()
            answers = [p.stdout.readline().strip() for p in procs]
            assert answers == ["ok"] * workers, f"round {n}: {answers}"
    finally:
        for p in procs:
            p.stdin.close()
            p.wait(timeout=60)


def test_workers_opening_a_fresh_postgresql_database_together(tmp_path, pg_url):
    """Four processes create the schema at once: one creates it, the others wait and use it."""
    open_together([tmp_path / "data"], pg_url)


def test_workers_opening_a_fresh_sqlite_database_together(tmp_path):
    """Four processes open each of 25 new SQLite databases at the same moment.

    The first open switches the file to WAL; SQLite refuses a racing switch at once, without
    waiting on the busy timeout. Before storage retried it, about one round in ten failed.
    """
    open_together([tmp_path / str(n) for n in range(25)])
