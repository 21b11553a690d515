"""Check a closed phase from its revealed secret: `datarena verify-phase URL --phase N`.

Anyone can run it: it fetches the phase's revealed secret, the suite it was generated from and
the hashes the server published, regenerates every exercise locally, and checks the secret
against the commitment shown during the phase, the regenerated public files against the
published hashes (and against the participant's own downloads, when given), and the hidden
labels against the hashes of the server's private files.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import yaml

from datarena import commitments as phases
from datarena.data.checksums import sha256_file
from datarena.errors import DatarenaError

CHECKED_PUBLIC = ("X_labeled.npy", "y_labeled.npy", "X_unlabeled.npy", "X_val.npy", "meta.json")


@dataclass
class ExerciseCheck:
    id: str
    dirname: str
    public_ok: bool
    hidden_ok: bool
    downloads_ok: bool | None  # None: no download given for this exercise
    problems: list[str] = field(default_factory=list)


@dataclass
class PhaseCheck:
    phase: str
    commitment: str
    commitment_ok: bool
    exercises: list[ExerciseCheck]

    @property
    def ok(self) -> bool:
        return self.commitment_ok and all(
            e.public_ok and e.hidden_ok and e.downloads_ok is not False for e in self.exercises
        )


def fetch_verification(url: str, phase_id: int) -> dict:
    res = httpx.get(f"{url.rstrip('/')}/api/phases/{phase_id}/verification", timeout=60)
    if res.status_code != 200:
        detail = res.json().get("detail", res.text) if res.headers.get("content-type", "").startswith(
            "application/json") else res.text
        raise DatarenaError(f"{url} cannot verify phase {phase_id} yet: {detail}")
    return res.json()


def verify_phase(info: dict, work_dir: str | Path | None = None, downloads: str | Path | None = None,
                 sources=None, progress: bool = False) -> PhaseCheck:
    """Regenerate the phase described by `info` (the verification endpoint's answer) and compare."""
    from datarena.underspec.generate import generate_suite
    from datarena.underspec.suite import parse_suite

    secret, shown = info["secret"], info["commitment"]
    if not secret:
        raise DatarenaError(f"{info['name']}'s secret is not revealed yet.")
    commitment_ok = phases.commitment(secret) == shown
    suite = parse_suite(yaml.safe_load(info["suite_yaml"]), "the phase's suite")
    tmp = None
    if work_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="datarena-verify-")
        work_dir = tmp.name
    out = Path(work_dir) / "regenerated"
    try:
        generate_suite(suite, phases.generation_seed(secret), out, sources, force=True, only=info["only"],
                       progress=progress, public_extra={"commitment": shown})
        checks = [_check_exercise(e, out, Path(downloads) if downloads else None) for e in info["exercises"]]
    finally:
        if tmp is not None:
            tmp.cleanup()
    return PhaseCheck(info["name"], shown, commitment_ok, checks)


def _check_exercise(e: dict, out: Path, downloads: Path | None) -> ExerciseCheck:
    pub, priv = out / "public" / e["dirname"], out / "private" / e["dirname"]
    problems = []
    for name, digest in e["public_sha256"].items():
        if sha256_file(pub / name) != digest:
            problems.append(f"public {name} differs from the published hash")
    for name, digest in e["hidden_sha256"].items():
        if sha256_file(priv / name) != digest:
            problems.append(f"hidden {name} differs from the server's")
    public_ok = not any(p.startswith("public") for p in problems)
    hidden_ok = not any(p.startswith("hidden") for p in problems)
    downloads_ok = None
    mine = downloads / e["dirname"] if downloads else None
    if mine is not None and mine.is_dir():
        bad = [f for f in CHECKED_PUBLIC if (mine / f).exists() and sha256_file(mine / f) != sha256_file(pub / f)]
        problems += [f"your download's {f} differs from the regenerated file" for f in bad]
        downloads_ok = not bad
    return ExerciseCheck(e["id"], e["dirname"], public_ok, hidden_ok, downloads_ok, problems)
