"""Reproducing a score: the rule that decides whether a re-run matches a recorded result, and
the regeneration of a dataset datarena rendered (from the grammar and seed in its meta.json)."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path

# what a bit-exact re-run needs to share with the record; a record without `cpu_threads` (scored
# before it was recorded) is compared by the tolerance rule
SETUP_KEYS = ("device", "torch", "datarena_version", "cpu_threads")


def compare_rerun(rerun: dict, reference: dict, tolerance: float | None = None) -> dict:
    """On the same device, versions and CPU thread count the model checksum must be identical; otherwise the mIoU
    must lie within `tolerance` (None: what the recorded score's own noise implies,
    `evaluate.uncertainty.rerun_tolerance`). Returns {ok, rule, reason}."""
    if all(rerun.get(k) == reference.get(k) for k in SETUP_KEYS):
        ok = rerun["model_sha256"] == reference.get("model_sha256")
        why = "checksums agree" if ok else (f"checksum {rerun['model_sha256'][:12]} != recorded "
                                            f"{str(reference.get('model_sha256'))[:12]}")
        return {"ok": ok, "rule": "same device, versions and threads: the model checksum must be identical", "reason": why}
    from datarena.evaluate.uncertainty import rerun_tolerance

    recorded = float(reference.get("miou", 0.0))
    diff = abs(rerun["miou"] - recorded)
    tol, basis = (float(tolerance), "the track's verify_tolerance") if tolerance is not None else rerun_tolerance(reference)
    return {"ok": diff <= tol, "rule": f"different device, versions or threads: |mIoU difference| <= {tol:.4f} ({basis})",
            "reason": f"mIoU {rerun['miou']:.4f} vs recorded {recorded:.4f} (difference {diff:.4f})"}


def regenerate_check(dataset: str | Path, log: Callable[[str], None] | None = None) -> dict:
    """Render again a dataset that `datarena scenes render` wrote (a digit grammar or a scene graph),
    from the grammar and seed its meta.json records, and compare every file's hash with the
    recorded one and the upload's. {status: identical | mismatch | not applicable, detail}."""
    from datarena.data.checksums import sha256_file

    dataset = Path(dataset)
    meta_path = dataset / "meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    kind = meta.get("generator")
    # a scene graph's sampling follows its types' order, which meta.json (sorted keys) keeps only in type_order
    if kind not in ("datarena.scenes", "datarena.scenes.graph") or meta.get("format") != "voc" \
            or "learned_generator" in meta or (kind == "datarena.scenes.graph" and "type_order" not in meta):
        what = "a learned generator" if "learned_generator" in meta else (kind or "unknown")
        return {"status": "not applicable",
                "detail": f"generator {what}: only grammar renders (`scenes render GRAMMAR`) are regenerated here"}
    if log is not None:
        log(f"regenerating {meta['n']} scenes of {meta['grammar'].get('name')} seed {meta['seed']}")
    with tempfile.TemporaryDirectory(prefix="datarena-regen-") as tmp:
        if kind == "datarena.scenes.graph":
            from datarena.scenes.graph import parse_graph_grammar, write_graph_scenes

            recorded = dict(meta["grammar"])  # with its types in the order the grammar file gave them
            recorded["types"] = {k: recorded["types"][k] for k in meta["type_order"]}
            again = write_graph_scenes(parse_graph_grammar(recorded, "the recorded grammar"), int(meta["n"]),
                                       int(meta["seed"]), Path(tmp) / "d")
        else:
            from datarena.scenes.grammar import parse_grammar
            from datarena.scenes.writers import write_scenes

            again = write_scenes(parse_grammar(meta["grammar"]), int(meta["n"]), int(meta["seed"]), Path(tmp) / "d",
                                 fmt="voc", show_progress=False)
        bad = [rel for rel, digest in meta.get("files", {}).items()
               if not (dataset / rel).is_file() or sha256_file(dataset / rel) != digest
               or sha256_file(again / rel) != digest]
    if bad:
        return {"status": "mismatch", "detail": f"{len(bad)} files differ (first: {bad[0]})"}
    return {"status": "identical", "detail": f"{len(meta.get('files', {}))} files identical"}
