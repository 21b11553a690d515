"""Dataset Diffusion's method: class-prompt attention, any UNet layout, recorded runs, merged shards."""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("diffusers")

from diffusers.models.attention_processor import Attention, AttnProcessor  # noqa: E402

from datarena.diffusion.attention import AttentionStore, CaptureProcessor, pick_resolution  # noqa: E402
from datarena.diffusion.generate import DiffuseConfig, generate_dataset, merge_shards  # noqa: E402
from datarena.diffusion.pipeline import build_random_pipeline  # noqa: E402
from datarena.errors import ConfigError  # noqa: E402


def test_class_prompt_attention_runs_over_class_tokens_only():
    torch.manual_seed(0)
    attn = Attention(query_dim=8, cross_attention_dim=6, heads=2, dim_head=4)
    hidden = torch.randn(2, 16, 8)  # rows: unconditional, conditional (a 4x4 grid)
    prompt_ctx = torch.randn(2, 7, 6)  # the full prompt: what the image attends to
    class_ctx = torch.randn(1, 7, 6)  # the class prompt encoded alone
    positions = [2, 5]
    store = AttentionStore(cross_res=4, self_res=2, cond_from=1, class_context=class_ctx, class_positions=positions)
    proc = CaptureProcessor(store, AttnProcessor())
    out = proc(attn, hidden, encoder_hidden_states=prompt_ctx)
    assert torch.allclose(out, AttnProcessor()(attn, hidden, encoder_hidden_states=prompt_ctx))  # image unchanged
    probs = store.cross()
    assert probs.shape == (1, 16, 2)  # one column per class token
    assert torch.allclose(probs.sum(-1), torch.ones(1, 16))  # the softmax runs over those two only
    # by hand: conditional queries, the class prompt's keys at the class positions, head mean
    q = attn.to_q(hidden[1:]).view(1, 16, 2, 4).transpose(1, 2)
    k = attn.to_k(class_ctx[:, positions]).view(1, 2, 2, 4).transpose(1, 2)
    expected = torch.softmax(q @ k.transpose(-1, -2) * attn.scale, -1).mean(1)
    assert torch.allclose(probs, expected, atol=1e-6)
    # the full-prompt way (the ablation) attends over all 7 tokens of the prompt
    full = AttentionStore(cross_res=4, self_res=2, cond_from=1)
    CaptureProcessor(full, AttnProcessor())(attn, hidden, encoder_hidden_states=prompt_ctx)
    assert full.cross().shape == (1, 16, 7)


def test_nearest_attention_resolution():
    assert pick_resolution(16, {8, 16, 32}) == 16
    assert pick_resolution(16, {8, 32, 64}) == 32  # a tie on the log scale takes the larger
    assert pick_resolution(2, {8}) == 8
    with pytest.raises(RuntimeError, match="no attention layer"):
        pick_resolution(16, set())


@pytest.fixture(scope="module")
def small_model(tmp_path_factory):
    return build_random_pipeline(tmp_path_factory.mktemp("sd") / "small", image_size=64)


def test_a_unet_without_layers_at_the_wanted_sizes_still_gives_masks(tmp_path):
    model = build_random_pipeline(tmp_path / "shallow", image_size=64, layout="shallow")
    cfg = DiffuseConfig(n=2, steps=2, size=64, classes=[8, 12])
    summary = generate_dataset(model, tmp_path / "out", cfg, show_progress=False)
    assert summary["complete"]
    meta = json.loads((tmp_path / "out" / "meta.json").read_text())
    att = meta["attention"]
    assert att["wanted"] == [2, 4] and att["available"] == [8] and (att["cross_res"], att["self_res"]) == (8, 8)
    assert "nearest" in att["note"]


def test_meta_records_the_run_and_merged_shards_equal_the_unsharded_run(small_model, tmp_path):
    base = dict(n=4, seed=3, steps=2, size=64, classes=[8, 12, 15])
    generate_dataset(small_model, tmp_path / "whole", DiffuseConfig(**base), show_progress=False)
    meta = json.loads((tmp_path / "whole" / "meta.json").read_text())
    assert meta["class_prompt_attention"] is True and meta["upsample"] == "bicubic" and meta["steps"] == 2
    assert {"torch", "diffusers", "datarena_version", "device", "dtype"} <= set(meta)
    assert meta["dtype"] == "float32" and meta["device"] == "cpu"
    assert DiffuseConfig().steps == 100
    for i in range(2):
        generate_dataset(small_model, tmp_path / f"shard{i}", DiffuseConfig(**base, shard_index=i, shard_count=2),
                         show_progress=False)
    with pytest.raises(ConfigError, match="missing"):
        merge_shards([tmp_path / "shard0"], tmp_path / "half")
    merged = merge_shards([tmp_path / "shard1", tmp_path / "shard0"], tmp_path / "merged")
    whole = tmp_path / "whole"
    names = sorted(p.relative_to(whole) for p in whole.rglob("*") if p.is_file())
    assert names == sorted(p.relative_to(merged) for p in merged.rglob("*") if p.is_file())
    for rel in names:
        assert (whole / rel).read_bytes() == (merged / rel).read_bytes(), rel
