"""`pingo report`: a self-contained page, checked in a real headless Chromium."""

import json
from pathlib import Path

import pytest
from conftest import png_bytes

from pingo.report import contact_sheet, model_accuracy


def fill_store(project):
    with project.store() as store:
        ids = [
            store.add_image(
                png_bytes((i * 20, 100, 50), (48, 48)),
                keyword_class="cat",
                source="demo",
                ext="png",
                query="cat photo",
            )
            for i in range(6)
        ]
        for i in ids[:3]:
            store.move(i, "accepted", label="cat", label_source="keyword")
        store.move(ids[3], "review", label="dog", label_source="model", confidence=0.4)
        store.move(ids[4], "rejected", reason="duplicate", duplicate_of=ids[0])
        v1, p1 = store.registry.new_version()
        v2, p2 = store.registry.new_version()
        from PIL import Image

        Image.new("RGB", (200, 100), "blue").save(p2 / "seed_cnn_32_2_0.9000_0.3000.png")
        store.registry.record(v1, {"accuracy": 0.61}, "h1", promoted=True, note="first model")
        store.registry.record(v2, {"accuracy": 0.9}, "h2", promoted=False, note="promoted later")
        store.registry.promote(v2)
        store.snapshot_counts(project.config.targets)


@pytest.mark.browser
def test_report_page_renders_offline_with_every_section(project, run_cli, chromium):
    fill_store(project)
    result = run_cli("report")
    assert result.exit_code == 0, result.output
    index = Path(result.stdout.strip())
    assert index == project.data_dir / "reports" / "index.html"
    page = index.read_text()
    assert "http://" not in page and "https://" not in page and "<script" not in page
    chromium.get(index.as_uri())
    body = chromium.find_element("tag name", "body").text
    for needle in ("Classes", "Crawl yield", "Models", "review queue", "cat photo", "v0002"):
        assert needle in body
    assert "16.7%" in body  # duplicate rate of "cat photo": 1 of its 6 images
    images = chromium.execute_script(
        "return Array.from(document.images).map(i => [i.getAttribute('src'), i.naturalWidth])"
    )
    assert len(images) >= 4  # accuracy plot, training plot, two contact sheets
    assert all(width > 0 for _, width in images), images  # every image loads from disk
    shot = project.data_dir / "reports" / "screenshot.png"
    chromium.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000


def test_contact_sheet_skips_unreadable_files(tmp_path):
    good = tmp_path / "a.png"
    good.write_bytes(png_bytes())
    bad = tmp_path / "b.jpg"
    bad.write_bytes(b"<html>not an image</html>")
    assert contact_sheet([good, bad, tmp_path / "missing.png"], tmp_path / "s.jpg") == 1
    assert (tmp_path / "s.jpg").stat().st_size > 0


def test_model_accuracy_reads_flat_and_nested_metrics():
    assert model_accuracy({"accuracy": 0.5}) == 0.5
    assert model_accuracy({"test": {"accuracy": 0.7}}) == 0.7
    assert model_accuracy({"test_accuracy": 0.8}) == 0.8
    assert model_accuracy(None) is None and model_accuracy({"loss": 1}) is None


def test_stats_history_shows_growth_per_day(project, run_cli):
    fill_store(project)
    out = json.loads(run_cli("stats", "--json", "--history").stdout)
    (day,) = out["history"]
    assert out["history"][day]["cat"] == {"accepted": 3, "review": 0}
    assert "accepted per day" in run_cli("stats", "--history").stdout
