"""Scheduler: recorded runs, one job at a time across processes, kill -9 recovery, SIGTERM.

The stage functions here are stand-ins that record what ran (the real stages have their own
tests); the lock, the run records, APScheduler and the signals are all real.
"""

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
from child_process import start_script
from conftest import wait_for

from scheduler.errors import BusyError
from scheduler.jobs import run_job
from scheduler.lock import JobLock

HOLDER = """
    import time
    from core.config import load_config
    from scheduler.jobs import run_job
    config = load_config({config!r})
    def slow(config, store):
        print("started", flush=True)
        time.sleep({seconds})
        return {{"slept": {seconds}}}
    run_job(config, {job!r}, slow)
    print("done", flush=True)
"""


def start_holder(project, job="crawl", seconds=60) -> subprocess.Popen:
    """A real process running a job that holds the lock; returns once the job has started."""
    script = HOLDER.format(config=str(project.path), job=job, seconds=seconds)
    proc = start_script(project.root, script, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "started"
    return proc


def test_run_job_records_success_and_failure(project):
    config = project.config
    assert run_job(config, "factory", lambda c, s: {"accepted": 3}) == {"accepted": 3}

    def broken(c, s):
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError):
        run_job(config, "train", broken)
    with project.store() as store:
        failed, ok = store.recent_runs(2)
    assert (ok["job"], ok["status"], ok["counts"]) == ("factory", "succeeded", {"accepted": 3})
    assert (failed["job"], failed["status"]) == ("train", "failed")
    assert "disk on fire" in failed["error"] and failed["finished"]


def test_second_job_does_not_overlap_and_says_who_is_busy(project, run_cli):
    holder = start_holder(project, job="crawl", seconds=60)
    try:
        with pytest.raises(BusyError, match=r"busy: crawl \(pid \d+"):
            run_job(project.config, "train", lambda c, s: None)
        result = run_cli("status")
        assert "crawl" in result.stdout and "running" in result.stdout
        manual = run_cli("train", "--force")  # `make train` during a scheduled crawl
        assert manual.exit_code == 75
        assert "busy: crawl (pid" in manual.stderr and "train not started" in manual.stderr
    finally:
        holder.kill()
        holder.wait()
    # the kernel dropped the lock with the process: the next job runs
    assert run_job(project.config, "train", lambda c, s: "ok") == "ok"


def test_a_waiting_job_runs_after_the_holder_finishes(project):
    holder = start_holder(project, job="crawl", seconds=2)
    order = []
    run_job(project.config, "train", lambda c, s: order.append(time.time()), wait=60)
    assert holder.wait(timeout=60) == 0
    with project.store() as store:
        runs = {r["job"]: r for r in store.recent_runs(5)}
    assert runs["crawl"]["status"] == "succeeded"
    assert runs["train"]["started"] >= runs["crawl"]["finished"]  # waited, never overlapped


def test_kill_9_during_a_job_marks_it_failed_then_the_next_run_succeeds(project, run_cli):
    holder = start_holder(project, job="factory", seconds=60)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    status = json.loads(run_cli("status", "--json").stdout)
    (stale,) = status["runs"]
    assert stale["job"] == "factory" and stale["status"] == "failed"
    assert "died" in stale["error"]
    assert set(status["next"]) == {"crawl", "train"}
    run_job(project.config, "factory", lambda c, s: {"accepted": 0})
    with project.store() as store:
        assert store.recent_runs(1)[0]["status"] == "succeeded"


SERVICE = """
    import time
    from apscheduler.triggers.interval import IntervalTrigger
    from core.config import load_config
    from scheduler.service import Service
    config = load_config({config!r})
    log = open({log!r}, "a")
    def stage(name, seconds=0.0):
        def run(config, store):
            log.write(f"{{name}} start\\n"); log.flush()
            time.sleep(seconds)
            log.write(f"{{name}} end\\n"); log.flush()
            return {{"stage": name}}
        return run
    service = Service(config, stages={{"crawl": stage("crawl", {crawl_seconds}),
                                       "factory": stage("factory"), "train": stage("train")}},
                      triggers={{"crawl": IntervalTrigger(seconds=2),
                                 "train": IntervalTrigger(hours=1)}})
    print("ready", flush=True)
    service.start(run_now=True)
    log.write("exited cleanly\\n"); log.flush()
"""


def start_service(project, tmp_path, crawl_seconds=0.0) -> tuple[subprocess.Popen, Path]:
    log = tmp_path / "stages.log"
    script = SERVICE.format(config=str(project.path), log=str(log), crawl_seconds=crawl_seconds)
    proc = start_script(tmp_path, script, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    return proc, log


def test_service_runs_crawl_factory_train_in_order_and_repeats(project, tmp_path):
    proc, log = start_service(project, tmp_path)
    try:
        # the run-now chain plus two ticks, each ending with its factory
        wait_for(
            lambda: log.exists() and log.read_text().count("factory end") >= 3,
            "three factory runs have ended",
            60,
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    lines = log.read_text().splitlines()
    assert lines[:6] == [
        "crawl start",
        "crawl end",
        "factory start",
        "factory end",
        "train start",
        "train end",
    ]
    # every later tick is crawl then factory, never interleaved
    ticks = [line for line in lines[6:] if line.endswith("start")]
    assert ticks[:4] == ["crawl start", "factory start", "crawl start", "factory start"]
    with project.store() as store:
        statuses = {r["status"] for r in store.recent_runs(50)}
    assert statuses == {"succeeded"}


def test_sigterm_lets_the_current_job_finish_and_exits_0(project, tmp_path):
    proc, log = start_service(project, tmp_path, crawl_seconds=3)
    wait_for(lambda: log.exists() and "crawl start" in log.read_text(), "a crawl starts", 60)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0
    text = log.read_text()
    assert "crawl end" in text and text.rstrip().endswith("exited cleanly")
    assert "factory start" not in text  # stopped taking jobs
    with project.store() as store:
        (run,) = store.recent_runs(5)
    assert (run["job"], run["status"]) == ("crawl", "succeeded")


def test_shared_holders_run_together_and_exclude_exclusive_jobs(tmp_path):
    lock = JobLock(tmp_path)
    with lock.hold("crawl", shared=True), JobLock(tmp_path).hold("crawl", shared=True):
        with pytest.raises(BusyError):
            with JobLock(tmp_path).hold("train"):
                pass
    with lock.hold("train"):
        with pytest.raises(BusyError), JobLock(tmp_path).hold("crawl", shared=True):
            pass
        assert "train" in lock.holder()
