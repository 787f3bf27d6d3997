"""`pingo review`: list, accept (optionally relabelled) and reject; a person's word stands."""

from __future__ import annotations

import json

import pytest
from factory_helpers import encode, pattern_image

from dataset_factory import process_inbox
from dataset_factory.errors import ReviewError
from dataset_factory.review import accept, reject


def in_review(
    store, seed, keyword_class="cat", guess="dog", reason="disagrees", confidence=0.55
) -> int:
    data = encode(pattern_image(seed, (48, 48)), "PNG")
    image_id = store.add_image(data, keyword_class=keyword_class, source="t", ext="png")
    store.move(
        image_id,
        "review",
        label=guess,
        label_source="model",
        confidence=confidence,
        model_version="v0001",
        reason=reason,
    )
    return image_id


def test_the_label_checks_most_suspicious_flags_are_listed_first(project, run_cli):
    with project.store() as store:
        old = in_review(store, 1)
        mild = in_review(store, 2, reason="label_issue", confidence=0.6)
        sure = in_review(store, 3, reason="label_issue", confidence=0.95)
        newer = in_review(store, 4, reason="unsure")
        waiting = in_review(store, 5, "cat", "cat", "keyword_only", 0.0)
    listed = [json.loads(line)["id"] for line in run_cli("review", "--json").stdout.splitlines()]
    assert listed == [sure, mild, old, newer, waiting]
    stats = json.loads(run_cli("stats", "--json").stdout)
    assert stats["review_reasons"]["dog"] == {"disagrees": 1, "label_issue": 2, "unsure": 1}
    text = run_cli("stats").stdout
    assert "flagged by the label check: dog 2" in text
    # the first, model-less batch: said what decides it
    assert "waiting with only their keyword: cat 1" in text and "pingo import" in text


def test_list_accept_relabel_reject_from_the_cli(project, run_cli):
    with project.store() as store:
        a, b, c = in_review(store, 1), in_review(store, 2), in_review(store, 3, guess="bird")
    listed = run_cli("review")
    assert listed.exit_code == 0
    assert all(str(i) in listed.output for i in (a, b, c))
    only_bird = [
        json.loads(line)
        for line in run_cli("review", "--class", "bird", "--json").output.splitlines()
    ]
    assert [r["id"] for r in only_bird] == [c]

    assert run_cli("review", "accept", str(a)).exit_code == 0
    assert run_cli("review", "accept", str(b), "--label", "cat").exit_code == 0
    assert run_cli("review", "reject", str(c)).exit_code == 0
    with project.store() as store:
        ra, rb, rc = (store.get_image(i) for i in (a, b, c))
    assert (ra["status"], ra["label"], ra["label_source"]) == ("accepted", "dog", "human")
    assert ra["path"].startswith("dataset/dog/")
    assert (rb["status"], rb["label"], rb["label_source"]) == ("accepted", "cat", "human")
    assert (rc["status"], rc["reason"], rc["label_source"]) == (
        "rejected",
        "human_rejected",
        "human",
    )
    assert "nothing to review" in run_cli("review").output


def test_bad_decisions_are_refused_with_a_message(project, run_cli):
    with project.store() as store:
        image_id = in_review(store, 4)
        with pytest.raises(ReviewError, match="not a class"):
            accept(store, project.config, image_id, "horse")
        with pytest.raises(ReviewError, match="no image"):
            reject(store, 999)
        accept(store, project.config, image_id)
        with pytest.raises(ReviewError, match="not in review"):
            reject(store, image_id)
    result = run_cli("review", "accept", "12345")
    assert result.exit_code == 1 and "no image with id 12345" in result.output


def test_a_human_decision_survives_later_factory_runs(project):
    with project.store() as store:
        image_id = in_review(store, 5, keyword_class="cat", guess="dog")
        accept(store, project.config, image_id, "bird")
        # a copy of it arrives later: the person's image stays, the copy is the duplicate
        copy = store.add_image(
            encode(pattern_image(5, (48, 48)), "JPEG", quality=80),
            keyword_class="dog",
            source="t",
            ext="jpg",
        )
        process_inbox(project.config, store)
        row = store.get_image(image_id)
        assert (row["status"], row["label"], row["label_source"]) == ("accepted", "bird", "human")
        assert store.get_image(copy)["duplicate_of"] == image_id
