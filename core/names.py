"""Names that several layers list, each written once here at the bottom.

The config accepts exactly these; trainer.models and dataset_factory.hashing hold one builder
per name (tests/test_config.py checks that their tables match). Adding an architecture is
adding its name here and its builder to trainer.models.ARCHS.
"""

from __future__ import annotations

ARCHITECTURES: tuple[str, ...] = (
    "small_cnn",
    "seed_cnn",
    "mobilenet_v2",
    "mobilenet_v3_small",
    "mobilenet_v3_large",
    "efficientnet_v2_b0",
)
"""Model architectures train.arch may name (trainer.models.ARCHS builds each)."""

HASH_METHODS: tuple[str, ...] = ("phash", "dhash", "whash", "ahash")
"""Perceptual hashes factory.hash may name (dataset_factory.hashing.METHODS computes each)."""

DEMO_CLASSES: tuple[str, ...] = ("circle", "square", "triangle")
"""The classes the local demo site draws; the starter config (``pingo init``) names them."""

DECISIONS: tuple[str, ...] = ("evidence", "agree", "keyword")
"""How the factory files a crawled image (factory.decision; dataset_factory.decide holds each)."""

NONE_CLASS = "none"
"""The built-in class of images that are none of the configured classes (out of scope): a
user may seed it with examples (`pingo import` of a folder none/); from MIN_NONE_EXAMPLES
accepted examples on, the trainer learns it like any class."""

MIN_NONE_EXAMPLES = 10

LEARNABLE_REVIEW_REASONS: tuple[str, ...] = (
    "keyword_only",
    "unsure",
    "low_confidence",
)
"""Review reasons of crawled images that nothing contradicted: only the keyword vouches for it,
or the model's best guess was the keyword's class without enough certainty. The trainer may
learn from them under their keyword's class (train.learn_from_review); not from label_issue
(the label check flagged it), disagrees or other_class (the model thinks it is another class:
learned under the keyword, they teach the keyword's mistakes) or maybe_out_of_scope."""
