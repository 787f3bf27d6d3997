"""pingo.toml: read once with tomllib into typed dataclasses, refused whole if anything is off.

Every section is a dataclass. A field's type is checked as declared and an optional ``check``
in its metadata rejects impossible values; the error names the key and what is allowed.
Adding a setting is adding a field (with its ``doc``): the starter file ``pingo init`` writes
is generated from the fields, and ``override`` checks one-run overrides (CLI flags) the same way.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import textwrap
import tomllib
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from core.errors import ConfigError, UnsafeNameError
from core.licenses import FAMILIES, check_families
from core.names import ARCHITECTURES, DECISIONS, DEMO_CLASSES, HASH_METHODS, NONE_CLASS
from core.sources import check_profiles

logger = logging.getLogger(__name__)

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

S = TypeVar("S", bound="DataclassInstance")  # a section dataclass

CONFIG_ENV = "PINGO_CONFIG"
DEFAULT_CONFIG_NAME = "pingo.toml"

# Letters, digits, "_", "-", "." and inner spaces; no "/", no "..", no leading dot or space.
# Matched with fullmatch: "$" alone would let a trailing newline through.
_SAFE_NAME = re.compile(r"[^\W][\w.\- ]{0,63}")
_WINDOWS_RESERVED = {
    "con",
    "prn",
    "aux",
    "nul",
    *(f"com{i}" for i in range(1, 10)),
    *(f"lpt{i}" for i in range(1, 10)),
}


def check_safe_name(name: str, what: str = "class name") -> str:
    """Return ``name`` if it is safe as one folder name, else raise UnsafeNameError."""
    if (
        not isinstance(name, str)
        or not _SAFE_NAME.fullmatch(name)
        or ".." in name
        or name.endswith((" ", "."))
        or name.lower() in _WINDOWS_RESERVED
    ):
        raise UnsafeNameError(
            f"{what} {name!r} is not allowed: use 1-64 letters, digits, '_', '-', '.' or "
            "inner spaces, starting with a letter or digit (no '/', '..' or leading dot)"
        )
    return name


# ---- value checks: each returns None when fine, else the text "what is allowed" ----------


def at_least(low: float) -> Callable[[Any], str | None]:
    return lambda v: None if v >= low else f"a number >= {low}"


def between(low: float, high: float) -> Callable[[Any], str | None]:
    return lambda v: None if low <= v <= high else f"a number from {low} to {high}"


def one_of(*choices: str) -> Callable[[Any], str | None]:
    return lambda v: None if v in choices else "one of " + ", ".join(repr(c) for c in choices)


def non_empty(v: Any) -> str | None:
    return None if len(v) > 0 else "a non-empty value"


def cron(v: str) -> str | None:
    from apscheduler.triggers.cron import CronTrigger  # light import, only when validating

    try:
        CronTrigger.from_crontab(v)
    except ValueError as exc:
        return f"a 5-field cron expression like '0 */6 * * *' ({exc})"
    return None


def redis_address(v: str | None) -> str | None:
    if v is None or re.match(r"^(redis|rediss|unix)://\S+$", v):
        return None
    return "a redis://, rediss:// or unix:// URL"


def redis_key_name(v: str | None) -> str | None:
    if v is None or re.match(r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,79}$", v):
        return None
    return "1-80 letters, digits, '_', '.', ':' or '-'"


def http_url(v: str | None) -> str | None:
    if v is None or re.match(r"^https?://[^\s/]+", v):
        return None
    return "an http:// or https:// URL"


def setting(
    default: Any = None,
    *,
    check: Callable[[Any], str | None] | None = None,
    default_factory: Callable[[], Any] | None = None,
    doc: str = "",
    example: Any = None,
) -> Any:
    """A config field. ``doc`` is its comment in the starter file; ``example`` is the value
    shown there (commented out) for a setting whose default is unset."""
    meta = {"check": check, "doc": doc, "example": example}
    if default_factory is not None:
        return field(default_factory=default_factory, metadata=meta)
    return field(default=default, metadata=meta)


# ---- sections ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProjectConfig:
    data_dir: str = setting(
        "data", check=non_empty, doc="DB, inbox/, dataset/, review/, rejected/, models/, reports/"
    )
    log_level: str = setting(
        "INFO",
        check=one_of("DEBUG", "INFO", "WARNING", "ERROR"),
        doc="DEBUG, INFO, WARNING or ERROR",
    )


@dataclass(frozen=True)
class ClassConfig:
    name: str
    keywords: list[str] = setting(
        default_factory=list, doc="what to search for (any language); default: the class name"
    )
    target: int = setting(1000, check=at_least(1), doc="images wanted in dataset/<class>/")
    confidence: float | None = setting(
        None,
        check=lambda v: between(0, 1)(v) if v is not None else None,
        doc="per-class override of factory.confidence",
        example=0.95,
    )
    max_review_backlog: int | None = setting(
        None,
        check=lambda v: at_least(0)(v) if v is not None else None,
        doc="per-class override of crawl.max_review_backlog",
        example=200,
    )


@dataclass(frozen=True)
class CrawlConfig:
    sources: list[str] = setting(
        default_factory=lambda: ["demo"],
        check=non_empty,
        doc='search sources: "demo" (the local demo site), the open-licence APIs "openverse" '
        'and "wikimedia" (no browser; licence and credit kept per image), rendered engines '
        '"bing", "naver"; more in [crawl.profiles.<name>] (docs/sources.md)',
    )
    licenses: list[str] = setting(
        default_factory=lambda: list(FAMILIES),
        check=check_families,
        doc="licences to keep: "
        + ", ".join(FAMILIES)
        + ". APIs are asked for these only where they can filter; other results are dropped "
        "before download. Rendered engines give no licence data ('unknown')",
    )
    schedule: str = setting("0 */6 * * *", check=cron, doc="cron: when the scheduler crawls")
    demo_url: str = setting(
        "http://127.0.0.1:8765",
        check=http_url,
        doc="the local demo search site (`pingo demo-site`)",
    )
    per_query_limit: int = setting(200, check=at_least(1), doc="most results taken per query")
    concurrency: int = setting(16, check=at_least(1), doc="parallel image downloads")
    download_delay: float = setting(
        0.0, check=at_least(0), doc="seconds between requests to a host"
    )
    max_drivers: int = setting(2, check=at_least(1), doc="headless browsers rendering pages")
    page_load_timeout: float = setting(
        30.0, check=at_least(1), doc="seconds a result page may take to load"
    )
    redis_url: str | None = setting(
        None,
        check=redis_address,
        doc="shared frontier for several crawlers, e.g. on several machines (scrapy-redis)",
        example="redis://127.0.0.1:6379/0",
    )
    redis_key_prefix: str | None = setting(
        None,
        check=redis_key_name,
        doc="namespace of this project's Redis keys; default derived from the DB",
        example="pingo-shapes",
    )
    idle_timeout: float = setting(
        30.0,
        check=at_least(1),
        doc="with redis_url: a crawler exits "
        "after the shared queue has been empty this many seconds",
    )
    selenium_remote_url: str | None = setting(
        None, check=http_url, doc="browsers from a Selenium Grid", example="http://127.0.0.1:4444"
    )
    pages_per_browser: int = setting(
        50, check=at_least(1), doc="result pages a browser renders before it is recycled"
    )
    download_timeout: float = setting(20.0, check=at_least(1), doc="seconds per image download")
    retries: int = setting(2, check=at_least(0), doc="retries of a failed download or render")
    retry_failed_after: float = setting(
        24.0,
        check=at_least(0),
        doc="hours before a later crawl tries again a URL that "
        "timed out or got a 5xx/429 (others never)",
    )
    max_url_attempts: int = setting(
        3, check=at_least(1), doc="crawls that may try one such URL; 1 = never again"
    )
    max_image_bytes: int = setting(
        8 * 1024 * 1024, check=at_least(1024), doc="larger downloads are refused (too_large)"
    )
    min_image_side: int = setting(
        16, check=at_least(1), doc="images narrower or lower than this are refused (too_small)"
    )
    max_image_pixels: int = setting(
        40_000_000, check=at_least(1), doc="images with more pixels are refused (too_large)"
    )
    obey_robots: bool = setting(True, doc="honour robots.txt")
    allow_private_networks: bool = setting(
        False,
        doc="download images from loopback, "
        "link-local and private addresses too (an intranet "
        "crawl); crawl.demo_url is always allowed",
    )
    user_agent: str = setting(
        "pingo/0.1 (+https://github.com/pingo/pingo; image dataset crawler)",
        check=non_empty,
        doc="the User-Agent header of every request. Wikimedia asks for a contact: the "
        "wikimedia source starts only once this names you, e.g. "
        '"my-dataset/1.0 (https://example.org/me; me@example.org)"',
    )
    browser_user_agent: str = setting(
        "crawl",
        check=one_of("crawl", "chrome"),
        doc='the User-Agent of the browser rendering result pages: "crawl" (crawl.user_agent)'
        ' or "chrome" (a current desktop Chrome\'s, not HeadlessChrome)',
    )
    max_seconds: float = setting(3600.0, check=at_least(1), doc="a crawl stops after this long")
    max_review_backlog: int | None = setting(
        None,
        check=lambda v: at_least(0)(v) if v is not None else None,
        doc="review/ images of a class that count toward its crawl need, so unreviewed "
        "images cannot pile up; unset: the class's target; 0: review images do not count",
        example=150,
    )
    profiles: dict = setting(
        default_factory=dict,
        check=check_profiles,
        doc="[crawl.profiles.<name>] tables: add or fix search sources (docs/crawler.md)",
    )


@dataclass(frozen=True)
class FactoryConfig:
    hash: str = setting(
        "phash", check=one_of(*HASH_METHODS), doc="perceptual hash: " + ", ".join(HASH_METHODS)
    )
    max_distance: int = setting(
        6, check=between(0, 64), doc="Hamming bits: closer hashes are near duplicates"
    )
    decision: str = setting(
        "evidence",
        check=one_of(*DECISIONS),
        doc='how crawled images are filed: "evidence" (keyword reliability and the calibrated '
        'model combined; accept at target_precision), "agree" (the model agrees with the keyword '
        'and is >= confidence sure) or "keyword" (keyword label only)',
    )
    target_precision: float = setting(
        0.97,
        check=between(0.5, 1),
        doc="evidence: share of auto-accepted images that must be right; an image is accepted "
        "when the probability that its keyword class is right reaches this, else review/",
    )
    keyword_prior: float = setting(
        0.7,
        check=between(0.01, 0.99),
        doc="evidence: how often a keyword's results are assumed right before any review "
        "decision or training has measured it (per class and source)",
    )
    keyword_only: str = setting(
        "review",
        check=one_of("accept", "review"),
        doc="evidence: an image only its keyword vouches for (no model yet, or a class the "
        'model does not know) below target_precision: hold it in "review" (training learns '
        "from it, and its label check accepts what calibrated out-of-fold evidence vouches "
        'for) or "accept" it under the keyword (the label check sends the likely wrong ones '
        "to review)",
    )
    confidence: float = setting(
        0.90,
        check=between(0, 1),
        doc='decision "agree": top-1 confidence needed to auto-accept; else review/',
    )
    min_size: int = setting(32, check=at_least(1), doc="smallest accepted width/height, pixels")
    batch_size: int = setting(128, check=at_least(1), doc="images per classification batch")
    workers: int = setting(0, check=at_least(0), doc="hashing processes; 0 = one per core")
    max_aspect: float = setting(8.0, check=at_least(1), doc="longest/shortest side allowed")
    max_pixels: int = setting(
        64_000_000, check=at_least(1), doc="larger images are refused as decompression bombs"
    )
    decode_timeout: float = setting(
        30.0, check=at_least(0.01), doc="seconds one image may take to decode and hash"
    )
    hard_duplicates: bool = setting(
        True, doc="also catch crops, borders, captions and mirror flips"
    )
    hard_distance: int = setting(
        14, check=between(0, 64), doc="Hamming bits between views before verification"
    )
    verify_threshold: float = setting(
        0.86, check=between(-1, 1), doc="pixel correlation a hard duplicate must reach"
    )
    chunk_size: int = setting(
        256, check=at_least(1), doc="inbox images a factory worker claims and files at a time"
    )
    claim_lease: float = setting(
        120.0,
        check=at_least(1),
        doc="seconds a killed factory worker's inbox rows wait before "
        "another worker takes them (renewed while alive)",
    )


@dataclass(frozen=True)
class TrainConfig:
    image_size: int = setting(
        128, check=between(8, 1024), doc="pixels; the model sees image_size x image_size"
    )
    epochs: int = setting(
        100, check=at_least(1), doc="upper bound; early stopping usually ends sooner"
    )
    batch_size: int = setting(32, check=at_least(1), doc="images per training step")
    arch: str = setting(
        "small_cnn",
        check=one_of(*ARCHITECTURES),
        doc="model architecture: "
        + ", ".join(ARCHITECTURES)
        + " (the keras.applications ones can start from train.weights)",
    )
    weights: str = setting(
        "none",
        check=non_empty,
        doc='backbone weights: "none" (random), "imagenet" (downloaded once by Keras into '
        "~/.keras/models; needs the internet once) or a local weights file (relative to "
        "pingo.toml); with weights, the head is trained on a frozen backbone",
    )
    fine_tune_epochs: int = setting(
        0,
        check=at_least(0),
        doc="with weights: epochs fine-tuning the top of the backbone at learning_rate / 100 "
        "after the head is trained (0 = off: the backbone stays frozen)",
    )
    weights_path: str | None = setting(
        None,
        check=non_empty,
        doc="deprecated: use train.weights (a local weights file)",
        example="mobilenet_v2_no_top.h5",
    )
    schedule: str = setting(
        "0 2 * * *",
        check=cron,
        doc="cron: nightly retrain (runs only when every class is at target)",
    )
    promote_margin: float = setting(
        0.0,
        check=between(-1, 1),
        doc="a new model is promoted if its test accuracy >= current + margin on the same test "
        "images, unless McNemar's paired test finds it significantly better (promoted) or worse "
        "(kept)",
    )
    seed: int = setting(1337, doc="random seed of the initial weights, shuffling and augmentation")
    deterministic: bool = setting(
        True,
        doc="the same images and seed train the same model (TensorFlow op determinism), so a "
        "promotion compares data, not chance; set false for speed on a GPU, or where an op "
        "has no deterministic kernel",
    )
    learning_rate: float = setting(1e-3, check=between(0, 1), doc="Adam's initial step size")
    patience: int = setting(
        10, check=at_least(1), doc="epochs without a better val_loss before stopping early"
    )
    val_fraction: float = setting(
        0.15, check=between(0.01, 0.5), doc="share of images (by content hash) kept for validation"
    )
    test_fraction: float = setting(
        0.15, check=between(0.01, 0.5), doc="share of images (by content hash) held out for testing"
    )
    augment: bool = setting(True, doc="random flip/rotation/zoom/contrast on training batches")
    clean_labels: bool = setting(
        True,
        doc="before training, k-fold out-of-fold predictions flag keyword-labelled images that "
        "are likely wrong (cleanlab); flagged ones go to review/ and are not trained on",
    )
    clean_folds: int = setting(4, check=between(2, 20), doc="folds of that label check")
    learn_from_review: bool = setting(
        True,
        doc="also learn from review images filed under their keyword's class because nothing "
        "contradicted it (reasons keyword_only, unsure, low_confidence): train and val splits, "
        "checked by the label check, and counted toward the classes' targets for starting a "
        "training",
    )
    keep_models: int = setting(
        5,
        check=at_least(1),
        doc="model versions `pingo prune` keeps (the newest ones; the "
        "promoted and the previous version are kept besides)",
    )
    cache_memory_mb: int = setting(
        2048,
        check=at_least(0),
        doc="decoded images are cached in memory up to this size, "
        "else in a file under data_dir/cache (48 KB an image "
        "at 128 px)",
    )

    def __post_init__(self) -> None:
        # train.weights_path (deprecated) is folded into train.weights.
        if self.weights_path is None:
            return
        if self.weights != "none":
            raise ConfigError(
                "train.weights_path and train.weights are both set; keep train.weights only "
                "(train.weights_path is its deprecated old name)"
            )
        logger.warning("train.weights_path is deprecated; use train.weights")
        object.__setattr__(self, "weights", self.weights_path)
        object.__setattr__(self, "weights_path", None)


@dataclass(frozen=True)
class StorageConfig:
    db_url: str | None = setting(
        None,
        doc="SQLAlchemy URL; default: sqlite in data_dir",
        example="postgresql://user@127.0.0.1/pingo",
    )
    keep_rejected_days: float = setting(
        30.0,
        check=at_least(0),
        doc="days a rejected image's file is kept before "
        "`pingo prune` deletes it (its row stays, so "
        "nothing is fetched twice)",
    )


_SECTIONS: dict[str, type] = {
    "project": ProjectConfig,
    "crawl": CrawlConfig,
    "factory": FactoryConfig,
    "train": TrainConfig,
    "storage": StorageConfig,
}


@dataclass(frozen=True)
class Config:
    project: ProjectConfig = field(default_factory=ProjectConfig)
    classes: dict[str, ClassConfig] = field(default_factory=dict)
    crawl: CrawlConfig = field(default_factory=CrawlConfig)
    factory: FactoryConfig = field(default_factory=FactoryConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    # Folder that relative paths are resolved against (the config file's folder).
    base_dir: Path = field(default_factory=Path.cwd)
    path: Path | None = None

    @property
    def data_dir(self) -> Path:
        return (self.base_dir / self.project.data_dir).resolve()

    @property
    def db_url(self) -> str:
        url = self.storage.db_url
        if url is None:
            return f"sqlite:///{self.data_dir / 'pingo.db'}"
        prefix = "sqlite:///"
        if url.startswith(prefix) and not url.startswith(prefix + "/") and ":memory:" not in url:
            return prefix + str((self.base_dir / url[len(prefix) :]).resolve())
        return url

    @property
    def targets(self) -> dict[str, int]:
        return {name: c.target for name, c in self.classes.items()}

    def confidence_for(self, class_name: str) -> float:
        own = self.classes[class_name].confidence if class_name in self.classes else None
        return self.factory.confidence if own is None else own

    def review_backlog_for(self, class_name: str) -> tuple[int, str]:
        """How many review images of a class count toward its crawl need, and the key that
        says so: [classes.X] max_review_backlog, else crawl.max_review_backlog, else the
        class's target."""
        cls = self.classes[class_name]
        if cls.max_review_backlog is not None:
            return cls.max_review_backlog, f"classes.{class_name}.max_review_backlog"
        crawl = self.crawl.max_review_backlog
        return (cls.target if crawl is None else crawl), "crawl.max_review_backlog"

    @classmethod
    def from_mapping(
        cls, data: dict[str, Any], base_dir: Path | None = None, path: Path | None = None
    ) -> Config:
        """Build and validate a Config from parsed TOML; raise ConfigError naming the key."""
        if not isinstance(data, dict):
            raise ConfigError("config must be a TOML table")
        unknown = sorted(set(data) - set(_SECTIONS) - {"classes"})
        if unknown:
            raise ConfigError(
                f"unknown section [{unknown[0]}]: allowed sections are "
                + ", ".join(f"[{s}]" for s in ["project", "classes", *list(_SECTIONS)[1:]])
            )
        sections = {
            name: _build(section_cls, data.get(name, {}), name)
            for name, section_cls in _SECTIONS.items()
        }
        classes = _build_classes(data.get("classes", {}))
        return cls(
            classes=classes, base_dir=(base_dir or Path.cwd()).resolve(), path=path, **sections
        )


def _build_classes(raw: Any) -> dict[str, ClassConfig]:
    if not isinstance(raw, dict):
        raise ConfigError("classes: must be tables like [classes.cat]")
    classes = {}
    for name, table in raw.items():
        try:
            check_safe_name(name)
        except UnsafeNameError as exc:
            raise UnsafeNameError(f"classes.{name}: {exc}") from None
        if not isinstance(table, dict):
            raise ConfigError(f"classes.{name}: must be a table like [classes.{name}]")
        if name == NONE_CLASS:
            raise ConfigError(
                f"classes.{name}: {NONE_CLASS!r} is the built-in class of images that are none "
                "of the classes; seed it with `pingo import` (a folder named none/), do not "
                "configure it"
            )
        built = _build(ClassConfig, table, f"classes.{name}", fixed={"name": name})
        if not built.keywords:
            built = dataclasses.replace(built, keywords=[name])
        if any(not k.strip() for k in built.keywords):
            raise ConfigError(f"classes.{name}.keywords: allowed is a list of non-empty strings")
        classes[name] = built
    return classes


def _build(section_cls: type, raw: Any, prefix: str, fixed: dict[str, Any] | None = None):
    """One section from its TOML table; ``fixed`` values come from pingo, not the user."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{prefix}: must be a table [{prefix}]")
    return section_cls(**(fixed or {}), **_checked(section_cls, raw, prefix, tuple(fixed or ())))


def _checked(
    section_cls: type, raw: dict[str, Any], prefix: str, fixed: tuple[str, ...] = ()
) -> dict[str, Any]:
    """``raw``'s values, each type-checked and checked like a config file's; ConfigError
    naming the first key that is unknown or not allowed."""
    fields = {f.name: f for f in dataclasses.fields(section_cls) if f.name not in fixed}
    hints = typing.get_type_hints(section_cls)
    for key in raw:
        if key not in fields:
            raise ConfigError(f"{prefix}.{key}: unknown key; allowed keys are " + ", ".join(fields))
    values = {}
    for key, value in raw.items():
        full = f"{prefix}.{key}"
        value = _check_type(full, value, hints[key])
        check = fields[key].metadata.get("check")
        problem = check(value) if check else None
        if problem:
            raise ConfigError(f"{full}: got {value!r}; allowed is {problem}")
        values[key] = value
    return values


def override(section: S, values: dict[str, Any]) -> S:
    """``section`` (one section's dataclass, e.g. ``config.train``) with ``values`` replaced,
    each checked as in the config file: the same parsing, checks and ConfigError messages
    (for one run's overrides, e.g. ``pingo train --epochs 3``)."""
    prefix = next(name for name, cls in _SECTIONS.items() if isinstance(section, cls))
    return dataclasses.replace(section, **_checked(type(section), values, prefix))


def _type_name(tp: Any) -> str:
    if tp is int:
        return "an integer"
    if tp is float:
        return "a number"
    if tp is str:
        return "a string"
    if tp is bool:
        return "true or false"
    if typing.get_origin(tp) is list:
        return "a list of " + _type_name(typing.get_args(tp)[0]).split(" ", 1)[1] + "s"
    return str(tp)


def _check_type(key: str, value: Any, tp: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _check_type(key, value, args[0])  # TOML has no null, so None never arrives
    if origin is list:
        (item,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"{key}: got {value!r}; allowed is {_type_name(tp)}")
        return [_check_type(f"{key}[{i}]", v, item) for i, v in enumerate(value)]
    ok = (
        isinstance(value, bool)
        if tp is bool
        else isinstance(value, int) and not isinstance(value, bool)
        if tp is int
        else isinstance(value, (int, float)) and not isinstance(value, bool)
        if tp is float
        else isinstance(value, tp)
    )
    if not ok:
        raise ConfigError(f"{key}: got {value!r}; allowed is {_type_name(tp)}")
    return float(value) if tp is float else value


def find_config_path(explicit: str | os.PathLike | None = None) -> Path:
    """The config file to use: --config, else $PINGO_CONFIG, else ./pingo.toml."""
    if explicit:
        return Path(explicit)
    if os.environ.get(CONFIG_ENV):
        return Path(os.environ[CONFIG_ENV])
    return Path.cwd() / DEFAULT_CONFIG_NAME


def load_config(path: str | os.PathLike | None = None) -> Config:
    """Read and validate the config file; raise ConfigError with the key and what is allowed."""
    path = find_config_path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            f"no config file at {path}: run `pingo init` to write a starter "
            f"pingo.toml, or pass --config FILE"
        ) from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    config = Config.from_mapping(data, base_dir=path.resolve().parent, path=path)
    logger.debug("loaded config %s with %d classes", path, len(config.classes))
    return config


STARTER_HEADER = f"""\
# pingo configuration. Every key is optional; the values shown are the defaults (a class's
# target: {ClassConfig.target}), except the example classes and [train]'s arch and weights (see
# the note above [train]). Written by `pingo init` from the settings in core/config.py;
# reference: README.md, section "Configuration".
"""

# A real project starts from a pretrained backbone; TrainConfig's own defaults (small_cnn, no
# weights) stay offline for the demo and the tests.
STARTER_TRAIN: dict[str, Any] = {"arch": "mobilenet_v3_small", "weights": "imagenet"}
STARTER_TRAIN_NOTE = """\
# This file starts from an ImageNet-pretrained MobileNetV3 (arch and weights below, not the
# defaults): a CNN trained from scratch on a few dozen photos a class reaches about 0.5
# accuracy, a pretrained backbone far more (docs/trainer.md, "Pretrained backbones"). Keras
# downloads the weights once (a few MB, into ~/.keras/models); later runs need no network.
# Offline: set weights to a local weights file (relative to this file), or weights = "none"
# with arch = "small_cnn" (from scratch, the default).
"""

# `pingo init` turns on the open-licence APIs beside the demo site; CrawlConfig's own default
# (the demo site only) keeps the tests and library callers offline.
STARTER_CRAWL: dict[str, Any] = {"sources": ["demo", "openverse", "wikimedia"]}
STARTER_CRAWL_NOTE = """\
# crawl.sources starts with the open-licence APIs on (docs/sources.md): openverse works as is
# (anonymous: 200 requests a day; set OPENVERSE_CLIENT_ID / OPENVERSE_CLIENT_SECRET for more),
# wikimedia waits for crawl.user_agent to name you. `pingo demo` uses the demo site only.
"""

STARTER_CLASSES_NOTE = """\
# One table per class. The table name becomes the folder name dataset/<class>/.
# The starter classes match the local demo search site, so `make demo` works offline.
# Also give pingo a few photos a class that you labelled (`pingo import DIR`, DIR/<class>/*):
# until a model exists, crawled images wait in review (factory.keyword_only), and training's
# label check accepts them only once 20+ labelled photos let it measure how sure it may be.
"""

STARTER_TARGET = 100  # images per demo class: enough for `make demo`, quick to crawl
_COMMENT_COLUMN = 31
_WIDTH = 100


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(value)  # strings and lists of strings: JSON's escapes are TOML's


def _setting_lines(f: dataclasses.Field, value: Any) -> list[str]:
    """One setting as starter lines: ``key = value  # doc``; an unset one commented out
    with its example; a table (crawl.profiles) as a comment only."""
    doc = f.metadata.get("doc", "")
    if isinstance(value, dict):
        return textwrap.wrap(
            f"{f.name}: {doc}", _WIDTH, initial_indent="# ", subsequent_indent="# "
        )
    if value is None:
        line = f"# {f.name} = {_toml_value(f.metadata['example'])}"
    else:
        line = f"{f.name} = {_toml_value(value)}"
    if len(line) >= _COMMENT_COLUMN:  # no room for the comment beside it: above it
        if len(line) > _WIDTH and isinstance(value, list):  # a long list: one TOML array
            rows = [""]
            for item in (_toml_value(v) + "," for v in value):
                if rows[-1] and len(rows[-1]) + len(item) + 5 > _WIDTH:
                    rows.append("")
                rows[-1] += (" " if rows[-1] else "") + item
            line = "\n".join([f"{f.name} = [", *(f"    {r}" for r in rows), "]"])
        return (
            textwrap.wrap(
                doc, _WIDTH, initial_indent="# ", subsequent_indent="# ", break_on_hyphens=False
            )
            + line.splitlines()
        )
    indent = " " * _COMMENT_COLUMN + "# "
    wrapped = textwrap.wrap(
        doc, _WIDTH, initial_indent=indent, subsequent_indent=indent, break_on_hyphens=False
    )
    return [line.ljust(_COMMENT_COLUMN) + wrapped[0].lstrip(), *wrapped[1:]]


def _section_lines(instance: Any, skip: tuple[str, ...] = ()) -> list[str]:
    return [
        line
        for f in dataclasses.fields(instance)
        if f.name not in skip
        for line in _setting_lines(f, getattr(instance, f.name))
    ]


def starter_config() -> str:
    """The commented starter pingo.toml, generated from the section dataclasses: every
    setting with its default and its doc, the demo classes as the example classes, and
    [train] on a pretrained backbone (STARTER_TRAIN)."""
    lines = STARTER_HEADER.splitlines()
    lines += ["", "[project]", *_section_lines(ProjectConfig()), ""]
    lines += STARTER_CLASSES_NOTE.splitlines()
    for i, name in enumerate(DEMO_CLASSES):
        example = ClassConfig(name, keywords=[name], target=STARTER_TARGET)
        skip = (
            ("name",)
            if i == len(DEMO_CLASSES) - 1
            else ("name", "confidence", "max_review_backlog")
        )
        lines += [f"[classes.{name}]", *_section_lines(example, skip), ""]
    for section, section_cls in _SECTIONS.items():
        if section == "train":
            lines += STARTER_TRAIN_NOTE.splitlines()
            train = dataclasses.replace(section_cls(), **STARTER_TRAIN)
            lines += ["[train]", *_section_lines(train), ""]
        elif section == "crawl":
            lines += STARTER_CRAWL_NOTE.splitlines()
            crawl = dataclasses.replace(section_cls(), **STARTER_CRAWL)
            lines += ["[crawl]", *_section_lines(crawl), ""]
        elif section != "project":
            lines += [f"[{section}]", *_section_lines(section_cls()), ""]
    return "\n".join(lines[:-1]) + "\n"


def write_starter_config(path: str | os.PathLike, force: bool = False) -> Path:
    """Write the commented starter config; refuse to overwrite unless ``force``."""
    path = Path(path)
    if path.exists() and not force:
        raise ConfigError(f"{path} already exists (use --force to overwrite)")
    path.write_text(starter_config(), encoding="utf-8")
    return path
