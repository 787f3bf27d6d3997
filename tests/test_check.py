"""`pingo check [--repair] [--json]`: each problem planted in a real data folder (real SQLite,
real files; one run on PostgreSQL), reported with a non-zero exit, and fixed by --repair
when it can be fixed without guessing."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime

import pytest
from conftest import png_bytes, storage_toml
from factory_helpers import plant_intent
from sqlalchemy import select, update

from storage.files import HOST
from storage.schema import images


def add(store, color, status="accepted", label="cat", reason=None) -> int:
    image_id = store.add_image(
        png_bytes(color),
        keyword_class=label or "cat",
        source="test",
        ext="png",
        source_url=f"http://example.test/{color}.png",
    )
    if status == "accepted" or status == "review":
        store.move(image_id, status, label=label, label_source="human")
    elif status == "rejected":
        store.move(image_id, "rejected", reason=reason or "duplicate")
    return image_id


@pytest.fixture
def filled(project):
    """Four images: two accepted cats, one dog in review, one rejected duplicate."""
    with project.store() as store:
        ids = [
            add(store, (10, 0, 0)),
            add(store, (20, 0, 0)),
            add(store, (0, 30, 0), "review", "dog"),
            add(store, (0, 0, 40), "rejected", None, "duplicate"),
        ]
    return ids


def check(run_cli, *args):
    result = run_cli("check", "--json", *args)
    return result.exit_code, json.loads(result.stdout)


def kinds(report) -> dict[str, int]:
    return {p["kind"]: p["count"] for p in report["problems"]}


def row(project, image_id):
    with project.store() as store:
        return store.get_image(image_id)


def dead_pid() -> int:
    proc = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(proc.stdout)


def test_a_sound_folder_exits_0_with_the_documented_json(project, run_cli, filled):
    code, report = check(run_cli)
    assert (code, report) == (0, {"sound": True, "problems": [], "repaired": {}})
    text = run_cli("check")
    assert text.exit_code == 0 and text.stdout.strip().endswith("sound")


def test_row_whose_file_is_nowhere_becomes_rejected_file_missing(project, run_cli, filled):
    cat = row(project, filled[0])
    (project.data_dir / cat["path"]).unlink()
    code, report = check(run_cli)
    assert code == 1 and report["sound"] is False
    assert kinds(report) == {"missing_file": 1, "count_mismatch": 1}
    (item,) = report["problems"][1]["items"]
    assert item["image_id"] == filled[0] and item["path"] == cat["path"]
    human = run_cli("check")
    assert (
        human.exit_code == 1 and "missing_file: 1" in human.stdout and cat["path"] in human.stdout
    )

    code, report = check(run_cli, "--repair")
    assert code == 0 and report["sound"] and report["repaired"] == {"missing_file": 1}
    after = row(project, filled[0])
    # still accounted for exactly once: same row, same sha256, no file, never counted as kept
    assert (after["status"], after["reason"], after["path"]) == ("rejected", "file_missing", None)
    assert after["sha256"] == cat["sha256"]


def test_file_found_elsewhere_by_its_content_hash_name_goes_back(project, run_cli, filled):
    cat = row(project, filled[0])
    src = project.data_dir / cat["path"]
    stray = project.data_dir / "review" / "dog" / src.name
    os.replace(src, stray)  # a person moved it by hand
    code, report = check(run_cli)
    assert code == 1 and kinds(report)["missing_file"] == 1
    assert "review/dog/" + src.name in json.dumps(report)
    code, report = check(run_cli, "--repair")
    assert code == 0, report
    assert src.is_file() and not stray.exists()
    assert row(project, filled[0])["status"] == "accepted"


def test_file_without_a_row_is_reported_and_left_alone(project, run_cli, filled):
    stranger = project.data_dir / "dataset" / "cat" / "holiday.jpg"
    stranger.write_bytes(png_bytes((1, 2, 3)))
    code, report = check(run_cli)
    assert code == 1 and kinds(report) == {"unknown_file": 1, "count_mismatch": 1}
    assert "dataset/cat/" in json.dumps(report) and "2 files" not in json.dumps(report)
    code, report = check(run_cli, "--repair")
    assert code == 1 and report["repaired"] == {}  # nothing guessed
    assert stranger.read_bytes() == png_bytes((1, 2, 3))
    assert [p["fixable"] for p in report["problems"]] == [False, False]


def test_image_in_two_places_loses_its_extra_copy(project, run_cli, filled):
    dog = row(project, filled[2])
    copy = project.data_dir / "dataset" / "dog" / (project.data_dir / dog["path"]).name
    copy.parent.mkdir(parents=True)
    shutil.copy(project.data_dir / dog["path"], copy)
    code, report = check(run_cli)
    assert code == 1 and kinds(report) == {"extra_copy": 1, "count_mismatch": 1}
    code, report = check(run_cli, "--repair")
    assert code == 0 and report["repaired"] == {"extra_copy": 1}
    assert not copy.exists() and (project.data_dir / dog["path"]).is_file()


def test_same_name_but_other_bytes_is_not_taken_for_a_copy(project, run_cli, filled):
    dog = row(project, filled[2])
    fake = project.data_dir / "dataset" / "cat" / (project.data_dir / dog["path"]).name
    fake.write_bytes(b"not the same image")
    code, report = check(run_cli, "--repair")
    assert code == 1 and kinds(report) == {"unknown_file": 1, "count_mismatch": 1}
    assert fake.exists()


def test_file_in_the_wrong_folder_for_its_row_is_moved_into_place(project, run_cli, filled):
    cat = row(project, filled[1])
    wrong = "review/cat/" + cat["path"].rsplit("/", 1)[1]
    (project.data_dir / "review" / "cat").mkdir()
    os.replace(project.data_dir / cat["path"], project.data_dir / wrong)
    with project.store() as store, store.engine.begin() as conn:
        conn.execute(update(images).where(images.c.id == filled[1]).values(path=wrong))
    code, report = check(run_cli)
    assert code == 1 and "misfiled" in kinds(report)
    code, report = check(run_cli, "--repair")
    assert code == 0 and report["repaired"] == {"misfiled": 1}
    assert row(project, filled[1])["path"] == cat["path"]
    assert (project.data_dir / cat["path"]).is_file()


def test_two_rows_naming_one_file_is_reported_not_guessed(project, run_cli, filled):
    cat, other = row(project, filled[0]), row(project, filled[1])
    (project.data_dir / other["path"]).unlink()
    with project.store() as store, store.engine.begin() as conn:
        conn.execute(update(images).where(images.c.id == filled[1]).values(path=cat["path"]))
    code, report = check(run_cli, "--repair")
    assert code == 1 and "shared_path" in kinds(report)


def test_pending_move_of_a_dead_process_is_finished(project, run_cli, filled):
    cat = row(project, filled[0])
    dst = "review/cat/" + cat["path"].rsplit("/", 1)[1]
    with project.store() as store:
        plant_intent(
            store,
            filled[0],
            src=cat["path"],
            dst=dst,
            changes={"status": "review", "path": dst},
            owner=f"{HOST}:{dead_pid()}",
            created_at=datetime.now(UTC).replace(tzinfo=None),
        )
    code, report = check(run_cli)
    assert code == 1 and kinds(report) == {"stale_pending_move": 1}
    code, report = check(run_cli, "--repair")
    assert code == 0 and report["repaired"] == {"stale_pending_move": 1}
    after = row(project, filled[0])
    assert (after["status"], after["path"]) == ("review", dst)
    assert (project.data_dir / dst).is_file()


def test_temp_file_of_a_dead_writer_is_removed_a_live_ones_is_not(project, run_cli, filled):
    folder = project.data_dir / "inbox"
    dead = folder / f".abc.png~{HOST}~{dead_pid()}~x1.part"
    live = folder / f".def.png~{HOST}~{os.getpid()}~x2.part"
    dead.write_bytes(b"half")
    live.write_bytes(b"half")
    code, report = check(run_cli)
    assert code == 1 and kinds(report) == {"orphan_temp": 1}
    code, report = check(run_cli, "--repair")
    assert code == 0 and report["repaired"] == {"orphan_temp": 1}
    assert not dead.exists() and live.exists()


def test_pruned_row_is_sound_and_its_leftover_file_is_deleted(project, run_cli, filled):
    rejected = row(project, filled[3])
    with project.store() as store, store.engine.begin() as conn:
        conn.execute(update(images).where(images.c.id == filled[3]).values(path=None))
    code, report = check(run_cli)  # a prune that crashed after the row, before the unlink
    assert code == 1 and kinds(report) == {"pruned_leftover": 1}
    code, report = check(run_cli, "--repair")
    assert code == 0 and report["repaired"] == {"pruned_leftover": 1}
    assert not (project.data_dir / rejected["path"]).exists()
    assert check(run_cli) == (0, {"sound": True, "problems": [], "repaired": {}})


def test_near_duplicate_index_that_disagrees_with_kept_rows_is_rebuilt(project, run_cli, filled):
    from dataset_factory.dedupe import index_path
    from dataset_factory.index import NearDuplicateIndex

    path = index_path(project.data_dir, "phash", True)
    stale = NearDuplicateIndex("phash")
    stale.add(filled[0], 123, [1, 2])
    stale.add(filled[3], 456)  # rejected: must not be in the index
    stale.save(path)
    code, report = check(run_cli)
    assert code == 1 and kinds(report) == {"index_mismatch": 1}
    detail = report["problems"][0]["items"][0]["detail"]
    assert "2 kept images missing" in detail and "1 ids not kept" in detail
    code, report = check(run_cli, "--repair")
    assert code == 0 and report["repaired"] == {"index_mismatch": 1}
    rebuilt = NearDuplicateIndex.load(path, "phash")
    assert sorted(rebuilt.main.ids.tolist()) == sorted(filled[:3])

    path.write_bytes(b"PK\x03\x04 damaged")
    code, report = check(run_cli)
    assert code == 1 and kinds(report) == {"index_unreadable": 1}
    code, report = check(run_cli, "--repair")
    assert code == 0 and report["repaired"] == {"index_unreadable": 1}


def test_current_must_name_a_loadable_model(project, run_cli, filled):
    models = project.data_dir / "models"
    (models / "v0001").mkdir()
    (models / "v0001" / "model.keras").write_bytes(b"not a keras file")
    (models / "v0001" / "classes.json").write_text('["bird", "cat", "dog"]')
    (models / "v0001" / "config.json").write_text('{"image_size": 16}')
    (models / "v0001" / "metrics.json").write_text("{}")
    (models / "CURRENT").write_text("v0001\n")
    code, report = check(run_cli, "--repair")
    assert code == 1 and kinds(report) == {"current_model": 1}
    assert "cannot load" in report["problems"][0]["items"][0]["detail"]
    (models / "CURRENT").write_text("v0009\n")
    code, report = check(run_cli)
    assert code == 1 and "does not exist" in json.dumps(report)


@pytest.mark.slow
def test_current_naming_a_good_model_is_sound(project, run_cli, filled):
    from factory_helpers import save_color_model

    with project.store() as store:
        version = save_color_model(store, classes=("bird", "cat", "dog"))
        (store.registry.path(version) / "metrics.json").write_text("{}")
    assert check(run_cli)[0] == 0


def test_busy_data_folder_exits_75(project, run_cli, filled):
    from scheduler.lock import JobLock

    with JobLock(project.data_dir).hold("factory"):
        result = run_cli("check")
    assert result.exit_code == 75 and "busy" in result.stderr


def test_check_on_postgresql(project, run_cli, pg_url):
    project.write(project.DEFAULT + storage_toml(pg_url))
    with project.store() as store:
        ids = [add(store, (10, 0, 0)), add(store, (0, 30, 0), "review", "dog")]
        gone = store.get_image(ids[0])["path"]
    (project.data_dir / gone).unlink()
    (project.data_dir / "inbox" / "stray.png").write_bytes(b"x")
    code, report = check(run_cli)
    assert code == 1 and kinds(report) == {
        "missing_file": 1,
        "unknown_file": 1,
        "count_mismatch": 2,
    }
    code, report = check(run_cli, "--repair")
    assert report["repaired"] == {"missing_file": 1}
    assert kinds(report) == {"unknown_file": 1, "count_mismatch": 1} and code == 1
    (project.data_dir / "inbox" / "stray.png").unlink()
    assert check(run_cli)[0] == 0
    with project.store() as store, store.engine.connect() as conn:
        assert (
            conn.execute(select(images.c.status).where(images.c.id == ids[0])).scalar()
            == "rejected"
        )


def test_kept_image_found_missing_also_leaves_the_index(project, run_cli, filled):
    """One repair leads to the next: the row rejected as file_missing, then the index
    rebuilt without it, and only then is the folder called sound."""
    from dataset_factory.dedupe import index_path
    from dataset_factory.index import NearDuplicateIndex

    path = index_path(project.data_dir, "phash", True)
    index = NearDuplicateIndex("phash")
    for image_id in filled[:3]:
        index.add(image_id, image_id)
    index.save(path)
    assert check(run_cli)[0] == 0
    (project.data_dir / row(project, filled[2])["path"]).unlink()
    code, report = check(run_cli, "--repair")
    assert code == 0 and report["repaired"] == {"missing_file": 1, "index_mismatch": 1}
    assert sorted(NearDuplicateIndex.load(path, "phash").main.ids.tolist()) == filled[:2]


def test_row_that_names_no_folder_is_reported(project, run_cli, filled):
    with project.store() as store, store.engine.begin() as conn:
        conn.execute(update(images).where(images.c.id == filled[0]).values(label=None))
    code, report = check(run_cli, "--repair")
    assert code == 1 and kinds(report) == {"bad_row": 1, "count_mismatch": 1}
    assert "needs a label" in report["problems"][0]["items"][0]["detail"]


def test_lost_file_that_turns_up_again_is_never_deleted(project, run_cli, filled):
    cat = row(project, filled[0])
    aside = project.root / "aside.png"
    os.replace(project.data_dir / cat["path"], aside)
    assert check(run_cli, "--repair")[0] == 0  # now rejected, file_missing
    back = project.data_dir / cat["path"]
    os.replace(aside, back)  # the disk comes back
    code, report = check(run_cli, "--repair")
    assert code == 1 and report["repaired"] == {}
    assert "lost file of image" in json.dumps(report) and back.is_file()
