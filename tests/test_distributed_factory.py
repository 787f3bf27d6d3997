"""Several factory workers over one inbox, on SQLite and on a real PostgreSQL.

Planted copies of real photos are laid out so that a photo and its copies sit in neighbouring
chunks, which two workers claim at the same moment: the near-duplicate index must still keep
exactly one copy of each photo. A worker killed with -9 mid-run leaves leases that run out;
the other worker takes its rows and finishes.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from datetime import timedelta

import pytest
from child_process import start_script
from conftest import storage_toml, wait_for
from factory_helpers import assert_consistent, encode, jpeg_of
from PIL import Image

from dataset_factory.dedupe import index_path
from dataset_factory.index import NearDuplicateIndex
from storage import Store, utcnow

CHUNK = 8
LEASE = 3  # seconds: a killed worker's rows are taken over this soon

WORKER = """
    import json, sys, time
    from pathlib import Path
    from core.config import load_config
    from storage import Store
    from dataset_factory import process_inbox

    if __name__ == "__main__":  # hashing processes re-import this module
        config = load_config(sys.argv[1])
        ready, go = Path(sys.argv[2]), Path(sys.argv[3])
        with Store.from_config(config) as store:
            ready.touch()
            while not go.exists():  # start together, so that the workers really overlap
                time.sleep(0.01)
            summary = process_inbox(config, store)
        print(json.dumps(summary.as_json()))
"""

COPIES = {
    "exact": lambda im: encode(im, "PNG"),  # the same pixels, other bytes
    "near": lambda im: encode(im.resize((72, 72), Image.Resampling.LANCZOS), "JPEG", quality=60),
    "larger": lambda im: encode(
        im.resize((130, 130), Image.Resampling.BICUBIC), "JPEG", quality=92
    ),  # more pixels: replaces the kept original
}


@pytest.fixture
def shared_project(project, db_url):
    """The test project with small chunks and short leases, on SQLite or PostgreSQL."""
    project.write(
        project.DEFAULT
        + textwrap.dedent(f"""
        workers = 1
        chunk_size = {CHUNK}
        claim_lease = {LEASE}
        """)
        + storage_toml(db_url)
    )
    return project


def plant(store, sign_digits, n_photos=48) -> list[list[int]]:
    """Photos and copies, each photo's copies in the chunk after it; returns id groups."""
    rng = random.Random(7)
    files = [
        p
        for cls in ("1", "4", "8")
        for p in rng.sample(sorted((sign_digits / cls).glob("*.JPG")), n_photos // 3)
    ]
    groups: list[list[int]] = []
    kinds = list(COPIES)
    for start in range(0, len(files), CHUNK):
        block = files[start : start + CHUNK]
        ids = [
            store.add_image(p.read_bytes(), keyword_class="cat", source="t", ext="jpg")
            for p in block
        ]
        groups += [[i] for i in ids]
        for copy_round in range(2):  # two copies each, in the next chunks
            for k, p in enumerate(block):
                kind = kinds[(start + k + copy_round) % len(kinds)]
                data = COPIES[kind](Image.open(p).convert("RGB"))
                groups[start + k].append(
                    store.add_image(
                        data,
                        keyword_class="dog",
                        source="t",
                        ext="png" if kind == "exact" else "jpg",
                    )
                )
    return groups


def start_workers(project, tmp_path, n=2) -> list[subprocess.Popen]:
    go = tmp_path / "go"
    procs, ready = [], []
    for i in range(n):
        ready.append(tmp_path / f"ready-{i}")
        procs.append(
            start_script(
                tmp_path,
                WORKER,
                str(project.path),
                str(ready[-1]),
                str(go),
                stdout=subprocess.PIPE,
                text=True,
                start_new_session=True,
            )
        )

    def started() -> bool:
        if all(r.exists() for r in ready):
            return True
        assert all(p.poll() is None for p in procs), "a worker died at start"
        return False

    wait_for(started, "the workers start", 60)
    go.touch()
    return procs


def finish(proc: subprocess.Popen) -> dict:
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0
    return json.loads(out.strip().splitlines()[-1])


def assert_one_copy_kept(store, groups: list[list[int]]) -> None:
    rows = {r["id"]: r for r in store.iter_images()}
    assert sorted(rows) == sorted(i for g in groups for i in g)
    assert not [i for i, r in rows.items() if r["status"] == "inbox"]
    assert_consistent(store)
    kept_ids = set()
    for group in groups:
        kept = [i for i in group if rows[i]["status"] in ("accepted", "review")]
        assert len(kept) == 1, [(i, rows[i]["status"], rows[i]["duplicate_of"]) for i in group]
        kept_ids.add(kept[0])
        for i in group:
            r = rows[i]
            if r["status"] == "rejected":
                assert r["reason"] == "duplicate"
                while r["duplicate_of"] is not None:  # a chain of copies ends at the kept one
                    r = rows[r["duplicate_of"]]
                assert r["id"] == kept[0]
    assert len(kept_ids) == len(groups)
    assert {i for i, r in rows.items() if r["status"] in ("accepted", "review")} == kept_ids
    index = NearDuplicateIndex.load(index_path(store.data_dir, "phash"), "phash")
    assert set(index.main.ids.tolist()) == kept_ids


def test_two_workers_share_one_inbox_and_keep_one_copy(shared_project, sign_digits, tmp_path):
    with shared_project.store() as store:
        groups = plant(store, sign_digits)
    total = sum(map(len, groups))
    summaries = [finish(p) for p in start_workers(shared_project, tmp_path)]
    # every image processed once, by one of the two workers, and both took part
    assert sum(s["processed"] for s in summaries) == total
    assert all(s["processed"] > 0 for s in summaries), summaries
    assert summaries[0]["worker"] != summaries[1]["worker"]
    with shared_project.store() as store:
        assert_one_copy_kept(store, groups)


def test_a_killed_worker_s_rows_are_taken_over(shared_project, sign_digits, tmp_path):
    with shared_project.store() as store:
        groups = plant(store, sign_digits)
        total = sum(map(len, groups))
        victim, survivor = start_workers(shared_project, tmp_path)
        deadline = time.time() + 60
        while time.time() < deadline and victim.poll() is None:
            left = sum(store.inbox_counts().values())
            if total - left >= 2 * CHUNK:
                break
            time.sleep(0.02)
        assert victim.poll() is None and left > CHUNK, "the kill came too late to test anything"
        os.killpg(victim.pid, signal.SIGKILL)  # the worker and its hashing process
        victim.wait()
        summary = finish(survivor)  # waits out the victim's lease, then files its rows too
        assert summary["processed"] > 0
    with shared_project.store() as store:  # (opening repairs nothing the survivor left)
        assert_one_copy_kept(store, groups)


# ---- the storage pieces the workers rely on ---------------------------------------------------


@pytest.fixture
def store_url(tmp_path, db_url):
    return tmp_path / "data", db_url


def test_exclusive_serialises_holders_across_connections(store_url):
    data_dir, url = store_url
    events: list[str] = []
    entered = threading.Event()
    with Store.open(data_dir, url) as one, Store.open(data_dir, url) as two:

        def hold():
            with one.exclusive("factory"):
                events.append("first in")
                entered.set()
                time.sleep(0.5)
                events.append("first out")

        t = threading.Thread(target=hold)
        t.start()
        entered.wait(10)
        with two.exclusive("factory"):
            events.append("second in")
        t.join()
        with two.exclusive("other"), one.exclusive("other2"):  # names are independent
            events.append("both")
        with pytest.raises(ValueError), one.exclusive("../x"):
            pass
    assert events == ["first in", "first out", "second in", "both"]


def test_renewed_claims_stay_with_their_worker(store_url):
    from conftest import png_bytes

    data_dir, url = store_url
    with Store.open(data_dir, url) as store:
        ids = [
            store.add_image(png_bytes((i, 9, 9)), keyword_class="cat", source="t", ext="png")
            for i in range(4)
        ]
        assert [r["id"] for r in store.claim_inbox("a", 2, lease_seconds=0)] == ids[:2]
        assert store.renew_claims("a", 60) == set(ids[:2])  # renewed before anyone took them
        assert [r["id"] for r in store.claim_inbox("b", 4)] == ids[2:]
        assert store.claim_holders() == {"a", "b"}
        store.claim_inbox("c", 4, lease_seconds=0)  # nothing left to take
        store.move(ids[0], "accepted", label="cat")  # filed: no longer held
        assert store.renew_claims("a", 0, [ids[0], ids[1]]) == {ids[1]}
        assert [r["id"] for r in store.claim_inbox("c", 4)] == [ids[1]]  # a's lease ran out
        assert store.renew_claims("a", 60, [ids[1]]) == set()
        changed = store.changed_since(utcnow() - timedelta(minutes=1))
        assert [r["id"] for r in changed] == [ids[0]]  # inbox rows are not "changed"
        assert store.changed_since(utcnow() + timedelta(minutes=1)) == []


def test_a_dead_worker_s_half_done_move_is_finished_not_redone(shared_project, sign_digits):
    """A worker died between recording a move and making it: storage refuses to move that
    image again; the next worker repairs (finishes the dead worker's move) and files the rest.

    The dead worker's intent is written by hand: kill -9 lands in that window too rarely to
    provoke it on purpose.
    """
    from dataset_factory import process_inbox
    from storage import files
    from storage.schema import pending_moves

    photos = sorted((sign_digits / "2").glob("*.JPG"))[:6]
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    dead_owner = f"{files.HOST}:{gone.stdout.strip()}"
    with shared_project.store() as store:
        ids = [
            store.add_image(p.read_bytes(), keyword_class="cat", source="t", ext="jpg")
            for p in photos
        ]
        ids.append(
            store.add_image(
                jpeg_of(photos[0], lambda im: im.resize((90, 90))),
                keyword_class="cat",
                source="t",
                ext="jpg",
            )
        )
        victim = store.get_image(ids[0])
        dst = files.image_relpath("accepted", victim["sha256"], "jpg", label="cat")
        with store.engine.begin() as conn:  # what move_many records before renaming
            conn.execute(
                pending_moves.insert().values(
                    image_id=ids[0],
                    kind="move",
                    src=victim["path"],
                    dst=dst,
                    changes={
                        "status": "accepted",
                        "path": dst,
                        "label": "cat",
                        "label_source": "keyword",
                        "width": 100,
                        "height": 100,
                    },
                    owner=dead_owner,
                    created_at=utcnow(),
                )
            )
        store.claim_inbox(dead_owner + ":0", 3)  # and its leases, not yet expired
        summary = process_inbox(shared_project.config, store)
        rows = {r["id"]: r for r in store.iter_images()}
        assert rows[ids[0]]["status"] == "accepted" and rows[ids[0]]["path"] == dst
        assert not [i for i, r in rows.items() if r["status"] == "inbox"]
        assert rows[ids[-1]]["duplicate_of"] == ids[0]  # the copy, against the finished move
        assert summary.processed == len(ids) - 1
        assert_consistent(store)
