from __future__ import annotations

from pathlib import Path

import pytest

from datarena.underspec.exercises import SourceConfig
from datarena.underspec.generate import generate_suite
from datarena.underspec.suite import load_suite

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


@pytest.fixture(scope="session")
def suite_dir(tmp_path_factory) -> Path:
    """The default suite generated once on the embedded data (seed 42)."""
    out = tmp_path_factory.mktemp("suite") / "s42"
    generate_suite(load_suite(), 42, out, SourceConfig(), progress=False)
    return out


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
