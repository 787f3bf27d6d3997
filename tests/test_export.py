"""`pingo export`: each format loaded back with the library that consumes it, labels and counts
per split compared with the store and with the trainer's own split."""

from __future__ import annotations

import csv
import errno
import hashlib
import json
import os
from collections import Counter
from pathlib import Path

import pytest
from train_helpers import CLASSES, colour_png

from trainer.data import plan_from_store

PER_CLASS = 8
CONFIG = """
[classes.red]
target = 20

[classes.green]
target = 20

[classes.blue]
target = 20

[train]
val_fraction = 0.3
test_fraction = 0.3
"""


@pytest.fixture
def filled(project):
    """24 accepted images with licence fields (8 per class) and one review image."""
    project.write(CONFIG)
    with project.store() as store:
        for label in CLASSES:
            for i in range(PER_CLASS):
                image_id = store.add_image(
                    colour_png(label, i),
                    keyword_class=label,
                    source="test",
                    ext="png",
                    source_url=f"http://127.0.0.1/{label}/{i}.png",
                    page_url=f"http://127.0.0.1/{label}/",
                    license="cc-by-4.0",
                    creator=f"maker {i}",
                    attribution=f"{label} {i} by maker {i}",
                )
                store.move(image_id, "accepted", label=label, label_source="human")
        review_id = store.add_image(
            colour_png("red", 99), keyword_class="red", source="test", ext="png"
        )
        store.move(review_id, "review", label="red", reason="low_confidence")
    return project


def expected(project) -> dict[str, Counter]:
    """split -> label -> images, as the trainer splits the accepted images."""
    config = project.config
    with project.store() as store:
        plan = plan_from_store(
            store, CLASSES, config.train.val_fraction, config.train.test_fraction
        )
    want = {s: Counter(c) for s, c in plan.counts().items()}
    assert all(sum(c.values()) for c in want.values()), "every split must hold images"
    return want


def store_state(project):
    with project.store() as store:
        rows = list(store.iter_images())
        files = {r["path"]: store.abspath(r["path"]).read_bytes() for r in rows if r["path"]}
    return rows, files


def by_split(records, key="split") -> dict[str, Counter]:
    out: dict[str, Counter] = {"train": Counter(), "val": Counter(), "test": Counter()}
    for r in records:
        out[r[key]][r["label"]] += 1
    return out


def test_imagefolder_loads_in_keras_with_the_trainers_split_hard_linked(filled, run_cli):
    import tensorflow as tf

    want = expected(filled)
    before = store_state(filled)
    out = filled.root / "out"
    result = run_cli("export", str(out), "--format", "imagefolder")
    assert result.exit_code == 0, result.output
    assert "exported 24 images" in result.output and "24 hard-linked, 0 copied" in result.output
    assert "%|" not in result.output  # no progress bar when not a terminal

    for split in ("train", "val", "test"):
        ds = tf.keras.utils.image_dataset_from_directory(
            out / split, image_size=(24, 24), batch_size=64, shuffle=False
        )
        assert ds.class_names == sorted(CLASSES)
        labels = [int(i) for _, y in ds for i in y.numpy()]
        assert Counter(ds.class_names[i] for i in labels) == want[split], split
    # stored file names, hard links to the store's files, and the store untouched
    with filled.store() as store:
        for row in store.iter_images(status="accepted"):
            src = store.abspath(row["path"])
            dest = list(out.glob(f"*/{row['label']}/{src.name}"))
            assert len(dest) == 1 and os.path.samefile(dest[0], src)
    assert store_state(filled) == before


def test_copies_when_hard_links_fail(filled, run_cli, monkeypatch):
    def cross_device(src, dst):  # another filesystem: the one fault a tmp dir cannot provoke
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", cross_device)
    out = filled.root / "out"
    result = run_cli("export", str(out), "--format", "csv")
    assert result.exit_code == 0, result.output
    assert "0 hard-linked, 24 copied" in result.output
    with filled.store() as store:
        for row in store.iter_images(status="accepted"):
            src = store.abspath(row["path"])
            dest = out / "images" / row["label"] / src.name
            assert dest.read_bytes() == src.read_bytes() and not os.path.samefile(dest, src)
            assert src.is_file()  # copied, never moved


def test_csv_and_jsonl_rows_carry_label_split_and_provenance(filled, run_cli):
    want = expected(filled)
    with filled.store() as store:
        rows = {r["sha256"]: r for r in store.iter_images(status="accepted")}
    for fmt in ("csv", "jsonl"):
        out = filled.root / fmt
        assert run_cli("export", str(out), "--format", fmt, "--split").exit_code == 0
        if fmt == "csv":
            with open(out / "images.csv", newline="", encoding="utf-8") as fh:
                records = list(csv.DictReader(fh))
        else:
            lines = (out / "images.jsonl").read_text(encoding="utf-8").splitlines()
            records = [json.loads(line) for line in lines]
        assert by_split(records) == want, fmt
        for rec in records:
            row = rows[rec["sha256"]]
            assert rec["label"] == row["label"]
            assert (rec["license"], rec["creator"], rec["attribution"], rec["source_url"]) == (
                row["license"],
                row["creator"],
                row["attribution"],
                row["source_url"],
            )
            data = (out / rec["file_name"]).read_bytes()
            assert hashlib.sha256(data).hexdigest() == rec["sha256"]
    # without --split: no split column
    out = filled.root / "nosplit"
    assert run_cli("export", str(out), "--format", "csv").exit_code == 0
    with open(out / "images.csv", newline="", encoding="utf-8") as fh:
        assert "split" not in next(csv.reader(fh))


def test_hf_loads_with_datasets(filled, run_cli, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    import datasets

    want = expected(filled)
    out = filled.root / "hf"
    assert run_cli("export", str(out), "--format", "hf", "--split").exit_code == 0
    loaded = datasets.load_dataset(
        "imagefolder", data_dir=str(out), cache_dir=str(tmp_path / "hf_cache")
    )
    names = {"train": "train", "val": "validation", "test": "test"}
    assert set(loaded) == set(names.values())
    for split, hf_name in names.items():
        ds = loaded[hf_name]
        assert Counter(ds["label"]) == want[split], split
        assert set(ds["license"]) == {"cc-by-4.0"}
        assert all(c.startswith("maker ") for c in ds["creator"])
        assert ds[0]["image"].size == (24, 24)

    # without --split: one metadata.jsonl at the root, one split
    flat = filled.root / "hf_flat"
    assert run_cli("export", str(flat), "--format", "hf").exit_code == 0
    one = datasets.load_dataset(
        "imagefolder", data_dir=str(flat), cache_dir=str(tmp_path / "hf_cache2")
    )
    assert list(one) == ["train"]
    assert Counter(one["train"]["label"]) == sum(want.values(), Counter())


def test_tfrecord_reads_back_with_tf_data(filled, run_cli):
    import tensorflow as tf

    want = expected(filled)
    out = filled.root / "tfr"
    assert run_cli("export", str(out), "--format", "tfrecord").exit_code == 0
    meta = json.loads((out / "classes.json").read_text(encoding="utf-8"))
    assert meta["classes"] == sorted(CLASSES)
    spec = {
        "image/encoded": tf.io.FixedLenFeature([], tf.string),
        "image/format": tf.io.FixedLenFeature([], tf.string),
        "image/class/label": tf.io.FixedLenFeature([], tf.int64),
        "image/class/text": tf.io.FixedLenFeature([], tf.string),
    }
    with filled.store() as store:
        shas = {r["sha256"] for r in store.iter_images(status="accepted")}
    seen = set()
    for split in ("train", "val", "test"):
        shards = sorted(str(p) for p in out.glob(f"{split}-*.tfrecord"))
        assert len(shards) == meta["shards"][split] == 1
        got: Counter = Counter()
        for raw in tf.data.TFRecordDataset(shards):
            ex = tf.io.parse_single_example(raw, spec)
            text = ex["image/class/text"].numpy().decode()
            assert meta["classes"][int(ex["image/class/label"])] == text
            assert ex["image/format"].numpy() == b"png"
            image = tf.io.decode_png(ex["image/encoded"])
            assert tuple(image.shape) == (24, 24, 3)
            seen.add(hashlib.sha256(ex["image/encoded"].numpy()).hexdigest())
            got[text] += 1
        assert got == want[split], split
    assert seen == shas


def test_tfrecord_shards_by_size(filled, project):
    import tensorflow as tf

    from pingo.export import export

    with project.store() as store:
        result = export(
            store, project.root / "s", "tfrecord", val_fraction=0.3, test_fraction=0.3,
            shard_size=3,
        )  # fmt: skip
    n_train = sum(result.counts["train"].values())
    shards = sorted((project.root / "s").glob("train-*.tfrecord"))
    assert len(shards) == -(-n_train // 3)
    assert shards[0].name == f"train-00000-of-{len(shards):05d}.tfrecord"
    assert sum(1 for _ in tf.data.TFRecordDataset([str(p) for p in shards])) == n_train


def test_missing_file_is_skipped_and_reported(filled, run_cli):
    with filled.store() as store:
        gone = next(store.iter_images(status="accepted"))
        store.abspath(gone["path"]).unlink()
    out = filled.root / "out"
    result = run_cli("export", str(out), "--format", "jsonl")
    assert result.exit_code == 0, result.output
    assert "exported 23 images" in result.output
    assert "1 images skipped: their file is missing" in result.output
    lines = (out / "images.jsonl").read_text(encoding="utf-8").splitlines()
    assert gone["sha256"] not in {json.loads(line)["sha256"] for line in lines}
    with filled.store() as store:
        assert store.get_image(gone["id"])["status"] == "accepted"  # export changes no row


def test_status_selects_rows(filled, run_cli):
    out = filled.root / "review"
    assert run_cli("export", str(out), "--format", "jsonl", "--status", "review").exit_code == 0
    records = [json.loads(x) for x in (out / "images.jsonl").read_text().splitlines()]
    assert [(r["label"], r["status"]) for r in records] == [("red", "review")]
    out = filled.root / "all"
    assert run_cli("export", str(out), "--format", "jsonl", "--status", "all").exit_code == 0
    assert len((out / "images.jsonl").read_text().splitlines()) == 25


def test_refuses_non_empty_dir_unless_forced(filled, run_cli):
    out = filled.root / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    result = run_cli("export", str(out), "--format", "csv")
    assert result.exit_code == 1
    assert "is not empty" in result.output
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]

    result = run_cli("export", str(out), "--format", "csv", "--force")
    assert result.exit_code == 0, result.output
    assert (out / "keep.txt").read_text() == "mine"
    # a second forced export over the first replaces its files with the same content
    again = run_cli("export", str(out), "--format", "csv", "--force")
    assert again.exit_code == 0 and "exported 24 images" in again.output

    file_target = filled.root / "afile"
    file_target.write_text("x")
    assert run_cli("export", str(file_target), "--format", "csv").exit_code == 1
    assert run_cli("export", str(filled.root / "x"), "--format", "zip").exit_code == 2


def test_export_of_an_empty_store_writes_empty_layout(project, run_cli):
    out = project.root / "empty"
    result = run_cli("export", str(out), "--format", "imagefolder")
    assert result.exit_code == 0, result.output
    assert "exported 0 images" in result.output
    assert sorted(p.name for p in (out / "train").iterdir()) == ["bird", "cat", "dog"]


def test_paths_are_relative(filled, run_cli):
    out = filled.root / "rel"
    assert run_cli("export", str(out), "--format", "jsonl").exit_code == 0
    for line in (out / "images.jsonl").read_text().splitlines():
        assert not Path(json.loads(line)["file_name"]).is_absolute()
