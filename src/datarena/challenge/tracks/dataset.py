"""The dataset track (SyntaGen, Meta-Sim): teams upload datasets; a fixed training scores them.

Upload -> stream to disk under a cap -> sha256 -> unpack safely -> validate with the track's
rules (422 listing every offending file; nothing counted) -> a submission row and a
`score_dataset` job (202 at once). The score (mIoU, per-class IoU, model checksum) is the
job's result. Protocols:

* `scored`: that is all; the test set is never served.
* `syntagen` (the seed document's two deadlines): until deadline 1 an upload must carry the
  seed and the checksum of the team's own trained model; after deadline 1 uploads close and
  the test set can be downloaded; until deadline 2 a team claims its score with a code
  archive; the leaderboard shows the claim beside the server's own score.

Overlays shown to a team are drawn on its own dataset, never on the private test set.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import tempfile
import zipfile
from datetime import timedelta
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from datarena.challenge.models import DatasetSubmission, Phase, QuotaGrant, Team
from datarena.challenge.teams import TeamRef
from datarena.challenge.tracks import Track
from datarena.data.archives import (
    ArchiveError,
    Limits,
    archive_kind,
    find_dataset_root,
    unpack_safely,
)
from datarena.data.segmentation import (
    CLASS_SETS,
    DatasetRules,
    validate_segmentation,
)
from datarena.db import utcnow
from datarena.errors import (
    Conflict,
    DatarenaError,
    Forbidden,
    Invalid,
    NotFound,
    RateLimited,
)
from datarena.jobs.models import DONE, Job, platform_fault
from datarena.jobs.store import JobError

MAX_LISTED_PROBLEMS = 50
MB = 1 << 20


class DatasetTrack(Track):
    kind = "dataset"

    def __init__(self, arena, spec):
        super().__init__(arena, spec)
        from datarena.evaluate.train import budget_from

        self.classes = CLASS_SETS[spec.classes]
        self.budget = budget_from(spec.budget, **spec.budget_overrides)  # a bad preset fails at start
        if self.budget.num_classes != len(self.classes):
            raise DatarenaError(f"track {self.id}: budget {spec.budget} trains {self.budget.num_classes} classes "
                                f"but the track has {len(self.classes)} ({spec.classes}).")
        self.root = Path(arena.spec.data_dir) / "tracks" / self.id
        self.test_dir = Path(spec.test_set) if spec.test_set else self.root / "private-test-set"
        self.limits = Limits(max_bytes=int(spec.max_unpacked_mb * MB), max_files=spec.max_files)
        self.rules = DatasetRules(
            max_pairs=spec.max_pairs, size=spec.image_size, num_classes=len(self.classes),
            max_bytes=self.limits.max_bytes,
            max_total_pixels=int(spec.max_decoded_mpixels * 1e6) if spec.max_decoded_mpixels else None)

    # ------------------------------------------------------------ lifecycle

    def on_start(self, phase: Phase, progress: bool) -> None:
        """Render the private test set on first start when the track says how (test_render)."""
        if self.test_dir.exists():
            return
        if not self.spec.test_render:
            raise DatarenaError(f"track {self.id}: the test set {self.test_dir} does not exist.")
        from datarena.scenes.writers import dataset_classes, write_dataset

        r = self.spec.test_render
        labels = dataset_classes(r["grammar"])
        if labels != tuple(self.classes):
            raise DatarenaError(f"track {self.id}: test_render grammar {r['grammar']} labels {', '.join(labels)}, "
                                f"but the track's classes ({self.spec.classes}) are {', '.join(self.classes)}.")
        write_dataset(r["grammar"], int(r["n"]), int(r.get("seed", 0)), self.test_dir, show_progress=progress)

    # ------------------------------------------------------------ the public / private split

    @property
    def split(self) -> bool:
        """Whether the test set is split: several submissions per phase would otherwise let a team
        keep its best of N scores on the one private set."""
        s = self.spec
        return s.protocol == "scored" and s.submissions_per_phase > 1 and s.public_fraction is not None

    def public_indices(self) -> list[int]:
        """Test images of the public part: chosen by HMAC(server secret, track, image name), so nothing
        served tells which image is in which part; both parts are non-empty."""
        cached = getattr(self, "_public_split", None)
        if cached is not None:
            return cached
        import hashlib
        import hmac

        from datarena.data.segmentation import load_segmentation

        names = list(load_segmentation(self.test_dir).names)
        key = hmac.new(self.arena.server_secret(), f"datarena public split {self.id}".encode(), hashlib.sha256).digest()
        draw = [int.from_bytes(hmac.new(key, n.encode(), hashlib.sha256).digest()[:8], "big") / 2**64 for n in names]
        public = [i for i, u in enumerate(draw) if u < self.spec.public_fraction]
        if len(names) >= 2 and not public:
            public = [min(range(len(names)), key=lambda i: draw[i])]
        if len(names) >= 2 and len(public) == len(names):
            public.remove(max(range(len(names)), key=lambda i: draw[i]))
        self._public_split = public
        return public

    def info(self) -> dict:
        s = self.spec
        return {"id": self.id, "title": self.title, "kind": self.kind, "protocol": s.protocol,
                "classes": list(self.classes), "rules": {"max_pairs": s.max_pairs, "image_size": s.image_size,
                                                         "mask_values": f"0..{len(self.classes) - 1} and 255"},
                "budget": {"preset": s.budget, **self.budget.model_dump()},
                "submissions_per_phase": s.submissions_per_phase, "submissions_per_day": s.submissions_per_day,
                "max_upload_mb": s.max_upload_mb,
                "deadline1": s.deadline1.isoformat() if s.deadline1 else None,
                "deadline2": s.deadline2.isoformat() if s.deadline2 else None,
                "test_set_released": self.test_released(),
                "test_split": ({"public_fraction": s.public_fraction,
                                "rule": "scores shown during the phase use the public part of the test set; after "
                                        "it closes each team's selected entry (or its best public one) is ranked "
                                        "on the private part"} if self.split else None)}

    def test_released(self) -> bool:
        return self.spec.protocol == "syntagen" and utcnow() > self.spec.deadline1

    # ------------------------------------------------------------ submitting

    def submit(self, team: TeamRef, upload: Path, filename: str, fields: dict) -> dict:
        """Validate an uploaded archive and queue its scoring; nothing is counted if anything is refused."""
        arena = self.arena
        phase = arena.phase_open_to(team)
        s = self.spec
        if s.protocol == "syntagen":
            if utcnow() > s.deadline1:
                raise Forbidden(f"deadline 1 ({s.deadline1:%Y-%m-%d %H:%M} UTC) has passed: datasets are "
                                    f"frozen; claim your score with POST .../submissions/ID/claim until deadline 2.")
            missing = [f for f in ("seed", "checksum") if not str(fields.get(f) or "").strip()]
            if missing:
                raise Invalid(f"the syntagen protocol needs {' and '.join(missing)} with the dataset: the seed "
                                    f"that generated it and the sha256 of the model you trained on it "
                                    f"(`datarena evaluate checksum model.pt`).")
        checksum = str(fields.get("checksum") or "").strip().lower() or None
        if checksum and (len(checksum) != 64 or any(c not in "0123456789abcdef" for c in checksum)):
            raise Invalid("checksum must be the 64 hex digits of a sha256 (`datarena evaluate checksum MODEL`).")
        seed = str(fields.get("seed") or "").strip() or None
        if seed and len(seed) > 64:
            raise Invalid("seed is at most 64 characters.")
        self._check_quota(team, phase)
        work = Path(tempfile.mkdtemp(prefix="upload-", dir=self._staging()))
        try:
            try:
                kind = archive_kind(upload, filename)
            except ArchiveError as exc:
                raise Invalid(self._scrub(str(exc), work)) from None
            digest, size = _sha256(upload)
            if kind == "npz":
                dataset = work / "dataset.npz"
                shutil.copyfile(upload, dataset)
            else:
                try:
                    unpack_safely(upload, work / "unpacked", self.limits, kind)
                    dataset = find_dataset_root(work / "unpacked")
                except ArchiveError as exc:
                    raise Invalid(self._scrub(str(exc), work)) from None
            report = validate_segmentation(dataset, self.rules)
            if report.problems:
                listed = [self._scrub(f"{f}: {msg}", work) for f, msg in report.problems[:MAX_LISTED_PROBLEMS]]
                raise Invalid(f"the dataset breaks the track's rules ({len(report.problems)} problems); "
                                    f"fix every file listed and upload again.", extra={"problems": listed, "n_problems": len(report.problems)})
            return self._record(team, phase, dataset, report.n_pairs, digest, size, seed, checksum,
                                str(fields.get("method") or "")[:4000])
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def _scrub(self, message: str, work: Path) -> str:
        """A message as a team may read it: no server path (the app escapes undecodable bytes)."""
        for secret_path in (str(work), str(self.root.resolve()), str(self.root)):
            message = message.replace(secret_path, "<upload>")
        return message

    def _staging(self) -> Path:
        path = self.root / "staging"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def _counted(self, db, team_id: int, phase_id: int | None = None, since=None) -> int:
        """Submissions that use a slot: all of the team's on this track, less those whose job failed for
        a platform reason (worker lost, storage, cancelled by an organiser): their slot came back."""
        q = select(DatasetSubmission.job_id).where(DatasetSubmission.team_id == team_id,
                                                   DatasetSubmission.track_id == self.id)
        if phase_id is not None:
            q = q.where(DatasetSubmission.phase_id == phase_id)
        if since is not None:
            q = q.where(DatasetSubmission.created_at > since)
        ids = list(db.scalars(q))
        jobs = self._jobs(ids)
        return sum(1 for i in ids if not (i in jobs and platform_fault(jobs[i].state, jobs[i].error)))

    def allowed(self, db, team_id: int, phase_id: int) -> int:
        """Submissions per phase for this team: the track's allowance plus what organisers granted."""
        extra = db.scalar(select(func.coalesce(func.sum(QuotaGrant.extra), 0)).where(
            QuotaGrant.team_id == team_id, QuotaGrant.track_id == self.id, QuotaGrant.phase_id == phase_id)) or 0
        return self.spec.submissions_per_phase + int(extra)

    def _check_quota(self, team: TeamRef, phase: Phase) -> None:
        s = self.spec
        day_ago = utcnow() - timedelta(days=1)
        with self.arena.Session() as db:
            n_phase = self._counted(db, team.id, phase.id)
            n_day = self._counted(db, team.id, since=day_ago)
            allowed = self.allowed(db, team.id, phase.id)
            first_today = db.scalar(select(func.min(DatasetSubmission.created_at)).where(
                DatasetSubmission.team_id == team.id, DatasetSubmission.track_id == self.id,
                DatasetSubmission.created_at > day_ago))
        if n_phase >= allowed:
            raise Conflict(f"team {team.name!r} already used {n_phase} of {allowed} "
                           f"dataset submissions allowed on track {self.id} in {phase.name}.")
        if n_day >= s.submissions_per_day:
            wait = int((first_today + timedelta(days=1) - utcnow()).total_seconds()) + 1 if first_today else 3600
            raise RateLimited(f"team {team.name!r} submitted {n_day} datasets in the last 24 h on track {self.id} "
                                f"(at most {s.submissions_per_day}); try again in {wait // 60 + 1} minutes.", retry_after=max(1, wait))
        active = self.arena.jobs.store.list(state="queued", team_id=team.id) + \
            self.arena.jobs.store.list(state="running", team_id=team.id)
        if len(active) >= self.arena.spec.jobs.max_active_per_team:
            raise RateLimited(f"team {team.name!r} already has {len(active)} scoring job(s) waiting or running; "
                                f"wait for one to finish.", retry_after=60)

    def _record(self, team: TeamRef, phase: Phase, dataset: Path, n_pairs: int, digest: str, size: int,
                seed: str | None, checksum: str | None, method: str) -> dict:
        with self.arena.Session() as db:
            n = db.scalar(select(func.count(DatasetSubmission.id)).where(
                DatasetSubmission.team_id == team.id, DatasetSubmission.phase_id == phase.id,
                DatasetSubmission.track_id == self.id)) or 0
            sub = DatasetSubmission(team_id=team.id, phase_id=phase.id, track_id=self.id, slot=n + 1,
                                    archive_sha256=digest, archive_bytes=size, dataset_path="", n_pairs=n_pairs,
                                    seed=seed, declared_checksum=checksum, method=method)
            db.add(sub)
            try:
                db.commit()
            except IntegrityError:  # a concurrent upload of the same team took the slot
                raise Conflict("another upload of your team was recorded at the same moment; "
                                    "check your submissions before uploading again.") from None
            sub_id = sub.id
        home = self.root / "submissions" / str(sub_id)
        home.mkdir(parents=True, exist_ok=True)
        final = home / ("dataset.npz" if dataset.suffix == ".npz" else "dataset")
        shutil.move(str(dataset), final)
        try:
            job = self.arena.jobs.submit("score_dataset", self._payload(final, home / "score"),
                                         owner=f"dataset-submission:{sub_id}", team_id=team.id)
        except JobError as exc:
            self._forget(sub_id, home)
            raise RateLimited(str(exc), retry_after=60) from None
        except Exception:
            self._forget(sub_id, home)
            raise
        with self.arena.Session() as db:
            row = db.get(DatasetSubmission, sub_id)
            row.dataset_path, row.job_id = str(final), job.id
            db.commit()
        return {"submission_id": sub_id, "job_id": job.id, "sha256": digest, "n_pairs": n_pairs,
                "track": self.id, "phase": phase.name, "state": job.state}

    def _forget(self, sub_id: int, home: Path) -> None:
        with self.arena.Session() as db:
            row = db.get(DatasetSubmission, sub_id)
            if row is not None:
                db.delete(row)
                db.commit()
        shutil.rmtree(home, ignore_errors=True)

    def _payload(self, dataset: Path, out: Path) -> dict:
        return {"dataset": str(dataset), "test": str(self.test_dir), "out": str(out), "preset": self.spec.budget,
                "overrides": self.spec.budget_overrides, "device": self.spec.device, "validate": "skip",
                "overlays_from": "dataset", "public_indices": self.public_indices() if self.split else None}

    def select(self, team: TeamRef, sub_id: int) -> dict:
        """Choose the entry ranked on the private part when the phase closes (one per team and phase)."""
        if not self.split:
            raise NotFound(f"track {self.id} does not split its test set: every score is final.")
        phase = self.arena.phase_open_to(team)
        with self.arena.Session() as db:
            sub = db.get(DatasetSubmission, sub_id)
            if sub is None or sub.team_id != team.id or sub.track_id != self.id or sub.phase_id != phase.id:
                raise NotFound(f"no dataset submission {sub_id} of team {team.name!r} on track {self.id} "
                               f"in {phase.name}.")
            for other in db.scalars(select(DatasetSubmission).where(
                    DatasetSubmission.team_id == team.id, DatasetSubmission.track_id == self.id,
                    DatasetSubmission.phase_id == phase.id)):
                other.selected = other.id == sub_id
            db.commit()
        return {"submission_id": sub_id, "selected": True}

    def private_score(self, sub_id: int) -> dict | None:
        path = self.root / "submissions" / str(sub_id) / "score" / "private.json"
        return json.loads(path.read_text()) if path.is_file() else None

    # ------------------------------------------------------------ syntagen: the second deadline

    def claim(self, team: TeamRef, sub_id: int, score: object, code: Path | None, code_name: str) -> dict:
        s = self.spec
        if s.protocol != "syntagen":
            raise NotFound(f"track {self.id} scores datasets itself; there is no score to claim.")
        now = utcnow()
        if now <= s.deadline1 or now > s.deadline2:
            raise Forbidden(f"scores are claimed between deadline 1 ({s.deadline1:%Y-%m-%d %H:%M}) and "
                                f"deadline 2 ({s.deadline2:%Y-%m-%d %H:%M} UTC).")
        try:
            value = float(str(score))
        except ValueError:
            raise Invalid(f"score must be your mIoU as a number in [0, 1], got {score!r}.") from None
        if not 0.0 <= value <= 1.0:
            raise Invalid(f"score must lie in [0, 1], got {value}.")
        if code is None:
            raise Invalid("attach your code archive (.zip or .tar) as the multipart field 'code'.")
        with self.arena.Session() as db:
            sub = db.get(DatasetSubmission, sub_id)
            if sub is None or sub.team_id != team.id or sub.track_id != self.id:
                raise NotFound(f"no dataset submission {sub_id} of team {team.name!r} on track {self.id}.")
            home = self.root / "submissions" / str(sub_id)
            suffix = "".join(Path(code_name).suffixes)[-16:] or ".bin"
            shutil.copyfile(code, home / f"code{suffix}")
            sub.claimed_score, sub.code_path, sub.code_sha256 = value, str(home / f"code{suffix}"), _sha256(code)[0]
            db.commit()
        return {"submission_id": sub_id, "claimed_score": value}

    def test_set_zip(self) -> bytes:
        if not self.test_released():
            raise Forbidden(f"the test set of track {self.id} is private"
                                + (f" until deadline 1 ({self.spec.deadline1:%Y-%m-%d %H:%M} UTC)."
                                   if self.spec.protocol == "syntagen" else "; it is never served."))
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            for p in sorted(self.test_dir.rglob("*")):
                if p.is_file():
                    zf.write(p, f"test-set/{p.relative_to(self.test_dir)}")
        return buf.getvalue()

    # ------------------------------------------------------------ verification (organisers)

    def verify(self, sub_id: int) -> Job:
        """Queue a re-run of a finished submission (and a regeneration when datarena made the dataset)."""
        with self.arena.Session() as db:
            sub = db.get(DatasetSubmission, sub_id)
            if sub is None or sub.track_id != self.id:
                raise DatarenaError(f"no dataset submission {sub_id} on track {self.id}.")
            scored = self.arena.jobs.get(sub.job_id) if sub.job_id else None
            if scored is None or scored.state != "finished":
                raise DatarenaError(f"submission {sub_id} has no finished score to verify yet "
                                    f"(job {sub.job_id}: {scored.state if scored else 'none'}).")
            payload = {**self._payload(Path(sub.dataset_path), self.root / "submissions" / str(sub_id) / "verify"),
                       "reference": json.loads(scored.result), "tolerance": self.spec.verify_tolerance}
            job = self.arena.jobs.submit("verify_dataset", payload, owner=f"verify:{sub_id}")
            sub.verify_job_id = job.id
            db.commit()
        return job

    # ------------------------------------------------------------ organiser actions (challenge.organisers)

    def set_disqualified(self, db, sub_id: int, reason: str | None) -> DatasetSubmission:
        sub = db.get(DatasetSubmission, sub_id)
        if sub is None or sub.track_id != self.id:
            raise NotFound(f"no dataset submission {sub_id} on track {self.id}.")
        sub.disqualified = reason
        return sub

    def rescore(self, sub_ids: list[int] | None = None) -> list[tuple[int, int]]:
        """Score submissions again as new jobs (e.g. after a budget change): the given ones, or every
        submission of the current phase that is not disqualified. Returns (submission, job) pairs."""
        with self.arena.Session() as db:
            if sub_ids is None:
                phase = self.arena.current_phase(db)
                subs = list(db.scalars(select(DatasetSubmission).where(
                    DatasetSubmission.track_id == self.id, DatasetSubmission.phase_id == phase.id,
                    DatasetSubmission.disqualified.is_(None))))
            else:
                subs = [db.get(DatasetSubmission, i) for i in sub_ids]
                missing = [i for i, sub in zip(sub_ids, subs, strict=True) if sub is None or sub.track_id != self.id]
                if missing:
                    raise NotFound(f"no dataset submission {missing[0]} on track {self.id}.")
            out = []
            for sub in subs:
                if not sub.dataset_path:
                    continue
                home = self.root / "submissions" / str(sub.id)
                job = self.arena.jobs.submit("score_dataset", self._payload(Path(sub.dataset_path), home / "score"),
                                             owner=f"dataset-submission:{sub.id}", team_id=sub.team_id)
                sub.job_id = job.id
                out.append((sub.id, job.id))
            db.commit()
        return out

    def submissions_table(self, team: str = "", state: str = "") -> list[dict]:
        """Every submission of the track for the console, newest first: filter by team name and state."""
        rows = self._rows()
        jobs = self._jobs([r[0].job_id for r in rows] + [r[0].verify_job_id for r in rows])
        out = []
        for sub, name in reversed(rows):
            e = {**self.submission_json(sub, jobs), "team": name}
            shown = "disqualified" if sub.disqualified else e["state"]
            if (not team or team.casefold() in name.casefold()) and (not state or shown == state):
                out.append({**e, "shown_state": shown})
        return out

    # ------------------------------------------------------------ reading

    def _rows(self, phase_id: int | None = None, team_id: int | None = None) -> list[tuple[DatasetSubmission, str]]:
        q = select(DatasetSubmission, Team.name).join(Team, Team.id == DatasetSubmission.team_id).where(
            DatasetSubmission.track_id == self.id).order_by(DatasetSubmission.id)
        if phase_id is not None:
            q = q.where(DatasetSubmission.phase_id == phase_id)
        if team_id is not None:
            q = q.where(DatasetSubmission.team_id == team_id)
        with self.arena.Session() as db:
            return [tuple(r) for r in db.execute(q).all()]

    def _jobs(self, ids: list[int | None]) -> dict[int, Job]:
        wanted = [i for i in ids if i]
        if not wanted:
            return {}
        with self.arena.jobs.store.Session() as db:
            return {j.id: j for j in db.scalars(select(Job).where(Job.id.in_(wanted)))}

    def submission_json(self, sub: DatasetSubmission, jobs: dict[int, Job]) -> dict:
        job = jobs.get(sub.job_id)
        verify = jobs.get(sub.verify_job_id)
        result = json.loads(job.result) if job and job.result else None
        vres = json.loads(verify.result) if verify and verify.result else None
        out = {"id": sub.id, "slot": sub.slot, "selected": sub.selected, "created_at": sub.created_at.isoformat(timespec="seconds"),
               "n_pairs": sub.n_pairs, "sha256": sub.archive_sha256, "seed": sub.seed,
               "declared_checksum": sub.declared_checksum, "method": sub.method, "claimed_score": sub.claimed_score,
               "job_id": sub.job_id, "state": job.state if job else "unknown",
               "disqualified": sub.disqualified,
               # a failure that was the platform's gives the slot back, and the team sees why
               "slot_returned": platform_fault(job.state, job.error) if job else None,
               "progress": job.as_json(private=False)["progress"] if job else None,
               "error": job.error if job else None,
               "miou": result["miou"] if result else None,
               # the 95 % interval (datarena.evaluate.uncertainty); scores from before it existed have none
               "miou_low": result.get("miou_low") if result else None,
               "miou_high": result.get("miou_high") if result else None,
               "seeds": result.get("seeds", 1) if result else None,
               "seed_spread_included": result.get("seed_spread_included", False) if result else None,
               "per_class_iou": result["per_class_iou"] if result else None,
               "server_checksum": result["model_sha256"] if result else None,
               "verification": (vres or {"status": verify.state if verify else None,
                                         "reason": verify.error if verify else None})}
        return out

    def submissions_of(self, team: TeamRef) -> list[dict]:
        rows = self._rows(team_id=team.id)
        jobs = self._jobs([r[0].job_id for r in rows] + [r[0].verify_job_id for r in rows])
        return [self.submission_json(sub, jobs) for sub, _ in reversed(rows)]

    def leaderboard(self, phase_id: int | None = None) -> dict:
        """Each validated team's best finished submission of the phase, ranked by mIoU."""
        arena = self.arena
        with arena.Session() as db:
            phase = arena.phase_by_id(db, phase_id)
        rows = self._rows(phase_id=phase.id)
        jobs = self._jobs([r[0].job_id for r in rows] + [r[0].verify_job_id for r in rows])
        validated = {t.id for t in arena.validated_teams()}
        best: dict[str, dict] = {}
        chosen: dict[str, dict] = {}
        pending: dict[str, int] = {}
        disqualified = []
        for sub, name in rows:
            if sub.team_id not in validated:
                continue
            entry = self.submission_json(sub, jobs)
            if sub.disqualified:
                disqualified.append({"team": name, "submission": sub.id, "reason": sub.disqualified})
                continue
            if entry["miou"] is None:
                if entry["state"] not in DONE:
                    pending[name] = pending.get(name, 0) + 1
                continue
            if name not in best or entry["miou"] > best[name]["miou"]:
                best[name] = {"team": name, **entry}
            if sub.selected:
                chosen[name] = {"team": name, **entry}
        part = "whole"
        if self.split:
            part = "public"
            if arena.phase_closed(phase):  # the final board: each team's entry, on the private part
                part, finals = "private", []
                for entry in {**best, **chosen}.values():
                    private = self.private_score(entry["id"])
                    if private is None:
                        continue
                    finals.append({**entry, "public_miou": entry["miou"], "miou": private["miou"],
                                   "miou_low": private["miou_low"], "miou_high": private["miou_high"],
                                   "per_class_iou": private["per_class_iou"]})
                best = {r["team"]: r for r in finals}
        ranked = rank_in_groups(list(best.values()))
        widths = sorted(r["miou_high"] - r["miou_low"] for r in ranked if r.get("miou_low") is not None)
        # two scores are told apart when their intervals do not meet: about the sum of two half-widths
        resolution = widths[len(widths) // 2] if widths else None
        return {"title": arena.spec.title, "track": self.info(), "phase": arena.phase_json(phase),
                "rows": ranked, "pending": pending, "test_part": part, "resolution": resolution,
                "disqualified": disqualified}

    def export_rows(self) -> list[dict]:
        rows = self._rows()
        jobs = self._jobs([r[0].job_id for r in rows] + [r[0].verify_job_id for r in rows])
        phases = {p.id: p for p in self.arena.phases()}
        out = []
        for sub, name in rows:
            e = self.submission_json(sub, jobs)
            p = phases[sub.phase_id]
            out.append({"phase": p.name, "commitment": p.commitment, "secret": p.revealed_secret, "track": self.id,
                        "team": name, "item": "dataset", "attempt": sub.slot, "score": e["miou"],
                        "worst_group_accuracy": None,
                        "detail": f"{sub.n_pairs} pairs; {e['state']}; "
                                  + (f"95 % interval [{e['miou_low']:.4f}, {e['miou_high']:.4f}] over {e['seeds']} seed(s); "
                                     if e["miou_low"] is not None else "")
                                  + f"server {e['server_checksum'] or '-'}; "
                                  f"declared {sub.declared_checksum or '-'}; claimed {sub.claimed_score}; "
                                  f"verified {e['verification'].get('status') or '-'}",
                        "sha256": sub.archive_sha256, "submitted_at": e["created_at"]})
        return out

    def submission_counts(self) -> dict[int, int]:
        with self.arena.Session() as db:
            return dict(db.execute(select(DatasetSubmission.team_id, func.count(DatasetSubmission.id))
                                   .where(DatasetSubmission.track_id == self.id)
                                   .group_by(DatasetSubmission.team_id)).all())

    def own_submission(self, team: TeamRef, sub_id: int) -> DatasetSubmission:
        with self.arena.Session() as db:
            sub = db.get(DatasetSubmission, sub_id)
        if sub is None or sub.team_id != team.id or sub.track_id != self.id:
            raise NotFound(f"no dataset submission {sub_id} of team {team.name!r} on track {self.id}.")
        return sub

    # ------------------------------------------------------------ routes

def rank_in_groups(rows: list[dict]) -> list[dict]:
    """Best mIoU first; a row's rank is 1 + the number of rows whose 95 % interval lies wholly above
    its own, so scores the track cannot tell apart share a rank (`rank_group_size` says how many)."""
    from datarena.evaluate.uncertainty import rank_groups

    rows.sort(key=lambda r: (-r["miou"], r["team"]))
    bounds = [{"low": r["miou"] if r.get("miou_low") is None else r["miou_low"],
               "high": r["miou"] if r.get("miou_high") is None else r["miou_high"]} for r in rows]
    ranks = rank_groups(bounds, low="low", high="high")
    for r, rank in zip(rows, ranks, strict=True):
        r["rank"] = rank
        r["rank_group_size"] = ranks.count(rank)
    return rows


def _sha256(path: Path) -> tuple[str, int]:
    h, size = hashlib.sha256(), 0
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
            size += len(block)
    return h.hexdigest(), size


TRACK = DatasetTrack  # what `tracks.track_class('dataset')` returns
