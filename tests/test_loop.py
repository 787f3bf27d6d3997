"""The whole loop under the real scheduler: crawl (headless Chromium, demo site) -> factory ->
train (a real tiny Keras model), in order, each a recorded run."""

import threading
import time

import pytest
from apscheduler.triggers.interval import IntervalTrigger

from scheduler.service import Service

CONFIG = """
[classes.circle]
target = 4
[classes.square]
target = 4
[classes.triangle]
target = 4

[crawl]
sources = ["demo"]
demo_url = "{url}"
max_drivers = 1

[factory]
workers = 1
keyword_only = "accept"

[train]
image_size = 32
epochs = 2
batch_size = 4
"""


@pytest.fixture
def demo_site():
    from crawler.demo_site import serve_in_thread

    url, stop = serve_in_thread()
    yield url
    stop()


@pytest.mark.browser
@pytest.mark.slow
def test_scheduler_runs_the_real_loop_in_order(project, demo_site):
    project.write(CONFIG.format(url=demo_site))
    service = Service(
        project.config,
        triggers={"crawl": IntervalTrigger(hours=1), "train": IntervalTrigger(hours=1)},
    )
    thread = threading.Thread(target=service.start, kwargs={"run_now": True}, daemon=True)
    thread.start()
    deadline = time.time() + 300
    runs = []
    while time.time() < deadline:
        with project.store() as store:
            runs = list(reversed(store.recent_runs(10)))
        if any(r["job"] == "train" and r["status"] != "running" for r in runs):
            break
        time.sleep(1)
    service.stop()
    thread.join(60)
    with project.store() as store:  # after stop: the nightly prune that follows train is done
        runs = list(reversed(store.recent_runs(10)))
    jobs = [(r["job"], r["status"]) for r in runs]
    assert jobs[:3] == [("crawl", "succeeded"), ("factory", "succeeded"), ("train", "succeeded")], (
        runs
    )
    assert jobs[3:] in ([], [("prune", "succeeded")]), runs  # unless stop came first
    crawl, factory, train = runs[:3]
    assert crawl["finished"] <= factory["started"] and factory["finished"] <= train["started"]
    assert train["counts"]["trained"] is True and train["counts"]["promoted"] is True
    with project.store() as store:
        stats = store.stats(project.config.targets)
        assert all(c["accepted"] >= 4 for c in stats.classes.values()), stats
        assert stats.inbox == 0
        assert store.registry.current() == train["counts"]["version"]
        assert (store.registry.current_path() / "model.keras").exists()
        assert store.count_history()  # each run leaves a per-day snapshot
