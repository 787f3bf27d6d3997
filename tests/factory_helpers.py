"""Builders shared by the factory tests (no tests here): images, hostile files, a tiny model."""

from __future__ import annotations

import io
import json
import random
from pathlib import Path

import numpy as np
from PIL import Image


def pattern_image(seed: int, size=(64, 64), base=(128, 128, 128), amplitude=60) -> Image.Image:
    """A smooth random pattern around ``base`` colour: distinct seeds give distinct hashes."""
    rng = np.random.default_rng(seed)
    noise = rng.integers(-amplitude, amplitude + 1, (6, 6, 3))
    small = np.clip(np.array(base)[None, None, :] + noise, 0, 255).astype("uint8")
    return Image.fromarray(small, "RGB").resize(size, Image.Resampling.BICUBIC)


def encode(image: Image.Image, fmt="JPEG", **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **kw)
    return buf.getvalue()


def jpeg_of(path: Path, edit=None, quality=90) -> bytes:
    im = Image.open(path).convert("RGB")
    return encode(edit(im) if edit else im, "JPEG", quality=quality)


def hostile_files(real_photo: Path) -> dict[str, tuple[bytes, str, str | None]]:
    """name -> (bytes, ext, expected reject reason or None when it must be accepted)."""
    photo = real_photo.read_bytes()
    bomb = encode(Image.new("1", (16000, 16000)), "PNG", optimize=True)
    cmyk = encode(pattern_image(11).convert("CMYK"), "JPEG", quality=90)
    palette = pattern_image(12).convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    palette.info["transparency"] = 0
    frames = [pattern_image(13), pattern_image(14)]
    gif = io.BytesIO()
    frames[0].save(gif, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    sixteen = Image.fromarray(np.asarray(pattern_image(15).convert("L"), np.uint16) * 257)
    assert sixteen.mode == "I;16"
    rng = random.Random(3)
    return {
        "truncated": (photo[: len(photo) // 2], "jpg", "truncated"),
        "empty": (b"", "jpg", "empty"),
        "html": (b"<!doctype html><html><body>Not found</body></html>", "jpg", "undecodable"),
        "random": (bytes(rng.randrange(256) for _ in range(3000)), "jpg", "undecodable"),
        "bomb": (bomb, "png", "too_many_pixels"),
        "tiny_8x8": (encode(pattern_image(16, (8, 8)), "PNG"), "png", "too_small"),
        "banner": (encode(pattern_image(17, (1000, 40)), "PNG"), "png", "bad_aspect"),
        "ppm": (encode(pattern_image(18), "PPM"), "ppm", "unsupported_format"),
        "cmyk": (cmyk, "jpg", None),
        "palette": (encode(palette, "PNG"), "png", None),
        "animated": (gif.getvalue(), "gif", None),
        "sixteen_bit": (encode(sixteen, "PNG"), "png", None),
    }


def save_color_model(
    store, classes=("cat", "dog", "bird"), image_size=16, calibration: dict | None = None
) -> str:
    """Promote a tiny Keras model that predicts from mean colour: red->0, green->1, blue->2.

    Built by hand (no training) so the expected routing is exact: logits = 10 * mean(RGB)/255.
    ``calibration`` is written as the entry's calibration.json when given.
    """
    import keras

    inputs = keras.Input((image_size, image_size, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    dense = keras.layers.Dense(len(classes), activation="softmax")
    outputs = dense(x)
    model = keras.Model(inputs, outputs)
    kernel = np.zeros((3, len(classes)), np.float32)
    for i in range(min(3, len(classes))):
        kernel[i, i] = 10.0
    dense.set_weights([kernel, np.zeros(len(classes), np.float32)])
    version, path = store.registry.new_version()
    model.save(path / "model.keras")
    (path / "classes.json").write_text(json.dumps(list(classes)))
    (path / "config.json").write_text(json.dumps({"image_size": image_size, "arch": "test"}))
    if calibration is not None:
        (path / "calibration.json").write_text(json.dumps(calibration))
    store.registry.promote(version)
    return version


def assert_consistent(store) -> None:
    """Every row has exactly one file at its path, under its status's folder; no other image
    files exist; no move is left pending."""
    from storage.files import STATUS_DIRS

    rows = list(store.iter_images())
    on_disk = {
        p.relative_to(store.data_dir).as_posix()
        for d in STATUS_DIRS.values()
        for p in (store.data_dir / d).rglob("*")
        if p.is_file()
    }
    paths = [r["path"] for r in rows]
    assert len(set(paths)) == len(paths)
    assert set(paths) == on_disk, set(paths) ^ on_disk
    for r in rows:
        assert r["path"].startswith(STATUS_DIRS[r["status"]] + "/"), (
            r["id"],
            r["status"],
            r["path"],
        )
    from sqlalchemy import func, select

    from storage.schema import pending_moves

    with store.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(pending_moves)).scalar() == 0


def plant_intent(
    store,
    image_id: int,
    *,
    owner: str,
    kind: str = "move",
    src: str = "x",
    dst: str = "x",
    changes: dict | None = None,
    created_at=None,
) -> None:
    """A move (or add) intent as a process leaves it mid-way: a row in pending_moves that the
    test then lets the owner finish, or lets storage find dead and repair."""
    from sqlalchemy import insert

    from storage.schema import pending_moves
    from storage.store import utcnow

    with store.engine.begin() as conn:
        conn.execute(
            insert(pending_moves).values(
                image_id=image_id,
                kind=kind,
                src=src,
                dst=dst,
                changes=changes or {},
                owner=owner,
                created_at=created_at or utcnow(),
            )
        )
