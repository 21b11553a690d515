"""The Arena: one challenge's state and every operation on it (HTTP routes and admin CLI call these)."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from datarena.errors import DatarenaError, SubmissionError
from datarena.jobs.queue import JobQueue
from datarena.server import phases
from datarena.server.auth import (
    ApiError,
    LoginLimiter,
    Passwords,
    new_token,
    token_digest,
    validate_password,
    validate_team_name,
)
from datarena.server.catalogue import Catalogue, ExerciseInfo
from datarena.server.config import ChallengeSpec
from datarena.server.db import make_engine, migrate, session_factory
from datarena.server.models import Phase, Reveal, Submission, Team, Token, utcnow
from datarena.underspec.scoring import score_labels

WRITE_RETRIES = 20
TOKEN_CACHE_S = 5.0  # a validated team's token is re-read from the database at most this often
PHASE_CACHE_S = 1.0  # a phase opened by another process is seen within this delay


@dataclass(frozen=True)
class TeamRef:
    """The few fields of a team that requests need (safe to cache and share across threads)."""

    id: int
    name: str
    validated: bool


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


class Arena:
    def __init__(self, spec: ChallengeSpec):
        self.spec = spec
        self.url = spec.resolved_database_url()
        self.engine = make_engine(self.url)
        self.Session = session_factory(self.engine)
        overrides = None
        if spec.exercises is not None:
            overrides = {e.id: e.model_dump() for e in spec.exercises}
        self.catalogue = Catalogue(overrides)
        self.jobs = JobQueue(self.engine, spec.jobs)  # started by the serving process only
        self.passwords = Passwords(spec.argon2_time_cost, spec.argon2_memory_kib)
        self.limiter = LoginLimiter(spec.login_failures_allowed, spec.login_failure_window_s)
        # Read caches of committed, immutable facts only: the database stays the judge of every write.
        self._tokens: dict[str, tuple[TeamRef, float]] = {}
        self._phase: tuple[Phase, float] | None = None
        self._reveals: dict[tuple[int, int, str], list[tuple[int, int]]] = {}
        self._cache_lock = threading.Lock()

    # ------------------------------------------------------------ lifecycle

    def start(self, progress: bool = True) -> Phase:
        """Migrate the schema and open the first phase (generating its data) if none exists."""
        migrate(self.engine)
        with self.Session() as s:
            phase = self._current_phase(s)
        if phase is None:
            first = self.spec.phases[0]
            phase = self.open_phase(first.seed, first.name, first.start, first.end, progress=progress)
        self.catalogue.exercises(phase.data_dir)
        return phase

    def phase_data_dir(self, number: int) -> Path:
        return Path(self.spec.data_dir) / f"phase-{number}"

    def server_secret(self) -> bytes:
        return phases.load_or_create_server_secret(self.spec.resolved_secret_file())

    def open_phase(self, seed: int, name: str | None = None, start: datetime | None = None,
                   end: datetime | None = None, progress: bool = True) -> Phase:
        """Generate every exercise from the phase's secret and open a new phase (earlier ones are kept).

        The data come from HMAC(server secret, phase number and `seed`); only the commitment
        to that secret is served until the phase closes and an organiser reveals it.
        """
        from datarena.underspec.exercises import SourceConfig
        from datarena.underspec.generate import SUITE_INDEX, generate_suite
        from datarena.underspec.suite import load_suite

        with self.Session() as s:
            count = s.scalar(select(func.count(Phase.id))) or 0
        number = count + 1
        secret = phases.phase_secret(self.server_secret(), number, seed)
        commitment = phases.commitment(secret)
        gen_seed = phases.generation_seed(secret)
        out = self.phase_data_dir(number)
        index = out / SUITE_INDEX
        if not index.exists() or json.loads(index.read_text()).get("seed") != gen_seed:
            only = [e.id for e in self.spec.exercises] if self.spec.exercises is not None else None
            cfg = SourceConfig(self.spec.mnist_dir, self.spec.cifar_dir, self.spec.faces_dir)
            generate_suite(load_suite(self.spec.suite), gen_seed, out, cfg, force=True, only=only,
                           progress=progress, public_extra={"commitment": commitment})
        phase = Phase(name=name or f"phase {number}", seed=seed, data_dir=str(out.resolve()),
                      starts_at=start, ends_at=end, number=number, commitment=commitment)
        with self.Session() as s:
            s.add(phase)
            s.commit()
        self._phase = None
        return phase

    def phase_closed(self, phase: Phase) -> bool:
        """Closed: its end date has passed, or a later phase has been opened."""
        if phase.ends_at and utcnow() > phase.ends_at:
            return True
        with self.Session() as s:
            return bool(s.scalar(select(func.count(Phase.id)).where(Phase.id > phase.id)))

    def reveal_phase_secret(self, phase_id: int) -> Phase:
        """Publish a closed phase's secret (idempotent); refuse an open phase."""
        with self.Session() as s:
            phase = s.get(Phase, phase_id)
            if phase is None:
                raise DatarenaError(f"no phase {phase_id}; phases are {[p.id for p in self.phases()]}.")
            if phase.commitment is None or phase.number is None:
                raise DatarenaError(f"{phase.name} was generated from a public seed (before secret seeds); "
                                    f"there is no secret to reveal.")
            if phase.revealed_secret:
                return phase
            if not self.phase_closed(phase):
                until = f"it ends at {phase.ends_at:%Y-%m-%d %H:%M} UTC" if phase.ends_at else "it has no end date"
                raise DatarenaError(f"{phase.name} is still open ({until}); revealing its secret now would "
                                    f"give away every hidden label. Reveal it after it closes, or open the "
                                    f"next phase first (`datarena admin new-phase --seed S`).")
            secret = phases.phase_secret(self.server_secret(), phase.number, phase.seed)
            if phases.commitment(secret) != phase.commitment:
                raise DatarenaError(f"the server secret at {self.spec.resolved_secret_file()} does not match "
                                    f"{phase.name}'s commitment; restore the secret file the phase was opened with.")
            phase.revealed_secret = secret
            phase.revealed_at = utcnow()
            s.commit()
        self._phase = None
        return phase

    def phase_json(self, phase: Phase) -> dict:
        """What anyone may see of a phase: never the seed, the secret only once revealed."""
        out = {"id": phase.id, "name": phase.name, "commitment": phase.commitment,
               "starts_at": phase.starts_at.isoformat() if phase.starts_at else None,
               "ends_at": phase.ends_at.isoformat() if phase.ends_at else None,
               "secret": phase.revealed_secret}
        if phase.revealed_secret:
            out["verify"] = f"datarena verify-phase SERVER_URL --phase {phase.id}"
        return out

    def verification(self, phase_id: int) -> dict:
        """For a revealed phase: the suite file and every file hash needed to check it."""
        from datarena.underspec.generate import SUITE_INDEX

        with self.Session() as s:
            phase = self.phase_by_id(s, phase_id)
        if not phase.revealed_secret:
            raise ApiError(403, f"{phase.name}'s secret is not revealed yet; it is published after the phase closes.")
        root = Path(phase.data_dir)
        index = json.loads((root / SUITE_INDEX).read_text())
        exercises = []
        for e in self.exercises(phase):
            priv = json.loads((e.private_dir / "meta.json").read_text())
            exercises.append({"id": e.id, "dirname": e.dirname, "public_sha256": priv["public_sha256"],
                              "hidden_sha256": priv["sha256"], "source": priv.get("source", {})})
        return {**self.phase_json(phase), "suite_yaml": (root / "suite.yaml").read_text(),
                "only": [e["id"] for e in index["exercises"] if e["status"] == "ok"], "exercises": exercises}

    # ------------------------------------------------------------ lookups

    @staticmethod
    def _current_phase(s: Session) -> Phase | None:
        return s.scalars(select(Phase).order_by(Phase.id.desc()).limit(1)).first()

    def current_phase(self, s: Session | None = None) -> Phase:
        cached = self._phase
        if cached and time.monotonic() < cached[1]:
            return cached[0]
        if s is None:
            with self.Session() as s2:
                phase = self._current_phase(s2)
        else:
            phase = self._current_phase(s)
        if phase is None:
            raise ApiError(503, "the challenge has no open phase yet; an organiser must start it.")
        self._phase = (phase, time.monotonic() + PHASE_CACHE_S)
        return phase

    def phases(self) -> list[Phase]:
        with self.Session() as s:
            return list(s.scalars(select(Phase).order_by(Phase.id)))

    def phase_by_id(self, s: Session, phase_id: int | None) -> Phase:
        if phase_id is None:
            return self.current_phase(s)
        phase = s.get(Phase, phase_id)
        if phase is None:
            raise ApiError(404, f"no phase {phase_id}; phases are {[p.id for p in self.phases()]}.")
        return phase

    def exercise(self, phase: Phase, exercise_id: str | int) -> ExerciseInfo:
        info = self.catalogue.find(phase.data_dir, exercise_id)
        if info is None:
            ids = ", ".join(self.catalogue.exercises(phase.data_dir))
            raise ApiError(404, f"unknown exercise {exercise_id!r}; this phase has {ids}.")
        return info

    def exercises(self, phase: Phase) -> list[ExerciseInfo]:
        return list(self.catalogue.exercises(phase.data_dir).values())

    # ------------------------------------------------------------ teams and auth

    def register(self, name: str, password: str) -> TeamRef:
        name = validate_team_name(name)
        validate_password(password)
        team = Team(name=name, password_hash=self.passwords.hash(password), validated=False)
        with self.Session() as s:
            s.add(team)
            try:
                s.commit()
            except IntegrityError:
                raise ApiError(409, f"team name {name!r} is taken; choose another.") from None
            return TeamRef(team.id, team.name, team.validated)

    def login(self, name: str, password: str, client: str = "?") -> TeamRef:
        """Check credentials (rate-limited per team and per address); 401 on any mismatch."""
        keys = (f"{name}:team", f"{client}:address")
        self.limiter.check(*keys)
        with self.Session() as s:
            team = s.scalars(select(Team).where(Team.name == (name or ""))).first()
        if not self.passwords.verify(team.password_hash if team else None, password or ""):
            self.limiter.fail(*keys)
            raise ApiError(401, "wrong team name or password.", {"WWW-Authenticate": "Bearer"})
        return TeamRef(team.id, team.name, team.validated)

    def issue_token(self, team: TeamRef) -> str:
        token = new_token()
        with self.Session() as s:
            s.add(Token(team_id=team.id, token_sha256=token_digest(token)))
            s.commit()
        return token

    def team_for_token(self, token: str | None) -> TeamRef:
        if not token:
            raise ApiError(401, "missing bearer token; get one with POST /api/token (name, password).",
                           {"WWW-Authenticate": "Bearer"})
        digest = token_digest(token)
        hit = self._tokens.get(digest)
        if hit and time.monotonic() < hit[1]:
            return hit[0]
        with self.Session() as s:
            row = s.execute(
                select(Team.id, Team.name, Team.validated).join(Token, Token.team_id == Team.id)
                .where(Token.token_sha256 == digest)
            ).first()
        if row is None:
            raise ApiError(401, "invalid or revoked token; log in again with POST /api/token.",
                           {"WWW-Authenticate": "Bearer"})
        team = TeamRef(*row)
        if team.validated:  # only validated teams are cached, so a fresh validation shows at once
            self._tokens[digest] = (team, time.monotonic() + TOKEN_CACHE_S)
        return team

    @staticmethod
    def require_validated(team: TeamRef) -> None:
        if not team.validated:
            raise ApiError(403, f"team {team.name!r} is not validated yet; ask an organiser to validate it.")

    @staticmethod
    def require_open(phase: Phase) -> None:
        now = utcnow()
        if phase.starts_at and now < phase.starts_at:
            raise ApiError(403, f"{phase.name} opens at {phase.starts_at:%Y-%m-%d %H:%M} UTC.")
        if phase.ends_at and now > phase.ends_at:
            raise ApiError(403, f"{phase.name} closed at {phase.ends_at:%Y-%m-%d %H:%M} UTC.")

    # ------------------------------------------------------------ reveals

    def _retrying(self, attempt):
        """Run a write transaction, retrying when a concurrent writer took the same slot."""
        for i in range(WRITE_RETRIES):
            with self.Session() as s:
                try:
                    return attempt(s)
                except (IntegrityError, OperationalError):
                    s.rollback()
                    time.sleep(0.002 * (i + 1))
        raise ApiError(503, "the server is busy; retry the request.")

    def reveal(self, team: TeamRef, exercise_id: str | int, datum_id: object) -> RevealResult:
        self.require_validated(team)
        phase = self.current_phase()
        self.require_open(phase)
        info = self.exercise(phase, exercise_id)
        try:
            datum = int(str(datum_id).strip())
        except ValueError:
            raise ApiError(422, f"datum_id must be an integer row index of X_val, got {datum_id!r}.") from None
        if not 0 <= datum < info.n_target:
            raise ApiError(404, f"unknown datum {datum}: exercise {info.id} has target rows 0..{info.n_target - 1}.")
        budget = self.spec.reveal_budget
        key = (team.id, phase.id, info.id)

        def answer(rows: list[tuple[int, int]]) -> RevealResult | None:
            for d, label in rows:
                if d == datum:
                    return RevealResult(info.number, datum, label, [x for x, _ in rows if x != datum])
            if len(rows) >= budget:
                raise ApiError(409, f"reveal budget used up: {budget} of {budget} labels revealed on exercise "
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

        return self._retrying(attempt)

    def _remember(self, key: tuple[int, int, str], rows: list[tuple[int, int]]) -> None:
        """Cache committed reveals; keep the longest list (reveals are never deleted)."""
        with self._cache_lock:
            if len(rows) >= len(self._reveals.get(key, ())):
                self._reveals[key] = rows

    def reveals_of(self, team: TeamRef, phase: Phase, info: ExerciseInfo) -> list[dict]:
        with self.Session() as s:
            rows = s.scalars(select(Reveal).where(
                Reveal.team_id == team.id, Reveal.phase_id == phase.id, Reveal.exercise_id == info.id
            ).order_by(Reveal.slot))
            return [{"datum_id": r.datum_id, "label": r.label, "at": r.created_at.isoformat()} for r in rows]

    # ------------------------------------------------------------ submissions

    def parse_csv(self, data: bytes, info: ExerciseInfo) -> np.ndarray:
        """One integer label per line, no header, no index column."""
        if not data.strip():
            raise ApiError(422, "the file is empty; submit a CSV with one label per target row.")
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise ApiError(422, "the file is not UTF-8 text; submit a plain CSV.") from None
        rows = [r for r in csv.reader(io.StringIO(text)) if any(c.strip() for c in r)]
        if any(len(r) != 1 for r in rows):
            raise ApiError(422, "each line must hold exactly one label: no index column, no extra columns.")
        values = [r[0].strip() for r in rows]
        labels = []
        for i, v in enumerate(values):
            try:
                labels.append(int(v))
            except ValueError:
                if _is_number(v):
                    raise ApiError(422, f"labels must be integers: line {i + 1} holds {v[:20]!r}; write "
                                        f"each label as an integer such as 0 or 1.") from None
                what = "a header line" if i == 0 else f"a non-integer value on line {i + 1}"
                raise ApiError(422, f"found {what} ({v[:20]!r}); the CSV has no header and integer labels only.") from None
        try:
            from datarena.underspec.scoring import validate_labels

            return validate_labels(labels, info.n_target, info.classes)
        except SubmissionError as err:
            raise ApiError(422, str(err)) from None

    def submit(self, team: TeamRef, exercise_id: str | int, data: bytes) -> dict:
        self.require_validated(team)
        phase = self.current_phase()
        self.require_open(phase)
        info = self.exercise(phase, exercise_id)
        if len(data) > self.spec.max_upload_bytes:
            raise ApiError(413, f"the file is larger than {self.spec.max_upload_bytes} bytes.")
        labels = self.parse_csv(data, info)
        y, groups = info.hidden()
        result = score_labels(y, groups, labels, info.classes)
        allowed = self.spec.submissions_per_exercise
        csv_text = "\n".join(map(str, labels.tolist())) + "\n"

        def attempt(s: Session) -> dict:
            n = s.scalar(select(func.count(Submission.id)).where(
                Submission.team_id == team.id, Submission.phase_id == phase.id, Submission.exercise_id == info.id
            )) or 0
            if n >= allowed:
                raise ApiError(409, f"team {team.name!r} already submitted {n} of {allowed} allowed on exercise "
                                    f"{info.id} in {phase.name}.")
            sub = Submission(team_id=team.id, phase_id=phase.id, exercise_id=info.id, slot=n + 1,
                             accuracy=result["accuracy"], worst_group_accuracy=result["worst_group_accuracy"],
                             n_rows=len(labels), labels_sha256=hashlib.sha256(csv_text.encode()).hexdigest(),
                             labels_csv=csv_text)
            s.add(sub)
            s.commit()
            return {"exercise_id": info.number, "submission_id": sub.id, "accuracy": result["accuracy"],
                    "phase": phase.name}

        return self._retrying(attempt)

    # ------------------------------------------------------------ leaderboard

    def leaderboard(self, phase_id: int | None = None) -> dict:
        """Teams ranked by Σ points × accuracy, default score where nothing was submitted."""
        with self.Session() as s:
            phase = self.phase_by_id(s, phase_id)
            teams = list(s.scalars(select(Team).where(Team.validated.is_(True)).order_by(Team.name)))
            subs = list(s.scalars(select(Submission).where(Submission.phase_id == phase.id)
                                  .order_by(Submission.slot)))
        exercises = self.exercises(phase)
        best: dict[tuple[int, str], float] = {}
        for sub in subs:  # the latest allowed submission counts
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
        rows.sort(key=lambda r: (-r["total"], r["team"]))
        for i, r in enumerate(rows):
            r["rank"] = i + 1
        return {
            "title": self.spec.title,
            "phase": self.phase_json(phase),
            "max_total": sum(e.points for e in exercises),
            "exercises": [{"id": e.id, "name": e.name, "points": e.points, "default_score": e.default_score}
                          for e in exercises],
            "rows": rows,
        }

    # ------------------------------------------------------------ organiser

    def validate_team(self, name: str, validated: bool = True) -> TeamRef:
        with self.Session() as s:
            team = s.scalars(select(Team).where(Team.name == name)).first()
            if team is None:
                raise DatarenaError(f"no team named {name!r}; `datarena admin list-teams` shows them.")
            team.validated = validated
            s.commit()
            ref = TeamRef(team.id, team.name, team.validated)
        self._tokens.clear()
        return ref

    def list_teams(self) -> list[dict]:
        with self.Session() as s:
            teams = list(s.scalars(select(Team).order_by(Team.created_at)))
            counts = dict(s.execute(select(Submission.team_id, func.count(Submission.id))
                                    .group_by(Submission.team_id)).all())
        return [{"name": t.name, "validated": t.validated, "created_at": t.created_at.isoformat(timespec="seconds"),
                 "submissions": counts.get(t.id, 0)} for t in teams]

    def export_results(self) -> str:
        """CSV of every submission of every phase (a phase's secret once revealed, never its seed)."""
        with self.Session() as s:
            rows = s.execute(
                select(Phase.name, Phase.commitment, Phase.revealed_secret, Team.name, Submission.exercise_id, Submission.slot,
                       Submission.accuracy, Submission.worst_group_accuracy, Submission.n_rows,
                       Submission.labels_sha256, Submission.created_at)
                .join(Team, Team.id == Submission.team_id).join(Phase, Phase.id == Submission.phase_id)
                .order_by(Submission.id)
            ).all()
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["phase", "commitment", "secret", "team", "exercise_id", "attempt", "accuracy",
                    "worst_group_accuracy", "n_rows", "labels_sha256", "submitted_at"])
        for r in rows:
            w.writerow([*r[:10], r[10].isoformat(timespec="seconds")])
        return buf.getvalue()
