"""`pingo prune` and the nightly prune: old rejected files go (their rows stay, so nothing is
refetched and `pingo check` stays sound); old model versions go, never the promoted one, the
previous one, or the newest."""

from __future__ import annotations

import json
import os
import time
from datetime import timedelta

import pytest
from conftest import png_bytes
from sqlalchemy import update

from core.errors import ConfigError
from storage.errors import DuplicateImageError
from storage.schema import images
from storage.store import utcnow

DAY = 86400


def reject(store, color, days_ago: float) -> tuple[int, str]:
    """A rejected image whose rejection (row) and file are ``days_ago`` old."""
    url = f"http://example.test/{color}.png"
    image_id = store.add_image(
        png_bytes(color), keyword_class="cat", source="test", ext="png", source_url=url
    )
    store.record_url(url, "image", image_id)
    path = store.move(image_id, "rejected", reason="duplicate")
    with store.engine.begin() as conn:
        conn.execute(
            update(images)
            .where(images.c.id == image_id)
            .values(updated_at=utcnow() - timedelta(days=days_ago))
        )
    stamp = time.time() - days_ago * DAY
    os.utime(store.abspath(path), (stamp, stamp))
    return image_id, path


def entry(models, version, *, complete=True, served=False):
    folder = models / version
    folder.mkdir(parents=True)
    (folder / "model.keras").write_bytes(b"m" * 1000)
    if complete:
        (folder / "metrics.json").write_text(json.dumps({"gate": {"promoted": served}}))


def test_old_rejected_files_are_deleted_rows_stay_and_are_never_fetched_again(project, run_cli):
    with project.store() as store:
        old1, p1 = reject(store, (1, 0, 0), 40)
        old2, p2 = reject(store, (2, 0, 0), 31)
        new, p3 = reject(store, (3, 0, 0), 5)
        kept = store.add_image(png_bytes((9, 9, 9)), keyword_class="cat", source="test", ext="png")
        store.move(kept, "accepted", label="cat")
    data = project.data_dir
    size = (data / p1).stat().st_size + (data / p2).stat().st_size

    dry = json.loads(run_cli("prune", "--dry-run", "--json").stdout)
    assert (dry["dry_run"], dry["rejected_files"], dry["rejected_bytes"]) == (True, 2, size)
    assert all((data / p).is_file() for p in (p1, p2, p3))
    assert "would delete 2 rejected files" in run_cli("prune", "--dry-run").stdout

    result = run_cli("prune")
    assert result.exit_code == 0 and "deleted 2 rejected files" in result.stdout
    assert not (data / p1).exists() and not (data / p2).exists() and (data / p3).is_file()
    with project.store() as store:
        for image_id in (old1, old2):
            row = store.get_image(image_id)
            assert (row["status"], row["reason"], row["path"]) == ("rejected", "duplicate", None)
        assert store.get_image(new)["path"] == p3
        # the image is still accounted for: same bytes refused, URL remembered
        with pytest.raises(DuplicateImageError):
            store.add_image(png_bytes((1, 0, 0)), keyword_class="cat", source="test", ext="png")
        assert store.seen_urls(["http://example.test/(1, 0, 0).png"]) == {
            "http://example.test/(1, 0, 0).png"
        }
        assert store.stats(project.config.targets).rejected == {"duplicate": 3}
        assert [r["job"] for r in store.recent_runs(5)] == ["prune"]
    assert json.loads(run_cli("check", "--json").stdout)["sound"] is True


def test_a_file_touched_recently_is_kept_even_if_its_row_is_old(project, run_cli):
    with project.store() as store:
        _, path = reject(store, (1, 0, 0), 40)
    os.utime(project.data_dir / path)  # restored by hand today
    assert json.loads(run_cli("prune", "--json").stdout)["rejected_files"] == 0
    assert (project.data_dir / path).is_file()


def test_retention_comes_from_storage_keep_rejected_days(project, run_cli):
    project.write(project.DEFAULT + "\n[storage]\nkeep_rejected_days = 3\n")
    with project.store() as store:
        _, path = reject(store, (1, 0, 0), 5)
    assert json.loads(run_cli("prune", "--json").stdout)["rejected_files"] == 1
    assert not (project.data_dir / path).exists()


def test_old_models_go_but_never_the_promoted_previous_or_newest(project, run_cli):
    project.write(project.DEFAULT + "\n[train]\nkeep_models = 1\n")
    models = project.data_dir / "models"
    entry(models, "v0001", served=True)
    entry(models, "v0002", served=True)  # previous: what a rollback returns to
    entry(models, "v0003", served=False)  # trained, not good enough
    entry(models, "v0004", served=True)  # promoted
    entry(models, "v0005", complete=False)  # interrupted run
    entry(models, "v0006", served=False)  # newest
    (models / "CURRENT").write_text("v0004\n")
    dry = json.loads(run_cli("prune", "--dry-run", "--json").stdout)
    assert dry["models"] == ["v0001", "v0003", "v0005"]
    assert len(os.listdir(models)) == 7
    out = json.loads(run_cli("prune", "--json").stdout)
    assert out["models"] == ["v0001", "v0003", "v0005"] and out["model_bytes"] >= 3000
    assert out["kept_models"] == {
        "v0002": "previous (rollback target)",
        "v0004": "promoted",
        "v0006": "newest",
    }
    assert sorted(os.listdir(models)) == ["CURRENT", "v0002", "v0004", "v0006"]
    with project.store() as store:
        assert store.registry.current() == "v0004"


def test_keep_models_keeps_the_newest_n(project, run_cli):
    project.write(project.DEFAULT + "\n[train]\nkeep_models = 3\n")
    models = project.data_dir / "models"
    for i in range(1, 6):
        entry(models, f"v{i:04d}", served=True)
    (models / "CURRENT").write_text("v0005\n")
    out = json.loads(run_cli("prune", "--json").stdout)
    assert out["models"] == ["v0001", "v0002"]


def test_broken_current_means_no_model_is_pruned(project, run_cli):
    project.write(project.DEFAULT + "\n[train]\nkeep_models = 1\n")
    models = project.data_dir / "models"
    entry(models, "v0001", served=True)
    entry(models, "v0002", served=True)
    (models / "CURRENT").write_text("v0009\n")
    out = json.loads(run_cli("prune", "--json").stdout)
    assert out["models"] == [] and "CURRENT" in out["models_skipped"]
    assert (models / "v0001").is_dir()


def test_an_interrupted_prune_is_finished_by_the_next(project, run_cli):
    with project.store() as store:
        image_id, path = reject(store, (1, 0, 0), 40)
        with store.engine.begin() as conn:  # the row was changed, then the process died
            conn.execute(update(images).where(images.c.id == image_id).values(path=None))
    half = project.data_dir / "models" / ".pruned-v0001"
    half.mkdir(parents=True)
    (half / "model.keras").write_bytes(b"x")
    out = json.loads(run_cli("prune", "--json").stdout)
    assert out["leftovers"] == 1 and not (project.data_dir / path).exists()
    assert not half.exists()


def test_scheduled_train_slot_prunes_after_training(project):
    from scheduler.service import Service

    with project.store() as store:
        _, path = reject(store, (1, 0, 0), 40)
    ran = []
    service = Service(project.config, stages={"train": lambda c, s: ran.append("train")})
    service.train()
    assert ran == ["train"] and not (project.data_dir / path).exists()
    with project.store() as store:
        runs = store.recent_runs(5)
    assert [(r["job"], r["status"]) for r in runs] == [
        ("prune", "succeeded"),
        ("train", "succeeded"),
    ]
    assert runs[0]["counts"]["rejected_files"] == 1


@pytest.mark.parametrize(
    "text, refusal",
    [
        ("[train]\nkeep_models = 0\n", "train.keep_models: got 0; allowed is a number >= 1"),
        (
            "[storage]\nkeep_rejected_days = -1\n",
            "storage.keep_rejected_days: got -1.0; allowed is a number >= 0",
        ),
    ],
)
def test_retention_keys_refuse_impossible_values(project, text, refusal):
    project.write(project.DEFAULT + "\n" + text)
    with pytest.raises(ConfigError) as refused:
        _ = project.config
    assert str(refused.value) == refusal
    project.write(
        project.DEFAULT + "\n[train]\nkeep_models = 2\n[storage]\nkeep_rejected_days = 0.5\n"
    )
    assert (project.config.train.keep_models, project.config.storage.keep_rejected_days) == (2, 0.5)


def test_stats_shows_disk_use_per_folder(project, run_cli):
    with project.store() as store:
        _, path = reject(store, (1, 0, 0), 1)
    entry(project.data_dir / "models", "v0001")
    disk = json.loads(run_cli("stats", "--json").stdout)["disk"]
    assert disk["rejected"] == {"files": 1, "bytes": (project.data_dir / path).stat().st_size}
    assert disk["models"]["files"] == 2 and disk["models"]["bytes"] >= 1000
    assert disk["dataset"] == {"files": 0, "bytes": 0} and disk["db"]["bytes"] > 0
    text = run_cli("stats").stdout
    assert "disk: " in text and "rejected " in text and "models " in text
    freed = json.loads(run_cli("prune", "--json").stdout)
    assert freed["rejected_files"] == 0  # one day old: kept
