"""Embeddings of a frozen backbone cached per image (trainer.embeddings): computed once, read
back by the next training, keyed by a fingerprint of arch, size and weights, recomputed when
a file is damaged; the model trained on them is still the full image model."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import time

import numpy as np
import pytest
from train_helpers import CLASSES, colour_png

from core.config import TrainConfig
from trainer import embeddings
from trainer.data import Item

pytestmark = pytest.mark.slow

SIZE = 32


def save_donor(path, seed: int = 0, size: int = SIZE) -> str:
    """A random-initialised MobileNetV3Small backbone saved as a weights file (offline)."""
    import keras

    keras.utils.set_random_seed(seed)
    donor = keras.applications.MobileNetV3Small(
        input_shape=(size, size, 3), include_top=False, weights=None, pooling="avg"
    )
    donor.save_weights(path)
    return str(path)


def vector_files(folder) -> dict[str, tuple[int, int]]:
    """Every cached vector: name -> (inode, mtime_ns); a rewrite changes the inode."""
    return {
        p.name: (p.stat().st_ino, p.stat().st_mtime_ns)
        for p in folder.glob(f"{embeddings.FOLDER}/*/*/*.npy")
    }


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    return save_donor(tmp_path_factory.mktemp("donor") / "small.weights.h5")


def make_items(root, n_per_class: int = 3) -> list[Item]:
    items = []
    for label in CLASSES:
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            data = colour_png(label, i)
            path = root / label / f"{i}.png"
            path.write_bytes(data)
            sha = hashlib.sha256(data).hexdigest()
            items.append(Item(str(path), label, sha, sha, "train"))
    return items


def test_the_fingerprint_follows_the_weights_content_arch_and_size(tmp_path, weights_file):
    tc = TrainConfig(arch="mobilenet_v3_small", image_size=SIZE, weights=weights_file)
    copy = shutil.copy(weights_file, tmp_path / "copy.weights.h5")
    other = save_donor(tmp_path / "other.weights.h5", seed=1)
    fp = embeddings.fingerprint(tc)
    assert embeddings.fingerprint(dataclasses.replace(tc, weights=str(copy))) == fp
    different = {
        embeddings.fingerprint(dataclasses.replace(tc, weights=other)),
        embeddings.fingerprint(dataclasses.replace(tc, weights="imagenet")),
        embeddings.fingerprint(dataclasses.replace(tc, image_size=48)),
        embeddings.fingerprint(dataclasses.replace(tc, arch="mobilenet_v3_large")),
    }
    assert fp not in different and len(different) == 4
    with pytest.raises(ValueError, match="need a backbone with weights"):
        embeddings.fingerprint(dataclasses.replace(tc, weights="none"))


def test_embed_computes_once_recomputes_a_damaged_file_and_skips_undecodable(
    tmp_path, weights_file
):
    """Second call: every vector from the cache, none computed. A truncated file and a file
    with the wrong length are computed again (same vector), the rest still read; an
    undecodable image gives a NaN row and no file; a dead run's stale temp file is removed."""
    tc = TrainConfig(arch="mobilenet_v3_small", image_size=SIZE, weights=weights_file)
    items = make_items(tmp_path / "images")
    broken = tmp_path / "images" / "broken.png"
    broken.write_bytes(b"not a png")
    items.append(Item(str(broken), "red", "ab" * 32, "x", "train"))
    cache = tmp_path / "cache"

    first = embeddings.EmbedStats("")
    vectors = embeddings.embed(items, tc, cache, stats=first)
    assert vectors.shape == (10, 576) and vectors.dtype == np.float32
    assert np.isfinite(vectors[:9]).all() and np.isnan(vectors[9]).all()
    assert (first.computed, first.cached, first.unreadable) == (9, 0, 1)
    files = vector_files(cache)
    assert len(files) == 9 and "ab" * 32 + ".npy" not in files

    again = embeddings.EmbedStats("")
    np.testing.assert_array_equal(embeddings.embed(items, tc, cache, stats=again), vectors)
    assert (again.computed, again.cached) == (0, 9)
    assert vector_files(cache) == files

    folder = embeddings.cache_folder(cache, tc)
    truncated = folder / items[0].sha256[:2] / f"{items[0].sha256}.npy"
    truncated.write_bytes(truncated.read_bytes()[:100])
    short = folder / items[1].sha256[:2] / f"{items[1].sha256}.npy"
    np.save(short, vectors[1][:10])
    stale = folder / items[2].sha256[:2] / f".{items[2].sha256}.npy.1.abc.tmp"
    stale.write_bytes(b"half")
    old = time.time() - 2 * embeddings.STALE_TEMP_SECONDS
    os.utime(stale, (old, old))

    repaired = embeddings.EmbedStats("")
    np.testing.assert_allclose(
        embeddings.embed(items, tc, cache, stats=repaired), vectors, rtol=1e-5, atol=1e-6
    )
    assert (repaired.computed, repaired.cached) == (2, 7)
    after = vector_files(cache)
    assert {n for n in after if after[n] != files[n]} == {truncated.name, short.name}
    assert not stale.exists()


def test_training_twice_reuses_the_cache_and_the_model_is_the_full_model(trained):
    """`pingo train` with a weights file: the head trains on embeddings cached under
    data_dir/cache/embeddings; a second training computes none (every file untouched); the
    saved model is the whole image model and loads through vision.model.load_model."""
    import keras

    from trainer.models import BACKBONE_LAYER, embedding_model, head_model
    from vision.model import load_model

    save_donor(trained.root / "small.weights.h5")
    args = ("train", "--force", "--arch", "mobilenet_v3_small", "--weights", "small.weights.h5")
    result = trained.cli(*args, "--epochs", "2")
    assert result.exit_code == 0, result.output
    cache = trained.config.data_dir / "cache"
    files = vector_files(cache)
    with trained.store() as store:
        n_images = len(list(store.iter_images(status="accepted")))
    # train and val images have a vector each; test images are not embedded.
    assert 0 < len(files) < n_images
    assert not (trained.entry("v0002") / "head.weights.h5").exists()

    result = trained.cli(*args, "--epochs", "1")
    assert result.exit_code == 0, result.output
    assert vector_files(cache) == files

    loaded = load_model(trained.entry("v0003"))
    assert loaded.input_shape == (None, SIZE, SIZE, 3)
    pixels = np.random.default_rng(0).integers(0, 256, (4, SIZE, SIZE, 3)).astype("float32")
    probs = loaded.model.predict(pixels, verbose=0)
    assert probs.shape == (4, len(CLASSES))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    # The full model is exactly backbone embedding -> the head trained on the vectors.
    saved = loaded.model
    assert isinstance(saved.get_layer(BACKBONE_LAYER), keras.Model)
    head = head_model(576, len(CLASSES))
    head.get_layer("probs").set_weights(saved.get_layer("probs").get_weights())
    vectors = embedding_model(saved).predict(pixels, verbose=0)
    np.testing.assert_allclose(head.predict(vectors, verbose=0), probs, atol=1e-5)


def test_concurrent_writers_of_one_vector_leave_one_whole_file(tmp_path):
    """Two trainings embedding the same image: each writes its own temp file and renames it,
    so the file is always a whole vector and no temp file is left."""
    from concurrent.futures import ThreadPoolExecutor

    path = tmp_path / "ab" / f"{'ab' * 32}.npy"
    vec = np.arange(576, dtype=np.float32)
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda _: embeddings._save(path, vec), range(40)))
    np.testing.assert_array_equal(embeddings._read(path, 576), vec)
    assert [p.name for p in path.parent.iterdir()] == [path.name]
