"""Suite and exercise specifications (pydantic, loadable from YAML)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from datarena.errors import ConfigError

GENERATORS = {
    # generator name -> number of classes it needs
    "toy": 2,
    "mnist_cc": 2,
    "constant_image": 2,
    "constant_image_random_row": 2,
    "uniform_color_random_row": 2,
    "sum": 2,
    "sum3": 2,
    "sum_noise_level": 2,
    "mysterious": 2,
    "mysterious_trojan": 2,
    "embeddings": None,  # 2 or 3
    "vehicle_animal": 2,
    "humans": 2,
}


class ExerciseSpec(BaseModel):
    """One exercise of a suite."""

    id: str
    name: str
    generator: str
    digits: list[int]
    mix_rate: float = 0.5
    points: float = 1.0
    default_score: float = 0.8
    description: str = ""  # public: the task as the original challenge states it, never the answer
    notes: str = ""  # private: how the exercise is built (kept out of everything served)
    params: dict = Field(default_factory=dict)

    @field_validator("id", mode="before")
    @classmethod
    def _id_is_numeric(cls, v: object) -> str:
        s = str(v)
        if not s.isdigit():
            raise ValueError(f"exercise id must be digits like '01' or '456', got {s!r}")
        return s

    @field_validator("mix_rate")
    @classmethod
    def _mix_rate_in_unit(cls, v: float) -> float:
        if not 0.0 <= v <= 1.0:
            raise ValueError(f"mix_rate must lie in [0, 1], got {v}")
        return v

    @field_validator("default_score")
    @classmethod
    def _default_in_unit(cls, v: float) -> float:
        if not 0.0 <= v <= 1.0:
            raise ValueError(f"default_score must lie in [0, 1], got {v}")
        return v

    @model_validator(mode="after")
    def _check_generator_and_digits(self) -> ExerciseSpec:
        if self.generator not in GENERATORS:
            raise ValueError(f"unknown generator {self.generator!r}; choose one of {', '.join(GENERATORS)}")
        if len(set(self.digits)) != len(self.digits):
            raise ValueError(f"digits must be distinct, got {self.digits}")
        if any(not 0 <= d <= 9 for d in self.digits):
            raise ValueError(f"digits must lie in 0..9, got {self.digits}")
        need = GENERATORS[self.generator]
        allowed = (need,) if need else (2, 3)
        if len(self.digits) not in allowed:
            raise ValueError(f"generator {self.generator} needs {' or '.join(map(str, allowed))} digits, got {self.digits}")
        return self

    @property
    def dirname(self) -> str:
        return f"{self.id}_{self.name}"

    @property
    def seed_key(self) -> int:
        return int(self.id)


class SuiteSpec(BaseModel):
    name: str = "suite"
    exercises: list[ExerciseSpec]

    @model_validator(mode="after")
    def _unique_ids(self) -> SuiteSpec:
        ids = [e.id for e in self.exercises]
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            raise ValueError(f"exercise ids must be unique; repeated: {', '.join(dup)}")
        return self

    def get(self, exercise_id: str) -> ExerciseSpec:
        wanted = str(exercise_id)
        for e in self.exercises:
            if e.id == wanted or (wanted.isdigit() and int(e.id) == int(wanted)):
                return e
        raise ConfigError(
            f"unknown exercise id {exercise_id!r}; the suite has {', '.join(e.id for e in self.exercises)}."
        )


def _format_validation(err: ValidationError, origin: str) -> str:
    lines = [f"{origin} is not a valid suite:"]
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        lines.append(f"  {loc}: {e['msg']}")
    return "\n".join(lines)


def parse_suite(data: dict, origin: str = "suite") -> SuiteSpec:
    try:
        return SuiteSpec.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_validation(err, origin)) from None


def load_suite(path: str | Path | None = None) -> SuiteSpec:
    """Load a suite YAML file; with no path, the shipped hackathon42 suite."""
    if path is None:
        text = resources.files("datarena.underspec").joinpath("suite.yaml").read_text()
        origin = "the default suite"
    else:
        p = Path(path)
        if not p.exists():
            raise ConfigError(f"suite file {p} does not exist.")
        text, origin = p.read_text(), str(p)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{origin} is not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{origin} must be a mapping with an 'exercises' list.")
    return parse_suite(data, origin)
