"""The factory's fast paths (issue 14) give the answers of their plain forms.

The verifier's batched scores (cumulative sums + FFT + the half-resolution pre-check) against
the per-shift normalised correlation written out; the hashing shortcuts (one grayscale pass,
mirrors by flipping) against imagehash and the mirrored image; a chunk hashed ahead while
another is decided, through a worker death, and ``--limit`` with chunks taken ahead.
"""

from __future__ import annotations

import os
import signal

import imagehash
import numpy as np
import pytest
from factory_helpers import jpeg_of
from PIL import Image, ImageEnhance, ImageOps

from dataset_factory.hash_pool import Analyser, Job, Settings
from dataset_factory.hashing import all_hashes, to_signed
from dataset_factory.verify import PREFILTER, best_correlation, image_thumbs, similarities
from vision.decode import decode

THRESHOLD = 0.86  # factory.verify_threshold's default


def reference(query: list[np.ndarray], kept: list[np.ndarray], radius: int = 4) -> float:
    """Best correlation over shifts, each overlap normalised on its own (the plain loop)."""
    n = query[0].shape[0]
    best = -1.0
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            qy = slice(max(dy, 0), n + min(dy, 0))
            ky = slice(max(-dy, 0), n - max(dy, 0))
            qx = slice(max(dx, 0), n + min(dx, 0))
            kx = slice(max(-dx, 0), n - max(dx, 0))
            for q in query:
                a = q[qy, qx].astype(np.float64).ravel()
                a = a - a.mean()
                a /= max(np.linalg.norm(a), 1e-6)
                for k in kept:
                    b = k[ky, kx].astype(np.float64).ravel()
                    b = b - b.mean()
                    b /= max(np.linalg.norm(b), 1e-6)
                    best = max(best, float(a @ b))
    return best


def _crop(im: Image.Image, left=0.0, top=0.0, right=0.0, bottom=0.0) -> Image.Image:
    w, h = im.size
    return im.crop(
        (round(w * left), round(h * top), round(w * (1 - right)), round(h * (1 - bottom)))
    )


EDITS = {
    "crop": lambda im: _crop(im, 0.06, 0.0, 0.02, 0.04),
    "mirror": ImageOps.mirror,
    "brighter": lambda im: ImageEnhance.Brightness(im).enhance(1.3),
}


@pytest.fixture(scope="module")
def photos(sign_digits):
    """Two real photos of each of three classes: same background, different hands."""
    paths = [p for c in ("1", "4", "7") for p in sorted((sign_digits / c).glob("*"))[:2]]
    return [decode(p).image for p in paths]


def test_batched_scores_equal_the_per_shift_loop(photos):
    originals = photos[:4]
    copies = [EDITS[name](originals[i % 4]) for i, name in enumerate([*EDITS, "crop"])]
    kept = [image_thumbs(im).kept for im in originals]
    for copy in copies:
        query = image_thumbs(copy).query
        want = [reference(query, k) for k in kept]
        got = [float(best_correlation(np.stack(query), np.stack(k), 4).max()) for k in kept]
        assert got == pytest.approx(want, abs=1e-4)


def test_the_cheap_check_clears_only_what_the_full_check_would_refuse(photos):
    """Copies keep their full score; a pair the half-resolution check clears scores below the
    threshold in full too, and is reported below PREFILTER."""
    kept = [image_thumbs(im).kept for im in photos]
    cleared = 0
    for i, original in enumerate(photos):
        for name, edit in EDITS.items():
            query = image_thumbs(edit(original)).query
            got = similarities(query, kept)
            for j, k in enumerate(kept):
                want = reference(query, k)
                if i == j:  # its own original: a copy, scored in full
                    assert got[j] == pytest.approx(want, abs=1e-4), name
                elif abs(got[j] - want) > 1e-4:
                    cleared += 1
                    assert got[j] < PREFILTER and want < THRESHOLD, name
    assert cleared  # distinct photos of one background were cleared cheaply


def test_the_main_hash_is_imagehash_phash_and_mirrors_are_the_mirrored_image(photos):
    def bits(a: int, b: int) -> int:
        return ((a ^ b) & 0xFFFFFFFFFFFFFFFF).bit_count()

    for im in photos:
        hashed = all_hashes(im)
        assert hashed.main == to_signed(int(str(imagehash.phash(im)), 16))
        mirrored = all_hashes(ImageOps.mirror(im))
        # the query's mirrored views are the views of the mirrored photo
        for h in mirrored.stored:
            assert min(bits(h, m) for m in hashed.mirrored + hashed.stored) <= 2


def test_a_chunk_hashed_ahead_survives_a_worker_death(sign_digits, caplog):
    """The next chunk is queued while this one is being answered; a worker killed meanwhile
    costs neither chunk an image."""
    paths = sorted((sign_digits / "3").glob("*"))[:60]
    jobs = [Job(i, str(p)) for i, p in enumerate(paths)]
    with Analyser(Settings(), workers=2) as analyser:
        list(analyser.run(jobs[:1]))  # start the pool
        workers = list(analyser._pool._processes)
        first = analyser.submit(jobs[1:30])
        second = analyser.submit(jobs[30:])
        results = []
        for n, result in enumerate(first.results()):
            if n == 0:
                os.kill(workers[0], signal.SIGKILL)
            results.append(result)
        results += list(second.results())
    assert "a hashing worker died" in caplog.text
    assert [r.image_id for r in results] == list(range(1, len(paths)))
    assert all(r.ok and r.phash is not None and r.kept_thumbs for r in results)


def test_limit_with_chunks_taken_ahead_files_exactly_the_limit(project, sign_digits):
    from dataset_factory import process_inbox

    paths = sorted((sign_digits / "2").glob("*"))[:9]
    with project.store() as store:
        for p in paths:
            store.add_image(jpeg_of(p), keyword_class="cat", source="t", ext="jpg")
        summary = process_inbox(project.config, store, limit=5, chunk_size=2)
        assert summary.processed == 5
        assert store.inbox_counts() == {"cat": 4}
        # nothing stays leased to the finished run: the next one takes the rest at once
        summary = process_inbox(project.config, store, chunk_size=2, lease_seconds=3600)
        assert summary.processed == 4
        assert sum(store.inbox_counts().values()) == 0
