"""Stable Diffusion image+mask generation on a tiny random-weight pipeline built here (no download)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("diffusers", reason="diffusers is not installed (pip install -e '.[diffusion]')")

from datarena.data.segmentation import DatasetRules, validate_dataset  # noqa: E402
from datarena.diffusion.attention import AttentionStore, attention_masks, install_capture, restore  # noqa: E402
from datarena.diffusion.generate import MARKER, DiffuseConfig, generate_dataset  # noqa: E402
from datarena.diffusion.pipeline import build_random_pipeline, load_pipeline  # noqa: E402
from datarena.diffusion.prompts import (  # noqa: E402
    Prompt,
    class_token_spans,
    classes_in,
    prompt_for,
    read_captions,
)
from datarena.errors import ConfigError, OutputExistsError, SourceNotFoundError  # noqa: E402

FAST = dict(steps=3, size=64, seed=5)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return build_random_pipeline(tmp_path_factory.mktemp("sd") / "tiny-sd", image_size=64)


def files(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.parent.name in ("JPEGImages", "SegmentationClass")}


def test_prompts_name_their_classes():
    p = Prompt("a dog on a sofa", (12, 18))
    assert p.text == "a dog on a sofa; dog sofa"
    assert Prompt("x", (11, 16, 20)).class_prompt == "dining table potted plant tv monitor"
    assert classes_in("A man beside a dining table and two dogs") == (15, 11, 12)
    assert prompt_for(7, 1) == prompt_for(7, 1) and prompt_for(7, 1) != prompt_for(8, 1)


def test_caption_files(tmp_path):
    txt = tmp_path / "c.txt"
    txt.write_text("a cat on a sofa\n\na bus in the city\n")
    assert [p.classes for p in read_captions(txt)] == [(8, 18), (6,)]
    bad = tmp_path / "b.jsonl"
    bad.write_text('{"caption": "a dog", "classes": ["dog"]}\n{"caption": "a unicorn", "classes": ["unicorn"]}\nnot json\n')
    with pytest.raises(ConfigError, match="2 unusable captions") as err:
        read_captions(bad)
    assert "unknown classes ['unicorn']" in str(err.value) and "line 3" in str(err.value)


def test_token_spans_point_at_the_class_words(tiny_model):
    tok = load_pipeline(tiny_model).tokenizer
    prompt = Prompt("a photo of a potted plant next to a dog", (16, 12))
    ids = tok(prompt.text)["input_ids"]
    spans = class_token_spans(tok, prompt)
    assert [ids[i] for i in spans[0]] == tok("potted plant", add_special_tokens=False)["input_ids"]
    assert [ids[i] for i in spans[1]] == tok("dog", add_special_tokens=False)["input_ids"]
    assert spans[1][0] == spans[0][-1] + 1


def test_processors_capture_maps_of_the_expected_shapes(tiny_model):
    pipe = load_pipeline(tiny_model)
    store = AttentionStore(cross_res=2, self_res=4, cond_from=1)
    originals = install_capture(pipe.unet, store)
    latents = torch.randn(2, 4, 8, 8)
    context = torch.randn(2, 77, pipe.text_encoder.config.hidden_size)
    with torch.no_grad():
        captured = pipe.unet(latents, 10, encoder_hidden_states=context).sample
    restore(pipe.unet, originals)
    with torch.no_grad():
        plain = pipe.unet(latents, 10, encoder_hidden_states=context).sample
    torch.testing.assert_close(captured, plain, atol=1e-5, rtol=1e-4)  # capture does not change the output
    assert store.cross().shape == (1, 4, 77) and store.self_attention().shape == (1, 16, 16)
    assert store.cross_count >= 2 and store.self_count >= 2
    torch.testing.assert_close(store.self_attention().sum(-1), torch.ones(1, 16))
    torch.testing.assert_close(store.cross().sum(-1), torch.ones(1, 4))


def test_masks_from_hand_made_maps():
    cross = torch.zeros(1, 4, 6)  # 2x2 grid, 6 tokens; class A = token 2 (top row), class B = token 4 (bottom-right)
    cross[0, 0:2, 2] = 1.0
    cross[0, 3, 4] = 1.0
    self_attn = torch.eye(16).unsqueeze(0)
    mask = attention_masks(cross, self_attn, [[2], [4]], [12, 8], size=8, power=4)[0]
    assert mask[0, 0] == 12 and mask[7, 7] == 8 and mask[7, 0] == 0
    assert set(mask.unique().tolist()) <= {0, 8, 12, 255} and 255 in mask.unique().tolist()
    with pytest.raises(ValueError):
        attention_masks(cross, self_attn, [[2]], [12], size=8, foreground=0.4, uncertain=0.5)


def test_generation_is_seeded_shardable_valid_and_resumable(tiny_model, tmp_path):
    full = tmp_path / "full"
    generate_dataset(tiny_model, full, DiffuseConfig(n=4, **FAST), show_progress=False)
    meta = json.loads((full / "meta.json").read_text())
    assert meta["n_pairs"] == 4 and meta["steps"] == 3 and not (full / MARKER).exists()
    assert validate_dataset(full, DatasetRules(size=(64, 64))).ok
    labelled = 0
    for name, item in meta["images"].items():
        mask = np.asarray(Image.open(full / "SegmentationClass" / f"{name}.png"))
        from datarena.data.segmentation import VOC_CLASSES

        allowed = {0, 255} | {VOC_CLASSES.index(c) for c in item["classes"]}
        assert set(np.unique(mask).tolist()) <= allowed, (name, item)
        labelled += int((mask != 0).any())
    assert labelled >= 3  # the attention maps draw the prompt's classes
    again = tmp_path / "again"
    generate_dataset(tiny_model, again, DiffuseConfig(n=4, **FAST), show_progress=False)
    assert files(again) == files(full)  # same seed, identical files

    shards = [tmp_path / f"shard{i}" for i in range(2)]
    for i, root in enumerate(shards):
        generate_dataset(tiny_model, root, DiffuseConfig(n=4, shard_index=i, shard_count=2, **FAST), show_progress=False)
    assert {**files(shards[0]), **files(shards[1])} == files(full)

    partial = tmp_path / "partial"
    first = generate_dataset(tiny_model, partial, DiffuseConfig(n=4, **FAST), show_progress=False, stop_after=2)
    assert not first["complete"] and (partial / MARKER).exists() and not (partial / "meta.json").exists()
    with pytest.raises(OutputExistsError, match="other settings"):
        generate_dataset(tiny_model, partial, DiffuseConfig(n=4, steps=4, size=64, seed=5), show_progress=False)
    second = generate_dataset(tiny_model, partial, DiffuseConfig(n=4, **FAST), show_progress=False)
    assert second["complete"] and second["generated"] == 2
    assert files(partial) == files(full)


def test_missing_or_incomplete_model_directory(tmp_path, tiny_model):
    with pytest.raises(SourceNotFoundError, match="does not exist"):
        load_pipeline(tmp_path / "nope")
    broken = tmp_path / "broken"
    (broken / "unet").mkdir(parents=True)
    (broken / "model_index.json").write_text("{}")
    with pytest.raises(SourceNotFoundError, match=r"incomplete: missing unet/config.json, unet/ weights.*vae/"):
        load_pipeline(broken)
    env = {**os.environ, "COLUMNS": "200"}
    done = subprocess.run([sys.executable, "-m", "datarena.cli", "diffuse", "--model", str(broken), "--out", str(tmp_path / "o")],
                          capture_output=True, text=True, env=env)
    assert done.returncode == 2 and "incomplete" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "o").exists()
    done = subprocess.run([sys.executable, "-m", "datarena.cli", "diffuse", "--model", str(tiny_model), "--out", str(tmp_path / "o"),
                           "--shard", "2/2"], capture_output=True, text=True, env=env)
    assert done.returncode == 2 and "need 0 <= i < n" in done.stderr
