"""Promotion on small test splits: the Wilson interval reported with every test accuracy, and
McNemar's exact paired test deciding promotion (trainer.promotion_gate)."""

from __future__ import annotations

import json
import re

import pytest

from core.stats import accuracy_interval, mcnemar_exact, mcnemar_from_correct, wilson_interval
from trainer.promotion_gate import PAIRED, paired_decision


@pytest.mark.parametrize(
    ("k", "n", "lo", "hi"),
    [
        (0, 10, 0.000, 0.278),  # textbook Wilson 95% values
        (10, 10, 0.722, 1.000),
        (17, 20, 0.640, 0.948),
        (5, 10, 0.237, 0.763),
        (30, 35, 0.706, 0.937),  # a 35-image split: about +-0.12 around 0.857
    ],
)
def test_wilson_interval_matches_textbook_values(k, n, lo, hi):
    got = wilson_interval(k, n)
    assert got == pytest.approx((lo, hi), abs=5e-4)
    assert got[0] <= k / n <= got[1]


def test_wilson_interval_edges_and_json_form():
    assert wilson_interval(0, 0) == (0.0, 1.0)  # no images: nothing is known
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == 1.0
    assert accuracy_interval(0.85, 20) == [0.6396, 0.9476]
    with pytest.raises(ValueError):
        wilson_interval(11, 10)
    # More images, a narrower interval around the same accuracy.
    small, large = wilson_interval(30, 35), wilson_interval(300, 350)
    assert large[1] - large[0] < (small[1] - small[0]) / 2


def test_mcnemar_exact_p_values():
    none = mcnemar_exact(0, 0)
    assert none.p_two_sided == none.p_new_better == none.p_new_worse == 1.0
    ten = mcnemar_exact(10, 0)
    assert ten.p_new_better == pytest.approx(0.5**10)
    assert ten.p_two_sided == pytest.approx(2 * 0.5**10) and ten.p_new_worse == 1.0
    assert mcnemar_exact(0, 10).p_new_worse == pytest.approx(0.5**10)
    same = mcnemar_exact(5, 5)  # symmetric: no direction
    assert same.p_two_sided == 1.0
    assert same.p_new_better == same.p_new_worse == pytest.approx(638 / 1024)
    # b=3, c=2: P(X >= 3 | n=5) = (10 + 5 + 1) / 32
    assert mcnemar_exact(3, 2).p_new_better == pytest.approx(0.5)
    assert mcnemar_exact(8, 2).p_two_sided == pytest.approx(2 * 56 / 1024)


def test_mcnemar_counts_only_the_images_where_the_models_disagree():
    new = [True, True, True, False, False, True]
    cur = [True, False, False, True, False, True]
    test = mcnemar_from_correct(new, cur)
    assert (test.b, test.c) == (2, 1)
    with pytest.raises(ValueError, match="not the same images"):
        mcnemar_from_correct(new, cur[:-1])


def outcomes(both: int, new_only: int, cur_only: int, neither: int) -> tuple[list, list]:
    """Per-image right/wrong of a new and a current model on the same test images."""
    new = [True] * both + [True] * new_only + [False] * cur_only + [False] * neither
    cur = [True] * both + [False] * new_only + [True] * cur_only + [False] * neither
    return new, cur


def test_significantly_better_promotes_even_below_the_margin():
    new, cur = outcomes(20, 10, 0, 5)  # 35 images: 0.857 vs 0.571, p = 0.5**10
    decision = paired_decision(new, cur, margin=0.5, current_version="v0001")
    assert decision.promoted and decision.method == PAIRED
    assert (decision.mcnemar_b, decision.mcnemar_c) == (10, 0)
    assert decision.p_new_better == pytest.approx(0.5**10)
    assert decision.reason.startswith("promoted: test accuracy 0.8571 [0.71, 0.94] vs 0.5714")
    assert "on the same 35 test images" in decision.reason
    assert "new right where current wrong 10, the reverse 0" in decision.reason
    assert "significantly better at 0.05" in decision.reason


def test_significantly_worse_is_kept_out_even_with_a_negative_margin():
    new, cur = outcomes(20, 0, 8, 7)  # p = 0.5**8 that the new one is not worse
    decision = paired_decision(new, cur, margin=-0.5, current_version="v0001")
    assert not decision.promoted
    assert decision.p_new_worse == pytest.approx(0.5**8)
    assert decision.reason.startswith("not promoted")
    assert "significantly worse at 0.05" in decision.reason


@pytest.mark.parametrize(
    ("new_only", "cur_only", "margin", "promoted"),
    [
        (3, 2, 0.0, True),  # a little better, not significantly: the margin rule promotes
        (2, 3, 0.0, False),  # a little worse: kept, as before
        (3, 3, 0.0, True),  # a tie promotes at margin 0 (>=), as before
        (3, 2, 0.05, False),  # one image better does not meet a 0.05 margin on 35 images
    ],
)
def test_without_a_significant_difference_the_margin_decides(new_only, cur_only, margin, promoted):
    new, cur = outcomes(25, new_only, cur_only, 35 - 25 - new_only - cur_only)
    decision = paired_decision(new, cur, margin=margin, current_version="v0001")
    assert decision.promoted is promoted
    assert decision.promoted == (decision.new_accuracy >= decision.current_accuracy + margin)
    assert "no significant difference at 0.05, so the margin decides" in decision.reason
    assert f"the reverse {cur_only}, p = " in decision.reason


def test_a_model_of_more_images_is_not_kept_out_by_a_split_too_small_to_tell():
    # one image worse on 35, not significant: kept out by the margin rule alone...
    new, cur = outcomes(25, 2, 3, 5)
    assert not paired_decision(new, cur, 0.0, "v0001", learned=(300, 300)).promoted
    # ...but promoted when it learned from more images than the model in service
    decision = paired_decision(new, cur, 0.0, "v0001", learned=(600, 300))
    assert decision.promoted and "learned from more images (600 vs 300)" in decision.reason
    # a significantly worse model stays out however much it learned from
    new, cur = outcomes(20, 0, 8, 7)
    assert not paired_decision(new, cur, 0.0, "v0001", learned=(900, 300)).promoted


def test_models_listing_gives_an_interval_to_entries_written_before_pingo_recorded_one():
    from pingo.report import model_interval
    from storage.registry import test_interval

    assert test_interval({"accuracy": 0.85, "images": 20}) == [0.6396, 0.9476]
    assert test_interval({"accuracy": 0.9, "images": 20, "accuracy_ci": [0.1, 0.2]}) == [0.1, 0.2]
    assert test_interval({}) is None
    assert model_interval({"test_accuracy": 0.85, "test_images": 20}) == [0.6396, 0.9476]
    assert model_interval({"test": {"accuracy": 0.85, "images": 20}}) == [0.6396, 0.9476]
    assert model_interval({"test_accuracy_ci": [0.5, 0.6]}) == [0.5, 0.6]
    assert model_interval(None) is None


@pytest.mark.slow
def test_a_real_training_reports_intervals_and_the_paired_evidence(trained):
    from train_helpers import fill

    from pingo.report import build_report

    folder = trained.entry()
    test = json.loads((folder / "metrics.json").read_text())["test"]
    lo, hi = test["accuracy_ci"]
    assert lo <= test["accuracy"] <= hi
    assert [lo, hi] == accuracy_interval(test["accuracy"], test["images"])

    with trained.store() as store:
        fill(store, 5, start=20)
    run = trained.cli("train", "--epochs", "1")
    assert run.exit_code == 0, run.output
    assert re.search(
        r"v0002: test accuracy \d\.\d{4} \[\d\.\d\d, \d\.\d\d\] \(95% interval\)", run.output
    )
    assert "McNemar: new right where current wrong" in run.output

    metrics = json.loads((trained.entry("v0002") / "metrics.json").read_text())
    gate, test2 = metrics["gate"], metrics["test"]
    assert gate["method"] == PAIRED and gate["current_version"] == "v0001"
    n = gate["test_images"]
    # b - c is exactly the difference in right answers on the same images.
    assert gate["mcnemar_b"] - gate["mcnemar_c"] == round(
        (gate["new_accuracy"] - gate["current_accuracy"]) * n
    )
    assert gate["mcnemar_b"] + gate["mcnemar_c"] <= n
    assert gate["p_two_sided"] == mcnemar_exact(gate["mcnemar_b"], gate["mcnemar_c"]).p_two_sided
    assert gate["new_accuracy_ci"] == test2["accuracy_ci"]
    assert gate["current_accuracy_ci"] == accuracy_interval(gate["current_accuracy"], n)

    rows = {r["version"]: r for r in json.loads(trained.cli("models", "--json").stdout)}
    assert rows["v0001"]["test_accuracy_ci"] == [lo, hi]
    assert rows["v0002"]["test_accuracy_ci"] == test2["accuracy_ci"]
    listing = trained.cli("models").output
    assert re.search(rf"v0001\s+complete\s+{test['accuracy']:.4f} \[{lo:.2f}, {hi:.2f}\]", listing)

    with trained.store() as store:
        page = build_report(trained.config, store).read_text()
    assert f"{test['accuracy']:.4f} [{lo:.2f}, {hi:.2f}]" in page
