"""Factory limits: bounded memory (index, thumbnail cache) and one pixel limit everywhere."""

from __future__ import annotations

import weakref

import pytest
from factory_helpers import encode, pattern_image
from PIL import Image

from dataset_factory import dedupe
from dataset_factory.cache import BoundedCache
from dataset_factory.dedupe import Deduper, Kept, index_path, open_index
from dataset_factory.hash_pool import Analyser, Job, Settings, analyse
from dataset_factory.index import NearDuplicateIndex
from vision.decode import Limits


class Row(dict):
    """A row dict that can be watched with a weak reference."""

    __slots__ = ("__weakref__",)


def keep_images(store, n: int, start_seed: int = 0) -> list[int]:
    ids = []
    for seed in range(start_seed, start_seed + n):
        data = encode(pattern_image(seed, size=(48, 48)), "PNG")
        image_id = store.add_image(data, keyword_class="cat", source="test", ext="png")
        store.move(image_id, "accepted", label="cat", label_source="keyword")
        ids.append(image_id)
    return ids


def test_open_index_streams_rows_and_holds_only_ids_and_hashes(project, monkeypatch):
    """Never more than a page of kept rows is alive while the index is reconciled (the old
    open_index held a dict per kept image: 2 KB each, 1.9 GiB per million)."""
    monkeypatch.setattr(dedupe, "STREAM_PAGE", 4, raising=False)
    alive: list[weakref.ref] = []
    most = 0

    with project.store() as store:
        ids = keep_images(store, 30)
        real_iter = store.iter_images

        def watched(*args, **kw):
            nonlocal most
            for row in real_iter(*args, **kw):
                row = Row(row)
                alive.append(weakref.ref(row))
                most = max(most, sum(r() is not None for r in alive))
                yield row

        monkeypatch.setattr(store, "iter_images", watched)
        with Analyser(Settings(method="phash"), 1) as analyser:
            # no sidecar yet: every kept image is hashed, a page at a time
            index = open_index(store, analyser, "phash", True)
            assert sorted(index.main.ids.tolist()) == ids
            assert most <= 3 * 4, f"{most} kept rows alive at once"
            assert all(r() is None for r in alive)  # nothing kept after it returns
            # with the sidecar: the same, and the rows are only streamed
            alive.clear()
            most = 0
            store.move(ids[0], "rejected", reason="human_rejected")
            index = open_index(store, analyser, "phash", True)
        assert sorted(index.main.ids.tolist()) == ids[1:]
        assert most <= 3 * 4, f"{most} kept rows alive at once"
        assert index_path(store.data_dir, "phash").exists()
        for array in (index.main, index.views):  # ids and hashes only, as numpy arrays
            assert set(vars(array)) <= {"_ids", "_hashes", "_n", "_scratch"}


def test_bounded_cache_evicts_least_recently_used_by_weight():
    cache = BoundedCache(10, size=len)
    cache["a"] = "xxxx"
    cache["b"] = "xxxx"
    assert cache["a"] == "xxxx"  # a is now the most recently used
    cache["c"] = "xxxx"  # 12 > 10: b goes, not a
    assert "b" not in cache and "a" in cache and "c" in cache
    assert cache.total == 8
    cache["huge"] = "x" * 11  # heavier than the cap: not kept, nothing evicted
    assert "huge" not in cache and len(cache) == 2
    cache.pop("a")
    assert cache.total == 4


def test_deduper_thumbnail_cache_never_exceeds_its_cap(tmp_path):
    """Verifying new images against many kept ones keeps at most the cap's worth of kept
    thumbnails (before, every kept image read for verification stayed cached for the run)."""
    settings = Settings(method="phash", hard=True, timeout=0)
    kept, paths = [], {}
    index = NearDuplicateIndex("phash")
    for seed in range(12):
        path = tmp_path / f"kept{seed}.png"
        pattern_image(seed, size=(64, 64)).save(path)
        a = analyse(Job(seed + 1, str(path)), settings)
        index.add(a.image_id, a.phash, a.views)
        paths[a.image_id] = str(path)
        kept.append((seed, path))
    one_entry = 64 + 7 * 48 * 48 * 4  # thumbnails of one kept image (at most 7 views)
    cap = 3 * one_entry
    deduper = Deduper(
        index,
        max_distance=6,
        hard=True,
        hard_distance=14,
        verify_threshold=0.86,
        lookup=lambda i: Kept(i, 64, 64, False, paths[i]),
        thumb_cache_bytes=cap,
    )
    found = 0
    for n, (seed, path) in enumerate(kept):
        copy = tmp_path / f"copy{seed}.png"
        image = Image.open(path).convert("RGB")
        image.crop((4, 2, 62, 60)).save(copy)  # a crop: verified, not taken on trust
        a = analyse(Job(100 + n, str(copy)), settings)
        verdict = deduper.check(a, Kept(100 + n, 58, 58, False, str(copy)))
        found += verdict.duplicate_of == seed + 1
        assert deduper._thumbs.total <= cap
    assert len(deduper._thumbs) < 5  # older kept images were evicted
    assert found >= 10  # the copies are still found with a small cache


# ---- one pixel limit (factory.max_pixels) for every decoder ----------------------------------

LIMIT = 10_000  # pixels: a 100x100 sign-digits photo is at the limit


@pytest.fixture
def sized(sign_digits, tmp_path):
    """A real photo just over LIMIT (101x100) and one just under it (100x99), as JPEGs."""
    photo = Image.open(sorted((sign_digits / "5").glob("*"))[0]).convert("RGB")
    assert photo.size == (100, 100)
    out = {}
    for name, size in (("over", (101, 100)), ("under", (100, 99))):
        path = tmp_path / f"{name}.jpg"
        photo.resize(size, Image.Resampling.BICUBIC).save(path, "JPEG", quality=92)
        out[name] = path
    return out


def test_an_image_over_factory_max_pixels_is_rejected_with_its_size(project, sized):
    from dataset_factory import process_inbox

    project.write(project.DEFAULT + f"max_pixels = {LIMIT}\n")
    with project.store() as store:
        ids = {
            name: store.add_image(p.read_bytes(), keyword_class="cat", source="test", ext="jpg")
            for name, p in sized.items()
        }
        process_inbox(project.config, store)
        over, under = store.get_image(ids["over"]), store.get_image(ids["under"])
    assert (over["status"], over["reason"]) == ("rejected", "too_many_pixels")
    assert over["path"].startswith("rejected/too_many_pixels/")
    assert under["status"] == "accepted"
    analysis = analyse(
        Job(1, str(sized["over"])), Settings(limits=Limits(max_pixels=LIMIT), timeout=0)
    )
    assert analysis.detail == "101x100 = 10,100 pixels, over factory.max_pixels (10,000)"


def test_every_decoder_uses_the_configured_pixel_limit(sized):
    """Classification, training and the duplicate verifier read images under the limit the
    factory validated them with: the one passed in, never a default of their own."""
    from vision.errors import InvalidImage
    from vision.pixels import load_pixels

    assert load_pixels(str(sized["under"]), 32, LIMIT).shape == (32, 32, 3)
    with pytest.raises(InvalidImage, match="over factory.max_pixels") as info:
        load_pixels(str(sized["over"]), 32, LIMIT)
    assert info.value.reason == "too_many_pixels"
    assert load_pixels(str(sized["under"]), 32, LIMIT).any()
    # a limit above the default is honoured too (the over image is fine at 2x LIMIT)
    assert load_pixels(str(sized["over"]), 32, 2 * LIMIT).shape == (32, 32, 3)

    paths = {1: str(sized["under"]), 2: str(sized["over"])}
    deduper = Deduper(
        NearDuplicateIndex("phash"),
        max_distance=6,
        hard=True,
        hard_distance=14,
        verify_threshold=0.86,
        lookup=lambda i: Kept(i, 100, 100, False, paths[i]),
        max_pixels=LIMIT,
    )
    assert deduper._kept_thumbs(1) and deduper._kept_thumbs(2) == []


def test_decoding_leaves_process_wide_state_alone_and_is_thread_safe(sized):
    """No decoder changes Pillow's global limit or the warnings filters (neither can be
    scoped to one thread: tf.data decodes in many); each call gets its own limit's verdict."""
    import threading
    import warnings

    from vision.decode import decode
    from vision.errors import InvalidImage

    before = (Image.MAX_IMAGE_PIXELS, list(warnings.filters))
    wrong: list[str] = []

    def work(n: int) -> None:
        for i in range(40):
            limit = 9_000 if (n + i) % 2 else 20_000  # "under" has 9,900 pixels
            try:
                decode(sized["under"], Limits(max_pixels=limit))
                ok = True
            except InvalidImage:
                ok = False
            if ok != (limit == 20_000):
                wrong.append(f"limit {limit}: {'accepted' if ok else 'rejected'}")

    threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not wrong, wrong[:5]
    assert (Image.MAX_IMAGE_PIXELS, list(warnings.filters)) == before
