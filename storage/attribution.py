"""dataset/ATTRIBUTION.md and dataset/attribution.csv: who made each image in the dataset.

Open licences ask whoever passes an image on to credit its creator and name its licence. These
two files say so for every accepted image, from the licence columns the crawler filled (an
image with none says ``unknown``): the Markdown file for people, grouped by class, the CSV for
tools. Both are rewritten whole and atomically by ``write_attribution``, which `pingo
attribution`, `pingo report` and the scheduler's factory job call; they sit beside the class
folders, and `pingo check` knows them.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING

from storage.files import STATUS_DIRS, atomic_write

if TYPE_CHECKING:
    from storage.store import Store

ATTRIBUTION_MD = "ATTRIBUTION.md"
ATTRIBUTION_CSV = "attribution.csv"
FILES = (ATTRIBUTION_MD, ATTRIBUTION_CSV)  # in dataset/, beside the class folders
COLUMNS = (
    "path",
    "class",
    "license",
    "license_url",
    "creator",
    "title",
    "attribution",
    "source",
    "source_url",
    "page_url",
)


def write_attribution(store: Store) -> tuple[Path, Path, int]:
    """Rewrite both files from the accepted images; return their paths and the image count."""
    rows = []
    for image in store.iter_images(status="accepted"):
        rows.append(
            {
                "path": image["path"],
                "class": image["label"] or image["keyword_class"],
                "license": image["license"] or "unknown",
                "license_url": image["license_url"] or "",
                "creator": image["creator"] or "",
                "title": image["title"] or "",
                "attribution": image["attribution"] or "",
                "source": image["source"] or "",
                "source_url": image["source_url"] or "",
                "page_url": image["page_url"] or "",
            }
        )
    folder = store.data_dir / STATUS_DIRS["accepted"]
    folder.mkdir(parents=True, exist_ok=True)
    out = io.StringIO()
    writer = csv.DictWriter(out, COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    csv_path, md_path = folder / ATTRIBUTION_CSV, folder / ATTRIBUTION_MD
    atomic_write(csv_path, out.getvalue())
    atomic_write(md_path, _markdown(rows))
    return md_path, csv_path, len(rows)


def _markdown(rows: list[dict[str, str]]) -> str:
    by_class: dict[str, list[dict[str, str]]] = defaultdict(list)
    for row in rows:
        by_class[row["class"]].append(row)
    lines = [
        "# Attribution",
        "",
        "Credits for the images in this dataset, as their sources gave them. Show the credit",
        "line of every image you pass on. `unknown`: the source said nothing of the licence.",
        "",
    ]
    for name in sorted(by_class):
        lines += [f"## {name}", ""]
        for row in by_class[name]:
            credit = row["attribution"] or f"licence {row['license']}"
            where = row["page_url"] or row["source_url"]
            lines.append(
                f"- `{Path(row['path']).name}`: {_md(credit)}"
                + (f" ([source]({where}))" if where else "")
            )
        lines.append("")
    return "\n".join(lines)


def _md(text: str) -> str:
    return " ".join(text.replace("\\", "\\\\").replace("`", "\\`").split())
