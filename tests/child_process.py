"""Python children for the tests that stop one the hard way (kill -9, Ctrl-C, SIGTERM).

Each test writes what its child does as a short script; ``start_script`` (or ``run_script``,
which waits) writes it to a file and runs it with this checkout and tests/ first on the path, so
the child imports the code under test as the suite does, and multiprocessing workers (the
factory's hashing pool) can re-import it: keep a script's work under ``if __name__ ==
"__main__":`` when it starts such workers.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def child_env() -> dict[str, str]:
    """This process's environment with the checkout and tests/ first on PYTHONPATH."""
    paths = [str(REPO), str(REPO / "tests"), os.environ.get("PYTHONPATH", "")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}


def script_file(folder: Path, source: str) -> Path:
    """``source`` (dedented) as ``folder/child-<hash>.py``; the same source is written once, so
    several children may start from one file."""
    text = textwrap.dedent(source)
    path = Path(folder) / f"child-{hashlib.sha256(text.encode()).hexdigest()[:12]}.py"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return path


def start_script(folder: Path, source: str, *args: str, **popen: Any) -> subprocess.Popen:
    """Start ``python <source written to folder> args...``; ``popen`` goes to subprocess.Popen
    (stdout=subprocess.PIPE, start_new_session=True to kill its process group, ...)."""
    return subprocess.Popen(
        [sys.executable, str(script_file(folder, source)), *args], env=child_env(), **popen
    )


def run_script(folder: Path, source: str, *args: str, **run: Any) -> subprocess.CompletedProcess:
    """``start_script`` and wait for the end; ``run`` goes to subprocess.run (timeout=...)."""
    return subprocess.run(
        [sys.executable, str(script_file(folder, source)), *args], env=child_env(), **run
    )
