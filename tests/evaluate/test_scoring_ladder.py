"""The quality ladder's construction (corrupted masks, the known orders), the one scene-dataset
writer for every grammar kind, and a dataset track on the aerial grammars (classes, test set,
a challenge file's bad budget or split refused by name)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from datarena.data.segmentation import AERIAL_CLASSES, load_segmentation
from datarena.errors import ConfigError
from datarena.evaluate.ladder import CHAINS, corrupt_dataset, spearman
from datarena.scenes.writers import dataset_classes, write_dataset


@pytest.fixture(scope="module")
def aerial(tmp_path_factory):
    return write_dataset("aerial_target", 6, 3, tmp_path_factory.mktemp("ladder") / "target")


def _objects(root):
    return np.load(root / "instances.npz")["instances"]


def test_corruption_relabels_only_the_chosen_share_of_objects(aerial, tmp_path):
    clean = load_segmentation(aerial)
    inst = _objects(aerial)
    none = load_segmentation(corrupt_dataset(aerial, tmp_path / "c0", 0.0))
    every = load_segmentation(corrupt_dataset(aerial, tmp_path / "c100", 1.0))
    half = load_segmentation(corrupt_dataset(aerial, tmp_path / "c50", 0.5))
    changed_objects = total = 0
    for i in range(len(clean)):
        img, mask = clean[i]
        assert np.array_equal(none.mask(i), mask)
        assert (aerial / "JPEGImages" / f"{clean.names[i]}.jpg").read_bytes() == \
            (tmp_path / "c100" / "JPEGImages" / f"{clean.names[i]}.jpg").read_bytes()  # images untouched
        bg = inst[i] == 0
        assert np.array_equal(every.mask(i)[bg], mask[bg]) and np.array_equal(half.mask(i)[bg], mask[bg])
        for k in np.unique(inst[i][inst[i] > 0]):
            own = (inst[i] == k) & (mask != 0)
            if not own.any():  # an object hidden under others
                continue
            cls = np.bincount(mask[own]).argmax()
            new = every.mask(i)[own & (mask == cls)]
            # erased, or swapped to the next object class: never the object's own label
            assert set(np.unique(new)) <= {0, cls % (len(AERIAL_CLASSES) - 1) + 1}
            total += 1
            changed_objects += bool((half.mask(i)[own] != mask[own]).any())
    assert 0.25 < changed_objects / total < 0.75
    meta = json.loads((tmp_path / "c50" / "meta.json").read_text())
    assert meta["corrupted"]["fraction"] == 0.5 and meta["classes"] == list(AERIAL_CLASSES)


def test_corruption_refuses_what_it_cannot_do(aerial, tmp_path):
    with pytest.raises(ConfigError, match=r"\[0, 1\]"):
        corrupt_dataset(aerial, tmp_path / "x", 1.5)
    flat = write_dataset("digit_scenes", 2, 0, tmp_path / "flat", show_progress=False)
    (flat / "instances.npz").unlink(missing_ok=True)
    with pytest.raises(ConfigError, match="instances.npz"):
        corrupt_dataset(flat, tmp_path / "y", 0.3)


def test_spearman_of_the_known_chains():
    scores = {"target": 0.7, "small": 0.62, "small_n8": 0.6, "corrupt30": 0.65, "corrupt60": 0.5, "prior": 0.4, "learned": 0.55}
    assert all(spearman(scores, chain) == 1.0 for chain in CHAINS)
    assert spearman({**scores, "corrupt60": 0.69}, ("target", "corrupt30", "corrupt60")) == pytest.approx(0.5)
    assert spearman({**scores, "prior": 0.9}, ("learned", "prior")) == -1.0


def test_one_writer_for_flat_graph_and_learned_grammars(tmp_path):
    from datarena.metasim.io import shipped_generator, write_generator_dataset

    flat = load_segmentation(write_dataset("digit_scenes", 3, 0, tmp_path / "flat", show_progress=False))
    graph = load_segmentation(write_dataset("aerial", 3, 0, tmp_path / "graph"))
    learned = load_segmentation(write_generator_dataset(shipped_generator("aerial_learned"), 3, 0, tmp_path / "gen"))
    assert flat.classes == dataset_classes("digit_scenes") and len(flat) == 3
    assert graph.classes == learned.classes == dataset_classes("aerial") == AERIAL_CLASSES
    # the same scenes (seed 0) rewritten by the generator: other pixels, same layout on disk
    assert not np.array_equal(graph[0][0], learned[0][0]) and learned.meta["learned_generator"] == "aerial_learned.pt"
    with pytest.raises(ConfigError, match="shipped"):
        shipped_generator("nope")


def _track(**over):
    return {"id": "scenes", "kind": "dataset", "classes": "aerial", "image_size": [64, 64], "budget": "aerial_scenes",
            "test_render": {"grammar": "aerial_target", "n": 4, "seed": 1}, **over}


def _write(tmp_path, track):
    import yaml

    path = tmp_path / "challenge.yaml"
    path.write_text(yaml.safe_dump({"title": "t", "data_dir": "d", "tracks": [track]}))
    return path


@pytest.mark.parametrize(("over", "named"), [
    ({"budget_overrides": {"seeds": 0}}, "seeds"),
    ({"budget_overrides": {"seeds": "three"}}, "seeds"),
    ({"budget_overrides": {"sedes": 3}}, "sedes"),
    ({"budget": "aerial_scenez"}, "aerial_scenez"),
    ({"public_fraction": 1.5}, "public_fraction"),
    ({"public_fraction": 0}, "public_fraction"),
    ({"budjet": "aerial_scenes"}, "budjet"),  # a misspelt setting is refused, not ignored
    ({"kind": "videos"}, "kind"),
])
def test_a_challenge_file_with_a_bad_budget_or_split_is_refused_by_name(tmp_path, over, named):
    from datarena.challenge.spec import load_challenge

    with pytest.raises(ConfigError, match=named):
        load_challenge(_write(tmp_path, _track(**over)))


def test_track_specs_are_a_union_by_kind(tmp_path):
    """`kind` picks the spec: a labels track takes no dataset settings; the default challenge is one labels track."""
    from datarena.challenge.spec import (
        ChallengeSpec,
        DatasetTrackSpec,
        LabelsTrackSpec,
        load_challenge,
    )

    with pytest.raises(ConfigError, match="budget"):
        load_challenge(_write(tmp_path, {"id": "labels", "kind": "labels", "budget": "aerial_scenes"}))
    spec = load_challenge(_write(tmp_path, _track()))
    assert isinstance(spec.tracks[0], DatasetTrackSpec)
    assert [type(t) for t in ChallengeSpec().tracks] == [LabelsTrackSpec]


def test_the_example_challenge_scores_aerial_scenes_with_three_seeds(tmp_path):
    from datarena.challenge.arena import Arena
    from datarena.challenge.spec import load_challenge
    from datarena.challenge.tracks.dataset import DatasetTrack

    spec = load_challenge("examples/dataset_challenge.yaml")
    assert spec.tracks[0].budget == "aerial_scenes" and spec.tracks[0].classes == "aerial"
    spec.data_dir, spec.database_url = str(tmp_path / "d"), f"sqlite:///{tmp_path / 'a.db'}"
    track = DatasetTrack(Arena(spec), spec.tracks[0])
    assert track.budget.seeds == 3 and track.classes == AERIAL_CLASSES
    track.spec.test_render = {"grammar": "aerial_target", "n": 4, "seed": 1}
    track.on_start(None, progress=False)  # renders the private test set once
    assert load_segmentation(track.test_dir).classes == AERIAL_CLASSES and len(load_segmentation(track.test_dir)) == 4
    wrong = DatasetTrack(Arena(spec), spec.tracks[0].model_copy(update={"test_render": {"grammar": "digit_scenes_target", "n": 2}}))
    wrong.test_dir = tmp_path / "other"
    with pytest.raises(Exception, match="labels background, 0, 1"):
        wrong.on_start(None, progress=False)


def test_scenes_render_writes_every_kind_through_one_writer(tmp_path):
    """The CLI: a scene-graph grammar and a digit grammar to VOC, a digit grammar to npy; a scene
    graph asked for npy, or nothing named, is refused with what to do."""
    from tests.cli.test_cli import run

    for grammar in ("aerial", "digit_scenes"):
        res = run("scenes", "render", grammar, "--n", "3", "--out", str(tmp_path / grammar))
        assert res.returncode == 0, res.stderr
        assert load_segmentation(tmp_path / grammar).classes == dataset_classes(grammar)
    res = run("scenes", "render", "digit_scenes", "--n", "3", "--format", "npy", "--out", str(tmp_path / "npy"))
    assert res.returncode == 0 and (tmp_path / "npy" / "X.npy").is_file(), res.stderr
    bad = run("scenes", "render", "aerial", "--n", "3", "--format", "npy", "--out", str(tmp_path / "no"))
    assert bad.returncode == 2 and "voc only" in bad.stderr and not (tmp_path / "no").exists()
    bad = run("scenes", "render", "--n", "3", "--out", str(tmp_path / "none"))
    assert bad.returncode == 2 and "GRAMMAR" in bad.stderr


def test_a_rendered_aerial_dataset_is_regenerated_and_a_changed_file_caught(tmp_path):
    """Verification regenerates a scene-graph dataset from the grammar and seed in its meta.json, as a
    digit one; a tampered mask is named; a learned generator's renders are not regenerated here."""
    from datarena.data.segmentation import save_mask_png
    from datarena.evaluate.verify import regenerate_check
    from datarena.metasim.io import shipped_generator, write_generator_dataset

    data = write_dataset("aerial", 5, 11, tmp_path / "a")
    assert regenerate_check(data) == {"status": "identical", "detail": "10 files identical"}
    mask = load_segmentation(data).mask(2).copy()
    mask[0, 0] = 3 if mask[0, 0] != 3 else 4
    save_mask_png(mask, data / "SegmentationClass" / "000002.png")
    bad = regenerate_check(data)
    assert bad["status"] == "mismatch" and "SegmentationClass/000002.png" in bad["detail"]
    learned = write_generator_dataset(shipped_generator("aerial_learned"), 2, 0, tmp_path / "g")
    assert regenerate_check(learned)["status"] == "not applicable"
    # written before meta.json kept the types' order: the order is unknown, so no verdict (not a false mismatch)
    older = write_dataset("aerial", 2, 0, tmp_path / "old")
    meta = json.loads((older / "meta.json").read_text())
    del meta["type_order"]
    (older / "meta.json").write_text(json.dumps(meta))
    assert regenerate_check(older)["status"] == "not applicable"


def test_the_rerun_rule():
    from datarena.evaluate.verify import compare_rerun

    ref = {"model_sha256": "a" * 64, "miou": 0.60, "device": "cpu", "torch": "2.13", "datarena_version": "1",
           "cpu_threads": 1, "miou_low": 0.58, "miou_high": 0.62}
    assert compare_rerun({**ref}, ref)["ok"]
    assert not compare_rerun({**ref, "model_sha256": "b" * 64}, ref)["ok"]  # same setup: bit-exact or nothing
    other = {**ref, "device": "cuda", "model_sha256": "b" * 64}
    assert compare_rerun({**other, "miou": 0.605}, ref, tolerance=0.01)["ok"]
    verdict = compare_rerun({**other, "miou": 0.65}, ref, tolerance=0.01)
    assert not verdict["ok"] and "0.0100" in verdict["rule"] and "difference 0.0500" in verdict["reason"]
    # another CPU thread count sums floats in another order: the tolerance, not the checksum, decides;
    # so does a record scored before the thread count was recorded
    threads = compare_rerun({**ref, "cpu_threads": 2, "model_sha256": "b" * 64, "miou": 0.603}, ref, tolerance=0.01)
    assert threads["ok"] and "threads" in threads["rule"]
    older = {k: v for k, v in ref.items() if k != "cpu_threads"}
    assert compare_rerun({**ref, "model_sha256": "b" * 64, "miou": 0.603}, older, tolerance=0.01)["ok"]
