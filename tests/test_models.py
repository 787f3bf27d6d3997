"""`pingo models`: list, promote V, rollback; CURRENT only ever names a model that loads."""

from __future__ import annotations

import json
import re
import shutil

import pytest
from train_helpers import CONFIG, Trained

pytestmark = pytest.mark.slow


def current(t) -> str:
    return (t.entry().parent / "CURRENT").read_text().strip()


@pytest.fixture(scope="module")
def two_models_template(trained_template, tmp_path_factory):
    """v0001 promoted, v0002 trained but not promoted (its margin could not be met)."""
    from trainer.run import train

    root = tmp_path_factory.mktemp("two-models-template") / "project"
    shutil.copytree(trained_template[0], root)
    trained = Trained(root)
    with trained.store() as store:
        result = train(
            trained.config, store, force=True, overrides={"epochs": 1, "promote_margin": 1.0}
        )
    assert result.version == "v0002" and not result.promoted
    return root


@pytest.fixture
def two_models(two_models_template, tmp_path) -> Trained:
    """A fresh copy of the two-model project for one test (tests change and break models)."""
    shutil.copytree(two_models_template, tmp_path / "project")
    return Trained(tmp_path / "project")


def test_models_lists_every_version_with_its_state_and_the_one_in_service(two_models):
    text = two_models.cli("models")
    assert text.exit_code == 0
    assert re.search(r"^\*\s+v0001\s+complete", text.output, re.M)
    assert re.search(r"^\s+v0002\s+complete .*not promoted", text.output, re.M)
    rows = json.loads(two_models.cli("models", "--json").stdout)
    assert [(r["version"], r["current"], r["passed_gate"]) for r in rows] == [
        ("v0001", True, True),
        ("v0002", False, False),
    ]
    assert all(0 <= r["test_accuracy"] <= 1 and r["arch"] == "seed_cnn" for r in rows)


def test_promote_then_rollback(two_models):
    out = two_models.cli("models", "promote", "v0002")
    assert out.exit_code == 0 and current(two_models) == "v0002"
    with two_models.store() as store:
        assert {r["version"]: r["promoted"] for r in store.registry.rows()} == {
            "v0001": False,
            "v0002": True,
        }
    back = two_models.cli("models", "rollback")
    assert back.exit_code == 0 and "from v0002 to v0001" in back.output
    assert current(two_models) == "v0001"
    again = two_models.cli("models", "rollback")
    assert again.exit_code == 1 and "no older usable model" in again.stderr
    assert current(two_models) == "v0001"


def test_promote_refuses_what_the_factory_could_not_use(two_models):
    for version, message in (("v0099", "does not exist"), ("latest", "not a model version")):
        out = two_models.cli("models", "promote", version)
        assert out.exit_code == 1 and message in out.stderr
    model = two_models.entry("v0002") / "model.keras"
    model.write_bytes(model.read_bytes()[:1000])  # truncated: a half-copied file
    out = two_models.cli("models", "promote", "v0002")
    assert out.exit_code == 1 and "v0002: cannot load the model" in out.stderr
    assert current(two_models) == "v0001"

    # A model for other classes would misfile every image: refused, CURRENT unchanged.
    two_models.config_path.write_text(CONFIG + "\n[classes.yellow]\ntarget = 20\n")
    out = two_models.cli("models", "promote", "v0001")
    assert out.exit_code == 1 and "but the config has classes" in out.stderr
    assert current(two_models) == "v0001"


def test_rollback_skips_a_version_that_no_longer_loads(two_models):
    assert two_models.cli("models", "promote", "v0002").exit_code == 0
    (two_models.entry("v0001") / "model.keras").write_bytes(b"garbage")
    out = two_models.cli("models", "rollback")
    assert out.exit_code == 1 and "v0001: cannot load the model" in out.stderr
    assert current(two_models) == "v0002"
