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


def served_page(name: str, base: str) -> str:
    """A saved page to serve to a browser: image URLs at ``base`` and its thumbnails too, so
    the browser asks nothing outside 127.0.0.1 (a thumbnail host that drops packets would
    hold the page load ~5 s)."""
    text = saved_page(name, base)
    for host in (
        "https://tse1.mm.bing.net",
        "https://tse2.mm.bing.net",
        "https://tse3.mm.bing.net",
        "https://tse4.mm.bing.net",
        "https://search.pstatic.net",
    ):
        text = text.replace(host, base + "/thumb")
    return text


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


class FixtureEngine:
    """A local server answering like a search engine with saved pages (tests/crawler_fixtures).

    ``pages``: path -> (status, HTML); ``robots``: its robots.txt. It records every request's
    path and User-Agent (``requests``), so tests see what the browser sent."""

    def __init__(self, pages: dict[str, tuple[int, str]], robots: str = "User-agent: *\n"):
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.pages = pages
        self.requests: list[tuple[str, str]] = []
        engine = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                path = self.path.split("?")[0]
                engine.requests.append((self.path, self.headers.get("User-Agent", "")))
                if path == "/robots.txt":
                    status, body, ctype = 200, robots, "text/plain"
                else:
                    status, body = engine.pages.get(path, (404, "not found"))
                    ctype = "text/html; charset=utf-8"
                data = body.encode("utf-8")
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FixtureEngine:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def agents(self, path: str) -> set[str]:
        """The User-Agents that asked for ``path`` (query string ignored)."""
        return {ua for p, ua in self.requests if p.split("?")[0] == path}


def closed_port() -> int:
    """A 127.0.0.1 port nothing listens on (bound, then released)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
