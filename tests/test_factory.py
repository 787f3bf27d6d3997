"""process_inbox routing, auto-sort with a promoted model, crash safety, `pingo factory`."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest
from child_process import start_script
from factory_helpers import assert_consistent, encode, jpeg_of, pattern_image, save_color_model

from dataset_factory import process_inbox
from dataset_factory.dedupe import index_path
from dataset_factory.index import NearDuplicateIndex
from storage.errors import ModelLoadError

RED, GREEN, BLUE = (230, 20, 20), (20, 230, 20), (20, 20, 230)
YELLOWISH = (225, 255, 0)  # between red and green: the model is unsure


def colored(store, seed, color, keyword_class, **kw) -> int:
    data = encode(pattern_image(seed, (48, 48), base=color, amplitude=25), "PNG")
    return store.add_image(data, keyword_class=keyword_class, source="test", ext="png", **kw)


def test_without_a_model_the_keyword_is_the_label(project):
    with project.store() as store:
        a = colored(store, 1, RED, "cat")
        b = colored(store, 2, GREEN, "dog")
        h = colored(store, 3, BLUE, "bird", label="cat", label_source="human")
        summary = process_inbox(project.config, store)
        assert summary.model_version is None
        for image_id, label, source in (
            (a, "cat", "keyword"),
            (b, "dog", "keyword"),
            (h, "cat", "human"),
        ):
            row = store.get_image(image_id)
            assert (row["status"], row["label"], row["label_source"]) == ("accepted", label, source)
            assert row["path"].startswith(f"dataset/{label}/")
            assert row["width"] == 48 and row["phash"] is not None
        assert summary.totals("cat") == {"accepted": 1, "review": 0, "rejected": 0, "duplicates": 0}
        # nothing left: a second run is a no-op
        assert process_inbox(project.config, store).processed == 0


@pytest.mark.slow
def test_the_agree_rule_accepts_what_the_model_confirms_with_enough_confidence(project):
    project.write(
        project.DEFAULT.replace("[classes.bird]", "[classes.bird]\nconfidence = 0.99999")
        + 'decision = "agree"\n'
    )
    with project.store() as store:
        version = save_color_model(store)
        sure_cat = colored(store, 1, RED, "cat")
        says_dog = colored(store, 2, GREEN, "cat")  # model disagrees with the keyword
        unsure = colored(store, 3, YELLOWISH, "dog")  # right class, low confidence
        strict = colored(store, 4, BLUE, "bird")  # ~0.9995 < bird's own 0.99999
        human = colored(store, 5, GREEN, "cat", label="cat", label_source="human")
        summary = process_inbox(project.config, store)
        assert summary.model_version == version
        rows = {i: store.get_image(i) for i in (sure_cat, says_dog, unsure, strict, human)}
        assert (
            rows[sure_cat]["status"],
            rows[sure_cat]["label"],
            rows[sure_cat]["label_source"],
        ) == ("accepted", "cat", "model")
        assert rows[sure_cat]["confidence"] > 0.99
        assert rows[sure_cat]["model_version"] == version
        assert (
            rows[says_dog]["status"],
            rows[says_dog]["label"],
            rows[says_dog]["reason"],
            rows[says_dog]["keyword_class"],
        ) == ("review", "dog", "disagrees", "cat")
        assert rows[says_dog]["path"].startswith("review/dog/")
        assert (rows[unsure]["status"], rows[unsure]["label"], rows[unsure]["reason"]) == (
            "review",
            "dog",
            "low_confidence",
        )
        assert rows[unsure]["confidence"] < 0.9
        assert (rows[strict]["status"], rows[strict]["reason"]) == ("review", "low_confidence")
        assert (rows[human]["status"], rows[human]["label"], rows[human]["label_source"]) == (
            "accepted",
            "cat",
            "human",
        )
        assert_consistent(store)


@pytest.mark.slow
def test_batch_predictions_equal_single_image_predictions(project):
    import numpy as np

    from dataset_factory.classify import Classifier
    from vision.pixels import load_pixels

    with project.store() as store:
        save_color_model(store)
        paths = []
        for seed, color in enumerate([RED, GREEN, BLUE, YELLOWISH] * 3):
            image_id = colored(store, seed, color, "cat")
            paths.append(str(store.abspath(store.get_image(image_id)["path"])))
        clf = Classifier.from_registry(store.registry)
        batched = clf.predict_probs(paths, batch_size=5)
        single = np.concatenate(
            [
                clf.model.predict(load_pixels(p, 16)[None].astype("float32"), verbose=0)
                for p in paths
            ]
        )
        np.testing.assert_allclose(batched, single, atol=1e-5)


def test_a_broken_promoted_model_is_a_named_error(project):
    with project.store() as store:
        version, path = store.registry.new_version()
        (path / "classes.json").write_text(json.dumps(["cat", "dog"]))
        (path / "config.json").write_text(json.dumps({"image_size": 16, "arch": "x"}))
        (path / "model.keras").write_bytes(b"not a zip")
        store.registry.promote(version)
        image_id = colored(store, 1, RED, "cat")
        with pytest.raises(ModelLoadError, match=version):
            process_inbox(project.config, store)
        assert store.get_image(image_id)["status"] == "inbox"  # nothing decided, nothing lost


KILL_SCRIPT = """
    import sys
    from core.config import load_config
    from storage import Store
    from dataset_factory import process_inbox

    if __name__ == "__main__":
        config = load_config(sys.argv[1])
        with Store.from_config(config) as store:
            process_inbox(config, store, chunk_size=8)
"""


def test_kill_9_mid_run_then_rerun_accounts_for_every_image(project, sign_digits, tmp_path):
    files = sorted((sign_digits / "9").glob("*"))[:90]
    with project.store() as store:
        ids = [
            store.add_image(p.read_bytes(), keyword_class="cat", source="t", ext="jpg")
            for p in files
        ]
        # copies, so duplicates are decided (and replaced) across the kill as well
        ids += [
            store.add_image(
                jpeg_of(p, lambda im: im.resize((120, 120))),
                keyword_class="dog",
                source="t",
                ext="jpg",
            )
            for p in files[:30]
        ]
    killed_after = []
    for attempt in range(2):
        child = start_script(tmp_path, KILL_SCRIPT, str(project.path), start_new_session=True)
        deadline = time.time() + 120
        with project.store() as store:
            start_inbox = sum(store.inbox_counts().values())
            while time.time() < deadline and child.poll() is None:
                left = sum(store.inbox_counts().values())
                if start_inbox - left >= 16 * (attempt + 1) or left == 0:
                    break
                time.sleep(0.05)
        os.killpg(child.pid, signal.SIGKILL)  # the child and its hashing workers
        child.wait()
        killed_after.append(start_inbox - left)
    with project.store() as store:  # opening repairs half-done moves
        assert sum(store.inbox_counts().values()) > 0, "the kill came too late to test anything"
        process_inbox(project.config, store)
        rows = {r["id"]: r for r in store.iter_images()}
        assert sorted(rows) == sorted(ids)
        assert all(r["status"] in ("accepted", "rejected") for r in rows.values())
        assert_consistent(store)
        kept = {i for i, r in rows.items() if r["status"] == "accepted"}
        for r in rows.values():
            if r["status"] == "rejected":  # a chain of copies ends at one kept image
                assert r["reason"] == "duplicate"
                while r["duplicate_of"] is not None:
                    r = rows[r["duplicate_of"]]
                assert r["id"] in kept
        index = NearDuplicateIndex.load(index_path(store.data_dir, "phash"), "phash")
        assert set(index.main.ids.tolist()) == kept
        interrupted = _outcomes(rows)
    # the same inbox processed without interruption decides exactly the same
    project.write(project.DEFAULT + '\n[project]\ndata_dir = "reference"\n')
    with project.store() as store:
        for image_id in sorted(rows):
            path = project.root / "data" / rows[image_id]["path"]
            store.add_image(
                path.read_bytes(),
                keyword_class=rows[image_id]["keyword_class"],
                source="t",
                ext="jpg",
            )
        process_inbox(project.config, store)
        assert _outcomes({r["id"]: r for r in store.iter_images()}) == interrupted
    assert killed_after[0] > 0


def _outcomes(rows):
    """sha256 -> (status, label if kept, reason, sha256 of the kept copy) for comparing runs."""

    def root(r):
        while r["duplicate_of"] is not None:
            r = rows[r["duplicate_of"]]
        return r["sha256"]

    return {
        r["sha256"]: (
            r["status"],
            r["label"] if r["status"] != "rejected" else None,
            r["reason"],
            root(r),
        )
        for r in rows.values()
    }


def test_factory_cli_prints_a_per_class_summary(project, run_cli):
    with project.store() as store:
        colored(store, 1, RED, "cat")
        colored(store, 2, GREEN, "dog")
        store.add_image(b"<html></html>", keyword_class="dog", source="t", ext="jpg")
    result = run_cli("factory")
    assert result.exit_code == 0, result.output
    assert "model: none yet" in result.output
    lines = {
        line.split()[0]: line.split()[1:]
        for line in result.output.splitlines()
        if line.split() and line.split()[0] in ("cat", "dog")
    }
    assert lines["cat"][:3] == ["1", "0", "0"]
    assert lines["dog"][:3] == ["1", "0", "1"]
    again = run_cli("factory", "--json")
    assert json.loads(again.output)["processed"] == 0
