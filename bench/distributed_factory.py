"""Factory throughput with 1 vs 2 worker processes on the same inbox, side by side.

The inbox holds real sign-language-digits photos plus planted copies (every 4th photo again,
resized, later in the inbox). Each configuration is run twice on a fresh copy of that inbox:
once with one `process_inbox` worker process, once with two started together (what running
`pingo factory` twice does). Images/s = inbox size / wall time from the start signal until
the last worker exits (interpreter start-up excluded, hashing-pool start included). Both runs
must end with an empty inbox and the same number of kept images, or the bench fails.

Configurations: SQLite and PostgreSQL (when one answers at $PINGO_TEST_PG, default
postgresql://postgres@127.0.0.1/postgres), each with one hashing process per factory worker
(`factory.workers = 1`), and with `--pools 1,0` also the default pool (one hashing process
per core in every worker). Besides images/s it prints CPU time per image (workers and their
hashing processes: the coordination overhead of a second worker) and the share of wall time
the factory lock was held (the serial part, which bounds scaling across machines). On a
machine with fewer free cores than processes, the wall-time ratio mostly measures the
machine, not the design.

    .venv/bin/python bench/distributed_factory.py                 # ~3 min on 2 cores
    .venv/bin/python bench/distributed_factory.py --images 1200 --pools 1,0   # ~13 min
    .venv/bin/python bench/distributed_factory.py --backends sqlite
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

DATASET = REPO.parent / "shared" / "datasets" / "sign-language-digits"
PG_ADMIN_URL = os.environ.get("PINGO_TEST_PG", "postgresql://postgres@127.0.0.1/postgres")

WORKER = textwrap.dedent("""
    import json, sys, time
    from pathlib import Path
    from core.config import load_config
    from storage import Store
    from dataset_factory import process_inbox

    if __name__ == "__main__":
        config = load_config(sys.argv[1])
        ready, go = Path(sys.argv[2]), Path(sys.argv[3])
        with Store.from_config(config) as store:
            ready.touch()
            while not go.exists():
                time.sleep(0.005)
            summary = process_inbox(config, store)
        print(json.dumps(summary.as_json()))
""")


def inbox_files(n: int) -> list[tuple[bytes, str]]:
    """(bytes, ext): n real photos, plus a resized copy of every 4th one after them."""
    import io

    from PIL import Image

    photos = sorted(DATASET.glob("*/*.JPG"))
    photos = random.Random(1).sample(photos, min(n, len(photos)))
    out = [(p.read_bytes(), "jpg") for p in photos]
    for p in photos[::4]:
        buf = io.BytesIO()
        Image.open(p).convert("RGB").resize((80, 80)).save(buf, "JPEG", quality=80)
        out.append((buf.getvalue(), "jpg"))
    return out


class Database:
    """A fresh PostgreSQL database per run, or None for SQLite in data_dir."""

    def __init__(self, backend: str):
        self.backend = backend
        self.name = None

    def __enter__(self) -> str | None:
        if self.backend == "sqlite":
            return None
        from sqlalchemy import create_engine, text

        self.admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        self.name = f"pingo_bench_{uuid.uuid4().hex[:10]}"
        with self.admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{self.name}"'))
        return PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + self.name

    def __exit__(self, *exc):
        if self.name:
            from sqlalchemy import text

            with self.admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))
            self.admin.dispose()


def pg_available() -> bool:
    from sqlalchemy import create_engine, text

    try:
        engine = create_engine(PG_ADMIN_URL)
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        engine.dispose()
        return True
    except Exception:
        return False


def _children_cpu() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_once(files, backend: str, workers: int, pool: int, chunk: int) -> dict:
    from core.config import load_config
    from storage import Store

    with (
        tempfile.TemporaryDirectory(prefix="pingo-bench-dist-") as tmp,
        Database(backend) as db_url,
    ):
        tmp = Path(tmp)
        config_path = tmp / "pingo.toml"
        config_path.write_text(
            textwrap.dedent(f"""
            [project]
            data_dir = "{tmp / "data"}"
            [classes.hand]
            target = 100000
            [factory]
            workers = {pool}
            chunk_size = {chunk}
            """)
            + (f'[storage]\ndb_url = "{db_url}"\n' if db_url else "")
        )
        config = load_config(config_path)
        with Store.from_config(config) as store:
            for data, ext in files:
                store.add_image(data, keyword_class="hand", source="bench", ext=ext)
        script = tmp / "worker.py"
        script.write_text(WORKER)
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        go = tmp / "go"
        procs, ready = [], []
        for i in range(workers):
            ready.append(tmp / f"ready-{i}")
            procs.append(
                subprocess.Popen(
                    [sys.executable, str(script), str(config_path), str(ready[-1]), str(go)],
                    env=env,
                    stdout=subprocess.PIPE,
                    text=True,
                )
            )
        while not all(r.exists() for r in ready):
            if any(p.poll() is not None for p in procs):
                raise SystemExit("a worker died at start")
            time.sleep(0.01)
        cpu0 = _children_cpu()
        start = time.perf_counter()
        go.touch()
        summaries = []
        for p in procs:
            out, _ = p.communicate()
            if p.returncode != 0:
                raise SystemExit(f"a worker failed (exit {p.returncode})")
            summaries.append(json.loads(out.strip().splitlines()[-1]))
        wall = time.perf_counter() - start
        cpu = _children_cpu() - cpu0  # the workers and their hashing processes
        with Store.from_config(config) as store:
            stats = store.stats(config.targets)
        if stats.inbox:
            raise SystemExit(f"{stats.inbox} images left in the inbox")
        return {
            "rate": len(files) / wall,
            "wall": wall,
            "cpu_ms": 1000 * cpu / len(files),
            "kept": stats.classes["hand"]["accepted"] + stats.classes["hand"]["review"],
            "per_worker": [s["processed"] for s in summaries],
            "lock": [(s["lock_wait_s"], s["lock_held_s"], s["deferred"]) for s in summaries],
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=320, help="real photos (copies added)")
    parser.add_argument("--chunk", type=int, default=64, help="factory.chunk_size")
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument(
        "--pools",
        default="1",
        help="factory.workers values (hashing processes per worker; 0 = per core)",
    )
    args = parser.parse_args()
    files = inbox_files(args.images)
    backends = [b for b in args.backends.split(",") if b != "postgresql" or pg_available()]
    print(
        f"inbox: {len(files)} images ({args.images} real photos + resized copies), "
        f"chunk {args.chunk}, {os.cpu_count()} cores"
    )
    print(f"\n  {'configuration':<32} {'1 worker':>9} {'2 workers':>9} {'unit':<12} {'ratio':>6}")
    for backend in backends:
        for pool in (int(p) for p in args.pools.split(",")):
            if pool == 0 and backend != "sqlite":
                continue
            one = run_once(files, backend, 1, pool, args.chunk)
            two = run_once(files, backend, 2, pool, args.chunk)
            if one["kept"] != two["kept"]:
                raise SystemExit(f"kept {one['kept']} with 1 worker but {two['kept']} with 2")
            name = f"{backend}, hashing pool {pool or 'per core'}"
            held1 = sum(h for _, h, _ in one["lock"]) / one["wall"]
            held2 = sum(h for _, h, _ in two["lock"]) / two["wall"]
            for label, a, b, unit, ratio in (
                (name, one["rate"], two["rate"], "img/s", two["rate"] / one["rate"]),
                (
                    "  CPU per image",
                    one["cpu_ms"],
                    two["cpu_ms"],
                    "ms",
                    two["cpu_ms"] / one["cpu_ms"],
                ),
                ("  factory lock held", 100 * held1, 100 * held2, "% of wall", None),
            ):
                print(
                    f"  {label:<32} {a:>9.1f} {b:>9.1f} {unit:<12} "
                    + (f"{ratio:>5.2f}x" if ratio else ""),
                    flush=True,
                )
            print(
                f"    kept {one['kept']} / {two['kept']}; 2-worker split "
                f"{'+'.join(map(str, two['per_worker']))}; wall {one['wall']:.1f}s vs "
                f"{two['wall']:.1f}s; lock (wait s, held s, deferred) {two['lock']}"
            )


if __name__ == "__main__":
    main()
