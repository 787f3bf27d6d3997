"""Helpers shared by tests/test_crawl*.py: saved pages, config text, process lookups."""

from __future__ import annotations

import hashlib
import os
import signal
from pathlib import Path
from urllib.parse import quote

FIXTURES = Path(__file__).resolve().parent


def saved_page(name: str, base: str) -> str:
    """A saved results page with its image URLs pointing at ``base`` (a local server)."""
    text = (FIXTURES / name).read_text(encoding="utf-8")
    return text.replace("{base_q}", quote(base, safe="")).replace("{base}", base)


def crawl_toml(demo_url: str, classes: dict[str, int], **crawl) -> str:
    """pingo.toml text: the given classes (name -> target) and a fast [crawl] section."""
    lines = []
    for name, target in classes.items():
        lines += [f"[classes.{name}]", f'keywords = ["{name}"]', f"target = {target}", ""]
    settings = {
        "sources": ["demo"],
        "demo_url": demo_url,
        "download_timeout": 3.0,
        "retries": 1,
        "max_drivers": 2,
        **crawl,
    }
    lines.append("[crawl]")
    for key, value in settings.items():
        if isinstance(value, list):
            value = "[" + ", ".join(f'"{v}"' for v in value) + "]"
        elif isinstance(value, str):
            value = f'"{value}"'
        elif isinstance(value, bool):
            value = str(value).lower()
        lines.append(f"{key} = {value}")
    return "\n".join(lines) + "\n"


def browser_pids_under(root_pid: int) -> list[int]:
    """Chromium processes descending from ``root_pid`` (the browsers our crawls started)."""
    from crawler.browser import process_tree

    pids = []
    for pid in process_tree(root_pid):
        try:
            name = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            continue
        if "chrom" in name and "chromedriver" not in name:
            pids.append(pid)
    return pids


def kill_all(pids: list[int]) -> int:
    killed = 0
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
            killed += 1
        except ProcessLookupError:
            pass
    return killed


def inbox_rows(project) -> list[dict]:
    with project.store() as store:
        return list(store.iter_images(status="inbox"))


def assert_inbox_consistent(project) -> list[dict]:
    """Every row has its file with exactly its bytes; no stray files; no URL stored twice."""
    rows = inbox_rows(project)
    inbox = project.data_dir / "inbox"
    assert sorted(p.name for p in inbox.iterdir()) == sorted(Path(r["path"]).name for r in rows)
    for r in rows:
        data = (project.data_dir / r["path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == r["sha256"]
    urls = [r["source_url"] for r in rows]
    assert len(urls) == len(set(urls))
    return rows
