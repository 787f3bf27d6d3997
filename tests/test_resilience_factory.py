"""Issue 10, factory: no single row stops a run. A vanished file is recorded, a file found
elsewhere is followed, a row that fails twice is set aside; the rest is filed, every run."""

from __future__ import annotations

import json

import pytest
from factory_helpers import encode, pattern_image, plant_intent

from storage import files
from storage.files import STATUS_DIRS


def add(store, seeds, keyword_class="cat") -> list[int]:
    return [
        store.add_image(
            encode(pattern_image(s), "PNG"), keyword_class=keyword_class, source="t", ext="png"
        )
        for s in seeds
    ]


def assert_agree(store) -> None:
    """Each row names its one file (or none, when set aside as file_missing); nothing else."""
    from storage.attribution import FILES as CREDITS  # dataset/ATTRIBUTION.md, attribution.csv

    rows = list(store.iter_images())
    on_disk = {
        p.relative_to(store.data_dir).as_posix()
        for d in STATUS_DIRS.values()
        for p in (store.data_dir / d).rglob("*")
        if p.is_file()
    } - {f"{STATUS_DIRS['accepted']}/{name}" for name in CREDITS}
    for r in rows:
        if r["path"] is None:
            assert (r["status"], r["reason"]) == ("rejected", "file_missing"), r
        else:
            assert r["path"].startswith(STATUS_DIRS[r["status"]] + "/"), r
    assert {r["path"] for r in rows if r["path"]} == on_disk


def test_a_vanished_inbox_file_is_recorded_and_the_run_goes_on(project, run_cli):
    with project.store() as store:
        ids = add(store, range(6))
        gone, moved = ids[1], ids[3]
        store.abspath(store.get_image(gone)["path"]).unlink()  # deleted by hand
        row = store.get_image(moved)  # renamed, but the intent was lost (power loss)
        files.replace(
            store.abspath(row["path"]),
            store.abspath(files.image_relpath("accepted", row["sha256"], "png", label="cat")),
        )
    for _ in range(2):  # and every later run succeeds too
        result = run_cli("factory")
        assert result.exit_code == 0, result.output
    with project.store() as store:
        rows = {r["id"]: r for r in store.iter_images()}
        assert (rows[gone]["status"], rows[gone]["reason"]) == ("rejected", "file_missing")
        assert rows[moved]["status"] == "accepted" and rows[moved]["path"].startswith(
            "dataset/cat/"
        )
        assert {rows[i]["status"] for i in ids if i != gone} == {"accepted"}
        assert_agree(store)
        assert [r["status"] for r in store.recent_runs()] == ["succeeded", "succeeded"]
    assert "set aside: 1 (file_missing 1)" in run_cli("stats").output


@pytest.mark.timeout(120)
def test_an_inbox_row_whose_add_a_live_process_still_finishes_does_not_loop_the_run(
    project, run_cli
):
    """A crawler (alive: here, this very process) has committed an add but not yet renamed
    the file into the inbox. Storage rightly leaves the row alone; the factory used to take
    it again and again (claims give a worker its own rows first) and never finished."""

    with project.store() as store:
        good, busy = add(store, [30, 31])
        path = store.get_image(busy)["path"]
        store.abspath(path).unlink()
        plant_intent(
            store,
            busy,
            kind="add",
            src=f"inbox/.{busy}.part",
            dst=path,
            owner=files.current_owner(),
        )
    result = run_cli("factory")
    assert result.exit_code == 0, result.output
    with project.store() as store:
        assert store.get_image(good)["status"] == "accepted"
        assert store.get_image(busy)["status"] == "inbox"  # the live add's, for a later run


def test_a_row_that_fails_twice_is_set_aside_and_the_rest_is_filed(project, run_cli):
    with project.store() as store:
        good = add(store, range(10, 14))
        # a row an older pingo let in: its keyword class cannot become a folder
        (bad,) = add(store, [20], keyword_class="../outside")
    first = run_cli("factory", "--json")
    assert first.exit_code == 0, first.output
    assert json.loads(first.output)["failed"] == 1
    with project.store() as store:
        assert {store.get_image(i)["status"] for i in good} == {"accepted"}
        row = store.get_image(bad)
        assert (row["status"], row["failures"]) == ("inbox", 1)
        (late,) = add(store, [21])
    second = run_cli("factory", "--json")
    assert second.exit_code == 0, second.output
    assert json.loads(second.output)["set_aside"] == 1
    with project.store() as store:
        row = store.get_image(bad)
        assert (row["status"], row["reason"], row["failures"]) == (
            "rejected",
            "processing_error",
            2,
        )
        assert row["path"].startswith("rejected/processing_error/")
        assert "UnsafeNameError" in row["last_error"]
        assert store.get_image(late)["status"] == "accepted"
        assert_agree(store)
    assert "set aside: 1 (processing_error 1)" in run_cli("stats").output
    status = json.loads(run_cli("status", "--json").output)
    assert [r["id"] for r in status["set_aside"]] == [bad]
    assert [r["status"] for r in status["runs"]] == ["succeeded", "succeeded"]


def test_a_persons_decision_waits_for_a_factory_move_in_flight_and_wins(project):
    """The factory is moving the image (its intent is recorded, the process alive): the
    person's accept waits for that move instead of failing, then applies on top of it."""
    import threading

    from sqlalchemy import delete

    from dataset_factory.review import accept
    from storage.schema import pending_moves

    with project.store() as store:
        (image_id,) = add(store, [30])
        store.move(image_id, "review", label="dog", label_source="model", reason="disagrees")
        plant_intent(store, image_id, owner=files.current_owner())

        def factory_finishes():
            with store.engine.begin() as conn:
                conn.execute(delete(pending_moves).where(pending_moves.c.image_id == image_id))

        timer = threading.Timer(0.5, factory_finishes)
        timer.start()
        try:
            assert accept(store, project.config, image_id, "cat") == "cat"
        finally:
            timer.join()
        row = store.get_image(image_id)
        assert (row["status"], row["label"], row["label_source"]) == ("accepted", "cat", "human")
        assert_agree(store)
