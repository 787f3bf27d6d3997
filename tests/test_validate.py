"""Validation: hostile files end in rejected/<reason>/, odd-but-valid images are accepted."""

from __future__ import annotations

import pytest
from factory_helpers import assert_consistent, encode, hostile_files, pattern_image
from PIL import Image

from dataset_factory import process_inbox
from vision.decode import Limits, decode
from vision.errors import InvalidImage


@pytest.fixture(scope="module")
def hostile(sign_digits):
    return hostile_files(sorted((sign_digits / "3").glob("*"))[0])


def test_decode_names_the_reason_for_each_hostile_file(hostile, tmp_path):
    for name, (data, ext, expected) in hostile.items():
        path = tmp_path / f"{name}.{ext}"
        path.write_bytes(data)
        if expected is None:
            decoded = decode(path)
            assert decoded.image.mode == "RGB", name
            assert (decoded.width, decoded.height) == (64, 64), name
        else:
            with pytest.raises(InvalidImage) as info:
                decode(path)
            assert info.value.reason == expected, (name, str(info.value))


def test_exif_orientation_is_applied(tmp_path):
    image = pattern_image(1, (80, 40))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    path = tmp_path / "rotated.jpg"
    path.write_bytes(encode(image, "JPEG", exif=exif.tobytes()))
    decoded = decode(path)
    assert (decoded.width, decoded.height) == (40, 80)
    assert decoded.image.size[0] < decoded.image.size[1]


def test_transparent_palette_is_composited_on_white(tmp_path):
    image = Image.new("P", (40, 40), 0)
    image.putpalette([0, 0, 0] * 256)
    image.info["transparency"] = 0
    path = tmp_path / "clear.png"
    image.save(path)
    assert decode(path).image.getpixel((5, 5)) == (255, 255, 255)


def test_large_jpeg_is_decoded_small_but_reports_its_true_size(tmp_path):
    path = tmp_path / "big.jpg"
    path.write_bytes(encode(pattern_image(2, (1600, 1200)), "JPEG"))
    decoded = decode(path)
    assert (decoded.width, decoded.height) == (1600, 1200)
    assert max(decoded.image.size) <= 400  # draft mode: libjpeg scaled while decoding


def test_pixel_limit_is_configurable(tmp_path):
    path = tmp_path / "big.png"
    path.write_bytes(encode(pattern_image(3, (600, 600)), "PNG"))
    with pytest.raises(InvalidImage) as info:
        decode(path, Limits(max_pixels=100_000))
    assert info.value.reason == "too_many_pixels"


def test_hostile_set_ends_in_the_right_places(project, hostile):
    project.write(project.DEFAULT + "workers = 2\n")
    config = project.config
    with project.store() as store:
        ids = {
            name: store.add_image(data, keyword_class="cat", source="test", ext=ext)
            for name, (data, ext, _) in hostile.items()
        }
        summary = process_inbox(config, store)
        for name, (_, _, expected) in hostile.items():
            row = store.get_image(ids[name])
            if expected is None:
                assert (row["status"], row["label"], row["label_source"]) == (
                    "accepted",
                    "cat",
                    "keyword",
                ), name
                assert row["phash"] is not None and row["hash_method"] == "phash"
            else:
                assert (row["status"], row["reason"]) == ("rejected", expected), name
                assert store.abspath(row["path"]).parent.name == expected
        assert summary.processed == len(hostile)
        assert summary.totals("cat")["accepted"] == 4
        assert_consistent(store)


def test_a_slow_decode_is_cut_off_by_the_time_bound(project):
    from PIL import Image

    project.write(project.DEFAULT + "decode_timeout = 1.0\n")
    big = Image.linear_gradient("L").resize((8000, 4000))
    with project.store() as store:
        slow = store.add_image(
            encode(big, "PNG", compress_level=1), keyword_class="cat", source="t", ext="png"
        )
        fine = store.add_image(
            encode(pattern_image(7), "PNG"), keyword_class="cat", source="t", ext="png"
        )
        process_inbox(project.config, store)
        assert (store.get_image(slow)["status"], store.get_image(slow)["reason"]) == (
            "rejected",
            "decode_timeout",
        )
        assert store.get_image(fine)["status"] == "accepted"


def test_a_worker_killed_mid_run_costs_no_image(tmp_path, sign_digits, caplog):
    """An OOM kill of a hashing worker: the pool is rebuilt and every file still answered."""
    import os
    import signal

    from dataset_factory.hash_pool import Analyser, Job, Settings

    paths = sorted((sign_digits / "5").glob("*"))[:80]
    with Analyser(Settings(), workers=2) as analyser:
        results = []
        jobs = [Job(i, str(p)) for i, p in enumerate(paths)]

        for result in analyser.run(jobs[:2]):  # start the pool
            results.append(result)
        workers = list(analyser._pool._processes)
        for n, result in enumerate(analyser.run(jobs[2:])):
            if n == 0:  # the rest is queued or in flight: kill one worker now
                os.kill(workers[0], signal.SIGKILL)
            results.append(result)
    assert "a hashing worker died" in caplog.text
    assert [r.image_id for r in results] == list(range(len(paths)))
    assert all(r.ok and r.phash is not None for r in results)
