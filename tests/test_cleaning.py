"""The label check before training (trainer.cleaning), with a real store and real tiny models.

Two classes that a small CNN tells apart at a glance: mostly red and mostly blue noisy images.
A planted handful of blue images carry the keyword label "red" (the crawler found them
searching for red). The check must flag most of them and few of the clean ones, move them to
review/ (reason label_issue), keep them out of the model's manifest, and never touch a label a
person gave, however wrong it looks.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from train_helpers import colour_png

from core.config import load_config
from storage import Store

pytestmark = pytest.mark.slow

CONFIG = """
[classes.red]
target = 10

[classes.blue]
target = 10

[train]
image_size = 16
epochs = 10
batch_size = 8
arch = "seed_cnn"
patience = 3
clean_folds = 4
"""
SOURCES = ("bing", "ddg")


def red(i: int) -> bytes:
    return colour_png("red", i)


def blue(i: int) -> bytes:
    return colour_png("blue", i)


def add(store, png: bytes, keyword: str, label_source: str, n: int) -> int:
    image_id = store.add_image(png, keyword_class=keyword, source=SOURCES[n % 2], ext="png")
    store.move(image_id, "accepted", label=keyword, label_source=label_source)
    return image_id


def fill(store, per_class: int = 36, planted: int = 8) -> dict[str, set[int]]:
    """Keyword-labelled red and blue images, ``planted`` blue ones labelled red by keyword,
    and human-labelled ones: two right and two blue ones labelled red."""
    ids: dict[str, set[int]] = {"clean": set(), "planted": set(), "human": set()}
    for i in range(per_class):
        ids["clean"].add(add(store, red(i), "red", "keyword", i))
        ids["clean"].add(add(store, blue(i), "blue", "keyword", i))
    for i in range(per_class, per_class + planted):
        ids["planted"].add(add(store, blue(i), "red", "keyword", i))
    ids["human"].add(add(store, red(1000), "red", "human", 0))
    ids["human"].add(add(store, blue(1000), "blue", "human", 0))
    ids["human"].add(add(store, blue(1001), "red", "human", 0))  # a person insisted
    ids["human"].add(add(store, blue(1002), "red", "human", 1))
    return ids


@pytest.fixture
def cleaned(tmp_path):
    """A project with planted label errors, trained once (label check on)."""
    from trainer.run import train

    (tmp_path / "pingo.toml").write_text(CONFIG, encoding="utf-8")
    config = load_config(tmp_path / "pingo.toml")
    with Store.from_config(config) as store:
        ids = fill(store)
        started = time.monotonic()
        result = train(config, store, force=True)
        seconds = time.monotonic() - started
    return config, ids, result, seconds


def test_training_moves_planted_label_errors_to_review_and_leaves_them_out(cleaned):
    from trainer.split import assign_split

    config, ids, result, seconds = cleaned
    assert result.trained
    report = json.loads((result.path / "cleaning.json").read_text())
    flagged = {f["image_id"] for f in report["flagged_images"]}

    with Store.from_config(config) as store:
        rows = {r["id"]: r for r in store.iter_images()}
        # The test split is not checked: only planted images of train+val can be found.
        checkable = {
            i
            for i in ids["planted"]
            if assign_split(f"sha256:{rows[i]['sha256']}", 0.15, 0.15) != "test"
        }
        assert len(checkable) >= 5  # the planted set is big enough to mean something
        found = flagged & checkable
        false_alarms = flagged & ids["clean"]
        print(
            f"planted {len(checkable)} (train+val), flagged {len(found)}; clean flagged "
            f"{len(false_alarms)} of {len(ids['clean'])}; train() took {seconds:.1f} s; "
            f"check {report['seconds']:.1f} s"
        )
        assert len(found) >= 0.5 * len(checkable)
        assert len(false_alarms) <= 4
        assert not flagged & ids["human"]  # a person's label is never questioned
        for i in ids["human"]:
            assert rows[i]["status"] == "accepted"

        # Flagged images are in review/, with the guess a person sees in `pingo review`.
        for f in report["flagged_images"]:
            row = rows[f["image_id"]]
            assert row["status"] == "review" and row["reason"] == "label_issue"
            assert row["label"] == f["suggested"] and row["label_source"] == "model"
            assert row["path"].startswith(f"review/{f['suggested']}/")
            assert store.abspath(row["path"]).is_file()
            assert row["confidence"] == pytest.approx(f["confidence"])
            assert row["model_version"] == result.version
            assert f["outcome"] == row["path"]
        for i in found:
            assert rows[i]["label"] == "blue"  # the out-of-fold guess is the true class

        # Most suspicious first; the report's counts add up per class and source.
        scores = [f["score"] for f in report["flagged_images"]]
        assert scores == sorted(scores, reverse=True) and all(0 <= s <= 1 for s in scores)
        counts = report["counts"]
        assert set(counts) == {"red", "blue"} and set(counts["red"]) == set(SOURCES)
        assert sum(c["flagged"] for s in counts.values() for c in s.values()) == len(flagged)
        assert report["checked"] == sum(c["checked"] for s in counts.values() for c in s.values())
        assert report["folds"] == 4 and report["moved"] == len(flagged)
        assert result.metrics["cleaning"] == {"checked": report["checked"], "flagged": len(flagged)}

    # The model did not learn from them: its manifest lists none of the moved images.
    manifest = json.loads((result.path / "manifest.json").read_text())
    listed = {name.split("/")[1] for split in manifest["splits"].values() for name in split}
    assert not {rows[i]["sha256"] for i in flagged} & listed
    assert {rows[i]["sha256"] for i in ids["human"]} <= listed


def test_out_of_fold_probabilities_cover_train_and_val_only(tmp_path):
    from trainer import data
    from trainer.cleaning import find_label_issues
    from trainer.run import effective_train_config

    (tmp_path / "pingo.toml").write_text(CONFIG, encoding="utf-8")
    config = load_config(tmp_path / "pingo.toml")
    with Store.from_config(config) as store:
        fill(store, per_class=10, planted=0)
        plan = data.plan_from_store(store, ["red", "blue"], 0.15, 0.15)
        tc = effective_train_config(config.train, {"clean_folds": 2, "epochs": 2})
        cleaning = find_label_issues(plan, tc)
    pool = [i for i in plan.items if i.split != "test"]
    assert cleaning.skipped is None
    assert [i.image_id for i in cleaning.items] == [i.image_id for i in pool]
    assert cleaning.pred_probs is not None and cleaning.pred_probs.shape == (len(pool), 2)
    np.testing.assert_allclose(cleaning.pred_probs.sum(axis=1), 1.0, atol=1e-4)
    # Only keyword-labelled images are counted as checked (the four human ones are not).
    human = sum(1 for i in pool if i.label_source == "human")
    assert cleaning.checked == len(pool) - human and human > 0


def test_clean_labels_false_skips_the_check(tmp_path):
    from trainer.run import train

    (tmp_path / "pingo.toml").write_text(CONFIG + "clean_labels = false\n", encoding="utf-8")
    config = load_config(tmp_path / "pingo.toml")
    with Store.from_config(config) as store:
        ids = fill(store, per_class=12, planted=4)
        result = train(config, store, force=True, overrides={"epochs": 1})
        statuses = {r["status"] for r in store.iter_images()}
    assert result.trained and result.path is not None and "cleaning" not in result.metrics
    assert not (result.path / "cleaning.json").exists()
    assert statuses == {"accepted"} and len(ids["planted"]) == 4


def test_too_few_images_skips_the_check_with_a_reason(tmp_path):
    from trainer import data
    from trainer.cleaning import clean
    from trainer.run import effective_train_config

    (tmp_path / "pingo.toml").write_text(CONFIG, encoding="utf-8")
    config = load_config(tmp_path / "pingo.toml")
    tc = effective_train_config(config.train, {"clean_folds": 10})
    with Store.from_config(config) as store:
        fill(store, per_class=12, planted=2)  # 10 folds need 20 train+val images a class
        plan = data.plan_from_store(store, ["blue", "red"], 0.15, 0.15)
        after, cleaning = clean(store, config, tc, plan, tmp_path, "v0001")
        statuses = {r["status"] for r in store.iter_images()}
    report = json.loads((tmp_path / "cleaning.json").read_text())
    assert "fewer than 20" in report["skipped"] and report["flagged_images"] == []
    assert cleaning.summary() == {"checked": 0, "flagged": 0, "skipped": report["skipped"]}
    assert after is plan and statuses == {"accepted"}


def test_sigkill_during_the_check_loses_nothing(tmp_path):
    from conftest import kill_9_once

    from storage.registry import entry_state
    from trainer.run import train

    # cache_memory_mb = 0: the check decodes into a file, which shows it is under way.
    path = tmp_path / "pingo.toml"
    path.write_text(CONFIG + "cache_memory_mb = 0\n", encoding="utf-8")
    config = load_config(path)
    with Store.from_config(config) as store:
        fill(store, per_class=20, planted=4)
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen(
        [sys.executable, "-c", "from pingo.cli import main; main()", "--config", str(path)]
        + ["train", "--force"],
        cwd=root,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    cache = config.data_dir / "cache"

    kill_9_once(
        proc,
        lambda: any(cache.glob("train-clean-*/pixels.npy")),
        "the label check decodes the images",
    )

    entry = config.data_dir / "models" / "v0001"
    assert entry_state(entry) == "incomplete" and not (entry / "cleaning.json").exists()
    with Store.from_config(config) as store:
        rows = list(store.iter_images())
        assert {r["status"] for r in rows} == {"accepted"}  # nothing moved, nothing lost
        assert all(store.abspath(r["path"]).is_file() for r in rows)
        result = train(config, store, force=True, overrides={"epochs": 1, "clean_labels": False})
    assert result.trained and result.version == "v0002"
    assert not list(cache.glob("train-clean-*"))  # the killed run's cache file is gone


def test_fold_models_at_chance_flag_nothing(tmp_path):
    """Identical pixels under two labels: no model can tell them apart, so any flag would be
    a coin toss; the check says so and flags nothing."""
    from PIL import Image, PngImagePlugin

    from trainer import data
    from trainer.cleaning import find_label_issues
    from trainer.run import effective_train_config

    (tmp_path / "pingo.toml").write_text(CONFIG, encoding="utf-8")
    config = load_config(tmp_path / "pingo.toml")
    grey = Image.new("RGB", (16, 16), (120, 120, 120))
    with Store.from_config(config) as store:
        for i in range(24):
            meta = PngImagePlugin.PngInfo()
            meta.add_text("n", str(i))  # distinct files, the same pixels
            buf = io.BytesIO()
            grey.save(buf, "PNG", pnginfo=meta)
            add(store, buf.getvalue(), ("red", "blue")[i % 2], "keyword", i)
        plan = data.plan_from_store(store, ["blue", "red"], 0.15, 0.15)
        tc = effective_train_config(config.train, {"clean_folds": 2, "epochs": 1})
        cleaning = find_label_issues(plan, tc)
    assert cleaning.flagged == [] and cleaning.checked > 0
    assert cleaning.balanced_accuracy == pytest.approx(0.5)
    assert cleaning.skipped is not None and "too weak" in cleaning.skipped
