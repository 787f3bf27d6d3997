"""Probability calibration by temperature scaling: fitted by the trainer, applied by every user.

A small CNN's raw softmax is over-confident (0.95 may be right far less than 95% of the time),
and by a different amount for every model, so a fixed threshold means different things for
different models. One scalar temperature T > 0, fitted on held-out images by minimising the
negative log-likelihood, rescales the logits: softmax(z / T). pingo's models output
probabilities, so the logits are taken as log p (softmax(log p / T) = p^(1/T), normalised);
the argmax, and so the accuracy, never changes. T > 1 softens, T < 1 sharpens.

Plain numpy (a golden-section search over log T); no SciPy. The trainer fits T on the
validation split (``calibrate``), the registry entry stores it (calibration.json), and
vision.model / the dataset factory apply it (``apply_temperature``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

MIN_VAL_IMAGES = 20  # fewer validation images than this: T stays 1
LOG_T_BOUNDS = (-3.0, 3.0)  # T in [0.05, 20.1]
ECE_BINS = 10
_EPS = 1e-12


def apply_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    """``probs`` (N, K) rescaled by ``temperature``: softmax(log p / T), rows summing to 1."""
    p = np.asarray(probs, dtype=np.float64)
    if temperature == 1.0 or p.size == 0:
        return p
    z = np.log(np.clip(p, _EPS, 1.0)) / float(temperature)
    z -= z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def nll(y_true: np.ndarray, probs: np.ndarray) -> float:
    """Mean negative log-likelihood of the true classes (NaN for no images)."""
    y = np.asarray(y_true, dtype=np.int64)
    if len(y) == 0:
        return float("nan")
    p = np.asarray(probs, dtype=np.float64)[np.arange(len(y)), y]
    return float(-np.log(np.clip(p, _EPS, 1.0)).mean())


def ece(y_true: np.ndarray, probs: np.ndarray, bins: int = ECE_BINS) -> float:
    """Expected calibration error: confidence (max probability) in ``bins`` equal-width bins
    over (0, 1]; the image-weighted mean of |accuracy - mean confidence| per bin."""
    y = np.asarray(y_true, dtype=np.int64)
    if len(y) == 0:
        return float("nan")
    p = np.asarray(probs, dtype=np.float64)
    confidence = p.max(axis=1)
    correct = p.argmax(axis=1) == y
    # bin b holds confidences in (b/bins, (b+1)/bins]
    which = np.clip(np.ceil(confidence * bins).astype(np.int64) - 1, 0, bins - 1)
    total = 0.0
    for b in range(bins):
        mask = which == b
        if mask.any():
            total += mask.sum() * abs(correct[mask].mean() - confidence[mask].mean())
    return float(total / len(y))


def fit_temperature(y_true: np.ndarray, probs: np.ndarray, tol: float = 1e-5) -> float:
    """The T minimising ``nll(y_true, apply_temperature(probs, T))``, by golden-section
    search over log T in LOG_T_BOUNDS (the NLL is convex in 1/T, so unimodal in log T)."""
    y = np.asarray(y_true, dtype=np.int64)
    logp = np.log(np.clip(np.asarray(probs, dtype=np.float64), _EPS, 1.0))
    rows = np.arange(len(y))

    def loss(log_t: float) -> float:
        z = logp / math.exp(log_t)
        z = z - z.max(axis=1, keepdims=True)
        return float((np.log(np.exp(z).sum(axis=1)) - z[rows, y]).mean())

    lo, hi = LOG_T_BOUNDS
    inv_phi = (math.sqrt(5) - 1) / 2
    c, d = hi - inv_phi * (hi - lo), lo + inv_phi * (hi - lo)
    fc, fd = loss(c), loss(d)
    while hi - lo > tol:
        if fc <= fd:
            hi, d, fd = d, c, fc
            c = hi - inv_phi * (hi - lo)
            fc = loss(c)
        else:
            lo, c, fc = c, d, fd
            d = lo + inv_phi * (hi - lo)
            fd = loss(d)
    return math.exp((lo + hi) / 2)


def calibrate(
    y_val: np.ndarray, p_val: np.ndarray, y_test: np.ndarray, p_test: np.ndarray
) -> dict[str, Any]:
    """Fit T on the validation split and say how calibrated the test split is before and
    after: the "calibration" block of metrics.json (``temperature`` is what to apply).

    T stays 1, with a ``note`` saying why, when the validation split has fewer than
    MIN_VAL_IMAGES images or no misclassified image (then the NLL falls without limit as T
    shrinks: the images cannot say how sharp is right).
    """
    n_val = len(y_val)
    note = None
    if n_val < MIN_VAL_IMAGES:
        note = f"too few validation images to calibrate ({n_val} < {MIN_VAL_IMAGES}); T = 1"
    elif bool((np.asarray(p_val).argmax(axis=1) == np.asarray(y_val)).all()):
        note = "every validation image is classified right, which cannot bound T; T = 1"
    temperature = 1.0 if note else round(fit_temperature(y_val, p_val), 6)
    calibrated = apply_temperature(p_test, temperature)

    def num(x: float) -> float | None:
        return None if math.isnan(x) else round(x, 6)

    return {
        "method": "temperature",
        "temperature": temperature,
        "fitted_on": "val",
        "val_images": int(n_val),
        "fitted": note is None,
        "note": note,
        "test_images": int(len(y_test)),
        "test_ece_before": num(ece(y_test, p_test)),
        "test_ece_after": num(ece(y_test, calibrated)),
        "test_nll_before": num(nll(y_test, p_test)),
        "test_nll_after": num(nll(y_test, calibrated)),
    }
