"""Solve one exercise and leave its files: the labels CSV, a JSON report (the solver's estimate,
its reveals, the true score when the hidden labels are at hand, the submission when one was
made) and the saliency PNG. What `datarena solve` runs, with a local or a server oracle."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from datarena.data.bundle import ExerciseBundle
from datarena.underspec.scoring import score
from datarena.underspec.solvers import SolveResult, solve
from datarena.underspec.solvers.disambiguate import SUBMIT_CONFIDENCE


@dataclass
class SolveReport:
    result: SolveResult
    report: dict
    labels_path: Path
    report_path: Path

    def verdict(self) -> str:
        r = self.result
        if r.recommend_submit:
            return "submit"
        return (f"abstain (submitting needs an estimate of at least {r.default_score:g} and "
                f"P(accuracy >= default) of at least {SUBMIT_CONFIDENCE:g})")


def solve_and_report(bundle: ExerciseBundle, solver: str, oracle, out: Path, seed: int = 0,
                     submit: Callable[[np.ndarray], dict] | None = None) -> SolveReport:
    """Solve `bundle` with `solver`, revealing through `oracle`; write the files under `out`; call
    `submit(labels)` when given and the solver recommends submitting."""
    result = solve(bundle, solver, oracle, seed=seed, out_dir=out)
    out.mkdir(parents=True, exist_ok=True)
    labels_path = out / f"{bundle.dirname}_{solver}_labels.csv"
    labels_path.write_text("\n".join(map(str, result.labels.tolist())) + "\n")
    report = result.summary() | {"reveals": result.reveals, "labels": str(labels_path),
                                 "saliency_png": str(result.saliency_png)}
    if bundle.y_target is not None:
        report["score"] = score(bundle, result.labels)
    if submit is not None and result.recommend_submit:
        report["submission"] = submit(result.labels)
    report_path = out / f"{bundle.dirname}_{solver}_report.json"
    report_path.write_text(json.dumps(report, indent=2, default=str))
    return SolveReport(result, report, labels_path, report_path)
