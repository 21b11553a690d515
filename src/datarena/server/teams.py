"""Teams and auth: registration, validation by an organiser, passwords, tokens, rate limits."""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from datarena.errors import DatarenaError
from datarena.server.auth import (
    ApiError,
    new_token,
    token_digest,
    validate_password,
    validate_team_name,
)
from datarena.server.models import Team, Token

TOKEN_CACHE_S = 5.0  # a validated team's token is re-read from the database at most this often


@dataclass(frozen=True)
class TeamRef:
    """The few fields of a team that requests need (safe to cache and share across threads)."""

    id: int
    name: str
    validated: bool


class TeamsMixin:
    """Team operations of the Arena (it provides Session, passwords, limiter and the token cache)."""

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
        counts: dict[int, int] = {}
        for track in self.tracks.values():
            for team_id, n in track.submission_counts().items():
                counts[team_id] = counts.get(team_id, 0) + n
        return [{"name": t.name, "validated": t.validated, "created_at": t.created_at.isoformat(timespec="seconds"),
                 "submissions": counts.get(t.id, 0)} for t in teams]

    def validated_teams(self) -> list[Team]:
        with self.Session() as s:
            return list(s.scalars(select(Team).where(Team.validated.is_(True)).order_by(Team.name)))

    def team_names(self) -> dict[int, str]:
        with self.Session() as s:
            return dict(s.execute(select(Team.id, Team.name)).all())

    def count_teams(self) -> int:
        with self.Session() as s:
            return s.scalar(select(func.count(Team.id))) or 0
