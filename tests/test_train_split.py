"""The content-hash split: stable as images are added, near-duplicate groups never straddle."""

from __future__ import annotations

from collections import Counter

import pytest
from conftest import png_bytes

from trainer import data
from trainer.errors import NotEnoughDataError
from trainer.split import assign_split, group_key


def add_accepted(store, label: str, color, size=(40, 40), phash=None) -> int:
    image_id = store.add_image(
        png_bytes(color, size), keyword_class=label, source="test", ext="png"
    )
    store.move(image_id, "accepted", label=label, label_source="human")
    if phash is not None:
        store.update_image(image_id, phash=phash, hash_method="phash")
    return image_id


def test_split_of_existing_images_never_changes_when_images_are_added(project):
    with project.store() as store:
        for i in range(30):
            add_accepted(store, ("cat", "dog")[i % 2], (i, 10, 200))
        before = {
            i.sha256: i.split for i in data.plan_from_store(store, ["cat", "dog"], 0.15, 0.15).items
        }
        for i in range(30, 200):
            add_accepted(store, ("cat", "dog")[i % 2], (i, 10, 200))
        after = {
            i.sha256: i.split for i in data.plan_from_store(store, ["cat", "dog"], 0.15, 0.15).items
        }
    assert len(before) == 30 and len(after) == 200
    assert {sha: after[sha] for sha in before} == before
    counts = Counter(after.values())
    assert set(counts) == {"train", "val", "test"}
    # 200 draws at 15% each: far from 0 and from everything.
    assert 10 <= counts["test"] <= 55 and 10 <= counts["val"] <= 55


def test_images_with_the_same_perceptual_hash_share_a_split(project):
    with project.store() as store:
        # Twenty pairs: each pair has different bytes but one perceptual hash (a re-encode).
        for pair in range(20):
            for variant in range(2):
                add_accepted(store, "cat", (pair, variant, 7), phash=pair * 7919 - 50_000)
        plan = data.plan_from_store(store, ["cat"], 0.3, 0.3)
    by_group: dict[str, set[str]] = {}
    for item in plan.items:
        by_group.setdefault(item.group, set()).add(item.split)
    assert len(by_group) == 20
    assert all(len(splits) == 1 for splits in by_group.values())
    assert len({s for splits in by_group.values() for s in splits}) > 1  # not all in one


def test_split_depends_only_on_the_key_and_fractions():
    keys = [group_key(f"{i:064x}") for i in range(2000)]
    first = [assign_split(k, 0.15, 0.15) for k in keys]
    assert first == [assign_split(k, 0.15, 0.15) for k in keys]
    share = Counter(first)
    assert 0.12 < share["test"] / 2000 < 0.18 and 0.12 < share["val"] / 2000 < 0.18
    # Growing the test fraction only moves images into test, never out of it.
    wider = [assign_split(k, 0.15, 0.25) for k in keys]
    assert all(w == "test" for f, w in zip(first, wider) if f == "test")


def test_labels_outside_the_config_and_missing_files_are_left_out(project):
    with project.store() as store:
        for i in range(6):
            add_accepted(store, "cat", (i, 1, 1))
        stray = add_accepted(store, "dog", (9, 9, 9))
        store.abspath(store.get_image(stray)["path"]).unlink()
        add_accepted(store, "bird", (8, 8, 8))
        plan = data.plan_from_store(store, ["cat", "bird"], 0.15, 0.15)
    assert plan.classes == ["bird", "cat"]
    assert sorted(i.label for i in plan.items) == ["bird"] + ["cat"] * 6


def test_too_few_images_is_a_named_error(project):
    with project.store() as store:
        add_accepted(store, "cat", (1, 2, 3))
        add_accepted(store, "dog", (3, 2, 1))
        plan = data.plan_from_store(store, ["cat", "dog"], 0.15, 0.15)
    with pytest.raises(NotEnoughDataError):
        data.check_enough(plan)


def test_training_sees_the_same_pixels_the_factory_classifies(tmp_path):
    """Train/serve parity: the trainer's tf.data pipeline against the factory's classifier
    input (both built on vision.pixels), on the cases where decoders differ (EXIF rotation,
    transparency, palette, grey, a large JPEG in draft mode)."""
    import io

    import numpy as np
    from PIL import Image

    from dataset_factory.classify import model_input
    from trainer.data import Item, make_dataset
    from vision.pixels import load_pixels

    rng = np.random.default_rng(3)
    noise = rng.integers(0, 256, (90, 60, 3), dtype=np.uint8)
    cases = {}
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    buf = io.BytesIO()
    Image.fromarray(noise).save(buf, "JPEG", exif=exif)
    cases["rotated.jpg"] = buf.getvalue()
    rgba = np.dstack(
        [noise, np.where(np.arange(60) < 30, 0, 255).astype(np.uint8)[None, :].repeat(90, 0)]
    )
    buf = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buf, "PNG")
    cases["alpha.png"] = buf.getvalue()
    buf = io.BytesIO()
    Image.fromarray(noise).convert("P").save(buf, "GIF")
    cases["palette.gif"] = buf.getvalue()
    buf = io.BytesIO()
    Image.fromarray(noise[..., 0], "L").save(buf, "PNG")
    cases["grey.png"] = buf.getvalue()
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (900, 1200, 3), dtype=np.uint8)).save(buf, "JPEG")
    cases["large.jpg"] = buf.getvalue()
    for name, payload in cases.items():
        path = tmp_path / name
        path.write_bytes(payload)
        ours = load_pixels(str(path), 32)
        assert ours.dtype == np.uint8 and ours.shape == (32, 32, 3), name
        item = Item(str(path), "x", "", "", "test")
        ((trained, _),) = make_dataset([item], ["x"], 32, 1, training=False, cache=False)
        (sorted_,) = model_input([str(path)], 32, 1)
        np.testing.assert_array_equal(ours.astype(np.float32), trained.numpy()[0], err_msg=name)
        np.testing.assert_array_equal(ours.astype(np.float32), sorted_.numpy()[0], err_msg=name)


def test_review_images_nothing_contradicted_are_learned_from_under_their_keyword(project):
    from trainer.training_gate import should_train

    with project.store() as store:
        for i in range(4):
            add_accepted(store, "cat", (i, 1, 1))
        waiting = {}  # review images: reason -> ids
        for i in range(80):
            reason = ("keyword_only", "unsure", "disagrees", "label_issue")[i % 4]
            image_id = store.add_image(
                png_bytes((i, 50, 90), (40, 40)), keyword_class="cat", source="demo", ext="png"
            )
            label = "dog" if reason in ("disagrees", "label_issue") else "cat"
            store.move(image_id, "review", label=label, label_source="model", reason=reason)
            waiting.setdefault(reason, set()).add(image_id)
        # another class is likelier, or the label check flagged it: not learned from
        flagged = waiting.pop("label_issue") | waiting.pop("disagrees")
        learnable = set().union(*waiting.values())
        plan = data.plan_from_store(store, ["cat", "dog"], 0.15, 0.15, learn_from_review=True)
        without = data.plan_from_store(store, ["cat", "dog"], 0.15, 0.15)
        weak = [i for i in plan.items if i.status == "review"]
        # under the keyword's class whatever the model guessed; never what the check flagged
        assert {i.image_id for i in weak} <= learnable and not flagged & {i.image_id for i in weak}
        assert all(i.label == "cat" and i.label_source == "keyword" for i in weak)
        # the test split judges models: accepted labels only
        assert {i.split for i in weak} == {"train", "val"}
        assert 0.6 * len(learnable) < len(weak) < len(learnable)
        assert len(without.items) == 4 and plan.manifest_hash() != without.manifest_hash()
        # cat: 4 accepted + 40 learnable reach its target of 5; dog has none
        ok, reason = should_train(project.config, store)
        assert not ok and "cat" not in reason and "dog 0/5" in reason
