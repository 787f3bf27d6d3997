"""The demo search site over real HTTP on 127.0.0.1 (no browser needed)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from crawler.demo_images import CLASSES, draw, ensure_demo_images
from crawler.demo_site import FAULTS, make_server
from crawler.errors import DemoSiteError


def get(url: str):
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.headers.get("Content-Type"), r.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers.get("Content-Type"), err.read()


@pytest.fixture(scope="module")
def demo_images(tmp_path_factory):
    return ensure_demo_images(tmp_path_factory.mktemp("cache"), count=20, size=48)


@pytest.fixture(scope="module")
def site(demo_images):
    with make_server(demo_images, faults=True).start() as server:
        yield server


def test_generated_set_is_deterministic_and_distinct(demo_images, tmp_path):
    again = ensure_demo_images(tmp_path, count=20, size=48)
    for name in CLASSES:
        files = sorted((demo_images / name).iterdir())
        assert len(files) == 20
        assert [f.read_bytes() for f in files] == [
            f.read_bytes() for f in sorted((again / name).iterdir())
        ]
        assert len({f.read_bytes() for f in files}) == 20
    assert draw("circle", 3, 48) != draw("square", 3, 48)


def test_generated_images_are_mostly_perceptually_distinct(demo_images):
    import imagehash
    from PIL import Image

    hashes = [
        imagehash.phash(Image.open(f))
        for name in CLASSES
        for f in sorted((demo_images / name).iterdir())
    ]
    close = sum(1 for i, a in enumerate(hashes) for b in hashes[i + 1 :] if a - b <= 6)
    assert close <= len(hashes) // 10, "the factory would drop many demo images as near duplicates"


def test_query_returns_folders_named_as_words(site):
    def total(q):
        return json.loads(get(f"{site.url}/api/search?q={q}")[2])["total"] - len(FAULTS)

    assert total("circle") == 20
    assert total("red+circle+or+square") == 40
    assert total("circles") == 0  # a word must match the folder name exactly
    assert total("CIRCLE") == 20


def test_results_page_is_script_driven_and_paged(site):
    status, ctype, body = get(f"{site.url}/search?q=triangle")
    assert status == 200 and ctype.startswith("text/html")
    assert b'id="results"></div>' in body and b"/api/search" in body  # empty until JS runs
    pages = [
        json.loads(get(f"{site.url}/api/search?q=triangle&start={s}&count=12")[2])
        for s in (0, 12, 24, 36)
    ]
    total = 20 + len(FAULTS)  # the broken results come first
    assert [len(p["results"]) for p in pages] == [12, 12, total - 24, 0]
    urls = [r["full"] for p in pages for r in p["results"]]
    assert len(urls) == len(set(urls)) == 20 + len(FAULTS)


def test_full_size_images_are_the_original_bytes(site, demo_images):
    status, ctype, body = get(f"{site.url}/image/square/square_004.png")
    assert (status, ctype) == (200, "image/png")
    assert body == (demo_images / "square" / "square_004.png").read_bytes()
    assert get(f"{site.url}/image/square/nope.png")[0] == 404
    assert get(f"{site.url}/image/..%2F..%2Fetc/passwd")[0] == 404


def test_robots_and_faults(site):
    assert b"Disallow: /private/" in get(f"{site.url}/robots.txt")[2]
    assert get(f"{site.url}/fault/404.png")[0] == 404
    assert get(f"{site.url}/fault/500.png")[0] == 500
    assert get(f"{site.url}/search?q=circle+http500")[0] == 500
    status, ctype, body = get(f"{site.url}/fault/notimage.png")
    assert status == 200 and not ctype.startswith("image/")


def test_serves_any_folder_of_class_subfolders(sign_digits):
    with make_server(sign_digits).start() as server:
        data = json.loads(get(f"{server.url}/api/search?q=sign+7&count=100")[2])
        assert data["total"] == len(list((sign_digits / "7").glob("*.JPG")))
        status, ctype, body = get(server.url + data["results"][0]["full"])
        assert status == 200 and ctype == "image/jpeg" and body[:2] == b"\xff\xd8"


def test_missing_or_empty_folder_is_a_named_error(tmp_path):
    with pytest.raises(DemoSiteError, match="no image folder"):
        make_server(tmp_path / "missing")
    (tmp_path / "empty" / "cat").mkdir(parents=True)
    with pytest.raises(DemoSiteError, match="no class subfolders"):
        make_server(tmp_path / "empty")


def test_cli_refuses_a_missing_folder(run_cli, tmp_path):
    result = run_cli("demo-site", "--images", str(tmp_path / "missing"))
    assert result.exit_code == 2 and "does not exist" in result.output


def test_serve_in_thread_starts_and_stops(demo_images):
    from crawler.demo_site import serve_in_thread

    url, stop = serve_in_thread(demo_images, port=0)
    assert url.startswith("http://127.0.0.1:") and get(f"{url}/robots.txt")[0] == 200
    stop()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"{url}/robots.txt", timeout=2)
