"""Score submitted labels against an exercise's hidden target labels (WILDS-style dict of metrics)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from datarena.data.bundle import GROUP_NAMES, ExerciseBundle, read_bundle
from datarena.errors import SubmissionError


def validate_labels(labels: object, n_rows: int, classes: tuple[int, ...]) -> np.ndarray:
    """Return labels as int64, or raise SubmissionError saying what to fix."""
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise SubmissionError(f"labels must be a flat list with one label per target row; got shape {arr.shape}.")
    if len(arr) != n_rows:
        raise SubmissionError(f"expected {n_rows} labels (one per target row), got {len(arr)}.")
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise SubmissionError("labels must be integers; found non-integer values.")
        arr = arr.astype(np.int64)
    elif arr.dtype.kind not in "iub":
        raise SubmissionError(f"labels must be integers; got values of type {arr.dtype}.")
    arr = arr.astype(np.int64)
    bad = np.setdiff1d(np.unique(arr), np.asarray(classes))
    if len(bad):
        raise SubmissionError(
            f"labels {bad[:10].tolist()} are not classes of this exercise; allowed: {list(classes)}."
        )
    return arr


def score_labels(
    y_true: np.ndarray, groups: np.ndarray, labels: object, classes: tuple[int, ...]
) -> dict:
    """Accuracy, worst-group accuracy and per-group counts."""
    pred = validate_labels(labels, len(y_true), classes)
    correct = pred == y_true
    per_group = {}
    for g, name in GROUP_NAMES.items():
        mask = groups == g
        if mask.any():
            per_group[name] = {"accuracy": float(correct[mask].mean()), "count": int(mask.sum())}
    return {
        "accuracy": float(correct.mean()),
        "worst_group_accuracy": min(v["accuracy"] for v in per_group.values()),
        "groups": per_group,
        "n": int(len(y_true)),
        "n_correct": int(correct.sum()),
    }


def score(bundle_or_dir: ExerciseBundle | str | Path, labels: object) -> dict:
    """Score labels for an exercise given as a bundle or as its public directory."""
    bundle = bundle_or_dir if isinstance(bundle_or_dir, ExerciseBundle) else read_bundle(bundle_or_dir)
    if bundle.y_target is None:
        raise SubmissionError(f"exercise {bundle.exercise_id} has no hidden labels loaded; cannot score.")
    return score_labels(bundle.y_target, bundle.groups_target, labels, bundle.classes)
