"""The `pingo` CLI driven in-process: init, stats, images, import, and clean refusals."""

import json
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner
from conftest import png_bytes

from pingo.cli import cli

REPO = Path(__file__).resolve().parents[1]


def test_init_then_stats_lists_starter_classes_with_zero_counts(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PINGO_CONFIG", raising=False)
    runner = CliRunner()
    result = runner.invoke(cli, ["init"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "pingo.toml").exists() and (tmp_path / "data" / "inbox").is_dir()
    result = runner.invoke(cli, ["stats", "--json"])
    assert result.exit_code == 0, result.output
    stats = json.loads(result.stdout)
    assert stats.pop("disk")["dataset"] == {"files": 0, "bytes": 0}
    # no model and no judged image yet: the keyword prior, nothing validated
    accepting = stats.pop("auto_accept")
    assert stats.pop("review_reasons") == {}
    assert (accepting["model"], accepting["target_precision"]) == (None, 0.97)
    assert accepting["classes"]["circle"] == {
        "precision": None,
        "coverage": None,
        "test_images": None,
        "keyword_reliability": 0.7,
        "keyword_judged": 0,
    }
    assert stats == {
        "classes": {
            name: {"accepted": 0, "review": 0, "target": 100}
            for name in ("circle", "square", "triangle")
        },
        "inbox": 0,
        "rejected": {},
    }
    text = runner.invoke(cli, ["stats"]).stdout
    assert "circle" in text and "0.0%" in text and "inbox: 0" in text
    again = runner.invoke(cli, ["init"])
    assert again.exit_code == 2 and "already exists" in again.stderr


def test_bad_config_exits_2_naming_the_key(project, run_cli):
    project.write("[classes.cat]\ntarget = -3\n")
    result = run_cli("stats")
    assert result.exit_code == 2
    assert "classes.cat.target" in result.stderr and ">= 1" in result.stderr
    assert not (project.root / "data").exists()  # refused before anything ran


def test_missing_config_exits_2_with_a_hint(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PINGO_CONFIG", raising=False)
    result = CliRunner().invoke(cli, ["stats"])
    assert result.exit_code == 2 and "pingo init" in result.stderr


def test_real_console_script_exit_status(tmp_path):
    """The installed entry point, as a user runs it: bad config -> one line, status 2."""
    (tmp_path / "pingo.toml").write_text('[classes."a/b"]\n')
    proc = subprocess.run(
        [sys.executable, "-m", "pingo.cli", "stats"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("pingo: error: classes.a/b")


def test_tensorflow_start_up_lines_stay_off_the_console_unless_verbose(project):
    """TensorFlow's C++ import chatter (oneDNN, absl::InitializeLog) is not shown by commands
    that load it; -v shows everything. `export --format tfrecord` imports TensorFlow."""
    with project.store() as store:
        for label, color in (("cat", (200, 30, 30)), ("dog", (30, 200, 30))):
            image_id = store.add_image(png_bytes(color), keyword_class=label, source="t", ext="png")
            store.move(image_id, "accepted", label=label, label_source="human")

    def export(*flags: str) -> subprocess.CompletedProcess:
        out = project.root / f"export{len(flags)}"
        command = ["--config", str(project.path), *flags, "export", str(out)]
        return subprocess.run(
            [sys.executable, "-m", "pingo.cli", *command, "--format", "tfrecord"],
            capture_output=True,
            text=True,
            timeout=300,
        )

    quiet = export()
    assert quiet.returncode == 0, quiet.stderr
    chatter = ("absl::InitializeLog", "oneDNN custom operations", "I0000 ", "W0000 ")
    assert not [line for line in quiet.stderr.splitlines() if any(c in line for c in chatter)]
    assert export("-v").returncode == 0


def make_import_tree(root: Path) -> Path:
    for cls, colors in {"cat": [(10, 0, 0), (20, 0, 0)], "dog": [(0, 10, 0)]}.items():
        (root / cls).mkdir(parents=True)
        for i, c in enumerate(colors):
            (root / cls / f"img{i}.png").write_bytes(png_bytes(c))
    (root / "cat" / ".DS_Store").write_bytes(b"junk")  # hidden files are ignored
    return root


def test_import_copies_labelled_images_into_inbox(project, run_cli, tmp_path):
    src = make_import_tree(tmp_path / "hand")
    before = {p: p.read_bytes() for p in src.rglob("*") if p.is_file()}
    result = run_cli("import", str(src))
    assert result.exit_code == 0, result.output
    assert "imported 3 images" in result.stdout
    assert {p: p.read_bytes() for p in src.rglob("*") if p.is_file()} == before  # untouched
    rows = [json.loads(line) for line in run_cli("images", "--json").stdout.splitlines()]
    assert len(rows) == 3
    for row in rows:
        assert row["status"] == "inbox" and row["source"] == "import"
        assert row["label_source"] == "human" and row["label"] == row["keyword_class"]
        assert Path(row["source_url"]).read_bytes() == (project.data_dir / row["path"]).read_bytes()
    # importing again adds nothing
    again = run_cli("import", str(src))
    assert "imported 0 images" in again.stdout and "2 already stored" in again.stdout
    assert json.loads(run_cli("stats", "--json").stdout)["inbox"] == 3


def test_import_refuses_a_folder_that_is_not_a_class(project, run_cli, tmp_path):
    src = make_import_tree(tmp_path / "hand")
    (src / "horse").mkdir()
    result = run_cli("import", str(src))
    assert result.exit_code == 1
    assert "'horse'" in result.stderr
    assert json.loads(run_cli("stats", "--json").stdout)["inbox"] == 0  # nothing copied


def test_images_json_has_every_documented_field_and_filters(project, run_cli):
    with project.store() as store:
        a = store.add_image(
            png_bytes((1, 1, 1)),
            keyword_class="cat",
            source="demo",
            ext="png",
            source_url="http://127.0.0.1/a.png",
        )
        store.add_image(png_bytes((2, 2, 2)), keyword_class="dog", source="demo", ext="png")
        store.move(a, "accepted", label="cat", label_source="keyword")
    rows = [json.loads(line) for line in run_cli("images", "--json").stdout.splitlines()]
    required = {
        "id",
        "sha256",
        "phash",
        "source_url",
        "page_url",
        "source",
        "query",
        "keyword_class",
        "status",
        "reason",
        "label",
        "label_source",
        "confidence",
        "model_version",
        "path",
        "duplicate_of",
        "width",
        "height",
        "bytes",
        "created_at",
    }
    assert all(required <= set(r) for r in rows) and len(rows) == 2
    accepted = run_cli("images", "--json", "--status", "accepted").stdout.splitlines()
    assert [json.loads(x)["id"] for x in accepted] == [a]
    dogs = run_cli("images", "--json", "--class", "dog").stdout.splitlines()
    assert [json.loads(x)["keyword_class"] for x in dogs] == ["dog"]
    stats = json.loads(run_cli("stats", "--json").stdout)
    assert stats["classes"]["cat"] == {"accepted": 1, "review": 0, "target": 5}
    assert stats["inbox"] == 1
