"""A small real HTTP server on 127.0.0.1 serving the recorded Openverse and Wikimedia answers.

Routes (``{base}`` in the JSON files is this server's URL, ``{q}`` the url-quoted keyword, so
every keyword gets its own image URLs):

* ``GET /openverse/v1/images/?q=&page=&page_size=&license=``: ``openverse_images_page<N>.json``,
  with results outside ``license`` left out, as the API does; 400 past the last page;
* ``POST /openverse/v1/auth_tokens/token/``: ``openverse_token.json`` for the client
  credentials in ``clients``, 401 otherwise;
* ``GET /wikimedia/w/api.php?...&gsroffset=N``: ``wikimedia_search_<N>.json``;
* ``GET /img/...png``: a 32x32 PNG whose colour is drawn from the path (each URL its own bytes).

``faults`` is a list of (path prefix, status, headers, body): the next request under that
prefix gets the first matching one instead (then it is gone). Every request is logged in
``requests`` with its time, path, decoded parameters and headers.
"""

from __future__ import annotations

import hashlib
import io
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlsplit

from core.licenses import family, normalise

FIXTURES = Path(__file__).resolve().parent


@dataclass
class Seen:
    at: float
    method: str
    path: str
    params: dict[str, str]
    headers: dict[str, str]


@dataclass
class ApiServer:
    httpd: ThreadingHTTPServer
    url: str
    requests: list[Seen] = field(default_factory=list)
    faults: list[tuple[str, int, dict[str, str], bytes]] = field(default_factory=list)
    clients: dict[str, str] = field(default_factory=dict)  # client_id -> secret
    lock: threading.Lock = field(default_factory=threading.Lock)

    def seen(self, prefix: str) -> list[Seen]:
        with self.lock:
            return [r for r in self.requests if r.path.startswith(prefix)]

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def png(seed: str) -> bytes:
    from PIL import Image

    digest = hashlib.sha256(seed.encode()).digest()
    image = Image.new("RGB", (32, 32), tuple(digest[:3]))
    image.putpixel((0, 0), tuple(digest[3:6]))
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def fixture(name: str, base: str, keyword: str) -> dict:
    text = (FIXTURES / name).read_text(encoding="utf-8")
    return json.loads(text.replace("{base}", base).replace("{q}", quote(keyword, safe="")))


class _Handler(BaseHTTPRequestHandler):
    server_state: ApiServer

    def log_message(self, *args) -> None:  # quiet
        pass

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
        self._handle("POST", form)

    def do_GET(self) -> None:
        self._handle("GET", {})

    def _handle(self, method: str, form: dict[str, str]) -> None:
        state = self.server_state
        url = urlsplit(self.path)
        path = unquote(url.path)
        params = {k: v[0] for k, v in parse_qs(url.query).items()}
        with state.lock:
            state.requests.append(
                Seen(time.monotonic(), method, path, {**params, **form}, dict(self.headers))
            )
            fault = next((f for f in state.faults if path.startswith(f[0])), None)
            if fault is not None:
                state.faults.remove(fault)
        if fault is not None:
            return self._send(fault[1], fault[3], "application/json", fault[2])
        if path.startswith("/img/"):
            return self._send(200, png(path), "image/png")
        if path == "/openverse/v1/auth_tokens/token/" and method == "POST":
            ok = form.get("grant_type") == "client_credentials" and state.clients.get(
                form.get("client_id", "")
            ) == form.get("client_secret")
            if not ok:
                return self._json(401, {"error": "invalid_client"})
            return self._json(200, fixture("openverse_token.json", state.url, ""))
        if path == "/openverse/v1/images/":
            return self._openverse(params)
        if path == "/wikimedia/w/api.php":
            name = f"wikimedia_search_{params.get('gsroffset', '0')}.json"
            if not (FIXTURES / name).exists():
                return self._json(200, {"batchcomplete": True, "query": {"pages": []}})
            return self._json(200, fixture(name, state.url, params.get("gsrsearch", "")))
        return self._send(404, b"not found", "text/plain")

    def _openverse(self, params: dict[str, str]) -> None:
        name = f"openverse_images_page{params.get('page', '1')}.json"
        if not (FIXTURES / name).exists():
            return self._json(400, {"detail": {"page": ["Invalid page."]}})
        data = fixture(name, self.server_state.url, params.get("q", ""))
        wanted = params.get("license")
        if wanted:
            keep = set(wanted.split(","))
            data["results"] = [
                r
                for r in data["results"]
                if family(normalise(r["license"], r["license_version"])) in keep
            ]
        return self._json(200, data)

    def _json(self, status: int, data: dict) -> None:
        self._send(status, json.dumps(data).encode(), "application/json")

    def _send(self, status: int, body: bytes, ctype: str, headers: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)


def start_server() -> ApiServer:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    state = ApiServer(httpd, f"http://127.0.0.1:{httpd.server_address[1]}")
    httpd.RequestHandlerClass = type("Handler", (_Handler,), {"server_state": state})
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return state
