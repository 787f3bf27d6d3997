"""Review must not starve the loop: review images count toward a class's crawl need, up to
crawl.max_review_backlog, and a class held back by its backlog says so everywhere.

plan_crawl only reads the store, so no browser is needed here; the CLI's crawl returns before
it starts one when no class lacks images."""

from __future__ import annotations

import itertools
import json

import pytest
from conftest import png_bytes

from core.config import load_config
from core.errors import ConfigError
from crawler.run import plan_crawl

_colours = itertools.count(1)


def add(store, keyword_class: str, status: str, n: int, label: str | None = None) -> None:
    """n images crawled for ``keyword_class``, left in ``status`` (review: labelled ``label``,
    the model's guess, which need not be the keyword class)."""
    for _ in range(n):
        c = next(_colours)
        image_id = store.add_image(
            png_bytes((c % 256, c // 256, 7)), keyword_class=keyword_class, source="demo"
        )
        if status == "accepted":
            store.move(image_id, "accepted", label=keyword_class, label_source="keyword")
        elif status == "review":
            store.move(
                image_id,
                "review",
                label=label or keyword_class,
                label_source="model",
                confidence=0.4,
            )


def toml(extra_crawl: str = "", cat_extra: str = "") -> str:
    return f"""
[classes.cat]
target = 10
{cat_extra}

[classes.dog]
target = 5

[classes.bird]
target = 3

[crawl]
{extra_crawl}
"""


def needs(project) -> tuple[dict[str, int], dict[str, str]]:
    with project.store() as store:
        plan, skipped = plan_crawl(project.config, store)
    return {p.name: p.lacking for p in plan}, skipped


def test_review_images_count_toward_the_need_up_to_the_limit(project):
    project.write(toml("max_review_backlog = 2"))
    with project.store() as store:
        add(store, "cat", "accepted", 2)
        add(store, "cat", "inbox", 1)
        add(store, "cat", "review", 4, label="dog")  # counted for cat: it was crawled for cat
        add(store, "dog", "review", 1)
    lacking, skipped = needs(project)
    # cat: 10 - 2 accepted - 1 inbox - min(4 review, 2); dog: 5 - min(1, 2); bird: nothing yet
    assert lacking == {"cat": 5, "dog": 4, "bird": 3}
    assert skipped == {}


def test_default_limit_is_the_class_target_and_a_full_backlog_holds_the_class_back(project):
    project.write(toml())
    with project.store() as store:
        add(store, "cat", "accepted", 1)
        add(store, "cat", "review", 12)  # more than cat's target (10): 9 needed, 10 counted
        add(store, "dog", "review", 4)  # below dog's target (5): counts in full
        add(store, "bird", "accepted", 3)
    lacking, skipped = needs(project)
    assert lacking == {"dog": 1}
    assert skipped == {"cat": "12 waiting for review", "bird": "at target"}


def test_zero_counts_no_review_image_and_a_class_may_override_the_limit(project):
    project.write(toml("max_review_backlog = 0", cat_extra="max_review_backlog = 3"))
    with project.store() as store:
        add(store, "cat", "review", 5)
        add(store, "dog", "review", 5)
    lacking, skipped = needs(project)
    assert lacking == {"cat": 7, "dog": 5, "bird": 3}  # cat: 10 - min(5, 3); dog: review ignored
    assert skipped == {}


def test_the_inbox_reason_wins_when_the_inbox_alone_fills_the_need(project):
    project.write(toml())
    with project.store() as store:
        add(store, "dog", "inbox", 5)
        add(store, "dog", "review", 3)
    assert needs(project)[1]["dog"] == "5 images already wait in the inbox"


def test_a_negative_limit_is_refused_naming_the_key(project):
    project.write(toml("max_review_backlog = -1"))
    with pytest.raises(ConfigError, match="crawl.max_review_backlog"):
        load_config(project.path)


def held_back_project(project) -> None:
    project.write(toml("max_review_backlog = 6"))
    with project.store() as store:
        add(store, "cat", "accepted", 2)
        add(store, "cat", "review", 9)  # 2 + min(9, 6) = 8 < 10: cat is still crawled
        add(store, "dog", "accepted", 1)
        add(store, "dog", "review", 7, label="cat")  # 1 + min(7, 6) >= 5: held back
        add(store, "bird", "review", 2)  # 0 + 2 < 3: crawled


def test_crawl_status_and_report_say_which_classes_wait_for_review(project, run_cli):
    held_back_project(project)

    crawl = run_cli("crawl", "--class", "dog", "--json")
    assert crawl.exit_code == 0, crawl.output
    assert json.loads(crawl.stdout)["skipped"] == {"dog": "7 waiting for review"}
    text = run_cli("crawl", "--class", "dog")
    assert "dog: not crawled (7 waiting for review)" in text.stdout

    status = run_cli("status", "--json")
    assert status.exit_code == 0, status.output
    assert json.loads(status.stdout)["review_backlog"] == {
        "dog": {"review": 7, "limit": 6, "setting": "crawl.max_review_backlog"}
    }
    lines = run_cli("status").stdout.splitlines()
    assert "held back: dog 7 waiting for review (crawl.max_review_backlog 6)" in lines
    assert not any(line.startswith("held back: cat") for line in lines)

    report = run_cli("report")
    assert report.exit_code == 0, report.output
    page = (project.data_dir / "reports" / "index.html").read_text()
    assert "held back: dog 7 waiting for review (crawl.max_review_backlog 6)" in page


def test_nothing_is_held_back_without_a_backlog(project, run_cli):
    status = run_cli("status", "--json")
    assert json.loads(status.stdout)["review_backlog"] == {}
    assert "held back" not in run_cli("status").stdout
