"""The demo image search engine: any folder of class subfolders, served on 127.0.0.1.

``/search?q=...`` returns a page whose results are inserted by JavaScript from
``/api/search`` and grow when the page is scrolled, like a real image search. A query returns
the images of every folder whose name appears in it as words (``folder_matches``: a folder
``t-shirt`` answers "t-shirt" and "t shirt", ``고양이`` answers "고양이 사진"). Thumbnails link to full-size
images (``/image/<class>/<file>``); ``/robots.txt`` disallows ``/private/``.

Fault switches (for tests and benchmarks): ``page_delay`` (seconds before every result page),
``image_delay`` (seconds before every image),
``faults=True`` (every query's results start with one broken image of each kind: 404, 500,
slow, corrupt, oversized, not an image, too small, robots-disallowed, a redirect to this
same server named as ``localhost``, which a crawler must refuse as a private address),
and the query word
``http500`` (the result page itself answers 500).
"""

from __future__ import annotations

import html
import io
import json
import logging
import mimetypes
import re
import threading
import time
import unicodedata
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlsplit

from crawler.errors import DemoSiteError

logger = logging.getLogger(__name__)

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp"}
PAGE_SIZE = 12
# Broken results served first when faults are on: name -> what the crawler should make of it.
FAULTS = {
    "404": "http_404",
    "500": "http_500",
    "slow": "timeout",
    "corrupt": "corrupt",
    "huge": "too_large",
    "notimage": "not_image",
    "tiny": "too_small",
    "private": "robots",
    "redirect": "private_address",
}
SLOW_IMAGE_SECONDS = 30.0
REQUEST_LOG = 1000  # paths the site remembers (a long-running demo must not grow without end)
HUGE_IMAGE_BYTES = 12 * 1024 * 1024

ROBOTS_TXT = "User-agent: *\nDisallow: /private/\n"

SEARCH_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>{title} - pingo demo image search</title>
<style>
 body {{ font-family: sans-serif; margin: 0; }}
 header {{ padding: 12px; background: #234; color: #fff; }}
 #results {{ display: block; }}
 a.result {{ display: block; width: 150px; height: 170px; margin: 6px; }}
 a.result img {{ width: 150px; height: 150px; object-fit: cover; }}
 #status {{ padding: 12px; color: #666; }}
</style></head>
<body>
<header><form action="/search"><input name="q" value="{query}"><button>Search</button></form></header>
<div id="results"></div>
<div id="status">loading...</div>
<script>
const query = {query_json};
let next = 0, total = null, busy = false;
async function more() {{
  if (busy || (total !== null && next >= total)) return;
  busy = true;
  const r = await fetch(`/api/search?q=${{encodeURIComponent(query)}}&start=${{next}}&count={page_size}`);
  const data = await r.json();
  total = data.total;
  const box = document.getElementById("results");
  for (const item of data.results) {{
    const a = document.createElement("a");
    a.className = "result";
    a.href = item.full;
    a.dataset.meta = JSON.stringify({{murl: item.full, purl: item.page, t: item.title}});
    const img = document.createElement("img");
    img.src = item.thumb; img.alt = item.title;
    a.appendChild(img);
    box.appendChild(a);
  }}
  next += data.results.length;
  document.getElementById("status").textContent =
      next >= total ? `${{total}} results` : `${{next}} of ${{total}}; scroll for more`;
  busy = false;
  // Like real infinite scroll: keep loading while the page is too short to scroll.
  if (document.body.scrollHeight <= window.innerHeight + 300) more();
}}
window.addEventListener("scroll", () => {{
  if (window.innerHeight + window.scrollY >= document.body.scrollHeight - 300) more();
}});
more();
</script>
</body></html>
"""

HOME_PAGE = (
    "<!doctype html><html><head><title>pingo demo image search</title></head><body>"
    "<h1>pingo demo image search</h1><form action='/search'><input name='q'>"
    "<button>Search</button></form><p>Classes: {classes}</p></body></html>"
)


def _tokens(text: str) -> list[str]:
    """Words of ``text``, case-folded (any script: "고양이", "Straße"), split at anything that
    is not a letter or digit ("t-shirt" -> t, shirt)."""
    return [w for w in re.split(r"[^\w]+", unicodedata.normalize("NFC", text).casefold()) if w]


def _words(text: str) -> set[str]:
    return set(_tokens(text))


def folder_matches(folder: str, query: str) -> bool:
    """Whether a class folder answers a query: its words appear in the query, in order and
    together ("t-shirt" answers "t-shirt", "T shirt" and "red t-shirt"; "red car" answers
    "a red car"; "고양이" answers "고양이 사진")."""
    want, words = _tokens(folder), _tokens(query)
    if not want:
        return False
    return any(words[i : i + len(want)] == want for i in range(len(words) - len(want) + 1))


def script_json(value) -> str:
    """JSON safe inside an HTML <script>: no "</script>", "<!--" or line separators."""
    text = json.dumps(value)
    for char, escaped in (
        ("<", "\\u003c"),
        (">", "\\u003e"),
        ("&", "\\u0026"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
    ):
        text = text.replace(char, escaped)
    return text


def _tiny_png() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (4, 4), (10, 200, 10)).save(buf, "PNG")
    return buf.getvalue()


@dataclass
class DemoSite:
    """What the server serves; ``requests``: the last ``request_log`` paths asked for
    (newest last)."""

    images_dir: Path
    page_delay: float = 0.0
    faults: bool = False
    image_delay: float = 0.0
    page_size: int = PAGE_SIZE
    request_log: int = REQUEST_LOG
    index: dict[str, list[str]] = field(default_factory=dict)

    def __post_init__(self):
        self._log: deque[str] = deque(maxlen=max(1, self.request_log))
        self._log_lock = threading.Lock()
        self.images_dir = Path(self.images_dir)
        if not self.images_dir.is_dir():
            raise DemoSiteError(f"demo site: no image folder at {self.images_dir}")
        for sub in sorted(p for p in self.images_dir.iterdir() if p.is_dir()):
            if sub.name.startswith("."):
                continue
            names = sorted(
                f.name for f in sub.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_EXTS
            )
            if names:
                self.index[sub.name] = names
        if not self.index:
            raise DemoSiteError(
                f"demo site: {self.images_dir} has no class subfolders "
                "with images (expected DIR/<class>/<image>)"
            )

    @property
    def requests(self) -> list[str]:
        """A copy of the request log (safe to read while the server runs)."""
        with self._log_lock:
            return list(self._log)

    def log_request(self, path: str) -> None:
        with self._log_lock:
            self._log.append(path)

    def results(self, query: str) -> list[dict[str, str]]:
        found = []
        if self.faults:
            found += [
                {
                    "full": (f"/private/{n}.png" if n == "private" else f"/fault/{n}.png"),
                    "thumb": "/fault/tiny.png",
                    "title": f"fault {n}",
                }
                for n in FAULTS
            ]
        for name, files in self.index.items():
            if not folder_matches(name, query):
                continue
            for f in files:
                path = f"{quote(name)}/{quote(f)}"
                found.append(
                    {"full": f"/image/{path}", "thumb": f"/thumb/{path}", "title": f"{name} {f}"}
                )
        for item in found:
            item["page"] = "/page/" + item["full"].rsplit("/", 1)[-1]
        return found

    def image_path(self, class_name: str, file_name: str) -> Path | None:
        if file_name in self.index.get(class_name, ()):
            return self.images_dir / class_name / file_name
        return None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "pingo-demo/1"
    site: DemoSite  # set on the subclass made per server
    server: ThreadingHTTPServer  # always served by DemoServer's

    def log_message(self, fmt, *args):  # keep test output quiet; debug log instead
        logger.debug("demo site: %s", fmt % args)

    def _send(
        self,
        status: int,
        body: bytes,
        ctype: str = "text/html; charset=utf-8",
        length: int | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        url = urlsplit(self.path)
        path = unquote(url.path)
        params = {k: v[0] for k, v in parse_qs(url.query).items()}
        site = self.site
        site.log_request(self.path)
        try:
            if path == "/robots.txt":
                return self._send(200, ROBOTS_TXT.encode(), "text/plain")
            if path == "/":
                return self._send(
                    200, HOME_PAGE.format(classes=html.escape(", ".join(site.index))).encode()
                )
            if path == "/search":
                return self._search(params.get("q", ""))
            if path == "/api/search":
                return self._api(params)
            if path.startswith(("/image/", "/thumb/", "/private/")):
                return self._image(path)
            if path.startswith("/fault/"):
                return self._fault(path[len("/fault/") :].rsplit(".", 1)[0])
            if path.startswith("/page/"):
                return self._send(200, b"<html><body>an image page</body></html>")
            return self._send(404, b"not found", "text/plain")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (a timeout on purpose); nothing to answer

    def _search(self, query: str) -> None:
        if self.site.page_delay:
            time.sleep(self.site.page_delay)
        if "http500" in _words(query):
            return self._send(500, b"<html><body>internal error</body></html>")
        page = SEARCH_PAGE.format(
            title=html.escape(query),
            query=html.escape(query),
            query_json=script_json(query),
            page_size=self.site.page_size,
        )
        self._send(200, page.encode())

    def _api(self, params: dict[str, str]) -> None:
        found = self.site.results(params.get("q", ""))
        start = max(0, int(params.get("start", 0) or 0))
        count = min(100, max(1, int(params.get("count", PAGE_SIZE) or PAGE_SIZE)))
        body = json.dumps({"total": len(found), "results": found[start : start + count]})
        self._send(200, body.encode(), "application/json")

    def _image(self, path: str) -> None:
        parts = path.split("/")
        if len(parts) != 4:
            return self._send(404, b"not found", "text/plain")
        if parts[1] == "private":
            return self._send(200, _tiny_png(), "image/png")
        if self.site.image_delay:
            time.sleep(self.site.image_delay)
        file = self.site.image_path(parts[2], parts[3])
        if file is None:
            return self._send(404, b"not found", "text/plain")
        ctype = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
        self._send(200, file.read_bytes(), ctype)

    def _fault(self, name: str) -> None:
        if name == "404":
            return self._send(404, b"gone", "text/plain")
        if name == "500":
            return self._send(500, b"broken", "text/plain")
        if name == "slow":
            time.sleep(SLOW_IMAGE_SECONDS)
            return self._send(200, _tiny_png(), "image/png")
        if name == "corrupt":
            good = _tiny_png()
            return self._send(200, good[:20] + b"\x00garbage" * 8, "image/png")
        if name == "huge":
            # Announce the size; a crawler with a sane DOWNLOAD_MAXSIZE hangs up at once.
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(HUGE_IMAGE_BYTES))
            self.end_headers()
            chunk = b"\xff" * 65536
            for _ in range(HUGE_IMAGE_BYTES // len(chunk)):
                self.wfile.write(chunk)
            return
        if name == "notimage":
            return self._send(200, b"<html><body>not an image</body></html>")
        if name == "tiny":
            return self._send(200, _tiny_png(), "image/png")
        if name == "redirect":  # loopback under another name: only the demo origin is trusted
            self.send_response(302)
            self.send_header(
                "Location", f"http://localhost:{self.server.server_address[1]}/fault/tiny.png"
            )
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        return self._send(404, b"no such fault", "text/plain")


class DemoServer:
    """A running demo site; ``url``, ``site`` (request log), ``stop()``."""

    def __init__(self, site: DemoSite, host: str = "127.0.0.1", port: int = 0):
        handler = type("DemoHandler", (_Handler,), {"site": site})
        try:
            self.httpd = ThreadingHTTPServer((host, port), handler)
        except OSError as exc:
            raise DemoSiteError(
                f"demo site: cannot listen on {host}:{port}: {exc.strerror}"
            ) from None
        self.httpd.daemon_threads = True
        self.httpd.request_queue_size = 128
        self.site = site
        self.url = f"http://{host}:{self.httpd.server_address[1]}"
        self._thread: threading.Thread | None = None

    def start(self) -> DemoServer:
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, name="pingo-demo-site", daemon=True
        )
        self._thread.start()
        logger.info("demo search site serving %s at %s", self.site.images_dir, self.url)
        return self

    def serve_forever(self) -> None:
        logger.info("demo search site serving %s at %s", self.site.images_dir, self.url)
        try:
            self.httpd.serve_forever()
        finally:
            self.httpd.server_close()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        if self._thread:
            self._thread.join(5)

    def __enter__(self) -> DemoServer:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def make_server(
    images_dir: str | Path | None = None, port: int = 0, host: str = "127.0.0.1", **switches
) -> DemoServer:
    """A demo server (not started) over ``images_dir`` (default: the generated demo set)."""
    if images_dir is None:
        from crawler.demo_images import ensure_demo_images

        images_dir = ensure_demo_images()
    return DemoServer(DemoSite(Path(images_dir), **switches), host, port)


def serve_in_thread(
    images_dir: str | Path | None = None, port: int = 0, **switches
) -> tuple[str, Callable[[], None]]:
    """Start the demo site in a background thread; return (base URL, stop function)."""
    server = make_server(images_dir, port, **switches).start()
    return server.url, server.stop
