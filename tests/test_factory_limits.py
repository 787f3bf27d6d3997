"""Factory limits: bounded memory (index, thumbnail cache) and one pixel limit everywhere."""

from __future__ import annotations

import weakref

import pytest
from PIL import Image

from dataset_factory import dedupe
from dataset_factory.analyse import Analyser, Job, Settings, analyse
from dataset_factory.cache import BoundedCache
from dataset_factory.dedupe import Deduper, Kept, index_path, open_index
from dataset_factory.index import NearDuplicateIndex
from test_factory_helpers import encode, pattern_image


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
    assert cache["a"] == "xxxx"       # a is now the most recently used
    cache["c"] = "xxxx"               # 12 > 10: b goes, not a
    assert "b" not in cache and "a" in cache and "c" in cache
    assert cache.total == 8
    cache["huge"] = "x" * 11          # heavier than the cap: not kept, nothing evicted
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
    one_entry = 64 + 7 * 48 * 48 * 4   # thumbnails of one kept image (at most 7 views)
    cap = 3 * one_entry
    deduper = Deduper(index, max_distance=6, hard=True, hard_distance=14, verify_threshold=0.86,
                      lookup=lambda i: Kept(i, 64, 64, False, paths[i]),
                      thumb_cache_bytes=cap)
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
