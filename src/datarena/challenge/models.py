"""Database models (SQLAlchemy 2). The database is the source of truth.

Budgets are enforced by unique constraints on slot numbers: the n-th distinct
reveal of a team on an exercise in a phase takes slot n (1..budget), so two
concurrent requests can never both take the last slot.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, DateTime, Float, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from datarena.db import utcnow

__all__ = ["QuotaGrant", "AuditEntry", "Base", "DatasetSubmission", "Organiser", "OrganiserSession", "Phase", "Reveal",
           "Submission", "Team", "Token", "utcnow"]


class Base(DeclarativeBase):
    pass


class Team(Base):
    __tablename__ = "teams"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)  # as registered, shown
    name_key: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)  # NFKC + casefold
    password_hash: Mapped[str] = mapped_column(String(255), nullable=False)
    validated: Mapped[bool] = mapped_column(Boolean, default=False, nullable=False)
    refusal: Mapped[str | None] = mapped_column(Text, nullable=True)  # why an organiser refused it (the team sees it)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False, nullable=False)  # no login, reveal, submit or board
    email: Mapped[str | None] = mapped_column(String(254), nullable=True)  # for notifications; never served
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, nullable=False)

    @property
    def state(self) -> str:
        return "disabled" if self.disabled else "refused" if self.refusal else "validated" if self.validated else "pending"


class Token(Base):
    __tablename__ = "tokens"
    id: Mapped[int] = mapped_column(primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id"), nullable=False, index=True)
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, nullable=False)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


class Phase(Base):
    __tablename__ = "phases"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(128), nullable=False)
    seed: Mapped[int] = mapped_column(Integer, nullable=False)
    data_dir: Mapped[str] = mapped_column(Text, nullable=False)
    starts_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    ends_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    opened_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, nullable=False)
    # Secret seeds (challenge/phases.py): `seed` is the organiser's input and never served; the
    # commitment is; the secret only once revealed after the phase closed. Phases opened before
    # revision 0002 have no commitment (their data came from the public seed).
    number: Mapped[int | None] = mapped_column(Integer, nullable=True)
    commitment: Mapped[str | None] = mapped_column(String(64), nullable=True)
    revealed_secret: Mapped[str | None] = mapped_column(String(64), nullable=True)
    revealed_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


class Reveal(Base):
    __tablename__ = "reveals"
    __table_args__ = (
        UniqueConstraint("team_id", "phase_id", "exercise_id", "datum_id", name="uq_reveal_datum"),
        UniqueConstraint("team_id", "phase_id", "exercise_id", "slot", name="uq_reveal_slot"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id"), nullable=False)
    phase_id: Mapped[int] = mapped_column(ForeignKey("phases.id"), nullable=False)
    exercise_id: Mapped[str] = mapped_column(String(16), nullable=False)
    datum_id: Mapped[int] = mapped_column(Integer, nullable=False)
    slot: Mapped[int] = mapped_column(Integer, nullable=False)
    label: Mapped[int] = mapped_column(Integer, nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, nullable=False)


class Submission(Base):
    __tablename__ = "submissions"
    __table_args__ = (UniqueConstraint("team_id", "phase_id", "exercise_id", "slot", name="uq_submission_slot"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id"), nullable=False)
    phase_id: Mapped[int] = mapped_column(ForeignKey("phases.id"), nullable=False)
    exercise_id: Mapped[str] = mapped_column(String(16), nullable=False)
    slot: Mapped[int] = mapped_column(Integer, nullable=False)
    accuracy: Mapped[float] = mapped_column(Float, nullable=False)
    worst_group_accuracy: Mapped[float] = mapped_column(Float, nullable=False)
    n_rows: Mapped[int] = mapped_column(Integer, nullable=False)
    labels_sha256: Mapped[str] = mapped_column(String(64), nullable=False)
    labels_csv: Mapped[str] = mapped_column(Text, nullable=False)
    disqualified: Mapped[str | None] = mapped_column(Text, nullable=True)  # the public reason: the default score counts
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, nullable=False)


class DatasetSubmission(Base):
    """A dataset uploaded to a dataset track; its score lives in its job's result (datarena.jobs)."""

    __tablename__ = "dataset_submissions"
    __table_args__ = (UniqueConstraint("team_id", "phase_id", "track_id", "slot", name="uq_dataset_submission_slot"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id"), nullable=False)
    phase_id: Mapped[int] = mapped_column(ForeignKey("phases.id"), nullable=False)
    track_id: Mapped[str] = mapped_column(String(32), nullable=False)
    slot: Mapped[int] = mapped_column(Integer, nullable=False)
    archive_sha256: Mapped[str] = mapped_column(String(64), nullable=False)
    archive_bytes: Mapped[int] = mapped_column(Integer, nullable=False)
    dataset_path: Mapped[str] = mapped_column(Text, nullable=False)
    n_pairs: Mapped[int] = mapped_column(Integer, nullable=False)
    seed: Mapped[str | None] = mapped_column(String(64), nullable=True)
    declared_checksum: Mapped[str | None] = mapped_column(String(64), nullable=True)
    method: Mapped[str | None] = mapped_column(Text, nullable=True)
    job_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    claimed_score: Mapped[float | None] = mapped_column(Float, nullable=True)
    code_path: Mapped[str | None] = mapped_column(Text, nullable=True)
    code_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    verify_job_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    selected: Mapped[bool] = mapped_column(Boolean, default=False, nullable=False)  # the final entry (split test set)
    disqualified: Mapped[str | None] = mapped_column(Text, nullable=True)  # the public reason; None: counts
    notified_job: Mapped[int | None] = mapped_column(Integer, nullable=True)  # the job the team was emailed about
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, nullable=False)


class Organiser(Base):
    """An organiser account, apart from teams (`datarena admin create-organiser`)."""

    __tablename__ = "organisers"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    name_key: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    password_hash: Mapped[str] = mapped_column(String(255), nullable=False)
    totp_secret: Mapped[str | None] = mapped_column(String(64), nullable=True)  # base32; None: no second factor
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, nullable=False)


class OrganiserSession(Base):
    __tablename__ = "organiser_sessions"
    id: Mapped[int] = mapped_column(primary_key=True)
    organiser_id: Mapped[int] = mapped_column(ForeignKey("organisers.id"), nullable=False, index=True)
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, nullable=False)
    expires_at: Mapped[datetime] = mapped_column(DateTime, nullable=False)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


class AuditEntry(Base):
    """One organiser action, appended and never changed: who, what, on what, why, when. `public`
    rows (the actions that change a board) are listed on /changes."""

    __tablename__ = "audit_log"
    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, nullable=False, index=True)
    actor: Mapped[str] = mapped_column(String(96), nullable=False)  # "organiser:NAME" or "cli"
    action: Mapped[str] = mapped_column(String(48), nullable=False)
    target: Mapped[str] = mapped_column(String(160), nullable=False)  # "team:NAME", "phase:2", "submission:7"
    reason: Mapped[str] = mapped_column(Text, nullable=False, default="")
    public: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)


class QuotaGrant(Base):
    """Extra dataset submissions an organiser granted a team on a track (audited)."""

    __tablename__ = "quota_grants"
    id: Mapped[int] = mapped_column(primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id"), nullable=False, index=True)
    track_id: Mapped[str] = mapped_column(String(32), nullable=False)
    phase_id: Mapped[int] = mapped_column(ForeignKey("phases.id"), nullable=False)
    extra: Mapped[int] = mapped_column(Integer, nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, nullable=False)
