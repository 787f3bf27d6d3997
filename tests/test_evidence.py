"""factory.decision = "evidence": keyword reliability and the calibrated model combined.

The rule is what users rely on to keep wrong images out of dataset/ without reviewing every
one: a weak model must not overrule the keyword, a strong one may; an image the model is far
less sure of than it is of real class images is suspected out of scope; people's review
decisions change how far a keyword is trusted.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from factory_helpers import assert_consistent, encode, pattern_image, save_color_model

from vision.evidence import (
    KeywordReliability,
    Tally,
    decide,
    out_of_scope_ratio,
    posterior,
    scope_profile,
    validate,
)

CLASSES = ["cat", "dog", "bird"]
EVEN = [1 / 3] * 3
SURE_MODEL = scope_profile(np.array([[0.998, 0.001, 0.001]] * 400))  # sure of in-scope images


def test_keyword_reliability_starts_at_the_prior_and_learns_from_judged_images():
    none_yet = KeywordReliability(0.7, {})
    assert none_yet.of("cat", "bing") == pytest.approx(0.7)
    judged = KeywordReliability(0.7, {("cat", "bing"): Tally(2, 8), ("cat", "demo"): Tally(30, 0)})
    # the class pools both sources: (7 + 32) / (10 + 40)
    assert judged.of_class("cat") == pytest.approx(39 / 50)
    # a source starts from its class and moves toward what it showed
    assert judged.of("cat", "bing") < judged.of_class("cat") < judged.of("cat", "demo")
    assert judged.of("cat", "new-source") == pytest.approx(judged.of_class("cat"))
    assert judged.of("dog", "bing") == pytest.approx(0.7)


def test_a_weak_model_leaves_the_keyword_prior_and_a_strong_one_overrules_it():
    near_even = np.array([[0.36, 0.32, 0.32]])
    post = posterior(near_even, CLASSES, "cat", 0.8, EVEN)[0]
    assert post[0] == pytest.approx(0.8, abs=0.05)
    sure_dog = np.array([[0.0005, 0.999, 0.0005]])
    post = posterior(sure_dog, CLASSES, "cat", 0.8, EVEN, SURE_MODEL)[0]
    assert post[1] > 0.95 and post[0] < 0.01
    decision = decide(post, CLASSES, "cat", 0.97)
    assert (decision.status, decision.label) in {("review", "dog")}


def test_without_a_measured_scope_a_closed_set_model_cannot_rule_out_out_of_scope():
    sure_cat = np.array([[0.9999, 0.00005, 0.00005]])
    blind = posterior(sure_cat, CLASSES, "cat", 0.7, EVEN)[0]
    measured = posterior(sure_cat, CLASSES, "cat", 0.7, EVEN, SURE_MODEL)[0]
    assert blind[0] < 0.97 <= measured[0]
    assert decide(measured, CLASSES, "cat", 0.97).status == "accepted"
    assert decide(blind, CLASSES, "cat", 0.97).status == "review"


def test_an_image_the_sure_model_is_unsure_of_is_suspected_out_of_scope():
    even = np.array([[0.34, 0.33, 0.33], [0.998, 0.001, 0.001]])
    ratio = out_of_scope_ratio(even, SURE_MODEL)
    assert ratio[0] > 100 and ratio[1] < 0.02
    post = posterior(even[:1], CLASSES, "cat", 0.7, EVEN, SURE_MODEL)[0]
    assert decide(post, CLASSES, "cat", 0.97).reason == "out_of_scope"
    weak = scope_profile(np.random.default_rng(0).dirichlet([1, 1, 1], 100))
    assert out_of_scope_ratio(even[:1], weak)[0] < 3  # a weak model is unsure of everything


def test_a_learned_none_class_is_out_of_scope():
    probs = np.array([[0.001, 0.001, 0.001, 0.997]])
    post = posterior(probs, [*CLASSES, "none"], "cat", 0.7, [0.25] * 4)[0]
    assert post[3] == 0 and post[-1] > 0.97


def test_validate_measures_precision_and_coverage_on_held_out_images():
    rng = np.random.default_rng(1)
    truth = np.repeat([0, 1, 2], 50)
    # a good model: right and sure on 45 of 50 per class, unsure on the rest
    probs = np.full((150, 3), 1 / 3)
    sure = rng.random(150) < 0.9
    probs[sure] = 0.0005
    probs[sure, truth[sure]] = 0.999
    out = validate(probs, truth, CLASSES, {c: 0.7 for c in CLASSES}, EVEN, 0.95, SURE_MODEL)
    for c in CLASSES:
        assert out[c]["precision"] == pytest.approx(1.0)
        assert 0.8 < out[c]["coverage"] < 1.0
    useless = validate(np.full((150, 3), 1 / 3), truth, CLASSES, {}, EVEN, 0.95)
    assert all(v["coverage"] == 0 and v["precision"] is None for v in useless.values())


def colored(store, seed, color, keyword_class, **kw) -> int:
    data = encode(pattern_image(seed, (48, 48), base=color, amplitude=25), "PNG")
    return store.add_image(data, keyword_class=keyword_class, source="test", ext="png", **kw)


@pytest.mark.slow
def test_the_factory_files_by_evidence_and_records_it_on_the_row(project):
    from dataset_factory import process_inbox

    with project.store() as store:
        version = save_color_model(store, calibration={"temperature": 1.0, "scope": SURE_MODEL})
        sure_cat = colored(store, 1, (255, 0, 0), "cat")
        says_dog = colored(store, 2, (0, 255, 0), "cat")
        grey = colored(store, 3, (128, 128, 128), "bird")  # none of the colours
        summary = process_inbox(project.config, store)
        assert summary.model_version == version
        row = store.get_image(sure_cat)
        assert (row["status"], row["label"], row["label_source"]) == ("accepted", "cat", "model")
        assert row["decision_p"] >= 0.97
        assert row["evidence"]["keyword_reliability"] == pytest.approx(0.7)
        assert row["evidence"]["model_guess"] == "cat"
        row = store.get_image(says_dog)
        assert (row["status"], row["label"], row["reason"]) == ("review", "dog", "other_class")
        assert row["path"].startswith("review/dog/")
        row = store.get_image(grey)
        assert (row["status"], row["reason"]) == ("rejected", "out_of_scope")
        assert row["decision_p"] >= 0.97
        assert_consistent(store)


@pytest.mark.slow
def test_people_rejecting_a_keywords_results_make_the_factory_trust_it_less(project):
    from dataset_factory import process_inbox
    from dataset_factory.review import reject

    with project.store() as store:
        # no model: the keyword is all there is, and its reliability is the recorded probability
        first = [colored(store, i, (255, 0, 0), "cat") for i in range(4)]
        process_inbox(project.config, store)
        assert store.get_image(first[0])["decision_p"] == pytest.approx(0.7)
        for image_id in first:  # e.g. the label check sent them to review
            store.move(image_id, "review", reason="label_issue")
            reject(store, image_id)
        later = colored(store, 10, (250, 5, 5), "cat")
        process_inbox(project.config, store)
        # (7 + 0) / (10 + 4)
        assert store.get_image(later)["decision_p"] == pytest.approx(0.5)


def grey_png(i: int) -> bytes:
    """A noisy grey image: none of red, green or blue (out of scope)."""
    import io

    from PIL import Image

    rng = np.random.default_rng([i, 99])
    level = 110 + int(rng.integers(-20, 21))
    pixels = np.clip(level + rng.integers(-25, 26, (40, 40, 3)), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buf, "PNG")
    return buf.getvalue()


@pytest.mark.slow
def test_examples_of_none_teach_the_model_what_is_out_of_scope(tmp_path):
    from train_helpers import CONFIG, Trained, fill

    from dataset_factory import process_inbox
    from trainer.run import train

    root = tmp_path / "project"
    (root / "seeds" / "none").mkdir(parents=True)
    (root / "pingo.toml").write_text(CONFIG, encoding="utf-8")
    for i in range(24):
        (root / "seeds" / "none" / f"{i}.png").write_bytes(grey_png(i))
    t = Trained(root)
    assert "none: 24 added" in t.cli("import", str(root / "seeds")).output
    with t.store() as store:
        fill(store, 24)
        process_inbox(t.config, store)  # the person-labelled examples go to dataset/none/
        assert store.stats({}).classes["none"]["accepted"] == 24
        result = train(t.config, store, overrides={"epochs": 6})
        assert result.promoted
        assert json.loads((t.entry() / "classes.json").read_text()) == [
            "blue",
            "green",
            "none",
            "red",
        ]
        crawled = [
            store.add_image(grey_png(100 + i), keyword_class="red", source="demo", ext="png")
            for i in range(4)
        ]
        process_inbox(t.config, store)
        rows = [store.get_image(i) for i in crawled]
    assert all(r["status"] != "accepted" for r in rows)
    assert all(r["evidence"]["model_guess"] == "none" for r in rows)
    assert all(r["evidence"]["out_of_scope_p"] > 0.5 for r in rows)


def test_the_label_check_counts_as_evidence_only_when_it_could_judge():
    from vision.evidence import cleaning_tallies

    counts = {"cat": {"demo": {"checked": 40, "flagged": 10}}}
    assert cleaning_tallies({"counts": counts}) == {("cat", "demo"): Tally(30, 10)}
    too_weak = {"counts": counts, "skipped": "the fold models are too weak to judge labels"}
    assert cleaning_tallies(too_weak) == {} and cleaning_tallies(None) == {}


@pytest.mark.slow
def test_without_a_model_keyword_only_images_wait_in_review_by_default(project):
    from dataset_factory import process_inbox

    project.write(project.CLASSES)  # the default: keyword_only = "review"
    with project.store() as store:
        held = colored(store, 1, (255, 0, 0), "cat")
        person = colored(store, 2, (0, 0, 255), "bird", label="bird", label_source="human")
        process_inbox(project.config, store)
        row = store.get_image(held)
        assert (row["status"], row["label"], row["reason"]) == ("review", "cat", "keyword_only")
        assert row["decision_p"] == pytest.approx(0.7)
        assert store.get_image(person)["status"] == "accepted"
    # a keyword trusted beyond the target is accepted on its own word
    project.write(project.CLASSES + "\n[factory]\nkeyword_prior = 0.99\n")
    with project.store() as store:
        trusted = colored(store, 3, (250, 0, 0), "cat")
        process_inbox(project.config, store)
        assert store.get_image(trusted)["status"] == "accepted"
