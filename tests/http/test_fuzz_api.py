"""The HTTP API fuzzed from its own OpenAPI schema (schemathesis): every documented operation,
anonymous and as a validated team, a bounded number of generated requests each (valid and
invalid ones); no 5xx and no response that breaks the schema. SQLite and PostgreSQL."""

from __future__ import annotations

import os
import uuid

import numpy as np
import pytest

from datarena.client import ArenaClient
from datarena.data.segmentation import make_voc_dirs, write_pair
from datarena.testing.fuzz import fuzz_api
from tests.conftest import fast_challenge, install_phase_cache, serving

EXAMPLES = int(os.environ.get("DATARENA_FUZZ_EXAMPLES", "8"))  # per operation, mode and identity


def fuzz_challenge(data_dir, db_url=None):
    test_set = data_dir / "test-set"
    make_voc_dirs(test_set)
    write_pair(test_set, "t0", np.zeros((64, 64, 3), np.uint8), np.zeros((64, 64), np.uint8))
    return fast_challenge(data_dir, db_url, reveal_budget=1000, tracks=[
        {"id": "labels", "kind": "labels"},
        {"id": "scenes", "kind": "dataset", "classes": "digits", "image_size": [64, 64], "budget": "digit_scenes",
         "test_set": str(test_set), "max_upload_mb": 1, "max_unpacked_mb": 2, "max_files": 50},
    ])


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def fuzz_server(request, tmp_path_factory, phase_data_cache):
    data_dir = tmp_path_factory.mktemp(f"fuzz-{request.param}")
    install_phase_cache(phase_data_cache, data_dir)
    with serving(request.param, lambda db_url: fuzz_challenge(data_dir, db_url)) as (arena, url):
        team = ArenaClient(url, f"fz{uuid.uuid4().hex[:8]}", "correct horse battery")
        team.register()
        arena.validate_team(team.username)
        yield url, team


@pytest.mark.parametrize("identity", ["anonymous", "team"])
def test_api_fuzzed_from_its_schema(fuzz_server, identity):
    url, team = fuzz_server
    headers = (lambda: {"Authorization": f"Bearer {team.login()}"}) if identity == "team" else None
    report = fuzz_api(url, headers, examples=EXAMPLES)
    assert len(report.operations) >= 20 and report.cases >= 8 * len(report.operations)
    assert report.server_errors == 0, report.statuses
    assert report.failures == [], "\n\n".join(report.failures)
