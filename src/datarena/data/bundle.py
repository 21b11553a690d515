"""ExerciseBundle: the container of an underspecified exercise and its hackathon42 `.npy` layout.

Public files (what participants get): X_labeled.npy, y_labeled.npy, X_unlabeled.npy,
X_val.npy (the target set), meta.json. Private files (kept apart): y_val.npy,
groups_val.npy, groups_unlabeled.npy, meta.json.

The public meta.json holds only what the task needs (ids, classes, shapes, dtypes, split
sizes, points, default score, description, file checksums, and a served phase's
commitment); how the data were made (generator, parameters, seed, source) is private.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from datarena import __version__
from datarena.data.checksums import sha256_bytes, sha256_file, write_json
from datarena.errors import DatarenaError

CORRELATED, CONFLICTING = 0, 1
GROUP_NAMES = {CORRELATED: "correlated", CONFLICTING: "conflicting"}

PUBLIC_ARRAYS = ("X_labeled", "y_labeled", "X_unlabeled", "X_val")
PRIVATE_ARRAYS = ("y_val", "groups_val", "groups_unlabeled")


@dataclass
class ExerciseBundle:
    """One exercise: public arrays plus the hidden target labels and group tags."""

    exercise_id: str
    name: str
    X_labeled: np.ndarray
    y_labeled: np.ndarray
    X_unlabeled: np.ndarray
    X_target: np.ndarray
    y_target: np.ndarray | None = None
    groups_target: np.ndarray | None = None
    groups_unlabeled: np.ndarray | None = None
    classes: tuple[int, ...] = ()
    meta: dict = field(default_factory=dict)  # private: generator, parameters, seed, source
    public_meta: dict = field(default_factory=dict)  # served: points, default score, description

    @property
    def dirname(self) -> str:
        return f"{self.exercise_id}_{self.name}"

    @property
    def default_score(self) -> float:
        """What the exercise scores when nothing is submitted: the served meta's `default_score`
        (a bundle made in memory by `generate_exercise` keeps it there, one read from disk also in
        `meta`), 0.8 when neither says."""
        return float(self.public_meta.get("default_score", self.meta.get("default_score", 0.8)))

    def arrays(self) -> dict[str, np.ndarray]:
        """Every array under its file name (the target set is X_val, as in hackathon42)."""
        out = {
            "X_labeled": self.X_labeled,
            "y_labeled": self.y_labeled,
            "X_unlabeled": self.X_unlabeled,
            "X_val": self.X_target,
        }
        if self.y_target is not None:
            out["y_val"] = self.y_target
            out["groups_val"] = self.groups_target
            out["groups_unlabeled"] = self.groups_unlabeled
        return out

    def array_sha256(self) -> dict[str, str]:
        """sha256 of every array's .npy serialisation (what is written to disk)."""
        return {k: sha256_bytes(_npy_bytes(v)) for k, v in self.arrays().items()}


def _npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def write_bundle(bundle: ExerciseBundle, public_dir: Path, private_dir: Path, public_extra: dict | None = None) -> None:
    """Write the public and private halves (directories are created; callers make them atomic)."""
    public_dir.mkdir(parents=True, exist_ok=True)
    private_dir.mkdir(parents=True, exist_ok=True)
    arrays = bundle.arrays()
    public = {k: v for k, v in arrays.items() if k in PUBLIC_ARRAYS}
    base_meta = {
        "exercise_id": bundle.exercise_id,
        "name": bundle.name,
        "classes": [int(c) for c in bundle.classes],
        "datarena_version": __version__,
        "shapes": {k: list(v.shape) for k, v in public.items()},
        "dtypes": {k: str(v.dtype) for k, v in public.items()},
        "splits": {"labeled": len(bundle.X_labeled), "unlabeled": len(bundle.X_unlabeled),
                   "target": len(bundle.X_target)},
        **bundle.public_meta,
        **(public_extra or {}),
    }
    public_sha, private_sha = {}, {}
    for key, arr in arrays.items():
        target = (public_dir if key in PUBLIC_ARRAYS else private_dir) / f"{key}.npy"
        np.save(target, arr, allow_pickle=False)
        (public_sha if key in PUBLIC_ARRAYS else private_sha)[f"{key}.npy"] = sha256_file(target)
    write_json(public_dir / "meta.json", {**base_meta, "sha256": public_sha})
    write_json(private_dir / "meta.json", {**base_meta, **bundle.meta, "sha256": private_sha,
                                           "public_sha256": public_sha})


def private_dir_for(public_dir: Path) -> Path:
    """The private twin of DIR/public/<id>_<name> is DIR/private/<id>_<name>."""
    return public_dir.parent.parent / "private" / public_dir.name


def read_bundle(public_dir: str | Path, private_dir: str | Path | None = None, hidden: bool = True) -> ExerciseBundle:
    """Load an exercise directory; the hidden half is loaded when present (or required by hidden=True)."""
    public_dir = Path(public_dir)
    if not (public_dir / "meta.json").exists():
        raise DatarenaError(
            f"{public_dir} is not an exercise directory (no meta.json). Point to DIR/public/<id>_<name> "
            f"as written by `datarena generate suite`."
        )
    public_meta = json.loads((public_dir / "meta.json").read_text())
    arrays = {k: np.load(public_dir / f"{k}.npy", allow_pickle=False) for k in PUBLIC_ARRAYS}
    priv = Path(private_dir) if private_dir else private_dir_for(public_dir)
    hidden_arrays: dict[str, np.ndarray | None] = dict.fromkeys(PRIVATE_ARRAYS)
    meta = dict(public_meta)
    if (priv / "y_val.npy").exists():
        hidden_arrays = {k: np.load(priv / f"{k}.npy", allow_pickle=False) for k in PRIVATE_ARRAYS}
        if (priv / "meta.json").exists():
            meta.update(json.loads((priv / "meta.json").read_text()))
    elif hidden:
        raise DatarenaError(
            f"The hidden labels of {public_dir.name} are not at {priv}; pass the private directory explicitly."
        )
    skip = ("exercise_id", "name", "classes")
    return ExerciseBundle(
        exercise_id=str(meta["exercise_id"]),
        name=meta["name"],
        X_labeled=arrays["X_labeled"],
        y_labeled=arrays["y_labeled"],
        X_unlabeled=arrays["X_unlabeled"],
        X_target=arrays["X_val"],
        y_target=hidden_arrays["y_val"],
        groups_target=hidden_arrays["groups_val"],
        groups_unlabeled=hidden_arrays["groups_unlabeled"],
        classes=tuple(int(c) for c in meta.get("classes", [])),
        meta={k: v for k, v in meta.items() if k not in skip},
        public_meta={k: v for k, v in public_meta.items() if k not in skip},
    )
