"""Organisers: accounts apart from teams, their sessions, the actions on teams, the results export,
verification of dataset submissions, and the audit log.

Every organiser action goes through one function here, whichever edge calls it (the admin CLI as
actor "cli", the console as "organiser:NAME"), and appends one `AuditEntry` in the same
transaction as the change it records. Actions that change what participants see on a board are
`public` and listed on /changes with their reason.
"""

from __future__ import annotations

import csv
import io
import json
import threading
import time
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from datarena.challenge.auth import (
    new_token,
    team_name_key,
    token_digest,
    validate_password,
    validate_team_name,
)
from datarena.challenge.models import (
    AuditEntry,
    DatasetSubmission,
    Organiser,
    OrganiserSession,
    Phase,
    QuotaGrant,
    Team,
    Token,
)
from datarena.challenge.state import ChallengeState
from datarena.challenge.teams import team_by_name
from datarena.db import utcnow
from datarena.errors import ConfigError, Conflict, Invalid, NotFound, Unauthorized

ORGANISER_SESSION_HOURS = 12
MAX_REASON = 500
TEAM_ACTIONS = ("validate", "refuse", "disable", "enable", "end_sessions")
# The actions that change a board, a team's standing, the queue of scores or a phase are public
# (/changes); a refusal's reason is the team's own, so /changes shows that it happened, not why.
PUBLIC_ACTIONS = {"validate", "refuse", "disable", "enable", "disqualify", "restore", "rescore", "grant",
                  "cancel_job", "retry_job", "open_phase", "close_phase", "reveal_secret"}
PRIVATE_REASONS = {"refuse": "(the reason was sent to the team)"}
AUDIT_COLUMNS = ["id", "at", "actor", "action", "target", "reason", "public"]
EXPORT_COLUMNS = ["phase", "commitment", "secret", "track", "team", "item", "attempt", "score",
                  "worst_group_accuracy", "detail", "sha256", "submitted_at"]


@dataclass(frozen=True)
class OrganiserRef:
    id: int
    name: str

    @property
    def actor(self) -> str:
        return f"organiser:{self.name}"


def clean_reason(reason: str | None, required: bool, action: str) -> str:
    reason = (reason or "").strip()
    if required and not reason:
        raise Invalid(f"say why ({action}): the reason is shown to the team and in the audit log.")
    if len(reason) > MAX_REASON:
        raise Invalid(f"the reason is longer than {MAX_REASON} characters; shorten it.")
    return reason


def record(s: Session, actor: str, action: str, target: str, reason: str = "") -> None:
    """Append one audit row inside the caller's transaction (it commits with the change)."""
    s.add(AuditEntry(at=utcnow(), actor=actor, action=action, target=target, reason=reason,
                     public=action in PUBLIC_ACTIONS))


class OrganisersMixin(ChallengeState):
    _totp_used: dict[int, int]
    _totp_lock: threading.Lock

    # ---------------------------------------------------------------- accounts and sessions

    def organiser_names(self) -> list[str]:
        with self.Session() as s:
            return list(s.scalars(select(Organiser.name).order_by(Organiser.id)))

    def create_organiser(self, name: str, password: str, totp: bool = False, actor: str = "cli") -> str | None:
        """A new organiser account; with `totp`, returns the provisioning URI of its second factor."""
        import pyotp

        name = validate_team_name(name)
        validate_password(password)
        secret = pyotp.random_base32() if totp else None
        with self.Session() as s:
            s.add(Organiser(name=name, name_key=team_name_key(name), password_hash=self.passwords.hash(password),
                            totp_secret=secret))
            record(s, actor, "create_organiser", f"organiser:{name}", "with TOTP" if totp else "")
            try:
                s.commit()
            except IntegrityError:
                raise Conflict(f"an organiser named {name!r} exists; choose another name.") from None
        if secret is None:
            return None
        return pyotp.TOTP(secret).provisioning_uri(name=name, issuer_name=f"datarena {self.spec.title}")

    def organiser_login(self, name: str, password: str, code: str = "", client: str = "?") -> str:
        """A new organiser session token (rate-limited like team logins, per name and address)."""
        import pyotp

        key = team_name_key(name if isinstance(name, str) else "")[:64]
        keys = (f"{key}:organiser", f"{client}:address")
        self.limiter.check(*keys)
        with self.Session() as s:
            org = s.scalars(select(Organiser).where(Organiser.name_key == key)).first()
        ok = self.passwords.verify(org.password_hash if org else None, password if isinstance(password, str) else "")
        if ok and org.totp_secret:
            code = (code or "").strip().replace(" ", "")
            now = int(time.time())
            totp = pyotp.TOTP(org.totp_secret)
            step = next((now // 30 + d for d in (-1, 0, 1) if totp.at((now // 30 + d) * 30) == code), None)
            with self._totp_lock:  # a code opens one session: a replayed code is refused
                ok = step is not None and step > self._totp_used.get(org.id, -1)
                if ok:
                    self._totp_used[org.id] = step
        if not ok:
            self.limiter.fail(*keys)
            raise Unauthorized("wrong organiser name, password or one-time code.")
        token, now = new_token(), utcnow()
        with self.Session() as s:
            s.add(OrganiserSession(organiser_id=org.id, token_sha256=token_digest(token), created_at=now,
                                   expires_at=now + timedelta(hours=ORGANISER_SESSION_HOURS)))
            s.commit()
        return token

    def organiser_for_session(self, token: str | None) -> OrganiserRef:
        if not token or not isinstance(token, str) or len(token) > 256:
            raise Unauthorized("log in as an organiser at /organiser/login.")
        with self.Session() as s:
            row = s.execute(
                select(Organiser.id, Organiser.name, OrganiserSession.expires_at)
                .join(OrganiserSession, OrganiserSession.organiser_id == Organiser.id)
                .where(OrganiserSession.token_sha256 == token_digest(token), OrganiserSession.revoked_at.is_(None))
            ).first()
        if row is None or row.expires_at <= utcnow():
            raise Unauthorized("the organiser session ended; log in again at /organiser/login.")
        return OrganiserRef(row.id, row.name)

    def organiser_logout(self, token: str | None) -> None:
        if token:
            with self.Session() as s:
                s.execute(update(OrganiserSession).where(OrganiserSession.token_sha256 == token_digest(token))
                          .values(revoked_at=utcnow()))
                s.commit()

    # ---------------------------------------------------------------- teams

    def team_action(self, name: str, action: str, actor: str = "cli", reason: str = "") -> dict:
        """validate / refuse (reason required, the team sees it) / disable (reason required; no login,
        reveal, submission or board place until enabled) / enable; audited."""
        if action not in TEAM_ACTIONS:
            raise Invalid(f"unknown team action {action!r}; actions are {', '.join(TEAM_ACTIONS)}.")
        reason = clean_reason(reason, action in ("refuse", "disable"), action)
        with self.Session() as s:
            team = team_by_name(s, name)
            ended = None
            if action == "end_sessions":  # every token and web session of the team ends now
                ended = s.execute(update(Token).where(Token.team_id == team.id, Token.revoked_at.is_(None))
                                  .values(revoked_at=utcnow())).rowcount
                reason = reason or f"{ended} session(s) ended"
            elif action == "validate":
                team.validated, team.refusal = True, None
            elif action == "refuse":
                team.validated, team.refusal = False, reason
            elif action == "disable":
                team.disabled = True
            else:
                team.disabled = False
            record(s, actor, action, f"team:{team.name}", reason)
            s.commit()
            out, email = {"id": team.id, "name": team.name, "state": team.state, "sessions_ended": ended}, team.email
        self._tokens.clear()  # a cached session of this team must not outlive the change
        if email and action in ("validate", "refuse"):
            title = self.spec.title
            self.mailer.send(email, f"[{title}] team {out['name']} " + ("validated" if action == "validate" else "refused"),
                             f"Your team {out['name']} can now reveal labels and submit." if action == "validate"
                             else f"The organisers refused team {out['name']}: {reason}")
        return out

    def notify_scores(self) -> int:
        """Email each team whose dataset scoring job ended since the last call (finished, failed or
        cancelled, with why); returns how many were sent. The serving process calls it periodically."""
        if not self.mailer.enabled:
            return 0
        from datarena.jobs.models import DONE

        with self.Session() as s:
            rows = s.execute(select(DatasetSubmission, Team.email).join(Team, Team.id == DatasetSubmission.team_id)
                             .where(DatasetSubmission.job_id.is_not(None), Team.email.is_not(None),
                                    (DatasetSubmission.notified_job.is_(None))
                                    | (DatasetSubmission.notified_job != DatasetSubmission.job_id))).all()
            sent = 0
            for sub, email in rows:  # only submissions whose current job has not been announced
                job = self.jobs.get(sub.job_id)
                if job.state not in DONE:
                    continue
                result = json.loads(job.result) if job.result else {}
                body = (f"Your dataset submission {sub.id} on track {sub.track_id} was scored: mIoU "
                        f"{result.get('miou', float('nan')):.4f}." if job.state == "finished" else
                        f"Scoring your dataset submission {sub.id} on track {sub.track_id} ended {job.state}: {job.error}.")
                self.mailer.send(email, f"[{self.spec.title}] submission {sub.id}: {job.state}", body)
                sub.notified_job = sub.job_id
                sent += 1
            s.commit()
        return sent

    def teams_table(self, query: str = "", state: str = "") -> list[dict]:
        """Teams for the console: name contains `query` (folded), in `state` when given."""
        with self.Session() as s:
            teams = list(s.scalars(select(Team).order_by(Team.created_at)))
        key = team_name_key(query)
        return [{"id": t.id, "name": t.name, "state": t.state, "refusal": t.refusal or "",
                 "created_at": t.created_at.isoformat(timespec="seconds")}
                for t in teams if key in t.name_key and (not state or t.state == state)]

    # ---------------------------------------------------------------- phases

    def open_next_phase(self, seed: int, name: str | None = None, actor: str = "cli", progress: bool = False) -> Phase:
        """Generate the next phase's data from its secret and open it (the current one closes); audited."""
        if not isinstance(seed, int) or not 0 <= seed < 2**63:
            raise Invalid("the seed must be a whole number between 0 and 2^63 - 1.")
        phase = self.open_phase(seed, name or None, progress=progress)
        with self.Session() as s:
            record(s, actor, "open_phase", f"phase:{phase.id}", f"{phase.name}; commitment {phase.commitment}")
            s.commit()
        return phase

    def close_phase_now(self, actor: str = "cli", reason: str = "") -> Phase:
        """End the current phase now: no more reveals or submissions; its final boards show; audited."""
        reason = clean_reason(reason, False, "close")
        with self.Session() as s:
            phase = self.current_phase(s)
            phase = s.get(Phase, phase.id)
            if phase.ends_at is not None and phase.ends_at <= utcnow():
                raise Conflict(f"{phase.name} is already closed (at {phase.ends_at:%Y-%m-%d %H:%M} UTC).")
            phase.ends_at = utcnow()
            record(s, actor, "close_phase", f"phase:{phase.id}", reason or f"{phase.name} closed early")
            s.commit()
            s.refresh(phase)
        self._phase = None
        return phase

    def reveal_secret(self, phase_id: int, actor: str = "cli") -> Phase:
        """Publish a closed phase's secret so anyone can verify its data; audited."""
        phase = self.reveal_phase_secret(phase_id)
        with self.Session() as s:
            record(s, actor, "reveal_secret", f"phase:{phase.id}", f"{phase.name}: secret {phase.revealed_secret}")
            s.commit()
        return phase

    # ---------------------------------------------------------------- submissions and quotas

    def _dataset_track(self, track_id: str):
        track = self.track(track_id)
        if track.kind != "dataset":
            raise Invalid(f"track {track_id} is a {track.kind} track; submission actions apply to dataset tracks.")
        return track

    def submission_action(self, track_id: str, sub_id: int, action: str, actor: str = "cli", reason: str = "") -> dict:
        """disqualify (a public reason the board shows) / restore / rescore (dataset tracks: a new scoring
        job; labels tracks: the stored labels scored again) / verify (dataset tracks); audited."""
        track = self.track(track_id) if action != "verify" else self._dataset_track(track_id)
        if action not in ("disqualify", "restore", "rescore", "verify"):
            raise Invalid(f"unknown submission action {action!r}; actions are disqualify, restore, rescore, verify.")
        if action == "verify":
            job = self.verify_submission(sub_id, actor)
            return {"submission": sub_id, "job": job.id}
        reason = clean_reason(reason, action == "disqualify", action)
        if action == "rescore":
            [(sub, outcome)] = track.rescore([sub_id])
            what = f"job {outcome}" if track.kind == "dataset" else f"accuracy {outcome:.4f}"
            with self.Session() as s:
                record(s, actor, "rescore", f"submission:{sub_id} ({track_id})", reason or what)
                s.commit()
            return {"submission": sub, "result": outcome}
        with self.Session() as s:
            sub = track.set_disqualified(s, sub_id, reason if action == "disqualify" else None)
            record(s, actor, action, f"submission:{sub_id} ({track_id})", reason)
            s.commit()
            return {"submission": sub.id, "disqualified": sub.disqualified}

    def rescore_track(self, track_id: str, actor: str = "cli", reason: str = "") -> list[tuple[int, int]]:
        """Every submission of the current phase scored again (dataset tracks: as jobs, after a budget
        change say; labels tracks: at once)."""
        pairs = self.track(track_id).rescore(None)
        with self.Session() as s:
            record(s, actor, "rescore", f"track:{track_id}", clean_reason(reason, False, "rescore")
                   or f"{len(pairs)} submission(s) queued again")
            s.commit()
        return pairs

    def grant_submissions(self, name: str, track_id: str, extra: int, actor: str = "cli", reason: str = "") -> int:
        """Give a team `extra` more dataset submissions on a track in the current phase; returns its allowance."""
        track = self._dataset_track(track_id)
        if not isinstance(extra, int) or not 1 <= extra <= 100:
            raise Invalid("grant between 1 and 100 extra submissions.")
        reason = clean_reason(reason, True, "grant")
        with self.Session() as s:
            team = team_by_name(s, name)
            phase = self.current_phase(s)
            s.add(QuotaGrant(team_id=team.id, track_id=track_id, phase_id=phase.id, extra=extra))
            record(s, actor, "grant", f"team:{team.name} ({track_id})", f"+{extra}: {reason}")
            s.commit()
            return track.allowed(s, team.id, phase.id)

    # ---------------------------------------------------------------- jobs

    def job_action(self, job_id: int, action: str, actor: str = "cli") -> dict:
        """cancel (a queued job never runs; a running one stops at its next heartbeat) / retry (a failed
        or cancelled job runs again); audited."""
        from datarena.jobs.store import JobError

        if action not in ("cancel", "retry"):
            raise Invalid(f"unknown job action {action!r}; actions are cancel, retry.")
        try:
            self.jobs.get(job_id)
        except JobError as exc:
            raise NotFound(str(exc)) from None
        try:
            job = self.jobs.cancel(job_id) if action == "cancel" else self.jobs.retry(job_id)
        except JobError as exc:
            raise Conflict(str(exc)) from None
        with self.Session() as s:
            record(s, actor, f"{action}_job", f"job:{job_id} ({job.kind})")
            s.commit()
        return {"job": job_id, "state": job.state}

    def submit_job(self, kind: str, payload: str, queue: str | None = None, actor: str = "cli"):
        """Queue an organiser job (e.g. a shard of a dataset to render); `payload` is JSON text. Audited."""
        from datarena.jobs.store import JobError

        try:
            body = json.loads(payload or "{}")
        except json.JSONDecodeError as exc:
            raise Invalid(f"the payload is not JSON: {exc}") from None
        if not isinstance(body, dict):
            raise Invalid("the payload must be a JSON object, e.g. {\"seconds\": 1}.")
        try:
            job = self.jobs.submit(kind, body, owner="organiser", queue=queue or None)
        except (JobError, ConfigError) as exc:  # an unknown kind or queue is the organiser's to fix
            raise Invalid(str(exc)) from None
        with self.Session() as s:
            record(s, actor, "submit_job", f"job:{job.id} ({job.kind})")
            s.commit()
        return job

    # ---------------------------------------------------------------- results and verification

    def export_results(self) -> str:
        """CSV of every submission of every track and phase (a phase's secret once revealed, never its seed)."""
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=EXPORT_COLUMNS)
        w.writeheader()
        for track in self.tracks.values():
            for row in track.export_rows():
                w.writerow(row)
        return buf.getvalue()

    def verify_submission(self, submission_id: int, actor: str = "cli"):
        """Queue the re-run (and regeneration) of a dataset submission; returns the job. Audited."""
        with self.Session() as s:
            sub = s.get(DatasetSubmission, submission_id)
        if sub is None:
            raise NotFound(f"no dataset submission {submission_id}; the track page lists them.")
        job = self.track(sub.track_id).verify(submission_id)
        with self.Session() as s:
            record(s, actor, "verify", f"submission:{submission_id} ({sub.track_id})", f"job {job.id}")
            s.commit()
        return job

    # ---------------------------------------------------------------- the audit log

    def audit_entries(self, public_only: bool = False, limit: int = 1000) -> list[dict]:
        with self.Session() as s:
            q = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit)
            if public_only:
                q = q.where(AuditEntry.public.is_(True))
            rows = list(s.scalars(q))
        return [{"id": r.id, "at": r.at.isoformat(timespec="seconds") + "Z", "actor": r.actor, "action": r.action,
                 "target": r.target, "public": r.public,
                 "reason": PRIVATE_REASONS.get(r.action, r.reason) if public_only else r.reason} for r in rows]

    def audit_csv(self) -> str:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=AUDIT_COLUMNS)
        w.writeheader()
        for row in reversed(self.audit_entries(limit=1_000_000)):
            w.writerow(row)
        return buf.getvalue()
