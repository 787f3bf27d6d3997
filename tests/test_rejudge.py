"""Re-judging the keyword_only review batch during training's label check (trainer.rejudge).

With factory.keyword_only = "review" the first crawl waits in review/. Training's label check
gives each waiting image an out-of-fold prediction; calibrated on the hand-labelled images,
the evidence rule accepts what reaches factory.target_precision. Real store, real tiny models:
red and blue noisy images, a few blue ones crawled for "red".
"""

from __future__ import annotations

import json

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

[factory]
keyword_only = "review"
target_precision = 0.9

[train]
image_size = 16
epochs = 10
batch_size = 8
arch = "seed_cnn"
patience = 3
clean_folds = 4
"""


def waiting(store, png: bytes, keyword: str) -> int:
    """A crawled image held in review with only its keyword to vouch for it."""
    image_id = store.add_image(png, keyword_class=keyword, source="bing", ext="png")
    store.move(
        image_id,
        "review",
        label=keyword,
        label_source="keyword",
        reason="keyword_only",
        decision_p=0.7,
    )
    return image_id


def seeded(store, per_class: int) -> set[int]:
    ids = set()
    for label in ("red", "blue"):
        for i in range(2000, 2000 + per_class):
            image_id = store.add_image(colour_png(label, i), keyword_class=label, source="import")
            store.move(image_id, "accepted", label=label, label_source="human")
            ids.add(image_id)
    return ids


def project(tmp_path, seeds: int):
    from trainer.run import train

    (tmp_path / "pingo.toml").write_text(CONFIG, encoding="utf-8")
    config = load_config(tmp_path / "pingo.toml")
    ids: dict[str, set[int]] = {"right": set(), "wrong": set()}
    with Store.from_config(config) as store:
        human = seeded(store, seeds)
        for i in range(30):
            ids["right"].add(waiting(store, colour_png("red", i), "red"))
            ids["right"].add(waiting(store, colour_png("blue", i), "blue"))
        for i in range(30, 36):
            ids["wrong"].add(waiting(store, colour_png("blue", i), "red"))
        result = train(config, store, force=True)
        rows = {r["id"]: r for r in store.iter_images()}
    return result, ids, human, rows


def test_training_accepts_the_waiting_images_the_evidence_vouches_for(tmp_path):
    result, ids, human, rows = project(tmp_path, seeds=16)
    report = json.loads((result.path / "cleaning.json").read_text())
    summary = report["keyword_only"]
    assert "skipped" not in summary and summary["calibration_images"] >= 20
    accepted = {i for i, r in rows.items() if r["status"] == "accepted"} - human
    print(summary, f"right accepted {len(accepted & ids['right'])} of {len(ids['right'])}")
    # the waiting batch drains: most right images are accepted, by the label check's model
    assert len(accepted & ids["right"]) >= 0.5 * len(ids["right"])
    assert summary["accepted"] == len(accepted)
    for i in accepted:
        row = rows[i]
        assert row["label"] == row["keyword_class"] and row["label_source"] == "model"
        assert row["model_version"] == result.version and row["reason"] is None
        assert row["decision_p"] >= 0.9 and row["evidence"]["rule"] == "label check"
        assert row["path"].startswith(f"dataset/{row['label']}/")
    # a blue image crawled for "red" is never accepted as red
    assert not accepted & ids["wrong"]
    assert all(rows[i]["status"] != "accepted" for i in ids["wrong"])
    # the model then learned from the accepted ones as accepted images
    manifest = json.loads((result.path / "manifest.json").read_text())
    listed = {name.split("/")[1] for split in manifest["splits"].values() for name in split}
    assert {rows[i]["sha256"] for i in accepted} <= listed


def test_without_enough_hand_labelled_images_nothing_is_rejudged(tmp_path):
    result, ids, human, rows = project(tmp_path, seeds=9)
    summary = json.loads((result.path / "cleaning.json").read_text())["keyword_only"]
    assert "hand-labelled" in summary["skipped"] and "pingo import" in summary["skipped"]
    assert summary["accepted"] == 0
    # held in review (a few maybe flagged as label issues), none accepted or rejected
    assert all(rows[i]["status"] == "review" for i in ids["right"] | ids["wrong"])
