"""Underspecified-dataset exercises (hackathon42), their scoring and solvers."""

from datarena.underspec.scoring import score
from datarena.underspec.suite import ExerciseSpec, SuiteSpec, load_suite

__all__ = ["ExerciseSpec", "SuiteSpec", "load_suite", "score"]
