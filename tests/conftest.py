"""Fixtures shared by every test module: real temp folders, real SQLite, the CLI in-process."""

from __future__ import annotations

import io
import os
import shutil
import signal
import time
from pathlib import Path
from typing import NoReturn

import pytest
from click.testing import CliRunner

from core.config import Config, load_config

DATA = Path(__file__).resolve().parent / "data"
SIGN_DIGITS = DATA / "sign-language-digits"  # real photos, a subset kept in the repository


def in_ci() -> bool:
    """True where the CI environment variable says so (CI=true): nothing may be skipped there."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def require(reason: str) -> NoReturn:
    """A resource this test needs is missing (a service, the browser, data): skip the test on
    a developer's machine, fail it under CI=true, where every resource must be there."""
    if in_ci():
        pytest.fail(f"{reason} (CI=true: a missing resource fails the run)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A temp project folder with a pingo.toml (three classes); returns a writer/loader helper."""
    return Project(tmp_path, monkeypatch)


class Project:
    CLASSES = """
[classes.cat]
keywords = ["cat photo"]
target = 5

[classes.dog]
keywords = ["dog photo", "puppy"]
target = 5

[classes.bird]
target = 3
"""
    # Most tests are about other mechanics and file the model-less batch by keyword; the
    # default (keyword_only = "review") is tested on CLASSES alone (test_evidence,
    # test_rejudge). Tests add [factory] keys by appending lines to DEFAULT.
    DEFAULT = CLASSES + '\n[factory]\nkeyword_only = "accept"\n'

    def __init__(self, root: Path, monkeypatch):
        self.root = root
        self.path = root / "pingo.toml"
        self.write(self.DEFAULT)
        monkeypatch.chdir(root)
        monkeypatch.delenv("PINGO_CONFIG", raising=False)

    def write(self, text: str) -> Path:
        self.path.write_text(text, encoding="utf-8")
        return self.path

    @property
    def config(self) -> Config:
        return load_config(self.path)

    def store(self):
        from storage import Store

        return Store.from_config(self.config)

    @property
    def data_dir(self) -> Path:
        return self.config.data_dir


@pytest.fixture
def run_cli(project):
    """Invoke the `pingo` CLI in-process; returns click's Result (exit_code, stdout, stderr)."""
    from pingo.cli import cli

    def run(*args: str, input: str | None = None):
        return CliRunner().invoke(
            cli, ["--config", str(project.path), *args], input=input, catch_exceptions=False
        )

    return run


def png_bytes(color=(200, 30, 30), size=(40, 40)) -> bytes:
    """A small real PNG; different colours give different bytes."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "PNG")
    return buf.getvalue()


PG_ADMIN_URL = os.environ.get("PINGO_TEST_PG", "postgresql://postgres@127.0.0.1/postgres")


@pytest.fixture
def pg_url():
    """A fresh, empty PostgreSQL database on 127.0.0.1 for one test; dropped afterwards."""
    import uuid

    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import OperationalError

    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"pingo_test_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except OperationalError as exc:
        require(f"no PostgreSQL at {PG_ADMIN_URL} ({exc.orig}); CI starts one")
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request) -> str | None:
    """The test once per metadata DB: None (the embedded SQLite default, under data_dir), then
    a fresh PostgreSQL database (``pg_url``, as several machines share one)."""
    return request.getfixturevalue("pg_url") if request.param == "postgresql" else None


def storage_toml(db_url: str | None) -> str:
    """The pingo.toml lines that put the metadata DB at ``db_url`` (none for the default)."""
    return "" if db_url is None else f'\n[storage]\ndb_url = "{db_url}"\n'


REDIS_URL = os.environ.get("PINGO_TEST_REDIS", "redis://127.0.0.1:6379/9")


@pytest.fixture
def redis_prefix():
    """A key prefix no other test uses on the test Redis; every key under it deleted after."""
    import uuid

    import redis

    server = redis.Redis.from_url(REDIS_URL)
    try:
        server.ping()
    except redis.RedisError as exc:
        require(f"no Redis at {REDIS_URL} ({exc}); CI starts one")
    prefix = f"pingotest:{uuid.uuid4().hex[:10]}"
    try:
        yield prefix
    finally:
        keys = list(server.scan_iter(match=f"{prefix}:*", count=500))
        if keys:
            server.delete(*keys)
        server.close()


@pytest.fixture(scope="module")
def spec():
    """How the crawler starts a local headless Chromium (``require``s one)."""
    from scrapy.settings import Settings

    from crawler.browser import BrowserSpec
    from crawler.errors import BrowserError

    try:
        return BrowserSpec.from_settings(Settings({"SELENIUM_PAGE_LOAD_TIMEOUT": 10}))
    except BrowserError as exc:
        require(f"no local browser: {exc}; run `make browser`")


@pytest.fixture(scope="session")
def sign_digits() -> Path:
    """Real photos in the full dataset's layout (``<digit>/IMG_*.JPG``), kept in tests/data, so
    that the suite runs whole in any clone (see tests/data/sign-language-digits/README.md)."""
    return SIGN_DIGITS


@pytest.fixture(scope="session")
def chromium():
    """One headless Chromium (Selenium) for the whole session, for tests that look at pages."""
    import shutil
    import tempfile

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    from crawler.browser import HEADLESS_CHROME_ARGS

    driver_path = shutil.which("chromedriver")
    if not driver_path or not shutil.which("chromium"):
        require("chromium and chromedriver are required: run `make browser`")
    profile = tempfile.mkdtemp(prefix="pingo-test-chrome-")
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    # the crawler's flags, but with images shown and a taller window (tests look at pages)
    shared = [a for a in HEADLESS_CHROME_ARGS if not a.startswith(("--window-size", "--blink"))]
    for arg in (*shared, "--window-size=1200,2000", f"--user-data-dir={profile}"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def wait_for(condition, what: str, seconds: float = 90) -> None:
    """Poll ``condition`` until it is true; fail the test naming ``what`` after ``seconds``."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting until {what}")
        time.sleep(0.1)


def kill_9_once(proc, reached, what: str, seconds: float = 120) -> None:
    """SIGKILL ``proc`` as soon as ``reached()`` is true (a stage is under way); fail naming
    ``what`` if the process ends first or ``seconds`` pass."""

    def under_way() -> bool:
        if reached():
            return True
        assert proc.poll() is None, f"the process ended before {what}"
        return False

    try:
        wait_for(under_way, what, seconds)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()


@pytest.fixture(scope="session")
def trained_template(tmp_path_factory):
    """One real training run per session: a project whose v0001 is trained and promoted."""
    from train_helpers import CONFIG, fill

    from storage import Store
    from trainer.run import train

    root = tmp_path_factory.mktemp("trained-template")
    (root / "pingo.toml").write_text(CONFIG, encoding="utf-8")
    config = load_config(root / "pingo.toml")
    with Store.from_config(config) as store:
        fill(store, 20)
        result = train(config, store)
    assert result.trained and result.version == "v0001"
    return root, result


@pytest.fixture
def trained(trained_template, tmp_path):
    """A fresh copy of the trained template for one test (a train_helpers.Trained)."""
    from train_helpers import Trained

    root, _ = trained_template
    shutil.copytree(root, tmp_path / "project")
    return Trained(tmp_path / "project")


def pytest_sessionfinish(session, exitstatus):
    session.config.stash[_EXIT_STATUS] = int(exitstatus)


def pytest_unconfigure(config):
    """Exit now if a non-daemon thread is left behind.

    Tests SIGKILL hashing workers on purpose. CPython's ProcessPoolExecutor can leave its
    manager thread blocked forever in recv() when a worker dies while sending a result
    (dataset_factory.hash_pool unsticks it; this is the backstop), and interpreter exit would
    then wait for it: a passed suite that never ends. The summary is already printed.
    """
    import sys
    import threading

    stuck = [
        t.name
        for t in threading.enumerate()
        if t is not threading.main_thread() and not t.daemon and t.is_alive()
    ]
    if stuck:
        sys.stdout.flush()
        sys.stderr.write(f"exiting past stuck non-daemon threads: {stuck}\n")
        sys.stderr.flush()
        os._exit(config.stash.get(_EXIT_STATUS, 1))


_EXIT_STATUS = pytest.StashKey[int]()
