"""Write exercises and whole suites to disk (atomically), with previews."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from datarena.data.bundle import ExerciseBundle, write_bundle
from datarena.data.checksums import atomic_directory, write_json
from datarena.errors import ConfigError, SourceNotFoundError
from datarena.underspec.exercises import SourceConfig, generate_exercise
from datarena.underspec.suite import ExerciseSpec, SuiteSpec

SUITE_INDEX = "suite.json"  # at the root of a generated suite, beside public/ and private/


@dataclass
class GenerationResult:
    spec: ExerciseSpec
    status: str  # "ok" or "skipped"
    reason: str = ""
    seconds: float = 0.0
    shapes: dict | None = None


def write_preview(bundle: ExerciseBundle, path: Path, n: int = 8) -> None:
    """A PNG grid of labeled, unlabeled and target examples (a scatter for vector data)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    X = bundle.X_labeled
    if X.ndim == 2:
        fig, ax = plt.subplots(figsize=(5, 4))
        proj = _project_2d(bundle)
        for name, pts, kw in proj:
            ax.scatter(pts[:, 0], pts[:, 1], s=6, **kw, label=name)
        ax.legend(fontsize=7)
        ax.set_title(f"{bundle.dirname}: labeled (coloured by label) vs unlabeled/target")
    else:
        rows = [("labeled", bundle.X_labeled, bundle.y_labeled), ("unlabeled", bundle.X_unlabeled, None), ("target", bundle.X_target, None)]
        fig, axes = plt.subplots(3, n, figsize=(n * 1.4 * X.shape[-1] / X.shape[-2], 4.6))
        for r, (name, arr, labels) in enumerate(rows):
            for c in range(n):
                ax = axes[r, c]
                ax.axis("off")
                if c >= len(arr):
                    continue
                img = arr[c]
                img = img.mean(0) if img.shape[0] != 1 else img[0]
                ax.imshow(img, cmap="gray")
                if labels is not None:
                    ax.set_title(f"y={int(labels[c])}", fontsize=7)
            axes[r, 0].text(-0.1, 0.5, name, transform=axes[r, 0].transAxes, ha="right", va="center", fontsize=8)
        fig.suptitle(bundle.dirname, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def _project_2d(bundle: ExerciseBundle):
    X = bundle.X_labeled
    if X.shape[1] == 2:
        proj = np.eye(2, dtype=np.float32)
        mean = 0.0
    else:
        mean = X.mean(0)
        _, _, vt = np.linalg.svd(X - mean, full_matrices=False)
        proj = vt[:2].T
    out = [("unlabeled", (bundle.X_unlabeled - mean) @ proj, {"c": "lightgrey"})]
    out.append(("target", (bundle.X_target - mean) @ proj, {"c": "grey", "marker": "x"}))
    for c in np.unique(bundle.y_labeled):
        out.append((f"labeled y={c}", (X[bundle.y_labeled == c] - mean) @ proj, {}))
    return out


def write_exercise(bundle: ExerciseBundle, public_dir: Path, private_dir: Path,
                   public_extra: dict | None = None) -> None:
    write_bundle(bundle, public_dir, private_dir, public_extra)
    write_preview(bundle, public_dir / "preview.png")


def generate_suite(
    suite: SuiteSpec,
    seed: int,
    out: str | Path,
    cfg: SourceConfig | None = None,
    force: bool = False,
    only: list[str] | None = None,
    mix_rate: float | None = None,
    progress: bool = True,
    public_extra: dict | None = None,
) -> list[GenerationResult]:
    """Generate every exercise into out/public and out/private; all or nothing.

    Exercises whose data source is missing are skipped with a reason (not a crash).
    `out/public/` holds only the exercise folders (what may be handed to participants);
    the suite index (`out/suite.json`, with the seed) and `out/suite.yaml` stay beside them.
    `public_extra` is added to every public meta.json (a served phase's commitment).
    """
    if mix_rate is not None and not 0.0 <= mix_rate <= 1.0:
        raise ConfigError(f"--mix-rate must lie in [0, 1], got {mix_rate}.")
    specs = [suite.get(i) for i in only] if only else list(suite.exercises)
    if mix_rate is not None:
        specs = [s.model_copy(update={"mix_rate": mix_rate}) for s in specs]
    cfg = cfg or SourceConfig()
    results: list[GenerationResult] = []
    with atomic_directory(out, force=force) as tmp:
        from rich.progress import Progress

        with Progress(disable=not progress, transient=True) as bar:
            task = bar.add_task("generating exercises", total=len(specs))
            for spec in specs:
                bar.update(task, description=f"generating {spec.dirname}")
                t0 = time.perf_counter()
                try:
                    bundle = generate_exercise(spec, seed, cfg)
                except SourceNotFoundError as err:
                    results.append(GenerationResult(spec, "skipped", str(err)))
                    bar.advance(task)
                    continue
                write_exercise(bundle, tmp / "public" / spec.dirname, tmp / "private" / spec.dirname, public_extra)
                results.append(
                    GenerationResult(
                        spec,
                        "ok",
                        seconds=time.perf_counter() - t0,
                        shapes={
                            "labeled": list(bundle.X_labeled.shape),
                            "unlabeled": list(bundle.X_unlabeled.shape),
                            "target": list(bundle.X_target.shape),
                        },
                    )
                )
                bar.advance(task)
        (tmp / "public").mkdir(exist_ok=True)
        (tmp / "private").mkdir(exist_ok=True)
        index = {
            "suite": suite.name,
            "seed": int(seed),
            "exercises": [
                {**r.spec.model_dump(), "dirname": r.spec.dirname, "status": r.status, "reason": r.reason}
                for r in results
            ],
        }
        write_json(tmp / SUITE_INDEX, index)
        (tmp / "suite.yaml").write_text(
            yaml.safe_dump({"name": suite.name, "exercises": [s.model_dump() for s in specs]}, sort_keys=False)
        )
    return results
