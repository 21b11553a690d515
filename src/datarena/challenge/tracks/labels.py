"""The labels track (hackathon42): exercises, the reveal budget, one CSV submission, accuracy."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from datarena.challenge.catalogue import Catalogue, ExerciseInfo
from datarena.challenge.models import Phase, Reveal, Submission, Team
from datarena.challenge.teams import TeamRef
from datarena.challenge.tracks import Track, rank_rows
from datarena.errors import Conflict, Invalid, NotFound, SubmissionError, TooLarge
from datarena.underspec.scoring import score_labels


@dataclass
class RevealResult:
    exercise_id: int
    datum_id: int
    label: int
    previously_revealed: list[int]

    def as_json(self) -> dict:
        return {
            "exercise_id": self.exercise_id,
            "datum_id": self.datum_id,
            "label": self.label,
            "previously revealed": self.previously_revealed,
        }


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def parse_labels_csv(data: bytes, info: ExerciseInfo) -> np.ndarray:
    """One integer label per line, no header, no index column."""
    if not data.strip():
        raise Invalid("the file is empty; submit a CSV with one label per target row.")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise Invalid("the file is not UTF-8 text; submit a plain CSV.") from None
    rows = [r for r in csv.reader(io.StringIO(text)) if any(c.strip() for c in r)]
    if any(len(r) != 1 for r in rows):
        raise Invalid("each line must hold exactly one label: no index column, no extra columns.")
    labels = []
    for i, v in enumerate(r[0].strip() for r in rows):
        try:
            value = int(v)
            if not -(2**31) <= value < 2**31:
                raise Invalid(f"line {i + 1} holds {v[:20]!r}, which is not one of the classes "
                                    f"{', '.join(map(str, info.classes))}.")
            labels.append(value)
        except ValueError:
            if _is_number(v):
                raise Invalid(f"labels must be integers: line {i + 1} holds {v[:20]!r}; write "
                                    f"each label as an integer such as 0 or 1.") from None
            what = "a header line" if i == 0 else f"a non-integer value on line {i + 1}"
            raise Invalid(f"found {what} ({v[:20]!r}); the CSV has no header and integer labels only.") from None
    try:
        from datarena.underspec.scoring import validate_labels

        return validate_labels(labels, info.n_target, info.classes)
    except SubmissionError as err:
        raise Invalid(str(err)) from None


class LabelsTrack(Track):
    kind = "labels"

    def __init__(self, arena, spec):
        super().__init__(arena, spec)
        challenge = arena.spec
        overrides = {e.id: e.model_dump() for e in challenge.exercises} if challenge.exercises is not None else None
        self.catalogue = Catalogue(overrides)
        self._reveals: dict[tuple[int, int, str], list[tuple[int, int]]] = {}
        self._cache_lock = threading.Lock()

    def url(self) -> str:
        return "/"

    # ------------------------------------------------------------ phase data

    def prepare_phase(self, out_dir: Path, generation_seed: int, commitment: str, progress: bool) -> None:
        from datarena.underspec.exercises import SourceConfig
        from datarena.underspec.generate import SUITE_INDEX, generate_suite
        from datarena.underspec.suite import load_suite

        index = out_dir / SUITE_INDEX
        if index.exists() and json.loads(index.read_text()).get("seed") == generation_seed:
            return
        c = self.arena.spec
        only = [e.id for e in c.exercises] if c.exercises is not None else None
        generate_suite(load_suite(c.suite), generation_seed, out_dir, SourceConfig(c.mnist_dir, c.cifar_dir, c.faces_dir),
                       force=True, only=only, progress=progress, public_extra={"commitment": commitment})

    def on_start(self, phase: Phase, progress: bool) -> None:
        self.catalogue.exercises(phase.data_dir)  # a phase directory that lost its data fails here, loudly

    def exercise(self, phase: Phase, exercise_id: str | int) -> ExerciseInfo:
        info = self.catalogue.find(phase.data_dir, exercise_id)
        if info is None:
            ids = ", ".join(self.catalogue.exercises(phase.data_dir))
            raise NotFound(f"unknown exercise {exercise_id!r}; this phase has {ids}.")
        return info

    def exercises(self, phase: Phase) -> list[ExerciseInfo]:
        return list(self.catalogue.exercises(phase.data_dir).values())

    def verification(self, phase: Phase) -> dict:
        """A revealed phase's suite file and the hashes of every public and hidden file."""
        from datarena.underspec.generate import SUITE_INDEX

        root = Path(phase.data_dir)
        index = json.loads((root / SUITE_INDEX).read_text())
        exercises = []
        for e in self.exercises(phase):
            priv = json.loads((e.private_dir / "meta.json").read_text())
            exercises.append({"id": e.id, "dirname": e.dirname, "public_sha256": priv["public_sha256"],
                              "hidden_sha256": priv["sha256"], "source": priv.get("source", {})})
        return {"suite_yaml": (root / "suite.yaml").read_text(),
                "only": [e["id"] for e in index["exercises"] if e["status"] == "ok"], "exercises": exercises}

    # ------------------------------------------------------------ reveals

    def reveal(self, team: TeamRef, exercise_id: str | int, datum_id: object) -> RevealResult:
        arena = self.arena
        phase = arena.phase_open_to(team)
        info = self.exercise(phase, exercise_id)
        try:
            datum = int(str(datum_id).strip())
        except ValueError:
            raise Invalid(f"datum_id must be an integer row index of X_val, got {datum_id!r}.") from None
        if not 0 <= datum < info.n_target:
            raise NotFound(f"unknown datum {datum}: exercise {info.id} has target rows 0..{info.n_target - 1}.")
        budget = arena.spec.reveal_budget
        key = (team.id, phase.id, info.id)

        def answer(rows: list[tuple[int, int]]) -> RevealResult | None:
            for d, label in rows:
                if d == datum:
                    return RevealResult(info.number, datum, label, [x for x, _ in rows if x != datum])
            if len(rows) >= budget:
                raise Conflict(f"reveal budget used up: {budget} of {budget} labels revealed on exercise "
                                    f"{info.id} (datums {[x for x, _ in rows]}); re-revealing those is free.")
            return None

        cached = self._reveals.get(key)
        if cached is not None and (hit := answer(cached)) is not None:
            return hit

        def attempt(s: Session) -> RevealResult:
            rows = [tuple(r) for r in s.execute(select(Reveal.datum_id, Reveal.label).where(
                Reveal.team_id == team.id, Reveal.phase_id == phase.id, Reveal.exercise_id == info.id
            ).order_by(Reveal.slot))]
            self._remember(key, rows)
            if (hit := answer(rows)) is not None:
                return hit
            label = int(info.hidden()[0][datum])
            s.add(Reveal(team_id=team.id, phase_id=phase.id, exercise_id=info.id, datum_id=datum,
                         slot=len(rows) + 1, label=label))
            s.commit()
            self._remember(key, [*rows, (datum, label)])
            return RevealResult(info.number, datum, label, [x for x, _ in rows])

        return arena.retrying(attempt)

    def _remember(self, key: tuple[int, int, str], rows: list[tuple[int, int]]) -> None:
        """Cache committed reveals; keep the longest list (reveals are never deleted)."""
        with self._cache_lock:
            if len(rows) >= len(self._reveals.get(key, ())):
                self._reveals[key] = rows

    def reveals_of(self, team: TeamRef, phase: Phase, info: ExerciseInfo) -> list[dict]:
        with self.arena.Session() as s:
            rows = s.scalars(select(Reveal).where(
                Reveal.team_id == team.id, Reveal.phase_id == phase.id, Reveal.exercise_id == info.id
            ).order_by(Reveal.slot))
            return [{"datum_id": r.datum_id, "label": r.label, "at": r.created_at.isoformat()} for r in rows]

    # ------------------------------------------------------------ submissions

    def submit(self, team: TeamRef, exercise_id: str | int, data: bytes) -> dict:
        arena = self.arena
        phase = arena.phase_open_to(team)
        info = self.exercise(phase, exercise_id)
        if len(data) > arena.spec.max_upload_bytes:
            raise TooLarge(f"the file is larger than {arena.spec.max_upload_bytes} bytes.")
        labels = parse_labels_csv(data, info)
        y, groups = info.hidden()
        result = score_labels(y, groups, labels, info.classes)
        allowed = arena.spec.submissions_per_exercise
        csv_text = "\n".join(map(str, labels.tolist())) + "\n"

        def attempt(s: Session) -> dict:
            n = s.scalar(select(func.count(Submission.id)).where(
                Submission.team_id == team.id, Submission.phase_id == phase.id, Submission.exercise_id == info.id
            )) or 0
            if n >= allowed:
                raise Conflict(f"team {team.name!r} already submitted {n} of {allowed} allowed on exercise "
                                    f"{info.id} in {phase.name}.")
            sub = Submission(team_id=team.id, phase_id=phase.id, exercise_id=info.id, slot=n + 1,
                             accuracy=result["accuracy"], worst_group_accuracy=result["worst_group_accuracy"],
                             n_rows=len(labels), labels_sha256=hashlib.sha256(csv_text.encode()).hexdigest(),
                             labels_csv=csv_text)
            s.add(sub)
            s.commit()
            return {"exercise_id": info.number, "submission_id": sub.id, "accuracy": result["accuracy"],
                    "phase": phase.name}

        return arena.retrying(attempt)

    # ------------------------------------------------------------ organiser actions (challenge.organisers)

    def set_disqualified(self, db: Session, sub_id: int, reason: str | None) -> Submission:
        sub = db.get(Submission, sub_id)
        if sub is None:
            raise NotFound(f"no submission {sub_id} on track {self.id}.")
        sub.disqualified = reason
        return sub

    def rescore(self, sub_ids: list[int] | None = None) -> list[tuple[int, float]]:
        """Score stored label files again against the hidden labels (after a fix to the scoring or the
        data): the given submissions or every one of the current phase. Returns (submission, accuracy)."""
        out = []
        with self.arena.Session() as db:
            phase = self.arena.current_phase(db)
            subs = ([db.get(Submission, i) for i in sub_ids] if sub_ids is not None else
                    list(db.scalars(select(Submission).where(Submission.phase_id == phase.id))))
            if any(s is None for s in subs):
                raise NotFound(f"no submission {sub_ids} on track {self.id}.")
            for sub in subs:
                info = self.exercise(db.get(Phase, sub.phase_id), sub.exercise_id)
                y, groups = info.hidden()
                labels = np.array([int(v) for v in sub.labels_csv.split()], dtype=np.int64)
                result = score_labels(y, groups, labels, info.classes)
                sub.accuracy, sub.worst_group_accuracy = result["accuracy"], result["worst_group_accuracy"]
                out.append((sub.id, result["accuracy"]))
            db.commit()
        return out

    def submissions_table(self, team: str = "", state: str = "") -> list[dict]:
        """Every labels submission for the console, newest first (filter by team name, state)."""
        with self.arena.Session() as db:
            rows = db.execute(select(Submission, Team.name).join(Team, Team.id == Submission.team_id)
                              .order_by(Submission.id.desc())).all()
        out = []
        for sub, name in rows:
            shown = "disqualified" if sub.disqualified else "scored"
            if (not team or team.casefold() in name.casefold()) and (not state or shown == state):
                out.append({"id": sub.id, "team": name, "created_at": sub.created_at.isoformat(timespec="seconds"),
                            "item": f"exercise {sub.exercise_id}", "shown_state": shown, "score": sub.accuracy,
                            "disqualified": sub.disqualified})
        return out

    # ------------------------------------------------------------ leaderboard and export

    def leaderboard(self, phase_id: int | None = None) -> dict:
        """Teams ranked by Σ points × accuracy, default score where nothing was submitted."""
        arena = self.arena
        with arena.Session() as s:
            phase = arena.phase_by_id(s, phase_id)
            subs = list(s.scalars(select(Submission).where(Submission.phase_id == phase.id)
                                  .order_by(Submission.slot)))
        teams = arena.validated_teams()
        exercises = self.exercises(phase)
        best: dict[tuple[int, str], float] = {}
        names = {t.id: t.name for t in teams}
        disqualified = []
        for sub in subs:  # the latest allowed submission counts; a disqualified one leaves the default
            if sub.disqualified:
                if sub.team_id in names:
                    disqualified.append({"team": names[sub.team_id], "submission": sub.id,
                                         "exercise": sub.exercise_id, "reason": sub.disqualified})
                continue
            best[(sub.team_id, sub.exercise_id)] = sub.accuracy
        rows = []
        for t in teams:
            cells, total = {}, 0.0
            for e in exercises:
                acc = best.get((t.id, e.id))
                value = acc if acc is not None else e.default_score
                cells[e.id] = {"score": value, "submitted": acc is not None}
                total += e.points * value
            rows.append({"team": t.name, "total": round(total, 6), "exercises": cells})
        rank_rows(rows, key=lambda r: (-r["total"], r["team"]))
        return {
            "title": arena.spec.title,
            "track": self.id,
            "phase": arena.phase_json(phase),
            "max_total": sum(e.points for e in exercises),
            "exercises": [{"id": e.id, "name": e.name, "points": e.points, "default_score": e.default_score}
                          for e in exercises],
            "rows": rows,
            "disqualified": disqualified,
        }

    def export_rows(self) -> list[dict]:
        with self.arena.Session() as s:
            rows = s.execute(
                select(Phase.name, Phase.commitment, Phase.revealed_secret, Team.name, Submission.exercise_id,
                       Submission.slot, Submission.accuracy, Submission.worst_group_accuracy, Submission.n_rows,
                       Submission.labels_sha256, Submission.created_at)
                .join(Team, Team.id == Submission.team_id).join(Phase, Phase.id == Submission.phase_id)
                .order_by(Submission.id)
            ).all()
        return [{"phase": r[0], "commitment": r[1], "secret": r[2], "track": self.id, "team": r[3], "item": r[4],
                 "attempt": r[5], "score": r[6], "worst_group_accuracy": r[7], "detail": f"{r[8]} rows",
                 "sha256": r[9], "submitted_at": r[10].isoformat(timespec="seconds")} for r in rows]

    def submission_counts(self) -> dict[int, int]:
        with self.arena.Session() as s:
            return dict(s.execute(select(Submission.team_id, func.count(Submission.id))
                                  .group_by(Submission.team_id)).all())

    # ------------------------------------------------------------ routes


TRACK = LabelsTrack  # what `tracks.track_class('labels')` returns
