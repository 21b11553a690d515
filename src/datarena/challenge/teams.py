"""Teams and auth: registration, validation by an organiser, passwords, tokens, rate limits."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from datarena.challenge.auth import (
    new_token,
    team_name_key,
    token_digest,
    validate_password,
    validate_team_name,
)
from datarena.challenge.models import Team, Token
from datarena.challenge.notify import check_email
from datarena.challenge.state import ChallengeState
from datarena.db import utcnow
from datarena.errors import Conflict, Forbidden, Invalid, NotFound, Unauthorized

TOKEN_CACHE_S = 5.0  # a validated team's token is re-read from the database at most this often


@dataclass(frozen=True)
class TeamRef:
    """The few fields of a team that requests need (safe to cache and share across threads)."""

    id: int
    name: str
    validated: bool


def team_by_name(s, name: str) -> Team:
    """The team row of a name as registered or as typed in any case or width (NotFound otherwise)."""
    team = s.scalars(select(Team).where(Team.name_key == team_name_key(name))).first()
    if team is None:
        raise NotFound(f"no team named {name!r}; `datarena admin list-teams` shows them.")
    return team


def barred(name: str, disabled: bool, refusal: str | None) -> None:
    """A disabled or refused team cannot log in or use a session (it sees why)."""
    if disabled:
        raise Forbidden(f"team {name!r} is disabled by the organisers; it cannot log in, reveal or submit "
                        f"until they enable it (see /changes).")
    if refusal:
        raise Forbidden(f"team {name!r} was refused by the organisers: {refusal}")


class TeamsMixin(ChallengeState):
    """Team operations of the Arena (it provides Session, passwords, limiter and the token cache)."""

    def register(self, name: str, password: str, email: str = "") -> TeamRef:
        """A new team, waiting for an organiser's validation (the organisers are emailed when
        notifications are on); `email` is optional and only used to notify the team."""
        name = validate_team_name(name)
        validate_password(password)
        email = check_email(email)
        key = team_name_key(name)
        with self.Session() as s:
            taken = s.scalar(select(Team.name).where(Team.name_key == key))
        if taken is not None:
            raise Conflict(f"team name {name!r} is taken (as {taken!r}; names differing only in case "
                                f"or width are one name); choose another.")
        team = Team(name=name, name_key=key, password_hash=self.passwords.hash(password), validated=False,
                    email=email or None)
        with self.Session() as s:
            s.add(team)
            try:
                s.commit()
            except IntegrityError:
                raise Conflict(f"team name {name!r} is taken; choose another.") from None
            ref = TeamRef(team.id, team.name, team.validated)
        self.mailer.send(self.spec.notifications.organisers, f"[{self.spec.title}] team {name} registered",
                         f"Team {name} registered and waits for validation: /organiser/teams?state=pending")
        return ref

    def login(self, name: str, password: str, client: str = "?") -> TeamRef:
        """Check credentials (rate-limited per team and per address); 401 on any mismatch."""
        if not isinstance(name, str) or not isinstance(password, str):
            raise Invalid("name and password must be strings.")
        key = team_name_key(name)[:64]
        keys = (f"{key}:team", f"{client}:address")
        self.limiter.check(*keys)
        with self.Session() as s:
            team = s.scalars(select(Team).where(Team.name_key == key)).first()
        if not self.passwords.verify(team.password_hash if team else None, password or ""):
            self.limiter.fail(*keys)
            raise Unauthorized("wrong team name or password.")
        barred(team.name, team.disabled, team.refusal)
        return TeamRef(team.id, team.name, team.validated)

    def issue_token(self, team: TeamRef) -> str:
        """A new bearer token (also the web session's value); it expires after
        `session_lifetime_days` and can be revoked earlier."""
        token = new_token()
        now = utcnow()
        with self.Session() as s:
            s.add(Token(team_id=team.id, token_sha256=token_digest(token), created_at=now,
                        expires_at=now + timedelta(days=self.spec.session_lifetime_days)))
            s.commit()
        return token

    def revoke_token(self, token: str | None) -> bool:
        """Log out: the token (or session) stops working at once. True when one was revoked."""
        if not token:
            return False
        digest = token_digest(token)
        self._tokens.pop(digest, None)
        with self.Session() as s:
            n = s.execute(update(Token).where(Token.token_sha256 == digest, Token.revoked_at.is_(None))
                          .values(revoked_at=utcnow())).rowcount
            s.commit()
        return bool(n)

    def revoke_team_tokens(self, name: str, actor: str = "cli") -> int:
        """An organiser's action: every token and web session of the team ends now; returns how many.
        Audited (`team_action(name, "end_sessions")`)."""
        return self.team_action(name, "end_sessions", actor)["sessions_ended"]

    def team_for_token(self, token: str | None) -> TeamRef:
        if not token:
            raise Unauthorized("missing bearer token; get one with POST /api/token (name, password).")
        if not isinstance(token, str) or len(token) > 256:
            raise Unauthorized("malformed bearer token; log in again with POST /api/token.")
        digest = token_digest(token)
        hit = self._tokens.get(digest)
        if hit and time.monotonic() < hit[1]:
            return hit[0]
        now = utcnow()
        with self.Session() as s:
            row = s.execute(
                select(Team.id, Team.name, Team.validated, Team.disabled, Team.refusal, Token.expires_at)
                .join(Token, Token.team_id == Team.id)
                .where(Token.token_sha256 == digest, Token.revoked_at.is_(None))
            ).first()
        if row is None or row.expires_at is None or row.expires_at <= now:
            why = "expired" if row is not None else "invalid or revoked"
            raise Unauthorized(f"{why} token; log in again with POST /api/token.")
        barred(row.name, row.disabled, row.refusal)
        team = TeamRef(row.id, row.name, row.validated)
        if team.validated:  # only validated teams are cached, so a fresh validation shows at once
            left = (row.expires_at - now).total_seconds()
            self._tokens[digest] = (team, time.monotonic() + min(TOKEN_CACHE_S, left))
        return team

    @staticmethod
    def require_validated(team: TeamRef) -> None:
        if not team.validated:
            raise Forbidden(f"team {team.name!r} is not validated yet; ask an organiser to validate it.")

    def validate_team(self, name: str, validated: bool = True, actor: str = "cli") -> TeamRef:
        """Validate a team (or take its validation back: a refusal); audited (`team_action`)."""
        if validated:
            out = self.team_action(name, "validate", actor)
        else:
            out = self.team_action(name, "refuse", actor, "validation taken back by an organiser")
        return TeamRef(out["id"], out["name"], out["state"] == "validated")

    def list_teams(self) -> list[dict]:
        with self.Session() as s:
            teams = list(s.scalars(select(Team).order_by(Team.created_at)))
        counts: dict[int, int] = {}
        for track in self.tracks.values():
            for team_id, n in track.submission_counts().items():
                counts[team_id] = counts.get(team_id, 0) + n
        return [{"name": t.name, "validated": t.validated, "state": t.state, "created_at": t.created_at.isoformat(timespec="seconds"),
                 "submissions": counts.get(t.id, 0)} for t in teams]

    def validated_teams(self) -> list[Team]:
        with self.Session() as s:
            return list(s.scalars(select(Team).where(Team.validated.is_(True), Team.disabled.is_(False))
                                  .order_by(Team.name)))

    def team_names(self) -> dict[int, str]:
        with self.Session() as s:
            return dict(s.execute(select(Team.id, Team.name)).all())

    def count_teams(self) -> int:
        with self.Session() as s:
            return s.scalar(select(func.count(Team.id))) or 0
