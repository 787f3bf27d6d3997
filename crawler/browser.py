"""One headless browser: built the Selenium 4.10+ way, and torn down without leftovers.

Local Chromium/Chrome/Firefox get a Service and Options and a fresh folder (profile, owner
file, launchers that tie the driver and the browser to this process's life: see
:mod:`crawler.leftovers`); a ``SELENIUM_COMMAND_EXECUTOR`` URL (Selenium Grid or a remote
chromedriver) gets ``webdriver.Remote(options=...)``. ``kill()`` ends only the processes this
browser started: its driver process and that process's descendants, found in /proc before
they are orphaned.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import shutil
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crawler import leftovers
from crawler.errors import BrowserError
from crawler.settings import default, get

logger = logging.getLogger(__name__)

HEADLESS_CHROME_ARGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1280,900",
    "--blink-settings=imagesEnabled=false",
)
HEADLESS_FIREFOX_ARGS = ("-headless",)
# A desktop Chrome's User-Agent; {version} is the local browser's major version when known.
DESKTOP_CHROME_UA = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/{version}.0.0.0 Safari/537.36"
)
DESKTOP_CHROME_VERSION = "131"  # used when the browser's own version cannot be read


@functools.cache
def browser_major_version(browser_path: str | None) -> str:
    """The major version of the Chromium/Chrome at ``browser_path`` (``--version``)."""
    if browser_path:
        try:
            out = subprocess.run(
                [browser_path, "--version"], capture_output=True, text=True, timeout=10
            ).stdout
        except (OSError, subprocess.SubprocessError):
            out = ""
        match = re.search(r"\b(\d{2,4})\.\d+\.\d+", out)
        if match:
            return match.group(1)
    return DESKTOP_CHROME_VERSION


def desktop_chrome_user_agent(browser_path: str | None) -> str:
    """What a desktop Chrome of the local browser's version sends (no "HeadlessChrome")."""
    return DESKTOP_CHROME_UA.format(version=browser_major_version(browser_path))


@dataclass(frozen=True)
class BrowserSpec:
    """How to start a browser (parsed once from the SELENIUM_* settings)."""

    driver_name: str = default("SELENIUM_DRIVER_NAME")  # chrome (Chromium too) or firefox
    driver_executable_path: str | None = None
    driver_arguments: tuple[str, ...] = HEADLESS_CHROME_ARGS
    browser_executable_path: str | None = None
    command_executor: str | None = None
    page_load_timeout: float = default("SELENIUM_PAGE_LOAD_TIMEOUT")
    user_agent: str | None = None  # None: the browser's own (Chromium's says HeadlessChrome)

    @classmethod
    def from_settings(cls, settings) -> BrowserSpec:
        name = (settings.get("SELENIUM_DRIVER_NAME") or default("SELENIUM_DRIVER_NAME")).lower()
        if name == "chromium":
            name = "chrome"
        if name not in ("chrome", "firefox"):
            raise BrowserError(f"SELENIUM_DRIVER_NAME {name!r}: allowed are chrome, firefox")
        args = settings.getlist("SELENIUM_DRIVER_ARGUMENTS") or list(
            HEADLESS_CHROME_ARGS if name == "chrome" else HEADLESS_FIREFOX_ARGS
        )
        remote = settings.get("SELENIUM_COMMAND_EXECUTOR")
        driver_path = settings.get("SELENIUM_DRIVER_EXECUTABLE_PATH")
        browser_path = settings.get("SELENIUM_BROWSER_EXECUTABLE_PATH")
        if not remote:
            driver_path = driver_path or shutil.which(
                "chromedriver" if name == "chrome" else "geckodriver"
            )
            if not driver_path:
                raise BrowserError(
                    f"no {'chromedriver' if name == 'chrome' else 'geckodriver'}"
                    " on PATH: install it (make browser) or set "
                    "SELENIUM_DRIVER_EXECUTABLE_PATH"
                )
            if name == "chrome" and not browser_path:
                browser_path = next(
                    filter(
                        None,
                        map(
                            shutil.which,
                            ("chromium", "chromium-browser", "google-chrome", "chrome"),
                        ),
                    ),
                    None,
                )
        user_agent = settings.get("SELENIUM_USER_AGENT") or None
        if user_agent == "chrome":
            user_agent = desktop_chrome_user_agent(browser_path if name == "chrome" else None)
        return cls(
            name,
            driver_path,
            tuple(args),
            browser_path,
            remote,
            get(settings, "SELENIUM_PAGE_LOAD_TIMEOUT"),
            user_agent,
        )


@dataclass(eq=False)
class Browser:
    driver: Any
    profile_dir: Path | None = None
    driver_pid: int | None = None
    pages: int = 0
    _pids: dict[int, str] = field(default_factory=dict)  # pid -> start time (pid reuse guard)

    @classmethod
    def start(cls, spec: BrowserSpec) -> Browser:
        from selenium import webdriver
        from selenium.common.exceptions import WebDriverException

        profile: Path | None = None  # this browser's folder (local): profile, owner, launchers
        try:
            if not spec.command_executor:  # local
                profile = leftovers.new_browser_dir()
            driver_path, browser_path = spec.driver_executable_path, spec.browser_executable_path
            if profile is not None and leftovers.ties_supported():
                # driver and browser die with this process, even on SIGKILL
                driver_path = driver_path and leftovers.launcher(profile, "driver", driver_path)
                browser_path = browser_path and leftovers.launcher(profile, "browser", browser_path)
            options: webdriver.ChromeOptions | webdriver.FirefoxOptions
            if spec.driver_name == "chrome":
                options = webdriver.ChromeOptions()
                for arg in spec.driver_arguments:
                    options.add_argument(arg)
                if spec.user_agent:  # headers and navigator.userAgent alike
                    options.add_argument(f"--user-agent={spec.user_agent}")
                if profile is not None:  # local
                    options.add_argument(f"--user-data-dir={profile / 'profile'}")
            else:
                options = webdriver.FirefoxOptions()
                for arg in spec.driver_arguments:
                    options.add_argument(arg)
                if spec.user_agent:
                    options.set_preference("general.useragent.override", spec.user_agent)
            if browser_path:
                options.binary_location = browser_path
            options.page_load_strategy = "normal"
            if spec.command_executor:
                driver = webdriver.Remote(command_executor=spec.command_executor, options=options)
                pid = None
            elif isinstance(options, webdriver.ChromeOptions):  # driver_name "chrome"
                driver = webdriver.Chrome(
                    service=webdriver.ChromeService(executable_path=driver_path), options=options
                )
                pid = driver.service.process.pid
            else:
                driver = webdriver.Firefox(
                    service=webdriver.FirefoxService(executable_path=driver_path), options=options
                )
                pid = driver.service.process.pid
            if profile and pid:
                leftovers.write_owner(profile, pid)  # lets a later crawl kill it if orphaned
        except (WebDriverException, OSError) as exc:
            if profile:
                shutil.rmtree(profile, ignore_errors=True)
            raise BrowserError(
                f"cannot start {spec.driver_name}: {str(exc).strip()[:300]}"
            ) from exc
        browser = cls(driver, profile, pid)
        browser.refresh_pids()
        try:
            driver.set_page_load_timeout(spec.page_load_timeout)
            driver.set_script_timeout(spec.page_load_timeout)
        except Exception as exc:  # e.g. an infinite timeout: the browser runs; end it
            browser.quit()
            raise BrowserError(
                f"cannot set up {spec.driver_name} (page load timeout "
                f"{spec.page_load_timeout}): {type(exc).__name__}: "
                f"{str(exc).strip()[:300]}"
            ) from exc
        logger.debug("started browser (driver pid %s)", pid)
        return browser

    def refresh_pids(self) -> dict[int, str]:
        """Remember the driver's process tree now, so kill() finds it even once orphaned."""
        if self.driver_pid:
            self._pids.update(process_tree(self.driver_pid))
        return self._pids

    def kill(self) -> None:
        """SIGKILL this browser's processes (a hung or crashed browser)."""
        for pid, started in self.refresh_pids().items():
            if _start_time(pid) != started:
                continue  # gone, or the pid now belongs to someone else's process
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    def quit(self) -> None:
        """Quit politely, then make sure nothing this browser started is left running."""
        self.refresh_pids()
        try:
            self.driver.quit()
        except Exception as exc:  # a crashed browser cannot answer; kill below does the job
            logger.debug("browser quit failed: %s", exc)
        self.kill()
        if self.profile_dir:
            shutil.rmtree(self.profile_dir, ignore_errors=True)


def _stat_fields(pid: int | str) -> list[str] | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name may contain spaces; the fields after the last ")" are fixed.
    return stat.rsplit(")", 1)[1].split()


def _start_time(pid: int) -> str | None:
    fields = _stat_fields(pid)
    return fields[19] if fields else None


def process_tree(root: int) -> dict[int, str]:
    """``root`` and its live descendants -> start times (Linux /proc; empty elsewhere)."""
    children: dict[int, list[int]] = {}
    starts: dict[int, str] = {}
    proc = Path("/proc")
    if not proc.is_dir():
        return {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(entry.name)
        if not fields or fields[0] == "Z":
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
        starts[int(entry.name)] = fields[19]
    found: dict[int, str] = {}
    todo = [root]
    while todo:
        pid = todo.pop()
        if pid in found or pid not in starts:
            continue
        found[pid] = starts[pid]
        todo.extend(children.get(pid, ()))
    return found
