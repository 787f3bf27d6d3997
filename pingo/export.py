"""`pingo export`: the labelled images in a layout another library loads directly.

Formats: ``imagefolder`` (train/ val/ test/<class>/ for Keras), ``hf`` (Hugging Face
imagefolder with metadata.jsonl), ``tfrecord`` (sharded tf.train.Example files), ``csv`` and
``jsonl`` (one row per image with its provenance). Every format holds the image files
themselves, hard-linked from the store when DIR is on the same filesystem, else copied; the
store is only read. The split is the trainer's own content-hash split (trainer.split) with
the config's fractions, so an exported train/val/test equals what the trainer uses.
"""

from __future__ import annotations

import csv
import errno
import json
import logging
import os
import shutil
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.errors import PingoError
from storage import Store
from trainer.split import SPLITS, assign_split, group_key

logger = logging.getLogger(__name__)

FORMATS = ("imagefolder", "csv", "jsonl", "hf", "tfrecord")
STATUSES = ("accepted", "review", "all")  # all: accepted and review (every labelled image)
# Provenance columns of csv/jsonl/hf metadata, in this order after file_name, label (and split).
PROVENANCE = (
    "id",
    "sha256",
    "status",
    "label_source",
    "keyword_class",
    "source",
    "source_url",
    "page_url",
    "license",
    "license_url",
    "creator",
    "attribution",
    "title",
)
SHARD_SIZE = 1000  # images per TFRecord shard


class ExportError(PingoError):
    """An export was refused (DIR not empty, DIR is a file, nothing to export ...)."""


@dataclass
class ExportItem:
    row: dict[str, Any]
    src: Path
    label: str
    split: str  # train / val / test

    @property
    def file_name(self) -> str:
        """The stored name (content hash + extension): stable across re-exports."""
        return self.src.name


@dataclass
class ExportResult:
    out_dir: Path
    format: str
    classes: list[str]
    counts: dict[str, Counter[str]] = field(default_factory=dict)  # split -> label -> images
    missing: int = 0  # rows whose file is gone: skipped
    linked: int = 0
    copied: int = 0

    @property
    def total(self) -> int:
        return sum(sum(c.values()) for c in self.counts.values())


def plan_export(
    store: Store,
    status: str,
    val_fraction: float,
    test_fraction: float,
) -> tuple[list[ExportItem], int]:
    """The rows to export with their split, and how many were skipped for a missing file."""
    if status not in STATUSES:
        raise ExportError(f"unknown status {status!r}: one of {', '.join(STATUSES)}")
    statuses = ("accepted", "review") if status == "all" else (status,)
    items: list[ExportItem] = []
    missing = 0
    for st in statuses:
        for row in store.iter_images(status=st):
            path = store.abspath(row["path"]) if row["path"] else None
            if path is None or not path.is_file():
                missing += 1
                logger.warning("image %s: file %s is missing; not exported", row["id"], path)
                continue
            key = group_key(row["sha256"], row["phash"], row["hash_method"])
            items.append(
                ExportItem(
                    row,
                    path,
                    row["label"] or row["keyword_class"],
                    assign_split(key, val_fraction, test_fraction),
                )
            )
    return items, missing


def export(
    store: Store,
    out_dir: str | Path,
    fmt: str,
    *,
    status: str = "accepted",
    split: bool = False,
    val_fraction: float,
    test_fraction: float,
    classes: Iterable[str] = (),
    force: bool = False,
    shard_size: int = SHARD_SIZE,
    progress: Callable[[int], Any] | None = None,
    total: Callable[[int], Any] | None = None,
) -> ExportResult:
    """Write the ``status`` images to ``out_dir`` in format ``fmt``.

    ``out_dir`` must be missing or empty unless ``force`` (then files of the same name are
    replaced and nothing else there is touched). ``classes`` (the config's) are listed even
    when they have no image, so class indices agree across splits and exports. ``total`` is
    called once with the number of images, ``progress`` with 1 per image written.
    """
    if fmt not in FORMATS:
        raise ExportError(f"unknown format {fmt!r}: one of {', '.join(FORMATS)}")
    out = Path(out_dir)
    _check_out_dir(out, force)
    items, missing = plan_export(store, status, val_fraction, test_fraction)
    if missing:
        logger.warning("%d image(s) skipped: their file is missing (run `pingo check`)", missing)
    names = sorted(set(classes) | {i.label for i in items})
    result = ExportResult(out, fmt, names, missing=missing)
    result.counts = {s: Counter() for s in SPLITS}
    for item in items:
        result.counts[item.split][item.label] += 1
    if total:
        total(len(items))
    out.mkdir(parents=True, exist_ok=True)
    tick = progress or (lambda n: None)
    if fmt == "imagefolder":
        _write_imagefolder(items, out, names, result, tick)
    elif fmt == "hf":
        _write_hf(items, out, names, split, result, tick)
    elif fmt == "tfrecord":
        _write_tfrecord(items, out, names, shard_size, tick)
    else:
        _write_table(items, out, fmt, split, result, tick)
    if fmt != "tfrecord":
        (out / "classes.txt").write_text("".join(f"{n}\n" for n in names), encoding="utf-8")
    logger.info(
        "exported %d images as %s to %s (%d linked, %d copied, %d missing)",
        result.total,
        fmt,
        out,
        result.linked,
        result.copied,
        missing,
    )
    return result


def _check_out_dir(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise ExportError(f"{out} is not empty: choose an empty or new directory, or --force")


def place(src: Path, dest: Path, result: ExportResult) -> None:
    """Hard-link ``src`` at ``dest`` (same filesystem), else copy it; never move it."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists() or dest.is_symlink():
        dest.unlink()  # --force: replace our own earlier export, never write through a link
    try:
        os.link(src, dest)
        result.linked += 1
        return
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EACCES, errno.EMLINK, errno.ENOTSUP):
            raise
    shutil.copy2(src, dest)
    result.copied += 1


def _write_imagefolder(items, out: Path, names, result, tick) -> None:
    # every class folder in every split, so keras infers the same class indices for each split
    for s in SPLITS:
        for name in names:
            (out / s / name).mkdir(parents=True, exist_ok=True)
    for item in items:
        place(item.src, out / item.split / item.label / item.file_name, result)
        tick(1)


def _record(item: ExportItem, file_name: str, with_split: bool) -> dict[str, Any]:
    rec: dict[str, Any] = {"file_name": file_name, "label": item.label}
    if with_split:
        rec["split"] = item.split
    rec.update({k: item.row.get(k) for k in PROVENANCE})
    return rec


def _write_hf(items, out: Path, names, split: bool, result, tick) -> None:
    """One metadata.jsonl per split folder (file_name relative to it), or one at the root."""
    per_folder: dict[Path, list[dict[str, Any]]] = {}
    for item in items:
        folder = out / item.split if split else out
        file_name = f"{item.label}/{item.file_name}"
        place(item.src, folder / file_name, result)
        per_folder.setdefault(folder, []).append(_record(item, file_name, False))
        tick(1)
    for folder, records in per_folder.items():
        _write_jsonl(folder / "metadata.jsonl", records)


def _write_table(items, out: Path, fmt: str, split: bool, result, tick) -> None:
    """images/<class>/<file> plus images.csv or images.jsonl, file_name relative to DIR."""
    records = []
    for item in items:
        file_name = f"images/{item.label}/{item.file_name}"
        place(item.src, out / file_name, result)
        records.append(_record(item, file_name, split))
        tick(1)
    if fmt == "jsonl":
        _write_jsonl(out / "images.jsonl", records)
        return
    columns = ["file_name", "label", *(["split"] if split else []), *PROVENANCE]
    with open(out / "images.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows(records)


def _write_jsonl(path: Path, records: Sequence[dict[str, Any]]) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        for rec in records:
            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")


def _write_tfrecord(items, out: Path, names, shard_size: int, tick) -> None:
    """<split>-NNNNN-of-MMMMM.tfrecord shards of tf.train.Example, plus classes.json."""
    import tensorflow as tf  # only this format needs it, and it is slow to import

    index = {n: i for i, n in enumerate(names)}
    shards_written: dict[str, int] = {}
    for s in SPLITS:
        part = [i for i in items if i.split == s]
        n_shards = max(1, -(-len(part) // shard_size)) if part else 0
        shards_written[s] = n_shards
        for k in range(n_shards):
            path = out / f"{s}-{k:05d}-of-{n_shards:05d}.tfrecord"
            with tf.io.TFRecordWriter(str(path)) as writer:
                for item in part[k * shard_size : (k + 1) * shard_size]:
                    writer.write(_example(tf, item, index[item.label]).SerializeToString())
                    tick(1)
    meta = {"classes": names, "shards": shards_written, "features": list(TFRECORD_FEATURES)}
    (out / "classes.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")


TFRECORD_FEATURES = (
    "image/encoded",
    "image/format",
    "image/class/label",
    "image/class/text",
    "image/sha256",
)


def _example(tf, item: ExportItem, label_index: int):
    def b(value: str | bytes):
        data = value.encode("utf-8") if isinstance(value, str) else value
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[data]))

    feature = {
        "image/encoded": b(item.src.read_bytes()),
        "image/format": b(item.src.suffix.lstrip(".").lower()),
        "image/class/label": tf.train.Feature(int64_list=tf.train.Int64List(value=[label_index])),
        "image/class/text": b(item.label),
        "image/sha256": b(item.row["sha256"]),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature))
