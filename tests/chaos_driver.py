"""Chaos driver: crawl -> factory -> train as real `pingo` processes, killed at random moments.

Shared by tests/test_chaos.py (CI size) and bench/chaos.py (long runs). A round runs the three
stages as children of this process (each in its own session, so a signal reaches the CLI, its
crawl process, its browsers and its hashing workers, like Ctrl-C in a terminal or a service
manager stopping a unit). One stage per round gets SIGKILL, SIGINT or SIGTERM after a random
delay; the round then reruns that stage and the stages after it without a kill (each must exit
0) and checks the project is consistent: `pingo check --json` exits 0, and ``beyond_check()``
finds nothing. ``final_accounting()`` proves at the end that
every image URL the demo site offered is accounted for exactly once.

Every random choice comes from one seeded ``random.Random``; a failure names the seed, round,
stage, signal and delay, so ``--seed`` replays the same plan.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
SUBSET = REPO / "tests" / "data" / "sign-digits"
STAGES = ("crawl", "factory", "train")
SIGNALS = {"SIGKILL": signal.SIGKILL, "SIGINT": signal.SIGINT, "SIGTERM": signal.SIGTERM}
STATUS_DIRS = ("inbox", "dataset", "review", "rejected")


# ---- the photos the demo site serves ------------------------------------------------------


def prepare_images(
    src: Path, dst: Path, classes: list[str] | None = None, per_class: int | None = None
) -> Path:
    """Copy ``src/<class>/`` photos into ``dst`` and add two duplicates per class: the same
    bytes under another name (one row, no second) and the same pixels re-encoded as PNG (its
    own row, rejected as a duplicate). Returns ``dst``."""
    from PIL import Image

    classes = classes or sorted(p.name for p in src.iterdir() if p.is_dir())
    for name in classes:
        out = dst / name
        out.mkdir(parents=True, exist_ok=True)
        photos = sorted(
            p for p in (src / name).iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png")
        )[:per_class]
        for p in photos:
            shutil.copyfile(p, out / p.name)
        shutil.copyfile(photos[0], out / f"copy-{photos[0].name}")
        with Image.open(photos[1]) as im:
            im.convert("RGB").save(out / f"reencoded-{photos[1].stem}.png", "PNG")
    return dst


# ---- the project ----------------------------------------------------------------------------


def project_toml(
    demo_url: str,
    classes: list[str],
    data_dir: Path,
    *,
    workers: int = 1,
    chunk_size: int = 8,
    target: int = 1000,
) -> str:
    """A tiny, fast project: every class far below target (the crawl always has work), a
    32-pixel, 1-epoch small_cnn, small factory chunks (a kill lands between chunks too)."""
    lines = [f'[project]\ndata_dir = "{data_dir}"\n']
    for name in classes:
        lines.append(f'[classes.{name}]\nkeywords = ["{name}"]\ntarget = {target}\n')
    lines.append(
        f'[crawl]\nsources = ["demo"]\ndemo_url = "{demo_url}"\ndownload_timeout = 5.0\n'
        "retries = 1\nmax_drivers = 1\nconcurrency = 4\n"
    )
    lines.append(
        f"[factory]\nworkers = {workers}\nchunk_size = {chunk_size}\nclaim_lease = 5.0\n"
        'keyword_only = "accept"\n'  # every round's images are filed, none waits in review
    )
    lines.append(
        '[train]\nimage_size = 32\nepochs = 1\nbatch_size = 8\narch = "small_cnn"\n'
        "augment = false\npatience = 1\n"
    )
    return "\n".join(lines)


# ---- running one stage ----------------------------------------------------------------------


@dataclass
class Kill:
    stage: str
    signal: str
    delay: float  # seconds after start; with ``on_move``, the most to wait
    on_move: bool = False  # signal the moment a file move is in flight (pending_moves)

    def describe(self) -> str:
        when = (
            f"at the first move in flight (within {self.delay}s)"
            if self.on_move
            else f"after {self.delay}s"
        )
        return f"{self.signal} to {self.stage} {when}"


@dataclass
class StageRun:
    stage: str
    rc: int | None
    seconds: float
    log: Path
    kill: Kill | None = None
    landed: bool = False  # the signal reached a still-running process
    stop_seconds: float | None = None  # signal -> exit
    at_move: bool = False  # an on_move kill found a move in flight (else it was timed)
    forced: bool = False  # it ignored SIGINT/SIGTERM for the grace period: SIGKILLed
    leaked: list[str] = field(default_factory=list)  # processes alive after the CLI ended

    def tail(self, lines: int = 25) -> str:
        try:
            text = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(text[-lines:])


def session_processes(sid: int) -> list[tuple[int, str]]:
    """Live processes (pid, name) in session ``sid`` (zombies excluded)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid pgrp session ...
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        if fields[0] != "Z" and int(fields[3]) == sid:
            found.append((int(entry.name), comm))
    return found


def image_rows(db: Path) -> int:
    """Rows in the images table, read without opening a Store (0 before it exists)."""
    import sqlite3

    try:
        with sqlite3.connect(db) as conn:
            return conn.execute("SELECT count(*) FROM images").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def crawl_then_signal(root: Path, photos: Path, signum: int, to: str = "cli", settle: float = 10.0):
    """Start `pingo crawl --limit 15` on a demo site serving ``photos`` slowly (0.3 s an
    image); once 3 images are stored send ``signum`` to the CLI alone (``to="cli"``) or to its
    whole process group (``"group"``). Returns (exit status, rows when the CLI exited, rows
    once nothing of its session is left or ``settle`` seconds passed, processes still alive
    then, the Driver)."""
    from conftest import wait_for

    from crawler.demo_site import make_server

    with make_server(photos, image_delay=0.3).start() as site:
        driver = Driver(root, site.url, ["one", "two", "zero"], seed=0)
        db = driver.data_dir / "pingo.db"
        child = subprocess.Popen(
            driver.cli("crawl", "--limit", "15"),
            cwd=driver.root,
            env=driver.env,
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_for(lambda: image_rows(db) >= 3 or child.poll() is not None, "3 images are stored")
            assert child.poll() is None, "the crawl ended before it could be stopped"
            (os.killpg if to == "group" else os.kill)(child.pid, signum)
            code = child.wait(60)
            at_exit = image_rows(db)
            deadline = time.monotonic() + settle
            while session_processes(child.pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            left = session_processes(child.pid)
            after = image_rows(db)
        finally:
            for pid, _ in session_processes(child.pid):
                os.kill(pid, signal.SIGKILL)
    return code, at_exit, after, left, driver


class Driver:
    """One chaos project: config, demo site URL, the stage runner and the checks."""

    def __init__(
        self,
        root: Path,
        demo_url: str,
        classes: list[str],
        *,
        seed: int,
        grace: float = 20.0,
        stage_timeout: float = 300.0,
        crawl_limit: int = 3,
        factory_workers: int = 1,
        log=print,
    ):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.data_dir = self.root / "data"
        self.classes = classes
        self.config = self.root / "pingo.toml"
        self.config.write_text(
            project_toml(demo_url, classes, self.data_dir, workers=factory_workers),
            encoding="utf-8",
        )
        self.seed = seed
        self.rng = random.Random(seed)
        self.grace = grace
        self.stage_timeout = stage_timeout
        self.crawl_limit = crawl_limit
        self.log = log
        self.runs = 0
        self.durations: dict[str, list[float]] = {s: [] for s in STAGES}
        self.env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(
                [str(REPO)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
            ),
            "TF_CPP_MIN_LOG_LEVEL": "2",
            "PYTHONUNBUFFERED": "1",
        }
        self._has_check: bool | None = None

    # -- processes --

    def cli(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "pingo.cli", "--config", str(self.config), *args]

    def stage_args(self, stage: str, final: bool = False, limit: int | None = None) -> list[str]:
        if stage == "crawl":
            return ["crawl"] if final else ["crawl", "--limit", str(limit or self.crawl_limit)]
        if stage == "train":
            return ["train", "--force"]
        return [stage]

    def run_stage(
        self, stage: str, kill: Kill | None = None, final: bool = False, limit: int | None = None
    ) -> StageRun:
        """Run one stage to its end; with ``kill``, signal its whole session after the delay."""
        self.runs += 1
        log = self.root / "logs" / f"{self.runs:04d}-{stage}{'-' + kill.signal if kill else ''}.log"
        log.parent.mkdir(exist_ok=True)
        with open(log, "wb") as out:
            started = time.monotonic()
            child = subprocess.Popen(
                self.cli(*self.stage_args(stage, final, limit)),
                cwd=self.root,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            run = StageRun(stage, None, 0.0, log, kill)
            try:
                if kill is not None:
                    self._deliver(child, kill, started, run)
                run.rc = child.wait(timeout=self.stage_timeout)
            except subprocess.TimeoutExpired:
                run.rc = None  # wedged: reported by the caller
            finally:
                if child.poll() is None:
                    os.killpg(child.pid, signal.SIGKILL)
                    child.wait()
                run.seconds = time.monotonic() - started
                run.leaked = self._reap_session(child.pid)
        if kill is None and run.rc == 0:
            self.durations[stage].append(run.seconds)
        return run

    def _deliver(self, child: subprocess.Popen, kill: Kill, started: float, run: StageRun):
        if kill.on_move:
            found = self._wait_for_move(child, started + kill.delay)
            if found is None:
                return  # it finished first
            run.at_move = found
        else:
            try:
                child.wait(timeout=kill.delay)
                return  # it finished before the signal: the kill missed
            except subprocess.TimeoutExpired:
                pass
        sent = time.monotonic()
        try:
            os.killpg(child.pid, SIGNALS[kill.signal])
        except ProcessLookupError:
            return
        run.landed = True
        try:
            child.wait(timeout=self.grace)
        except subprocess.TimeoutExpired:
            run.forced = True
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
        run.stop_seconds = time.monotonic() - sent

    def _wait_for_move(self, child: subprocess.Popen, deadline: float) -> bool | None:
        """Poll the DB (read-only, every ~2 ms) until a move or add is in flight (True); None
        when the stage ended first; False at the deadline (the signal goes anyway)."""
        import sqlite3

        db = self.data_dir / "pingo.db"
        conn = None
        try:
            while time.monotonic() < deadline:
                if child.poll() is not None:
                    return None
                try:
                    if conn is None:
                        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=0.05)
                    if conn.execute("SELECT 1 FROM pending_moves LIMIT 1").fetchone():
                        return True
                except sqlite3.Error:
                    pass  # busy or not created yet
                time.sleep(0.002)
        finally:
            if conn is not None:
                conn.close()
        return None if child.poll() is not None else False

    def _reap_session(self, sid: int, wait: float = 3.0) -> list[str]:
        """Processes of the stage's session still alive after it ended (then killed)."""
        deadline = time.monotonic() + wait
        left = session_processes(sid)
        while left and time.monotonic() < deadline:
            time.sleep(0.1)
            left = session_processes(sid)
        for pid, _ in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return [f"{name}({pid})" for pid, name in left]

    # -- plans --

    def typical(self, stage: str) -> float:
        seen = self.durations[stage]
        return sorted(seen)[len(seen) // 2] if seen else 5.0

    def plan_kill(self, stage: str, signame: str) -> Kill:
        """A moment inside the stage's typical run (5-80 % of its median clean duration so far:
        later in the window a faster run has often ended already, and the kill misses)."""
        delay = round(self.rng.uniform(0.05, 0.8) * self.typical(stage), 2)
        if stage != "train" and self.rng.random() < 0.5:
            # Half the crawl and factory kills wait for a file move in flight instead: those
            # windows last milliseconds, and a random moment would almost never hit one.
            return Kill(stage, signame, round(1.5 * self.typical(stage), 2), on_move=True)
        return Kill(stage, signame, delay)

    # -- checks --

    def check(self) -> list[str]:
        """Problems found: `pingo check --json` must exit 0, plus ``beyond_check()``."""
        done = subprocess.run(
            self.cli("check", "--json"), cwd=self.root, env=self.env, capture_output=True, text=True
        )
        problems = (
            []
            if done.returncode == 0
            else [
                f"pingo check exited {done.returncode}: {done.stdout[-2000:]}{done.stderr[-1000:]}"
            ]
        )
        return problems + beyond_check(self.data_dir)

    def snapshot(self) -> dict:
        """What a kill left behind, before anything repairs it (for the failure message)."""
        return leftovers(self.data_dir)


# ---- what a kill left, and what `pingo check` does not cover -------------------------------


def _engine(data_dir: Path):
    from sqlalchemy import create_engine

    return create_engine(f"sqlite:///{data_dir / 'pingo.db'}")


def leftovers(data_dir: Path) -> dict:
    """Half-done work on disk and in the DB, read without opening a Store (which repairs)."""
    from sqlalchemy import text

    out = {"pending_moves": [], "part_files": [], "running_runs": 0}
    if (data_dir / "pingo.db").exists():
        engine = _engine(data_dir)
        with engine.connect() as conn:
            out["pending_moves"] = [
                dict(r._mapping)
                for r in conn.execute(
                    text("SELECT image_id, kind, src, dst, owner FROM pending_moves")
                )
            ]
            out["running_runs"] = conn.execute(
                text("SELECT count(*) FROM runs WHERE status = 'running'")
            ).scalar()
        engine.dispose()
    out["part_files"] = sorted(
        p.relative_to(data_dir).as_posix()
        for d in STATUS_DIRS
        for p in (data_dir / d).rglob(".*.part")
    )
    return out


def beyond_check(data_dir: Path) -> list[str]:
    """What a clean run promises that `pingo check` does not look at: no URL marked as giving
    an image whose row is gone (it would never be fetched again: a lost image), and no run
    left 'running' once the next run of the stage has finished."""
    from sqlalchemy import text

    engine = _engine(data_dir)
    with engine.connect() as conn:
        dangling = (
            conn.execute(
                text(
                    "SELECT url FROM urls WHERE image_id IS NOT NULL AND image_id NOT IN "
                    "(SELECT id FROM images)"
                )
            )
            .scalars()
            .all()
        )
        running = conn.execute(text("SELECT id, job, pid FROM runs WHERE status = 'running'")).all()
    engine.dispose()
    return [f"URL recorded as stored, its image row is gone: {u}" for u in dangling] + [
        f"run {r.id} ({r.job}, pid {r.pid}) still 'running' after the next run" for r in running
    ]


# ---- the end: every served image accounted for ---------------------------------------------


def served_images(site_requests: list[str], images_dir: Path) -> dict[str, Path]:
    """Image URLs (paths) the demo site was asked for -> the file it served."""
    out = {}
    for req in site_requests:
        path = unquote(req.split("?", 1)[0])
        if path.startswith("/image/"):
            _, _, cls, name = path.split("/", 3)
            file = images_dir / cls / name
            if file.is_file():
                out[path] = file
    return out


def final_accounting(data_dir: Path, images_dir: Path, site_requests: list[str]) -> list[str]:
    """Every image the site offers was served, and each distinct content has exactly one row,
    out of the inbox: kept (accepted/review) or rejected with a reason; no other demo row."""
    from sqlalchemy import text

    problems = []
    offered = {f"/image/{f.parent.name}/{f.name}": f for f in images_dir.glob("*/*") if f.is_file()}
    served = served_images(site_requests, images_dir)
    never = sorted(set(offered) - set(served))
    problems += [f"offered but never fetched: {u}" for u in never]
    want = {}
    for url, f in offered.items():
        want.setdefault(hashlib.sha256(f.read_bytes()).hexdigest(), []).append(url)
    engine = _engine(data_dir)
    with engine.connect() as conn:
        rows = [
            dict(r._mapping)
            for r in conn.execute(
                text("SELECT id, sha256, status, reason, source, source_url FROM images")
            )
        ]
    engine.dispose()
    by_sha: dict[str, list[dict]] = {}
    for r in rows:
        by_sha.setdefault(r["sha256"], []).append(r)
    for sha, urls in sorted(want.items()):
        found = by_sha.get(sha, [])
        if len(found) != 1:
            problems.append(f"{urls}: {len(found)} rows (want exactly 1)")
            continue
        r = found[0]
        if r["status"] == "inbox":
            problems.append(f"{urls}: still in the inbox (image {r['id']})")
        elif r["status"] == "rejected" and not r["reason"]:
            problems.append(f"{urls}: rejected without a reason (image {r['id']})")
    extra = [r for r in rows if r["sha256"] not in want]
    problems += [
        f"image {r['id']} ({r['source_url']}) is not content the site served" for r in extra
    ]
    return problems


def outcome_counts(data_dir: Path) -> dict[str, int]:
    from sqlalchemy import text

    engine = _engine(data_dir)
    with engine.connect() as conn:
        got = conn.execute(text("SELECT status, coalesce(reason, '') FROM images")).all()
    engine.dispose()
    return dict(Counter(f"{s}:{r}" if r else s for s, r in got))


# ---- rounds ----------------------------------------------------------------------------------


@dataclass
class RoundResult:
    number: int
    kill: Kill
    killed: StageRun
    landed: bool
    seconds: float
    faults: list[str]
    after_kill: dict


class Chaos:
    """Rounds in which one stage (crawl, factory or train) is signalled, then rerun clean.

    A factory round crawls first, so the factory has inbox images to be killed among; the
    warm-up runs crawl -> factory -> train once, so every round after it works on a project
    with images in every folder and a promoted model."""

    def __init__(self, driver: Driver):
        self.d = driver
        self.results: list[RoundResult] = []

    def schedule(self, rounds: int) -> list[tuple[str, str]]:
        """(stage, signal) per round, balanced: every 3 rounds hit each stage once and use each
        signal once; every 9 rounds cover every stage x signal pair (a shuffled Latin square)."""
        signals = list(SIGNALS)
        plan: list[tuple[str, str]] = []
        while len(plan) < rounds:
            self.d.rng.shuffle(signals)
            for shift in range(len(STAGES)):
                block = [(s, signals[(i + shift) % len(signals)]) for i, s in enumerate(STAGES)]
                self.d.rng.shuffle(block)
                plan += block
        return plan[:rounds]

    def warm_up(self, crawl_limit: int = 7) -> list[str]:
        """One clean pass (the durations the kills are timed from, a first model): enough
        images per class that every class has training, validation and test images."""
        faults = []
        for stage in STAGES:
            run = self.d.run_stage(stage, limit=crawl_limit)
            if run.rc != 0:
                faults.append(f"warm-up {stage} exited {run.rc}:\n{run.tail()}")
        return faults + [f"warm-up: {p}" for p in self.d.check()]

    def round(self, number: int, stage: str, signame: str) -> RoundResult:
        d = self.d
        started = time.monotonic()
        kill = d.plan_kill(stage, signame)
        faults: list[str] = []
        where = f"seed {d.seed} round {number}: {kill.describe()}"
        # The factory needs new inbox images to be killed in; crawl and train always have work.
        for before in ["crawl"] if stage == "factory" else []:
            run = d.run_stage(before)
            if run.rc != 0:
                faults.append(f"{where}: {before} (before the kill) exited {run.rc}:\n{run.tail()}")
        killed = d.run_stage(stage, kill)
        after = d.snapshot()
        if kill.on_move:
            where += ": a move was in flight" if killed.at_move else ": no move seen, timed"
        if killed.forced:
            faults.append(f"{where}: still running {d.grace}s after {signame}; SIGKILLed")
        if killed.rc is None:
            faults.append(f"{where}: wedged for {d.stage_timeout}s")
        if killed.leaked:
            faults.append(f"{where}: processes outlived the stage: {killed.leaked}")
        if not killed.landed and killed.rc != 0:
            faults.append(f"{where}: exited {killed.rc} before the signal:\n{killed.tail()}")
        run = d.run_stage(stage)
        if run.rc != 0:
            faults.append(
                f"{where}: the clean rerun exited {run.rc} "
                f"(left by the kill: {_brief(after)}):\n{run.tail()}"
            )
        if run.leaked:
            faults.append(f"{where}: processes outlived the clean rerun: {run.leaked}")
        problems = d.check()
        if problems:
            faults.append(
                f"{where}: inconsistent after the clean rerun (left by the kill: "
                f"{_brief(after)}):\n  " + "\n  ".join(problems[:20])
            )
        result = RoundResult(
            number, kill, killed, killed.landed, time.monotonic() - started, faults, after
        )
        self.results.append(result)
        return result

    def finish(self, images_dir: Path, site) -> list[str]:
        """A final clean crawl (no limit) and factory; then every served image accounted for.

        ``site`` is the DemoSite: its request log is read after the final crawl (the log
        property returns a copy, so it must not be read before)."""
        faults = []
        for stage in ("crawl", "factory"):
            run = self.d.run_stage(stage, final=True)
            if run.rc != 0:
                faults.append(f"seed {self.d.seed} final {stage} exited {run.rc}:\n{run.tail()}")
        faults += [f"seed {self.d.seed} final check: {p}" for p in self.d.check()]
        faults += [
            f"seed {self.d.seed} final accounting: {p}"
            for p in final_accounting(self.d.data_dir, images_dir, site.requests)
        ]
        return faults

    def table(self) -> str:
        """Kills per signal x stage (landed / planned), stop times, faults, time per round."""
        lines = [f"seed {self.d.seed}: {len(self.results)} rounds"]
        header = f"  {'stage':<8}" + "".join(f"{g:>12}" for g in SIGNALS)
        lines.append(header + "   (landed/planned)")
        for s in STAGES:
            cells = []
            for g in SIGNALS:
                mine = [r for r in self.results if r.kill.stage == s and r.kill.signal == g]
                cells.append(f"{sum(r.landed for r in mine)}/{len(mine)}".rjust(12))
            lines.append(f"  {s:<8}" + "".join(cells))
        moving = [r for r in self.results if r.kill.on_move]
        lines.append(
            f"  kills waiting for a move in flight: {len(moving)}, of which "
            f"{sum(r.killed.at_move for r in moving)} hit one"
        )
        stops = [
            r.killed.stop_seconds
            for r in self.results
            if r.kill.signal != "SIGKILL" and r.killed.stop_seconds is not None
        ]
        if stops:
            lines.append(
                f"  SIGINT/SIGTERM -> exit: median {sorted(stops)[len(stops) // 2]:.2f}s,"
                f" max {max(stops):.2f}s"
            )
        secs = [r.seconds for r in self.results]
        if secs:
            lines.append(
                f"  time per round: median {sorted(secs)[len(secs) // 2]:.1f}s, "
                f"max {max(secs):.1f}s, total {sum(secs):.0f}s"
            )
        bad = [r for r in self.results if r.faults]
        lines.append(f"  rounds with faults: {len(bad)}")
        return "\n".join(lines)


def _brief(after: dict) -> str:
    return (
        f"{len(after['pending_moves'])} pending moves "
        f"{[(p['kind'], p['src'], p['dst']) for p in after['pending_moves'][:3]]}, "
        f"{len(after['part_files'])} .part files, {after['running_runs']} runs 'running'"
    )
