"""Issue 10, storage: no interrupted move is forgotten, no dead owner is taken for alive, no
read blocks a write, no person's decision is undone, and what power loss can leave behind is
found and repaired. Real processes, real signals, real SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from child_process import run_script, start_script
from conftest import png_bytes
from factory_helpers import assert_consistent, plant_intent
from sqlalchemy import select, update

from storage import Move, Store, files
from storage.schema import runs
from storage.store import utcnow

REPO = Path(__file__).resolve().parents[1]


def add(store, n: int, start: int = 0) -> list[int]:
    return [
        store.add_image(
            png_bytes((i % 256, i // 256, 7)), keyword_class="cat", source="demo", ext="png"
        )
        for i in range(start, start + n)
    ]


# ---- fault 2: Ctrl-C during a batch of moves ------------------------------------------------

MOVER = """
    from storage import Move, Store
    store = Store.open({data!r})
    ids = [r["id"] for r in store.iter_images()]
    targets = [("accepted", {{"label": "cat"}}), ("review", {{"label": "dog"}}),
               ("rejected", {{"reason": "duplicate"}}), ("inbox", {{}})]
    print("ready", flush=True)
    n = 0
    while True:
        status, changes = targets[n % len(targets)]
        for i in range(0, len(ids), 50):
            store.move_many([Move(j, status, changes) for j in ids[i:i + 50]])
        n += 1
"""


def test_sigint_at_random_moments_during_moves_leaves_db_and_disk_agreeing(tmp_path):
    """Real SIGINTs (Ctrl-C) land anywhere in a few hundred moves; every reopen agrees."""
    data_dir = tmp_path / "data"
    with Store.open(data_dir) as store:
        add(store, 300)
    rng = random.Random(10)
    script = MOVER.format(data=str(data_dir))
    for _ in range(8):
        child = start_script(
            tmp_path, script, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        assert child.stdout.readline().strip() == "ready", child.stderr.read()
        time.sleep(rng.uniform(0.05, 0.6))
        child.send_signal(signal.SIGINT)
        _, err = child.communicate(timeout=60)
        assert child.returncode != 0 and "KeyboardInterrupt" in err, err
        with Store.open(data_dir) as store:  # opening repairs
            assert len(list(store.iter_images())) == 300
            assert_consistent(store)


# ---- fault 3: a dead owner whose pid is reused ----------------------------------------------


@pytest.fixture
def other_process():
    """A live process started now: its pid stands for a reused pid."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    time.sleep(0.05)
    yield proc
    proc.kill()
    proc.wait()


def _owner(kind: str, pid: int) -> str:
    if kind == "old_format_pid_reused":
        return f"{files.HOST}:{pid}"
    start = files.process_start(pid)
    if kind == "start_time_differs":
        return f"{files.HOST}:{pid}:{int(start) - 100}:{files.BOOT_ID}"
    assert kind == "other_boot"
    return f"{files.HOST}:{pid}:{start}:0123456789ab"


@pytest.mark.parametrize("kind", ["old_format_pid_reused", "start_time_differs", "other_boot"])
def test_a_half_done_move_whose_owner_pid_was_reused_is_repaired(tmp_path, other_process, kind):
    data_dir = tmp_path / "data"
    with Store.open(data_dir) as store:
        (image_id,) = add(store, 1)
        row = store.get_image(image_id)
        dst = files.image_relpath("accepted", row["sha256"], "png", label="cat")
        plant_intent(  # left by a process that died an hour ago
            store,
            image_id,
            src=row["path"],
            dst=dst,
            changes={"status": "accepted", "label": "cat", "path": dst},
            owner=_owner(kind, other_process.pid),
            created_at=utcnow() - timedelta(hours=1),
        )
    with Store.open(data_dir) as store:
        assert store.get_image(image_id)["status"] == "accepted"
        assert_consistent(store)


def test_a_half_done_move_whose_owner_is_an_unreaped_zombie_is_repaired(tmp_path):
    """Found by the chaos rounds: a crawl child killed with its CLI is reparented to pid 1 and
    may stay a zombie for a while; its pid and start time still match, but it is dead."""
    data_dir = tmp_path / "data"
    zombie = subprocess.Popen(
        [sys.executable, "-c", "from storage import files; print(files.current_owner())"],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    owner = zombie.stdout.readline().strip()
    deadline = time.monotonic() + 10
    while Path(f"/proc/{zombie.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
        assert time.monotonic() < deadline, "the child did not exit"
        time.sleep(0.01)
    try:  # not reaped: a zombie until wait()
        with Store.open(data_dir) as store:
            (image_id,) = add(store, 1)
            row = store.get_image(image_id)
            dst = files.image_relpath("accepted", row["sha256"], "png", label="cat")
            plant_intent(
                store,
                image_id,
                src=row["path"],
                dst=dst,
                changes={"status": "accepted", "label": "cat", "path": dst},
                owner=owner,
            )
        with Store.open(data_dir) as store:
            assert store.get_image(image_id)["status"] == "accepted"
            assert_consistent(store)
    finally:
        zombie.wait()


def test_a_running_run_whose_pid_was_reused_is_failed_but_a_live_one_is_not(
    tmp_path, other_process
):
    with Store.open(tmp_path / "data") as store:
        dead, old_style, live = (store.start_run("factory") for _ in range(3))
        with store.engine.begin() as conn:
            conn.execute(
                update(runs)
                .where(runs.c.id == dead)
                .values(owner=_owner("start_time_differs", other_process.pid))
            )
            # written by an older pingo: host and pid only; the pid now runs something newer
            conn.execute(
                update(runs)
                .where(runs.c.id == old_style)
                .values(owner=None, pid=other_process.pid, started=utcnow() - timedelta(hours=1))
            )
        assert sorted(store.fail_stale_runs()) == sorted([dead, old_style])
        status = {r["id"]: r["status"] for r in store.recent_runs()}
        assert status == {dead: "failed", old_style: "failed", live: "running"}


def test_a_live_run_on_another_host_is_not_failed_while_it_beats(tmp_path):
    with Store.open(tmp_path / "data") as store:
        beating, silent = store.start_run("crawl"), store.start_run("crawl")
        with store.engine.begin() as conn:
            conn.execute(
                update(runs)
                .where(runs.c.id.in_([beating, silent]))
                .values(
                    host="elsewhere",
                    owner="elsewhere:4242:999:abcdef012345",
                    started=utcnow() - timedelta(hours=2),
                )
            )
            conn.execute(
                update(runs)
                .where(runs.c.id == silent)
                .values(heartbeat=utcnow() - timedelta(minutes=15))
            )
        store.heartbeat_run(beating)
        assert store.fail_stale_runs() == [silent]


def test_run_job_beats_while_the_stage_runs(project):
    from scheduler import jobs

    seen = []

    def stage(config, store):
        run = store.recent_runs(1)[0]
        time.sleep(0.5)
        with store.engine.connect() as conn:
            seen.append(
                conn.execute(
                    select(runs.c.started, runs.c.heartbeat).where(runs.c.id == run["id"])
                ).first()
            )

    jobs_every = jobs.HEARTBEAT
    jobs.HEARTBEAT = 0.1
    try:
        jobs.run_job(project.config, "factory", stage)
    finally:
        jobs.HEARTBEAT = jobs_every
    started, beat = seen[0]
    assert beat > started + timedelta(seconds=0.2)


# ---- fault 17: two repairs at once ----------------------------------------------------------

KILLED_MOVE = """
    import os, signal
    from storage import Store, Move
    from storage import store as store_mod
    store = Store.open({data!r}, {url!r})
    store_mod.files.replace = lambda *a: os.kill(os.getpid(), signal.SIGKILL)
    store.move_many([Move(r["id"], "accepted", {{"label": "cat"}}) for r in store.iter_images()])
"""

REPAIR = """
    import time
    from storage import Store
    while time.time() < {at!r}:
        pass
    Store.open({data!r}, {url!r}).close()
"""


def test_two_repairs_of_the_same_leftovers_at_once(tmp_path, db_url):
    data_dir = tmp_path / "data"
    with Store.open(data_dir, db_url) as store:
        add(store, 80)
    for round_ in range(2):
        run_script(tmp_path, KILLED_MOVE.format(data=str(data_dir), url=db_url), timeout=120)
        for i in range(200):  # a dead writer's temp files, on another host sharing data_dir
            part = data_dir / "inbox" / f".x{round_}{i}.png~otherhost~4242~abc{i}.part"
            part.write_bytes(b"half")
            os.utime(part, (time.time() - 3600, time.time() - 3600))
        at = time.time() + 1.5
        script = REPAIR.format(data=str(data_dir), at=at, url=db_url)
        procs = [
            start_script(tmp_path, script, stderr=subprocess.PIPE, text=True) for _ in range(2)
        ]
        errors = [p.communicate(timeout=120)[1] for p in procs]
        assert [p.returncode for p in procs] == [0, 0], errors
        with Store.open(data_dir, db_url) as store:
            rows = list(store.iter_images())
            assert {r["status"] for r in rows} == {"accepted"} and len(rows) == 80
            assert_consistent(store)
            store.move_many([Move(r["id"], "inbox") for r in rows])
        assert not list(data_dir.rglob("*.part"))


# ---- fault 4: power loss --------------------------------------------------------------------


def test_move_intents_are_committed_durably_on_sqlite(tmp_path):
    """In WAL mode synchronous=NORMAL can lose a committed intent on power loss while the
    fsynced rename survives; intents are committed with synchronous=FULL."""
    from sqlalchemy import event

    with Store.open(tmp_path / "data") as store:
        sql: list[str] = []
        event.listen(
            store.engine,
            "before_cursor_execute",
            lambda conn, cur, statement, *a: sql.append(statement),
        )
        (a,) = add(store, 1)
        store.move(a, "accepted", label="cat")
        intents = [i for i, q in enumerate(sql) if q.startswith("INSERT INTO pending_moves")]
        assert len(intents) == 2
        for i in intents:
            level = [q for q in sql[:i] if q.startswith("PRAGMA synchronous")][-1]
            assert level == "PRAGMA synchronous=FULL"
        assert "PRAGMA synchronous=NORMAL" in sql  # the rest keep the cheap commits


def test_a_row_and_file_that_disagree_are_reconciled_by_content_hash(tmp_path, db_url):
    """What a lost intent leaves: the file renamed, the row still naming the old place."""
    data_dir = tmp_path / "data"
    with Store.open(data_dir, db_url) as store:
        moved, gone, fine = add(store, 3)
        row = store.get_image(moved)
        where = files.image_relpath("review", row["sha256"], "png", label="dog")
        files.replace(store.abspath(row["path"]), store.abspath(where))
        store.abspath(store.get_image(gone)["path"]).unlink()
        assert store.locate_file(row["sha256"], "png") == where
        assert store.locate_file("0" * 64, "png") is None
        done = store.repair(full=True)
        assert (done["relinked"], done["missing"]) == (1, 1)
        got = store.get_image(moved)
        assert (got["status"], got["label"], got["path"]) == ("review", "dog", where)
        got = store.get_image(gone)
        assert (got["status"], got["reason"], got["path"]) == ("rejected", "file_missing", None)
        assert store.get_image(fine)["status"] == "inbox"
        assert store.stats({}).set_aside == {"file_missing": 1}


def test_a_move_whose_file_is_elsewhere_moves_it_from_there(tmp_path):
    data_dir = tmp_path / "data"
    with Store.open(data_dir) as store:
        (a,) = add(store, 1)
        row = store.get_image(a)
        elsewhere = files.image_relpath("accepted", row["sha256"], "png", label="cat")
        files.replace(store.abspath(row["path"]), store.abspath(elsewhere))
        path = store.move(a, "review", label="dog")
        assert path.startswith("review/dog/") and store.abspath(path).is_file()
        assert_consistent(store)


def test_promote_fsyncs_the_model_and_its_folder_before_current(tmp_path, monkeypatch):
    with Store.open(tmp_path / "data") as store:
        version, folder = store.registry.new_version()
        (folder / "model.keras").write_bytes(b"weights")
        (folder / "classes.json").write_text("[]")
        synced: list[str] = []
        real_fsync = os.fsync

        def fsync(fd):
            synced.append(os.readlink(f"/proc/self/fd/{fd}"))
            return real_fsync(fd)

        monkeypatch.setattr(os, "fsync", fsync)
        store.registry.promote(version)
        current = [i for i, p in enumerate(synced) if ".CURRENT~" in p or p.endswith("CURRENT")]
        assert current, synced
        before = synced[: current[0]]
        assert str(folder / "model.keras") in before
        assert str(folder) in before
        assert str(folder.parent) in before


# ---- fault 5: a person's decision wins ------------------------------------------------------


def test_a_move_decided_before_a_persons_decision_does_not_undo_it(tmp_path, db_url):
    with Store.open(tmp_path / "data", db_url) as store:
        a, b = add(store, 2)
        store.move(a, "review", label="dog", label_source="model")
        store.move(b, "accepted", label="cat", label_source="keyword")
        # the factory read `a` in review and decides to demote it; a person accepts it first
        store.move(a, "accepted", label="cat", label_source="human")
        result = store.move_many([Move(a, "rejected", {"reason": "duplicate", "duplicate_of": b})])
        assert a in result.skipped and a not in result
        row = store.get_image(a)
        assert (row["status"], row["label"], row["label_source"]) == ("accepted", "cat", "human")
        # a person may change their mind; the guard on what the caller read skips stale moves
        store.move(a, "rejected", reason="human_rejected", label_source="human")
        stale = store.move_many([Move(b, "review", {"label": "dog"}, expect={"status": "inbox"})])
        assert b in stale.skipped and store.get_image(b)["status"] == "accepted"
        assert_consistent(store)


# ---- fault 6: readers never block writers ---------------------------------------------------

WRITER = """
    import time
    from storage import db
    db.BUSY_TIMEOUT_MS = 300
    from storage import Store
    with Store.open({data!r}) as store:
        t = time.monotonic()
        store.add_image(b"written while a report reads", keyword_class="cat", source="demo")
        store.record_url("http://example.test/a.jpg", "image")
        print(round(time.monotonic() - t, 3))
"""


def test_a_long_read_does_not_block_another_process_writing(tmp_path):
    data_dir = tmp_path / "data"
    with Store.open(data_dir) as store:
        add(store, 20)
        with store.engine.connect() as conn:  # a report's long read, still open
            conn.execute(select(runs)).all()
            store.stats({"cat": 5})
            out = run_script(
                tmp_path,
                WRITER.format(data=str(data_dir)),
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert out.returncode == 0, out.stderr[-2000:]
        assert len(list(store.iter_images())) == 21


def test_stats_and_status_show_set_aside_rows(project, run_cli):
    with project.store() as store:
        a, b = add(store, 2)
        store.abspath(store.get_image(a)["path"]).unlink()
        store.repair(full=True)
    text = run_cli("stats").output
    assert "set aside: 1 (file_missing 1)" in text
    assert json.loads(run_cli("stats", "--json").output)["set_aside"] == {"file_missing": 1}
    status = json.loads(run_cli("status", "--json").output)
    assert [(r["id"], r["reason"]) for r in status["set_aside"]] == [(a, "file_missing")]
    assert f"set aside: image {a} (file_missing)" in run_cli("status").output
