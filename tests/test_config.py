"""Config: typed sections, defaults that work, every bad value refused with its key named."""

import dataclasses
import re

import pytest

from core.config import (
    STARTER_CRAWL,
    STARTER_TRAIN,
    ClassConfig,
    Config,
    TrainConfig,
    check_safe_name,
    load_config,
    override,
    starter_config,
    write_starter_config,
)
from core.errors import ConfigError, UnsafeNameError
from core.names import ARCHITECTURES, DEMO_CLASSES, HASH_METHODS

SECTIONS = ("project", "crawl", "factory", "train", "storage")


def test_defaults_work_without_any_section(tmp_path):
    cfg = Config.from_mapping({}, base_dir=tmp_path)
    assert cfg.classes == {}
    assert cfg.crawl.sources == ["demo"]
    assert cfg.factory.hash == "phash" and cfg.factory.max_distance == 6
    assert cfg.data_dir == (tmp_path / "data").resolve()
    assert cfg.db_url == f"sqlite:///{tmp_path.resolve() / 'data' / 'pingo.db'}"


def test_starter_config_parses_and_has_classes(tmp_path):
    path = write_starter_config(tmp_path / "pingo.toml")
    cfg = load_config(path)
    assert set(cfg.classes) == {"circle", "square", "triangle"}
    assert all(c.target >= 1 for c in cfg.classes.values())
    assert path.read_text() == starter_config()


def test_the_starter_config_shows_every_setting_with_its_default_and_doc(tmp_path):
    """The file `pingo init` writes is generated from the dataclasses: it loads to exactly
    the defaults (but [train]'s arch and weights), and names every setting with its doc
    (unset ones with a checked example)."""
    path = write_starter_config(tmp_path / "pingo.toml")
    cfg, defaults = load_config(path), Config()
    for section in SECTIONS:
        if section not in ("train", "crawl"):
            assert getattr(cfg, section) == getattr(defaults, section), section
    # crawl.sources turns the open-licence APIs on beside the demo site
    assert cfg.crawl == dataclasses.replace(defaults.crawl, **STARTER_CRAWL)
    assert STARTER_CRAWL == {"sources": ["demo", "openverse", "wikimedia"]}
    assert defaults.crawl.sources == ["demo"]
    # [train] starts from a pretrained backbone; every other train setting is the default
    assert cfg.train == dataclasses.replace(defaults.train, **STARTER_TRAIN)
    assert STARTER_TRAIN == {"arch": "mobilenet_v3_small", "weights": "imagenet"}
    assert (defaults.train.arch, defaults.train.weights) == ("small_cnn", "none")
    assert cfg.classes == {n: ClassConfig(n, keywords=[n], target=100) for n in DEMO_CLASSES}
    text = path.read_text()
    flat = " ".join(re.sub(r"^\s*#?", "", line) for line in text.splitlines())
    for section_cls in (ClassConfig, *(type(getattr(defaults, s)) for s in SECTIONS)):
        for f in dataclasses.fields(section_cls):
            if f.name == "name":
                continue
            doc = f.metadata["doc"]
            assert doc, f"{section_cls.__name__}.{f.name} has no doc"
            assert re.search(rf"^(# )?{f.name}( =|:)", text, re.M), f.name
            assert " ".join(doc.split()) in " ".join(flat.split()), f.name
            if f.default is None:
                example, check = f.metadata["example"], f.metadata["check"]
                assert example is not None and not (check and check(example)), f.name
    assert all(len(line) <= 100 for line in text.splitlines())


def test_the_demo_trains_offline_on_the_starter_config(tmp_path):
    """`make demo` runs `pingo init` then `pingo demo`: the demo's training overrides must
    give an offline model on the starter config (no ImageNet weights, no refusal)."""
    from pingo.demo import DEMO_TRAIN
    from trainer.run import _resolve_weights, effective_train_config

    cfg = load_config(write_starter_config(tmp_path / "pingo.toml"))
    tc = _resolve_weights(effective_train_config(cfg.train, DEMO_TRAIN), cfg.base_dir)
    assert (tc.arch, tc.weights) == ("small_cnn", "none")


def test_init_refuses_to_overwrite(tmp_path):
    write_starter_config(tmp_path / "pingo.toml")
    with pytest.raises(ConfigError, match="already exists"):
        write_starter_config(tmp_path / "pingo.toml")


def test_class_keywords_default_to_name_and_confidence_override(tmp_path):
    cfg = Config.from_mapping(
        {
            "classes": {"cat": {"target": 3, "confidence": 0.5}, "dog": {}},
            "factory": {"confidence": 0.8},
        },
        base_dir=tmp_path,
    )
    assert cfg.classes["dog"].keywords == ["dog"]
    assert cfg.classes["dog"].target == 1000
    assert cfg.confidence_for("cat") == 0.5
    assert cfg.confidence_for("dog") == 0.8
    assert cfg.targets == {"cat": 3, "dog": 1000}


def test_relative_paths_resolve_against_config_folder(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "p.toml").write_text(
        '[project]\ndata_dir = "d"\n[storage]\ndb_url = "sqlite:///x/meta.db"\n'
    )
    cfg = load_config(tmp_path / "sub" / "p.toml")
    assert cfg.data_dir == (tmp_path / "sub" / "d").resolve()
    assert cfg.db_url == f"sqlite:///{(tmp_path / 'sub' / 'x' / 'meta.db').resolve()}"


def test_an_int_is_accepted_where_a_float_is_expected(tmp_path):
    cfg = Config.from_mapping({"factory": {"confidence": 1}}, base_dir=tmp_path)
    assert cfg.factory.confidence == 1.0 and isinstance(cfg.factory.confidence, float)


@pytest.mark.parametrize(
    "data, key, allowed",
    [
        ({"classes": {"cat": {"target": 0}}}, "classes.cat.target", ">= 1"),
        ({"classes": {"cat": {"target": "many"}}}, "classes.cat.target", "an integer"),
        ({"classes": {"cat": {"target": True}}}, "classes.cat.target", "an integer"),
        ({"classes": {"cat": {"confidence": 1.5}}}, "classes.cat.confidence", "from 0 to 1"),
        ({"classes": {"cat": {"colour": "red"}}}, "classes.cat.colour", "allowed keys"),
        ({"classes": {"cat": {"keywords": "cat"}}}, "classes.cat.keywords", "a list of strings"),
        ({"classes": {"cat": {"keywords": [""]}}}, "classes.cat.keywords", "non-empty"),
        ({"factory": {"confidence": -0.1}}, "factory.confidence", "from 0 to 1"),
        ({"factory": {"hash": "md5"}}, "factory.hash", "'phash'"),
        ({"factory": {"max_distance": 65}}, "factory.max_distance", "from 0 to 64"),
        ({"crawl": {"schedule": "every day"}}, "crawl.schedule", "cron"),
        ({"crawl": {"demo_url": "ftp://x"}}, "crawl.demo_url", "http"),
        ({"crawl": {"sources": []}}, "crawl.sources", "non-empty"),
        ({"crawl": {"bogus": 1}}, "crawl.bogus", "unknown key"),
        ({"train": {"image_size": 4}}, "train.image_size", "from 8"),
        ({"nonsense": {}}, "[nonsense]", "allowed sections"),
        ({"crawl": 3}, "crawl", "table"),
    ],
)
def test_bad_values_are_refused_naming_the_key(tmp_path, data, key, allowed):
    with pytest.raises(ConfigError) as err:
        Config.from_mapping(data, base_dir=tmp_path)
    assert key in str(err.value)
    assert allowed in str(err.value)


@pytest.mark.parametrize(
    "name",
    [
        "../x",
        "a/b",
        ".hidden",
        "..",
        "",
        "a\\b",
        "con",
        "x.",
        "a..b",
        "x" * 65,
        " lead",
        "tab\tname",
    ],
)
def test_unsafe_class_names_are_refused(tmp_path, name):
    with pytest.raises(UnsafeNameError):
        Config.from_mapping({"classes": {name: {}}}, base_dir=tmp_path)


@pytest.mark.parametrize("name", ["cat", "golden retriever", "고양이", "class_1", "a-b.c"])
def test_safe_class_names_are_kept(name):
    assert check_safe_name(name) == name


def test_missing_and_malformed_files_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="pingo init"):
        load_config(tmp_path / "absent.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[classes.cat\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)


def test_config_path_from_environment(tmp_path, monkeypatch):
    path = tmp_path / "elsewhere.toml"
    path.write_text("[classes.owl]\ntarget = 2\n")
    monkeypatch.setenv("PINGO_CONFIG", str(path))
    assert set(load_config().classes) == {"owl"}


def test_every_architecture_and_hash_name_has_a_builder():
    """The names core.names lists (and the config accepts) are the builders' tables' keys."""
    from dataset_factory.hashing import METHODS
    from trainer.models import ARCHS

    assert set(ARCHS) == set(ARCHITECTURES)
    assert set(METHODS) == set(HASH_METHODS)
    assert TrainConfig().arch in ARCHITECTURES


def test_overrides_are_checked_like_the_config_file(tmp_path):
    train = Config().train
    assert override(train, {"epochs": 3, "learning_rate": 0}).epochs == 3
    assert isinstance(override(train, {"learning_rate": 0}).learning_rate, float)
    assert override(train, {}) == train
    for values, message in [
        ({"epochs": "3"}, "train.epochs: got '3'; allowed is an integer"),
        ({"epochs": True}, "allowed is an integer"),
        ({"arch": "vgg"}, "train.arch: got 'vgg'; allowed is one of"),
        ({"image_size": 4}, "allowed is a number from 8 to 1024"),
        ({"bogus": 1}, "train.bogus: unknown key; allowed keys are"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(message)):
            override(train, values)
        file = tmp_path / "p.toml"
        key, value = next(iter(values.items()))
        file.write_text(f"[train]\n{key} = {value!r}\n".replace("True", "true"))
        with pytest.raises(ConfigError, match=re.escape(message)):
            load_config(file)


def test_the_built_in_none_class_cannot_be_configured():
    with pytest.raises(ConfigError, match="built-in class of images that are none"):
        Config.from_mapping({"classes": {"cat": {}, "none": {"keywords": ["junk"]}}})
