"""The learning loop on real photos, two rounds, one column per decision policy (issue 12).

What it measures: how much of a noisy keyword crawl each factory policy files into the
dataset, how right that is (true precision, from a ground-truth map the bench keeps), how
much it leaves to a person (review), how many out-of-scope photos get in, and what the
promoted model then scores on held-out photos, for

* ``keyword``: factory.decision "keyword" (the keyword is the label);
* ``agree``: factory.decision "agree", factory.confidence 0.90 (the old rule);
* ``ev0.90``, ``ev0.95``, ``ev0.97``: factory.decision "evidence" at those
  factory.target_precision values, with train.clean_labels on.

The photos: ``../shared/datasets/cifar10-subset`` (32 px, 600 train and 100 test photos a
class). ``--classes`` (default airplane, automobile, bird, cat, ship) are served through the
demo search site (crawler/demo_site.py), each class's results ``--served`` photos of which
``--noise`` are planted: half photos of the other served classes (wrong class), half photos
of the unserved cifar classes (out of scope), copied under random names so that they are
spread through the results. pingo stores images by content, so a map sha256 -> true class
(or "out_of_scope") says whether a filed image is right. ``--seeds`` photos a class, never
served, are imported as hand-labelled (storage.importer). Held-out: the cifar test photos of
the served classes.

Round 1: targets ``--round1``; one crawl (real headless Chromium, crawler.crawl) into a base
data dir, then the data dir (SQLite DB and folders) is copied once per policy, so every policy
files the same crawl; each copy runs the factory (no model yet) and trainer.train. Round 2:
targets ``--round2``; each policy crawls from its own state (same site, same order: the
crawler's URL memory is in the copied DB; the bench prints whether the round-2 crawls came
out identical), runs the factory with its promoted model, and trains again. Training: small_cnn
at 32 px, up to 30 epochs with early stopping (``--weights FILE``: the evidence policies
train mobilenet_v3_small from that weights file instead). Training is deterministic
(train.deterministic), so one model is one draw of its seed: after round 2 each policy's
training runs ``--repeats`` times with train.seed + 0, 1, ... on the same images, and the
held-out goal compares the means.

Printed: per round a table with the policies side by side (images accepted by label source
with their true precision, review, pingo's review backlog, rejected, out-of-scope accepted,
images the label check flagged, the model and its held-out accuracy, wall times), then the
goal checks of issue 12 as PASS/FAIL lines. "Auto-accepted" is reported two ways: accepted
with label source ``model`` only, and ``model`` plus ``keyword`` (what the policy accepted by
keyword). Precision is counted on the images crawled in that round, in the state they are in
at the end of the round (after training's label check), with a 95% Wilson interval.

    .venv/bin/python bench/loop.py --quick                 # smoke run, ~5 min on 2 cores
    .venv/bin/python bench/loop.py --out loop.json         # the issue-12 experiment, ~12-19 min
    .venv/bin/python bench/loop.py --weights mnv3s.weights.h5 --weights-image-size 96

``--quick`` (3 classes, targets 30 then 60, 8 seeds, 90 results a class) checks the plumbing,
not the figures: its models see ~20 training photos a class and sit at chance.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import random
import shutil
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

DATASET = REPO.parent / "shared" / "datasets" / "cifar10-subset"
if not DATASET.is_dir():  # a worktree under /work/wt/<name>: shared/ is two levels up
    DATASET = REPO.parents[1] / "shared" / "datasets" / "cifar10-subset"
CIFAR = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
DEFAULT_CLASSES = ("airplane", "automobile", "bird", "cat", "ship")
OUT_OF_SCOPE = "out_of_scope"
NONE_CLASS = "none"  # core.names.NONE_CLASS: the built-in out-of-scope class
SOURCES = ("keyword", "model", "human")


# ---- the photos: served folders with planted images, seeds, ground truth -----------------


@dataclass
class Photos:
    site: Path  # site/<class>/<random name>.jpg, what the demo site serves
    seeds: Path  # seeds/<class>/<file>, imported as hand-labelled
    truth: dict[str, str]  # sha256 of the bytes -> true class or OUT_OF_SCOPE
    test: list[tuple[str, str]]  # (path, class): held-out photos
    served: dict[str, Counter] = field(default_factory=dict)  # class -> right/wrong/oos


def build_photos(work: Path, classes: list[str], args: argparse.Namespace) -> Photos:
    """Copy cifar photos into served folders (with planted ones) and seed folders."""
    rng = random.Random(args.seed)
    pools: dict[str, list[Path]] = {}
    for name in CIFAR:
        files = sorted((DATASET / "train" / name).glob("*.jpg"))
        rng.shuffle(files)
        pools[name] = files
    unserved = [c for c in CIFAR if c not in classes]
    photos = Photos(work / "site", work / "seeds", {}, [])

    def copy(src: Path, dst: Path, truth: str) -> None:
        data = src.read_bytes()
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_bytes(data)
        photos.truth[hashlib.sha256(data).hexdigest()] = truth

    for c in classes:
        for src in [pools[c].pop() for _ in range(args.seeds)]:
            copy(src, photos.seeds / c / src.name, c)
    for k in range(args.none_seeds if unserved else 0):  # examples of the built-in none class
        src = pools[unserved[k % len(unserved)]].pop()
        copy(src, photos.seeds / NONE_CLASS / src.name, OUT_OF_SCOPE)
    planted = round(args.served * args.noise)
    n_oos = planted // 2 if unserved else 0
    n_wrong = planted - n_oos
    for i, c in enumerate(classes):
        others = [o for o in classes if o != c]
        picks: list[tuple[Path, str]] = [(pools[c].pop(), c) for _ in range(args.served - planted)]
        for k in range(n_wrong):  # round robin over the other classes, shifted per folder
            o = others[(i + k) % len(others)]
            picks.append((pools[o].pop(), o))
        for k in range(n_oos):
            o = unserved[(i + k) % len(unserved)]
            picks.append((pools[o].pop(), OUT_OF_SCOPE))
        counts: Counter = Counter()
        names = set()
        for src, truth in picks:
            name = f"{rng.getrandbits(48):012x}.jpg"  # sorted order = a random order
            while name in names:
                name = f"{rng.getrandbits(48):012x}.jpg"
            names.add(name)
            copy(src, photos.site / c / name, truth)
            counts["right" if truth == c else "oos" if truth == OUT_OF_SCOPE else "wrong"] += 1
        photos.served[c] = counts
    for c in classes:
        photos.test += [(str(p), c) for p in sorted((DATASET / "test" / c).glob("*.jpg"))]
    return photos


# ---- config, per policy ----------------------------------------------------------------


@dataclass(frozen=True)
class Policy:
    name: str
    decision: str
    target_precision: float | None = None
    clean_labels: bool = False
    weights: str | None = None


def policies(args: argparse.Namespace) -> list[Policy]:
    out = [Policy("keyword", "keyword"), Policy("agree", "agree")]
    for t in args.targets:
        out.append(Policy(f"ev{t:.2f}", "evidence", t, clean_labels=True, weights=args.weights))
    return out


def make_config(data_dir: Path, classes: list[str], target: int, url: str, policy, args):
    from core.config import Config

    train: dict[str, Any] = {
        "image_size": args.image_size,
        "epochs": args.epochs,
        "patience": args.patience,
        "batch_size": args.batch_size,
        "arch": "small_cnn",
        "augment": True,
        "clean_labels": policy.clean_labels if policy else False,
    }
    if policy and policy.weights:
        train.update(
            arch="mobilenet_v3_small",
            weights=str(Path(policy.weights).resolve()),
            image_size=args.weights_image_size,
        )
    factory: dict[str, Any] = {"confidence": 0.90}
    if policy:
        factory["decision"] = policy.decision
        if policy.target_precision is not None:
            factory["target_precision"] = policy.target_precision
            # strict: what only the keyword vouches for waits in review (the trainer still
            # learns from it), so everything accepted met the target
            factory["keyword_only"] = args.keyword_only
    return Config.from_mapping(
        {
            "project": {"data_dir": str(data_dir), "log_level": "WARNING"},
            "classes": {c: {"target": target} for c in classes},
            "crawl": {"sources": ["demo"], "demo_url": url, "per_query_limit": 1000},
            "factory": factory,
            "train": train,
        },
        base_dir=data_dir.parent,
    )


# ---- measuring one data dir ---------------------------------------------------------------


def snapshot(store) -> dict[int, dict[str, Any]]:
    """id -> the row fields the bench reads."""
    keep = ("sha256", "status", "label", "label_source", "reason", "keyword_class", "source")
    return {r["id"]: {k: r[k] for k in keep} for r in store.iter_images()}


def truth_of(row: dict, truth: dict[str, str]) -> str:
    return truth.get(row["sha256"], "unknown")


def tally(rows: list[dict], truth: dict[str, str]) -> dict[str, Any]:
    """Counts over ``rows``: accepted per label source with how many are right, review,
    rejected per reason, out-of-scope crawled/accepted, wrong-class crawled."""
    out: dict[str, Any] = {
        "images": len(rows),
        "accepted": {s: [0, 0] for s in SOURCES},  # source -> [n, right]
        "review": 0,
        "review_right_guess": 0,
        "rejected": Counter(),
        "inbox": 0,
        "oos": 0,
        "oos_accepted": 0,
        "oos_review": 0,
        "wrong_class": 0,
    }
    for r in rows:
        t = truth_of(r, truth)
        if t == OUT_OF_SCOPE:
            out["oos"] += 1
        elif t != r["keyword_class"]:
            out["wrong_class"] += 1
        # filed under the built-in "none" class, an out-of-scope photo is filed right
        right = r["label"] == t or (t == OUT_OF_SCOPE and r["label"] == NONE_CLASS)
        if r["status"] == "accepted":
            n_right = out["accepted"].setdefault(r["label_source"] or "?", [0, 0])
            n_right[0] += 1
            n_right[1] += int(right)
            out["oos_accepted"] += int(t == OUT_OF_SCOPE and r["label"] != NONE_CLASS)
        elif r["status"] == "review":
            out["review"] += 1
            out["review_right_guess"] += int(right)
            out["oos_review"] += int(t == OUT_OF_SCOPE)
        elif r["status"] == "rejected":
            out["rejected"][r["reason"] or "?"] += 1
        else:
            out["inbox"] += 1
    out["rejected"] = dict(out["rejected"])
    return out


def auto(t: dict[str, Any], sources: tuple[str, ...]) -> tuple[int, int]:
    """(accepted, right) over the given label sources."""
    return (
        sum(t["accepted"].get(s, [0, 0])[0] for s in sources),
        sum(t["accepted"].get(s, [0, 0])[1] for s in sources),
    )


def held_out_accuracy(store, test: list[tuple[str, str]], version: str | None = None):
    """(version, right, n) of the promoted model (or ``version``) on the held-out photos."""
    from dataset_factory.classify import Classifier
    from vision.model import load_current, load_model

    loaded = load_model(store.registry.path(version)) if version else load_current(store.registry)
    if loaded is None:
        return None, 0, len(test)
    preds = Classifier(loaded).predict([p for p, _ in test], 128)
    right = sum(p.label == c for p, (_, c) in zip(preds, test))
    return loaded.version, right, len(test)


@dataclass
class RoundResult:
    policy: str
    round: int
    crawled: list[int] = field(default_factory=list)  # ids added by this round's crawl
    crawl_shas: list[str] = field(default_factory=list)
    crawl_s: float = 0.0
    factory_s: float = 0.0
    train_s: float = 0.0
    after_factory: dict[str, Any] = field(default_factory=dict)  # tally of the round's crawl
    end: dict[str, Any] = field(default_factory=dict)  # same, after training's label check
    # earlier rounds' images that this round's training accepted (the label check re-judging
    # what waited in review with only its keyword)
    earlier: dict[str, Any] = field(default_factory=dict)
    total: dict[str, Any] = field(default_factory=dict)  # every image, end of round
    flagged: int = 0  # accepted after the factory, in review after training
    flagged_wrong: int = 0
    review_total: int = 0
    backlog: list[str] = field(default_factory=list)  # pingo's held-back lines
    trained: str | None = None
    promoted: bool = False
    train_reason: str = ""
    test_accuracy: float | None = None  # the new model on its own test split
    test_images: int | None = None
    model: str | None = None  # the promoted model after the round
    held_out: tuple[int, int] | None = None  # promoted model: (right, n)
    held_out_new: tuple[int, int] | None = None  # the round's new model, promoted or not
    # held-out accuracy of the round's training run again with train.seed + 0, 1, ... on the
    # same images (the first is held_out_new): one model is one draw of the initial weights
    held_out_seeds: list[float] = field(default_factory=list)
    arch: str = ""  # train.arch at train.image_size
    dataset: str = ""  # digest of the round's model's manifest.json (what it trained on)
    error: str | None = None


def run_round(
    config, store, photos: Photos, result: RoundResult, before: set[int], crawl_first: bool
):
    """(crawl,) factory, train, measure; fills ``result``."""
    from crawler import crawl
    from crawler.backlog import backlog_lines, review_backlog
    from dataset_factory import process_inbox
    from trainer import train

    result.arch = f"{config.train.arch} {config.train.image_size}px"
    if crawl_first:
        t0 = time.perf_counter()
        crawl(config, store, demo_url=config.crawl.demo_url)
        result.crawl_s = time.perf_counter() - t0
    rows = snapshot(store)
    result.crawled = sorted(
        i for i, r in rows.items() if i not in before and r["source"] != "import"
    )
    result.crawl_shas = sorted(rows[i]["sha256"] for i in result.crawled)
    t0 = time.perf_counter()
    process_inbox(config, store)
    result.factory_s = time.perf_counter() - t0
    mid = snapshot(store)
    result.after_factory = tally([mid[i] for i in result.crawled], photos.truth)
    t0 = time.perf_counter()
    try:
        out = train(config, store, force=True)
        result.trained, result.promoted, result.train_reason = out.version, out.promoted, out.reason
        test = out.metrics.get("test") or {}
        acc = out.metrics.get("test_accuracy", test.get("accuracy"))
        result.test_accuracy = acc
        result.test_images = out.metrics.get("test_images", test.get("images"))
    except Exception as exc:  # a failed training is a result too (e.g. too few images)
        result.error = f"train: {type(exc).__name__}: {exc}"
        logging.getLogger("bench.loop").error("%s round %d: %s", result.policy, result.round, exc)
    result.train_s = time.perf_counter() - t0
    end = snapshot(store)
    result.end = tally([end[i] for i in result.crawled], photos.truth)
    crawled = set(result.crawled)
    result.earlier = tally(
        [
            end[i]
            for i, r in mid.items()
            if i not in crawled and r["status"] == "review" and end[i]["status"] == "accepted"
        ],
        photos.truth,
    )
    result.total = tally(list(end.values()), photos.truth)
    for i, r in mid.items():
        if r["status"] == "accepted" and end[i]["status"] == "review":
            result.flagged += 1
            result.flagged_wrong += int(r["label"] != truth_of(r, photos.truth))
    result.review_total = sum(1 for r in end.values() if r["status"] == "review")
    if result.trained:
        manifest = store.registry.path(result.trained) / "manifest.json"
        result.dataset = hashlib.sha256(manifest.read_bytes()).hexdigest()[:12]
    result.backlog = backlog_lines(review_backlog(config, store))
    version, right, n = held_out_accuracy(store, photos.test)
    result.model = version
    result.held_out = (right, n) if version else None
    if result.trained and result.trained != version:
        _, right, n = held_out_accuracy(store, photos.test, result.trained)
        result.held_out_new = (right, n)
    elif version:
        result.held_out_new = result.held_out
    if result.held_out_new:
        result.held_out_seeds = [result.held_out_new[0] / result.held_out_new[1]]


def retrain_seeds(config, store, photos: Photos, result: RoundResult, repeats: int) -> None:
    """Train the round's model again with other seeds on the same images (no label check: the
    round's check already moved what it flagged) and add their held-out accuracy."""
    from trainer import train

    if not result.trained:
        return
    for i in range(1, repeats):
        out = train(
            config,
            store,
            force=True,
            overrides={"seed": config.train.seed + i, "clean_labels": False},
        )
        _, right, n = held_out_accuracy(store, photos.test, out.version)
        result.held_out_seeds.append(right / n)


def mean_sd(values: list[float]) -> tuple[float, float]:
    m = sum(values) / len(values)
    return m, (sum((v - m) ** 2 for v in values) / max(1, len(values) - 1)) ** 0.5


# ---- printing ------------------------------------------------------------------------------


def prec(n: int, right: int) -> str:
    return f"{n} ({right / n:.2f})" if n else "0"


def interval(n: int, right: int) -> str:
    from core.stats import wilson_interval

    return "[{:.2f}, {:.2f}]".format(*wilson_interval(right, n)) if n else "-"


def print_round(rnd: int, target: int, results: list[RoundResult], width: int) -> None:
    names = [r.policy for r in results]
    print(f"\nround {rnd}: targets {target} a class")
    print(f"{'':<34}" + "".join(f"{n:>{width}}" for n in names))

    def line(label: str, cells: list[str]) -> None:
        print(f"{label:<34}" + "".join(f"{c:>{width}}" for c in cells))

    line("crawled this round", [str(r.end["images"]) for r in results])
    line(
        "  wrong class / out of scope", [f"{r.end['wrong_class']}/{r.end['oos']}" for r in results]
    )
    for src in ("keyword", "model", "human"):
        line(f"accepted by {src} n (true prec)", [prec(*r.end["accepted"][src]) for r in results])
    for label, sources in (("model", ("model",)), ("model+keyword", ("model", "keyword"))):
        line(f"auto-accepted: {label}", [prec(*auto(r.end, sources)) for r in results])
        line("  95% interval of its precision", [interval(*auto(r.end, sources)) for r in results])
    line(
        "  same, as the factory filed them",
        [prec(*auto(r.after_factory, ("model", "keyword"))) for r in results],
    )
    line("review (this round's crawl)", [str(r.end["review"]) for r in results])
    line("  its guess right", [str(r.end["review_right_guess"]) for r in results])
    line("review backlog (all; pingo)", [str(r.review_total) for r in results])
    line("  classes held back (pingo)", [str(len(r.backlog)) for r in results])
    line("rejected", [str(sum(r.end["rejected"].values())) for r in results])
    line(
        "  of which out_of_scope/duplicate",
        [
            f"{r.end['rejected'].get('out_of_scope', 0)}/{r.end['rejected'].get('duplicate', 0)}"
            for r in results
        ],
    )
    line(
        "out-of-scope accepted / crawled",
        [f"{r.end['oos_accepted']}/{r.end['oos']}" for r in results],
    )
    line("flagged by label check (wrong)", [f"{r.flagged} ({r.flagged_wrong})" for r in results])
    line(
        "earlier crawls accepted by it",
        [prec(*auto(r.earlier, SOURCES)) if r.earlier else "-" for r in results],
    )
    line("dataset accepted in all", [str(auto(r.total, SOURCES)[0]) for r in results])
    line(
        "  true precision",
        [f"{auto(r.total, SOURCES)[1] / max(1, auto(r.total, SOURCES)[0]):.3f}" for r in results],
    )
    line(
        "model trained (promoted?)",
        [f"{r.trained or '-'} ({'yes' if r.promoted else 'no'})" for r in results],
    )
    line(
        "  its test split accuracy (n)",
        [
            f"{r.test_accuracy:.3f} ({r.test_images})" if r.test_accuracy is not None else "-"
            for r in results
        ],
    )
    line(
        "  held-out accuracy",
        [
            f"{r.held_out_new[0] / r.held_out_new[1]:.3f}" if r.held_out_new else "-"
            for r in results
        ],
    )
    line(
        "  mean±sd over seeds (n)",
        [
            "{:.3f}±{:.3f} ({})".format(*mean_sd(r.held_out_seeds), len(r.held_out_seeds))
            if r.held_out_seeds
            else "-"
            for r in results
        ],
    )
    line("promoted model", [r.model or "-" for r in results])
    line(
        "  held-out accuracy",
        [f"{r.held_out[0] / r.held_out[1]:.3f}" if r.held_out else "-" for r in results],
    )
    line("wall s: crawl", [f"{r.crawl_s:.0f}" for r in results])
    line("wall s: factory", [f"{r.factory_s:.0f}" for r in results])
    line("wall s: train", [f"{r.train_s:.0f}" for r in results])
    for r in results:
        for b in r.backlog:
            print(f"  {r.policy}: {b}")
        if r.error:
            print(f"  {r.policy}: {r.error}")


def training_noise(rounds: dict[int, list[RoundResult]]) -> list[str]:
    """Held-out accuracy of models trained on the very same accepted images (same round,
    same dataset digest, same training settings): how far two runs differ by chance."""
    lines = []
    for rnd, results in sorted(rounds.items()):
        groups: dict[tuple[str, str], list[RoundResult]] = {}
        for r in results:
            if r.held_out_new and r.trained:
                groups.setdefault((r.dataset, r.arch), []).append(r)
        for same in groups.values():
            if len(same) < 2:
                continue
            accs = [r.held_out_new[0] / r.held_out_new[1] for r in same if r.held_out_new]
            lines.append(
                f"round {rnd}: {', '.join(r.policy for r in same)} trained on the same images: "
                f"held-out {', '.join(f'{a:.3f}' for a in accs)} "
                f"(spread {max(accs) - min(accs):.3f})"
            )
    return lines


def goal_checks(rounds: dict[int, list[RoundResult]], policy_list: list[Policy]) -> list[dict]:
    """The goals of issue 12, one dict per check: name, policy, round, ok, detail."""
    checks = []
    by = {(r.policy, rnd): r for rnd, rs in rounds.items() for r in rs}
    old = [p.name for p in policy_list if p.decision != "evidence"]
    for p in policy_list:
        if p.decision != "evidence":
            continue
        t = p.target_precision or 0.0
        for rnd in sorted(rounds):
            r = by[(p.name, rnd)]
            for label, sources in (("model", ("model",)), ("model+keyword", ("model", "keyword"))):
                # the round's crawl, and earlier crawls its training accepted
                n, right = (a + b for a, b in zip(auto(r.end, sources), auto(r.earlier, sources)))
                ok = n == 0 or right / n >= t - 0.02
                detail = (
                    f"{right}/{n} = {right / n:.3f} vs {t - 0.02:.2f}"
                    if n
                    else "nothing auto-accepted"
                )
                checks.append(
                    dict(goal=f"honest ({label})", policy=p.name, round=rnd, ok=ok, detail=detail)
                )
            n, right = auto(r.end, ("model", "keyword"))
            pe = right / n if n else 0.0
            beaten = []
            for o in old:
                on, oright = auto(by[(o, rnd)].end, ("model", "keyword"))
                op = oright / on if on else 0.0
                # the "at that precision or better": an old policy beats this one only
                # where it is as precise and meets the target (within the honest margin)
                if on and op >= max(pe, t - 0.02) and on > n:
                    beaten.append(f"{o} {on} at {op:.3f}")
            stall = n == 0 and not r.backlog
            ok = not beaten and not stall
            detail = (
                f"{n} at {pe:.3f}"
                + ("; dominated by " + ", ".join(beaten) if beaten else "")
                + ("; stalled: nothing accepted, no backlog announced" if stall else "")
                + (
                    f"; nothing accepted, {len(r.backlog)} classes held back by their "
                    "announced review backlog"
                    if n == 0 and r.backlog
                    else ""
                )
            )
            checks.append(dict(goal="useful", policy=p.name, round=rnd, ok=ok, detail=detail))
        last = by[(p.name, max(rounds))]
        oos, oos_acc = last.total["oos"], last.total["oos_accepted"]
        checks.append(
            dict(
                goal="out of scope <= 2%",
                policy=p.name,
                round="1+2",
                ok=oos == 0 or oos_acc / oos <= 0.02,
                detail=f"{oos_acc}/{oos} accepted",
            )
        )
        # the round's training, averaged over seeds: one model is one draw of its weights
        kw = by[("keyword", max(rounds))]
        mine = mean_sd(last.held_out_seeds)[0] if last.held_out_seeds else 0.0
        theirs = mean_sd(kw.held_out_seeds)[0] if kw.held_out_seeds else 0.0
        checks.append(
            dict(
                goal="held-out >= keyword's",
                policy=p.name,
                round=max(rounds),
                ok=mine >= theirs,
                detail=f"mean of {len(last.held_out_seeds)} seeds {mine:.3f} vs "
                f"{theirs:.3f} ({len(kw.held_out_seeds)} seeds)",
            )
        )
    return checks


# ---- the run ---------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--classes", default=",".join(DEFAULT_CLASSES), help="served classes")
    ap.add_argument("--round1", type=int, default=60, help="class target in round 1")
    ap.add_argument("--round2", type=int, default=150, help="class target in round 2")
    ap.add_argument("--seeds", type=int, default=15, help="hand-labelled photos a class")
    ap.add_argument(
        "--none-seeds",
        type=int,
        default=0,
        help='hand-labelled photos of the unserved classes given as the built-in "none" class',
    )
    ap.add_argument(
        "--keyword-only",
        choices=("review", "accept"),
        default="review",
        help="evidence policies: factory.keyword_only (the first, model-less batch)",
    )
    ap.add_argument("--served", type=int, default=200, help="results the site has per class")
    ap.add_argument("--noise", type=float, default=0.2, help="share of planted results")
    ap.add_argument(
        "--targets",
        type=float,
        nargs="+",
        default=[0.90, 0.95, 0.97],
        help="factory.target_precision values of the evidence policies",
    )
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--patience", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--weights", help="evidence policies: mobilenet_v3_small from this file")
    ap.add_argument("--weights-image-size", type=int, default=96)
    ap.add_argument("--seed", type=int, default=12)
    ap.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="train the last round's model this many times (train.seed + 0, 1, ...) and "
        "compare policies on the mean held-out accuracy",
    )
    ap.add_argument(
        "--quick", action="store_true", help="smoke run: 3 classes, targets 30 then 60, 8 seeds"
    )
    ap.add_argument("--work", type=Path, help="keep the data dirs here (default: a temp dir)")
    ap.add_argument("--out", type=Path, help="write every figure here as JSON")
    args = ap.parse_args(argv)
    if args.quick:
        args.classes, args.round1, args.round2 = "airplane,automobile,bird", 30, 60
        args.seeds, args.served = 8, 90
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    logging.getLogger("tensorflow").setLevel(logging.ERROR)  # retracing notes per model
    classes = [c.strip() for c in args.classes.split(",") if c.strip()]
    bad = [c for c in classes if c not in CIFAR]
    if bad or len(classes) < 2:
        sys.exit(f"--classes: need 2+ of {', '.join(CIFAR)}; got {args.classes}")
    if not DATASET.is_dir():
        sys.exit(f"no photos at {DATASET}")
    if not 0 <= args.noise < 1 or args.seeds + args.served > 600:
        sys.exit("--noise must be in [0, 1) and --seeds + --served at most 600 (photos a class)")

    from crawler import crawl
    from crawler.demo_site import serve_in_thread
    from storage import Store
    from storage.importer import import_folder

    started = time.perf_counter()
    work = args.work or Path(tempfile.mkdtemp(prefix="pingo-bench-loop-"))
    work.mkdir(parents=True, exist_ok=True)
    photos = build_photos(work, classes, args)
    policy_list = policies(args)
    print(
        f"{len(classes)} classes served ({', '.join(classes)}), {args.served} results each: "
        + "; ".join(
            f"{c} {n['right']} right/{n['wrong']} wrong class/{n['oos']} out of scope"
            for c, n in photos.served.items()
        )
    )
    print(
        f"{args.seeds} hand-labelled seeds a class; {len(photos.test)} held-out test photos; "
        f"targets {args.round1} then {args.round2}; small_cnn {args.image_size} px, <= "
        f"{args.epochs} epochs (patience {args.patience})"
        + (f"; evidence policies: mobilenet_v3_small from {args.weights}" if args.weights else "")
        + f"; work dir {work}"
    )
    url, stop = serve_in_thread(photos.site)
    rounds: dict[int, list[RoundResult]] = {1: [], 2: []}
    try:
        # Round 1: one crawl, copied per policy.
        base = work / "base"
        config = make_config(base / "data", classes, args.round1, url, None, args)
        t0 = time.perf_counter()
        with Store.from_config(config) as store:
            import_folder(store, photos.seeds, classes)
            before = {i for i, r in snapshot(store).items() if r["source"] == "import"}
            crawl(config, store, demo_url=url)
        base_crawl_s = time.perf_counter() - t0
        print(f"round 1 crawl: {base_crawl_s:.0f} s (once, copied to every policy)")
        for p in policy_list:
            shutil.copytree(base, work / p.name)
        for p in policy_list:
            config = make_config(work / p.name / "data", classes, args.round1, url, p, args)
            result = RoundResult(p.name, 1, crawl_s=base_crawl_s)
            with Store.from_config(config) as store:
                run_round(config, store, photos, result, before, crawl_first=False)
            rounds[1].append(result)
            print(
                f"  {p.name} round 1: factory {result.factory_s:.0f} s, train "
                f"{result.train_s:.0f} s, {result.model or 'no model'}",
                flush=True,
            )
        for p in policy_list:
            config = make_config(work / p.name / "data", classes, args.round2, url, p, args)
            result = RoundResult(p.name, 2)
            with Store.from_config(config) as store:
                before = set(snapshot(store))
                run_round(config, store, photos, result, before, crawl_first=True)
            rounds[2].append(result)
            print(
                f"  {p.name} round 2: crawl {result.crawl_s:.0f} s, factory "
                f"{result.factory_s:.0f} s, train {result.train_s:.0f} s",
                flush=True,
            )
        for p, result in zip(policy_list, rounds[2], strict=True):
            config = make_config(work / p.name / "data", classes, args.round2, url, p, args)
            t0 = time.perf_counter()
            with Store.from_config(config) as store:
                retrain_seeds(config, store, photos, result, args.repeats)
            print(
                f"  {p.name} round 2, {args.repeats - 1} more seeds: "
                f"{time.perf_counter() - t0:.0f} s",
                flush=True,
            )
    finally:
        stop()
    wall = time.perf_counter() - started
    width = max(16, *(len(p.name) + 2 for p in policy_list))
    print_round(1, args.round1, rounds[1], width)
    print_round(2, args.round2, rounds[2], width)
    same = len({tuple(r.crawl_shas) for r in rounds[2]}) == 1
    print(f"\nround-2 crawls identical across policies: {'yes' if same else 'no'}")
    noise = training_noise(rounds)
    if noise:
        print("same images, same settings, trained again (train.deterministic):")
        for line in noise:
            print("  " + line)
    checks = goal_checks(rounds, policy_list)
    print("\ngoals (issue 12):")
    for c in checks:
        print(
            f"{'PASS' if c['ok'] else 'FAIL'}  {c['goal']:<24} {c['policy']:<8} round "
            f"{c['round']}: {c['detail']}"
        )
    print(f"\nwall time: {wall:.0f} s on {os.cpu_count()} cores")
    if args.out:
        args.out.write_text(
            json.dumps(
                {
                    "args": {
                        k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                    },
                    "served": {c: dict(n) for c, n in photos.served.items()},
                    "rounds": {
                        str(k): [
                            {
                                key: val
                                for key, val in vars(r).items()
                                if key not in ("crawled", "crawl_shas")
                            }
                            for r in v
                        ]
                        for k, v in rounds.items()
                    },
                    "round2_crawls_identical": same,
                    "training_noise": noise,
                    "checks": checks,
                    "wall_s": wall,
                    "cores": os.cpu_count(),
                },
                indent=2,
            )
        )
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
