"""Challenge definition (YAML -> pydantic) and server settings."""

from __future__ import annotations

import os
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from datarena.challenge.notify import Notifications
from datarena.db import DATABASE_ENV
from datarena.errors import ConfigError
from datarena.jobs.queue import JobSettings


class PhaseSpec(BaseModel):
    name: str
    seed: int
    start: datetime | None = None
    end: datetime | None = None


class ChallengeExercise(BaseModel):
    id: str
    points: float | None = None
    default_score: float | None = None

    @field_validator("id", mode="before")
    @classmethod
    def _str(cls, v: object) -> str:
        return str(v)


class TrackBase(BaseModel):
    """What every track has. A kind of track is a subclass with its own `kind` literal, added to
    the `TrackSpec` union below (and its classes in `challenge/tracks/`)."""

    model_config = ConfigDict(extra="forbid")  # a misspelt setting is refused, named, not ignored

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$")
    title: str = ""


class LabelsTrackSpec(TrackBase):
    """The exercise suite of the challenge file (reveals, label submissions)."""

    kind: Literal["labels"]


class DatasetTrackSpec(TrackBase):
    """Submitted segmentation datasets, scored by the organisers' fixed training."""

    kind: Literal["dataset"]
    # VOC's 20 classes + background, digit_scenes' 10 digits, or the aerial grammars' road, car, tree, house
    classes: Literal["voc", "digits", "aerial"] = "voc"
    max_pairs: int = Field(10_000, ge=1)
    image_size: tuple[int, int] | None = (512, 512)  # (height, width); None = any
    budget: str = "syntagen"  # a preset of datarena.evaluate.train.PRESETS: syntagen, aerial_scenes, ...
    budget_overrides: dict = Field(default_factory=dict)  # e.g. {iterations: 150}
    device: str = "cpu"
    test_set: str | None = None  # a private directory on the server (VOC layout or .npz); never served
    test_render: dict | None = None  # {grammar, n, seed}: render the test set on first start if missing
    submissions_per_phase: int = Field(3, ge=1)
    # with more than one submission per phase (protocol scored), the test set is split: this share
    # of its images scores submissions during the phase, the rest (private) only after it closes
    public_fraction: float | None = Field(0.5, gt=0, lt=1)
    submissions_per_day: int = Field(2, ge=1)
    protocol: Literal["scored", "syntagen"] = "scored"
    deadline1: datetime | None = None  # syntagen: seed + dataset + checksum until then; test set after
    deadline2: datetime | None = None  # syntagen: claimed score + code until then
    max_upload_mb: float = Field(2048, gt=0)
    max_unpacked_mb: float = Field(4096, gt=0)
    max_files: int = Field(25_000, ge=1)
    max_decoded_mpixels: float | None = Field(None, gt=0)  # pixels decoded to check one upload (None: 2 x pairs x size)
    # mIoU difference allowed when a re-run cannot be bit-exact; None = what the score's measured
    # noise implies (evaluate.uncertainty.rerun_tolerance)
    verify_tolerance: float | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _dataset_needs(self) -> DatasetTrackSpec:
        if not self.test_set and not self.test_render:
            raise ValueError(f"dataset track {self.id!r} needs test_set (a private directory) or test_render")
        if self.protocol == "syntagen" and (self.deadline1 is None or self.deadline2 is None):
            raise ValueError(f"track {self.id!r}: the syntagen protocol needs deadline1 and deadline2")
        if self.deadline1 and self.deadline2 and self.deadline2 <= self.deadline1:
            raise ValueError(f"track {self.id!r}: deadline2 must come after deadline1")
        from datarena.evaluate.train import budget_from

        try:  # a bad preset or override (seeds: 0, a typo'd key's value) fails here, named
            budget_from(self.budget, **self.budget_overrides)
        except ConfigError as exc:
            raise ValueError(f"track {self.id!r}: budget {self.budget!r} with budget_overrides: {exc}") from None
        return self


# the discriminated union of track specs: `kind` picks the model
TrackSpec = Annotated[LabelsTrackSpec | DatasetTrackSpec, Field(discriminator="kind")]


class ChallengeSpec(BaseModel):
    """A challenge: title, phases, which suite exercises, budgets, where data and database live."""

    title: str = "datarena challenge"
    suite: str | None = None  # suite YAML; None = the shipped hackathon42 suite
    exercises: list[ChallengeExercise] | None = None  # None = every exercise of the suite
    phases: list[PhaseSpec] = Field(default_factory=lambda: [PhaseSpec(name="phase 1", seed=42)])
    reveal_budget: int = Field(5, ge=0, le=1000)
    submissions_per_exercise: int = Field(1, ge=1, le=100)
    data_dir: str = "datarena-data"
    database_url: str | None = None
    secret_file: str | None = None  # the server secret (default: DATA_DIR/server-secret); never served
    max_upload_bytes: int = 1 << 20  # forms and CSV uploads (JSON bodies: 64 KiB)
    session_lifetime_days: float = Field(30.0, gt=0)  # bearer tokens and web sessions
    trusted_proxies: list[str] = Field(default_factory=list)  # addresses whose X-Forwarded-For is believed
    upload_workers: int = Field(2, ge=1, le=64)  # threads that unpack and check uploads
    login_failures_allowed: int = 10
    login_failure_window_s: float = 300.0
    argon2_time_cost: int = 2
    argon2_memory_kib: int = 19456
    mnist_dir: str | None = None
    cifar_dir: str | None = None
    faces_dir: str | None = None
    jobs: JobSettings = Field(default_factory=JobSettings)  # the job queue (datarena.jobs)
    notifications: Notifications = Field(default_factory=Notifications)  # email (off unless smtp is set)
    tracks: list[TrackSpec] = Field(default_factory=lambda: [LabelsTrackSpec(id="labels", kind="labels")])

    @field_validator("phases")
    @classmethod
    def _at_least_one_phase(cls, v: list[PhaseSpec]) -> list[PhaseSpec]:
        if not v:
            raise ValueError("a challenge needs at least one phase")
        return v

    @field_validator("tracks")
    @classmethod
    def _tracks_unique(cls, v: list[TrackSpec]) -> list[TrackSpec]:
        ids = [t.id for t in v]
        if len(set(ids)) != len(ids):
            raise ValueError(f"track ids must be unique, got {ids}")
        if sum(t.kind == "labels" for t in v) > 1:
            raise ValueError("at most one labels track (the exercise suite of this file)")
        if not v:
            raise ValueError("a challenge needs at least one track")
        return v

    def resolved_secret_file(self) -> Path:
        return Path(self.secret_file) if self.secret_file else Path(self.data_dir) / "server-secret"

    def resolved_database_url(self) -> str:
        url = os.environ.get(DATABASE_ENV) or self.database_url
        if url:
            return url
        return f"sqlite:///{Path(self.data_dir).resolve() / 'datarena.db'}"


def default_challenge_text() -> str:
    return resources.files("datarena.challenge").joinpath("default_challenge.yaml").read_text()


def load_challenge(path: str | Path | None = None, **overrides) -> ChallengeSpec:
    """Load a challenge YAML file (the shipped default when None); relative paths resolve beside it."""
    if path is None:
        text, origin, base = default_challenge_text(), "the default challenge", Path.cwd()
    else:
        p = Path(path)
        if not p.exists():
            raise ConfigError(f"challenge file {p} does not exist.")
        # relative paths resolve beside the file as named (a symlinked example keeps its data beside the link)
        text, origin, base = p.read_text(), str(p), p.absolute().parent
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{origin} is not valid YAML: {err}") from None
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        spec = ChallengeSpec.model_validate(data)
    except ValidationError as err:
        lines = [f"{origin} is not a valid challenge:"]
        lines += [f"  {'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors()]
        raise ConfigError("\n".join(lines)) from None
    if not Path(spec.data_dir).is_absolute():
        spec.data_dir = str(base / spec.data_dir)
    for t in spec.tracks:
        if isinstance(t, DatasetTrackSpec) and t.test_set and not Path(t.test_set).is_absolute():
            t.test_set = str(base / t.test_set)
    if spec.secret_file and not Path(spec.secret_file).is_absolute():
        spec.secret_file = str(base / spec.secret_file)
    if spec.suite and not Path(spec.suite).is_absolute():
        spec.suite = str(base / spec.suite)
    return spec
