"""What a phase offers: its exercises (from the generated suite) and their hidden labels."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from datarena.data.bundle import PUBLIC_ARRAYS
from datarena.errors import ConfigError

_HIDDEN_LOCK = threading.Lock()
PUBLIC_FILES = tuple(f"{a}.npy" for a in PUBLIC_ARRAYS) + ("meta.json", "preview.png")


@dataclass
class ExerciseInfo:
    id: str
    name: str
    dirname: str
    description: str
    points: float
    default_score: float
    classes: tuple[int, ...]
    n_target: int
    public_dir: Path
    private_dir: Path
    _hidden: dict = field(default_factory=dict, repr=False)

    @property
    def number(self) -> int:
        return int(self.id)

    def hidden(self) -> tuple[np.ndarray, np.ndarray]:
        """(y_target, groups_target), loaded once.

        Concurrent first calls (32 clients revealing at once) must not see a half-filled cache:
        the pair is loaded whole and published in one assignment, under a lock. (A KeyError here
        used to surface as a 500 after which uvicorn closed the keep-alive connection: the
        `ConnectionResetError` of bench_server.py.)
        """
        pair = self._hidden.get("pair")
        if pair is None:
            with _HIDDEN_LOCK:
                pair = self._hidden.get("pair")
                if pair is None:
                    pair = (np.load(self.private_dir / "y_val.npy"), np.load(self.private_dir / "groups_val.npy"))
                    self._hidden["pair"] = pair
        return pair

    def public_files(self) -> list[str]:
        return [f for f in PUBLIC_FILES if (self.public_dir / f).exists()]


class Catalogue:
    """Exercise lists per phase data directory, cached."""

    def __init__(self, overrides: dict[str, dict] | None):
        self.overrides = overrides  # id -> {points, default_score}; None = all exercises
        self._cache: dict[str, dict[str, ExerciseInfo]] = {}
        self._lock = threading.Lock()

    def exercises(self, data_dir: str) -> dict[str, ExerciseInfo]:
        with self._lock:
            if data_dir not in self._cache:
                self._cache[data_dir] = self._load(Path(data_dir))
            return self._cache[data_dir]

    def _load(self, root: Path) -> dict[str, ExerciseInfo]:
        from datarena.underspec.generate import SUITE_INDEX

        index_path = root / SUITE_INDEX
        if not index_path.exists():
            raise ConfigError(f"{root} holds no generated suite (missing {SUITE_INDEX}).")
        index = json.loads(index_path.read_text())
        out: dict[str, ExerciseInfo] = {}
        for e in index["exercises"]:
            if e["status"] != "ok":
                continue
            if self.overrides is not None and e["id"] not in self.overrides:
                continue
            over = (self.overrides or {}).get(e["id"], {})
            pub = root / "public" / e["dirname"]
            meta = json.loads((pub / "meta.json").read_text())
            out[e["id"]] = ExerciseInfo(
                id=e["id"],
                name=e["name"],
                dirname=e["dirname"],
                description=meta.get("description", ""),  # the public text only
                points=float(over.get("points") if over.get("points") is not None else e["points"]),
                default_score=float(
                    over.get("default_score") if over.get("default_score") is not None else e["default_score"]
                ),
                classes=tuple(meta["classes"]),
                n_target=int(meta["shapes"]["X_val"][0]),
                public_dir=pub,
                private_dir=root / "private" / e["dirname"],
            )
        return dict(sorted(out.items(), key=lambda kv: int(kv[0])))

    def find(self, data_dir: str, exercise_id: str | int) -> ExerciseInfo | None:
        exercises = self.exercises(data_dir)
        key = str(exercise_id).strip()
        if key in exercises:
            return exercises[key]
        if key.isdigit():
            for e in exercises.values():
                if e.number == int(key):
                    return e
        return None
