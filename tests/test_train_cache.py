"""The decoded-image cache: in memory under train.cache_memory_mb, else in files under data_dir."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from train_helpers import CONFIG, fill

from core.config import load_config
from storage import Store
from trainer import cache, data


def test_over_the_budget_the_cache_is_a_file_under_data_dir_removed_afterwards(tmp_path):
    assert cache.estimate_bytes(1_000_000, 128) == 49_152_000_000  # 49 GB per million at 128 px
    cache_dir = tmp_path / "data" / "cache"
    with cache.dataset_cache(100, 128, 4, cache_dir, "k") as plan:  # 4.9 MB > 4 MB
        assert plan.kind == "file" and plan.folder.parent == cache_dir
        assert plan.target("train") == str(plan.folder / "train")
        (plan.folder / "train.index").write_bytes(b"x" * 10)
    assert plan.written == 10 and not plan.folder.exists()
    with cache.dataset_cache(100, 128, 5, cache_dir, "k") as plan:  # 4.9 MB <= 5 MB
        assert plan.kind == "memory" and plan.target("train") is True


def test_a_dead_runs_cache_files_are_removed_by_the_next_run(tmp_path):
    from storage import files

    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    left = tmp_path / f"train-abc~{files.HOST[:100]}~{dead}"
    left.mkdir()
    (left / "train.data-00000-of-00001").write_bytes(b"x")
    alive = tmp_path / f"train-def~{files.HOST[:100]}~{os.getppid()}"  # a live process's
    alive.mkdir()
    with cache.dataset_cache(100, 128, 0, tmp_path, "k"):
        pass
    assert not left.exists() and alive.exists()


def test_file_cache_gives_the_same_batches_as_the_memory_cache(tmp_path):
    from train_helpers import colour_png

    items = []
    for i in range(12):
        label = ("red", "blue")[i % 2]
        path = tmp_path / f"{i}.png"
        path.write_bytes(colour_png(label, i))
        items.append(data.Item(str(path), label, str(i), str(i), "train"))
    classes = ["blue", "red"]
    (tmp_path / "cache").mkdir()
    runs = {}
    for name, how in (("memory", True), ("file", str(tmp_path / "cache" / "train"))):
        ds = data.make_dataset(items, classes, 16, 4, training=False, cache=how)
        runs[name] = [np.concatenate([x.numpy().ravel() for x, _ in ds]) for _ in range(2)]
    np.testing.assert_array_equal(runs["memory"][0], runs["file"][0])
    np.testing.assert_array_equal(runs["file"][0], runs["file"][1])  # epoch 2: from the file
    assert (tmp_path / "cache" / "train.index").exists()


@pytest.mark.slow
def test_training_with_a_tiny_cache_budget_uses_a_file_cache_and_still_trains(tmp_path):
    root = tmp_path / "project"
    root.mkdir()
    text = CONFIG.replace("epochs = 6", "epochs = 2") + "cache_memory_mb = 0\n"
    (root / "pingo.toml").write_text(text, encoding="utf-8")
    config = load_config(root / "pingo.toml")
    assert config.train.cache_memory_mb == 0
    from trainer.run import train

    with Store.from_config(config) as store:
        fill(store, 12)
        result = train(config, store, force=True)
    assert result.trained and result.version == "v0001"
    entry = json.loads((config.data_dir / "models" / "v0001" / "config.json").read_text())
    used = entry["data_cache"]
    assert used["kind"] == "file" and used["written_bytes"] > 0, used
    assert used["estimate_bytes"] > 0
    assert not any((config.data_dir / "cache").iterdir())  # removed after training
    assert (config.data_dir / "models" / "v0001" / "model.keras").is_file()
