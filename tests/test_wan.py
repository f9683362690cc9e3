"""The Wan2.1 architecture: equivalence with diffusers' WanTransformer3DModel (a tiny random one saved with
`save_pretrained`), import/export, the causal machinery on the imported model, FlexAttention, and the
whole tiny pipeline on it."""

import json
import warnings

import pytest
import torch
import torch.nn.functional as F

from mirai import checkpoint as ckpt, wan_io
from mirai.cli import main
from mirai.config import SampleConfig, config_from_dict, model_config_from_dict
from mirai.diffusion.schedule import FlowSchedule
from mirai.models.attention import KVCache, block_mask, chunk_causal_mask, run_flex, teacher_forcing_mask
from mirai.sampling.rollout import iter_rollout, rollout, rollout_with_exit
from mirai.training.loop import train
from tests.conftest import no_warnings, stage_cfg

diffusers = pytest.importorskip("diffusers")

VOCAB = [3, 4]  # a small structured prompt: two fields


def base(**kw):
    """What diffusers does not store: frame size, chunking, mask, prompt fields."""
    return model_config_from_dict({"preset": "wan-tiny", **kw})


def save_diffusers(folder, channels: int, seed: int = 0):
    """A tiny random WanTransformer3DModel (diffusers' test shape) written by save_pretrained."""
    config = wan_io.diffusers_config(base(channels=channels))
    torch.manual_seed(seed)
    ref = diffusers.WanTransformer3DModel(**{k: v for k, v in config.items() if not k.startswith("_")}).eval()
    with torch.no_grad():  # move every weight (norm gains, biases too) off its default
        for p in ref.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    ref.save_pretrained(folder)
    return ref


@pytest.fixture(scope="module")
def latent_wan(tmp_path_factory):
    folder = tmp_path_factory.mktemp("wan16")
    return folder, save_diffusers(folder, channels=16)


@pytest.fixture(scope="module")
def pixel_wan(tmp_path_factory):
    """3 input channels: the synthetic world's pixel frames feed it directly."""
    folder = tmp_path_factory.mktemp("wan3")
    save_diffusers(folder, channels=3, seed=1)
    return folder


@pytest.fixture(scope="module")
def causal(pixel_wan):
    return wan_io.load_wan(pixel_wan, base(channels=3, prompt_vocab=VOCAB)).eval()


def diffusers_out(ref, x, timestep, text):
    with torch.no_grad():
        return ref(x.transpose(1, 2), timestep, text).sample.transpose(1, 2)


def video(B=2, T=6, C=3, H=16, W=16, seed=0):
    return torch.randn(B, T, C, H, W, generator=torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------------------------------------
# Equivalence with diffusers


def test_import_matches_diffusers_with_one_timestep(latent_wan):
    folder, ref = latent_wan
    model = wan_io.load_wan(folder, base(attention="bidirectional", image_width=8)).eval()  # non-square 16 x 8
    x, text = video(C=16, W=8), torch.randn(2, 5, 16, generator=torch.Generator().manual_seed(1))
    t = torch.full((2, 6), 0.37)
    with torch.no_grad():
        out = model(x, t, text)
    diff = (out - diffusers_out(ref, x, t[:, 0] * 1000, text)).abs().max().item()
    assert diff <= 1e-5, diff


def test_per_frame_timesteps_match_diffusers_per_token_path(latent_wan):
    folder, ref = latent_wan
    model = wan_io.load_wan(folder, base(attention="bidirectional")).eval()
    x, text = video(C=16), torch.randn(2, 5, 16, generator=torch.Generator().manual_seed(1))
    t = torch.rand(2, 6, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        out = model(x, t, text)
    per_token = (t * 1000).repeat_interleave(model.tokens_per_frame, dim=1)  # a frame's value on each of its tokens
    diff = (out - diffusers_out(ref, x, per_token, text)).abs().max().item()
    assert diff <= 1e-5, diff
    assert not torch.allclose(out, diffusers_out(ref, x, t[:, 0] * 1000, text), atol=1e-3)  # the frames' t matter


def test_bf16_autocast_forward_raises_no_warning_and_fp32_still_equals_diffusers(latent_wan):
    folder, ref = latent_wan
    model = wan_io.load_wan(folder, base(attention="bidirectional")).eval()
    x, text = video(C=16), torch.randn(2, 5, 16, generator=torch.Generator().manual_seed(1))
    t = torch.full((2, 6), 0.37)
    with no_warnings(), torch.no_grad():
        out = model(x, t, text)  # fp32: nn.RMSNorm's own kernel, diffusers' numbers
        assert (out - diffusers_out(ref, x, t[:, 0] * 1000, text)).abs().max() <= 1e-5
        seen = []  # the q/k norms meet bf16 activations with fp32 gains
        for m in model.modules():
            if isinstance(m, torch.nn.RMSNorm):
                m.register_forward_hook(lambda m, args, o: seen.append((args[0].dtype, m.weight.dtype, o.dtype)))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(x, t, text)
    assert len(seen) == 4 * len(model.blocks)  # self- and cross-attention, q and k
    assert set(seen) == {(torch.bfloat16, torch.float32, torch.bfloat16)}
    assert (low.float() - out).abs().max() < 0.05 * out.abs().max()  # bf16 rounding of the same map


def test_export_loads_in_diffusers_with_the_same_weights(latent_wan, tmp_path):
    folder, ref = latent_wan
    cfg = config_from_dict({"model": {"preset": "wan-tiny", "prompt_vocab": VOCAB}}, model_only=True)
    run = wan_io.import_wan(folder, cfg, tmp_path / "run")
    out = wan_io.export_wan(run, tmp_path / "exported")
    back = diffusers.WanTransformer3DModel.from_pretrained(out)
    mine, theirs = back.state_dict(), ref.state_dict()
    assert mine.keys() == theirs.keys()
    assert all(torch.equal(mine[k], theirs[k]) for k in theirs)
    # the prompt tables travel beside the transformer: importing the export gives the same Mirai model
    again = wan_io.load_wan(out, cfg.model)
    first = ckpt.load_model(run)
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in first.state_dict().items())


@pytest.mark.parametrize("vocab", [[], VOCAB], ids=["text", "structured"])
def test_export_of_a_mirai_built_wan_holds_only_diffusers_tensors(tmp_path, vocab):
    """A Wan trained in Mirai (caption embeddings, or the structured prompt) exports only the tensors
    WanTransformer3DModel knows; the prompt tables, when the model has them, go to the sidecar file."""
    cfg = base(conditional=True, prompt_vocab=vocab)
    torch.manual_seed(0)
    model = wan_io.build_model(cfg)
    ckpt.save_model(model, tmp_path / "model.safetensors")
    out = wan_io.export_wan(tmp_path / "model.safetensors", tmp_path / "exported")
    _, info = diffusers.WanTransformer3DModel.from_pretrained(out, output_loading_info=True)
    assert info["missing_keys"] == [] and info["unexpected_keys"] == [] and info["mismatched_keys"] == []
    assert (out / wan_io.PROMPT_FILE).is_file() == bool(vocab)
    again = wan_io.load_wan(out, cfg).state_dict()
    assert again.keys() == model.state_dict().keys()
    assert all(torch.equal(v, again[k]) for k, v in model.state_dict().items())


def test_model_file_keys_are_diffusers_keys(latent_wan):
    folder, ref = latent_wan
    model = wan_io.load_wan(folder, base(prompt_vocab=VOCAB))
    own = {k for k in model.state_dict() if not k.startswith("prompt_embed.")}
    assert own == set(ref.state_dict())
    assert {"blocks.0.attn1.norm_q.weight", "blocks.0.attn2.to_out.0.weight", "blocks.0.norm2.weight",
            "blocks.0.ffn.net.0.proj.weight", "blocks.0.ffn.net.2.weight", "blocks.0.scale_shift_table"} <= own


# --------------------------------------------------------------------------------------------------
# Missing and mismatched files


def test_missing_or_mismatched_files_are_named(latent_wan, tmp_path, capsys):
    folder, _ = latent_wan
    with pytest.raises(ckpt.CheckpointError, match="config.json"):
        wan_io.load_wan(tmp_path, base())
    (tmp_path / "config.json").write_text((folder / "config.json").read_text())
    with pytest.raises(ckpt.CheckpointError, match="diffusion_pytorch_model.safetensors not found"):
        wan_io.load_wan(tmp_path, base())
    (tmp_path / wan_io.WEIGHTS).write_bytes((folder / wan_io.WEIGHTS).read_bytes())
    config = json.loads((folder / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "num_layers": 3}))
    with pytest.raises(ckpt.CheckpointError, match=r"diffusion_pytorch_model.safetensors does not fit.*missing"):
        wan_io.load_wan(tmp_path, base())
    (tmp_path / "config.json").write_text(json.dumps({**config, "image_dim": 1280}))
    with pytest.raises(ckpt.CheckpointError, match="config.json: unsupported Wan options: image_dim"):
        wan_io.load_wan(tmp_path, base())
    assert main(["import", "wan", "--transformer", str(tmp_path / "nowhere"), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "config.json" in err[0]


# --------------------------------------------------------------------------------------------------
# The causal machinery on the imported model


def test_causal_mask_blocks_the_future(causal):
    x, t = video(), torch.rand(2, 6)
    with torch.no_grad():
        out = causal(x, t)
        x2 = x.clone()
        x2[:, 3:] = torch.randn_like(x2[:, 3:])  # perturb chunk 1 (frames 3..5)
        out2 = causal(x2, t)
    assert torch.equal(out[:, :3], out2[:, :3])
    assert not torch.allclose(out[:, 3:], out2[:, 3:])


def test_cached_chunks_equal_one_masked_forward(causal):
    x, t, prompt = video(), torch.rand(2, 6), torch.tensor([[1, 2], [2, 3]])
    with torch.no_grad():
        full, hidden = causal(x, t, prompt, return_hidden=1)
        cache = KVCache.allocate(causal.cfg, batch=2, max_chunks=2)
        outs = [causal(x[:, i : i + 3], t[:, i : i + 3], prompt, kv_cache=cache, commit=True) for i in (0, 3)]
        assert torch.equal(hidden, causal(x, t, prompt, stop_after=1))
    assert (torch.cat(outs, 1) - full).abs().max() < 1e-5


def test_cached_rollout_equals_uncached_with_guidance(causal):
    prompt, n = torch.tensor([[1, 2], [2, 3]]), video(T=9, seed=3)
    sample = SampleConfig(steps=2, solver="renoise", cfg_scale=3.0, context_noise=0.1)
    cached = rollout(causal, FlowSchedule(), n, prompt, sample=sample, generator=torch.Generator().manual_seed(0))
    uncached = rollout(causal, FlowSchedule(), n, prompt, sample=sample, generator=torch.Generator().manual_seed(0),
                       use_cache=False)
    assert (cached - uncached).abs().max() < 1e-4


def test_text_keys_are_computed_once_per_rollout(causal):
    calls = []
    hook = causal.blocks[0].attn2.to_k.register_forward_hook(lambda *a: calls.append(1))
    try:
        rollout(causal, FlowSchedule(), video(T=9), torch.tensor([[1, 2], [2, 3]]), sample=SampleConfig(steps=3))
    finally:
        hook.remove()
    assert len(calls) == 1  # 3 chunks x 3 steps + 2 commits = 11 forwards, one text projection


def test_a_training_rollout_trains_the_text_projections(pixel_wan):
    model = wan_io.load_wan(pixel_wan, base(channels=3, prompt_vocab=VOCAB))
    sample = SampleConfig(timesteps=[1000, 500], solver="renoise")
    video_, _ = rollout_with_exit(model, FlowSchedule(), video(T=6), torch.tensor([[1, 2], [2, 3]]), 1, sample=sample)
    video_.square().mean().backward()
    assert model.blocks[0].attn2.to_k.weight.grad.abs().sum() > 0  # not cut off by the cached text keys


def test_rolling_cache_with_sinks(causal):
    n = video(B=1, T=18, seed=4)
    plain = rollout(causal, FlowSchedule(), n, sample=SampleConfig(steps=1))
    covering = rollout(causal, FlowSchedule(), n, sample=SampleConfig(steps=1, sink_chunks=1, window_chunks=5))
    assert torch.equal(plain, covering)
    small = torch.cat(list(iter_rollout(causal, FlowSchedule(), n, sample=SampleConfig(steps=1, sink_chunks=1,
                                                                                         window_chunks=1))), 1)
    assert torch.isfinite(small).all()
    assert torch.equal(plain[:, :6], small[:, :6])  # sink + window: the first 2 chunks see the full history
    assert not torch.allclose(plain[:, 6:], small[:, 6:])


# --------------------------------------------------------------------------------------------------
# FlexAttention (the GPU path) against SDPA with the boolean mask (the CPU path)


@pytest.mark.parametrize("mask", [chunk_causal_mask(torch.arange(200) // 48), teacher_forcing_mask(3, 48)])
def test_flex_attention_equals_sdpa_on_the_masks(mask):
    L = mask.shape[0]
    q, k, v = torch.randn(3, 2, 2, L, 12, generator=torch.Generator().manual_seed(0)).unbind(0)
    with warnings.catch_warnings():  # eager FlexAttention on the CPU warns (once) that it is unfused
        warnings.simplefilter("ignore")
        out = run_flex(q, k, v, block_mask(mask))
    assert (out - F.scaled_dot_product_attention(q, k, v, attn_mask=mask)).abs().max() < 1e-5


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (compiled FlexAttention)")
def test_flex_forward_on_cuda_equals_the_cpu_forward(causal):
    x, t = video(), torch.rand(2, 6)
    with torch.no_grad():
        cpu = causal(x, t)
        gpu = causal.cuda()(x.cuda(), t.cuda()).cpu()
    causal.cpu()
    assert (gpu - cpu).abs().max() < 1e-3


# --------------------------------------------------------------------------------------------------
# The whole tiny pipeline on an imported Wan


BASE = {
    "world": {"image_size": 16, "sprite_sizes": [5]},
    "model": {"preset": "wan-tiny", "channels": 3},
    "data": {"clip_frames": 6},
    "sample": {"timesteps": [1000, 500], "solver": "renoise"},
}


def cfg(out, train, **sections):
    return stage_cfg(BASE, out, train={"batch_size": 1, "steps": 2, **train}, **sections)


@pytest.mark.slow
def test_tiny_wan_pipeline_teacher_forcing_ode_dmd_foresight(pixel_wan, tmp_path):
    sets = ["--set", "world.image_size=16", "--set", "world.sprite_sizes=[5]", "--set", "model.preset=wan-tiny",
            "--set", "model.channels=3", "--set", "data.clip_frames=6"]
    teacher = tmp_path / "teacher"
    assert main(["import", "wan", "--transformer", str(pixel_wan), "--out", str(teacher),
                 "--set", "model.attention=bidirectional", *sets]) == 0
    assert ckpt.load_model(teacher).cfg.attention == "bidirectional"
    ar = train(cfg(tmp_path / "ar", train={"objective": "teacher_forcing", "init_from": str(pixel_wan)}), quiet=True)
    ode = train(cfg(tmp_path / "ode", train={"objective": "ode", "init_from": str(ar)},
                    distill={"teacher": str(ar), "num_videos": 2, "shard_size": 2, "teacher_steps": 2}), quiet=True)
    dmd = {"teacher": str(teacher), "critic_updates_per_gen": 2}
    for name, foresight in (("dmd", {}), ("mirai", {"enabled": True, "predictor_depth": 1})):
        run = train(cfg(tmp_path / name, train={"objective": "dmd", "init_from": str(ode)}, dmd=dmd,
                        foresight=foresight), quiet=True)
        records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        assert any("dmd_loss" in r for r in records)
        assert all(torch.isfinite(torch.tensor(v)) for r in records for v in r.values() if isinstance(v, float))
    assert any("foresight_loss" in r for r in records)
    out = tmp_path / "clip.npz"
    assert main(["sample", "--ckpt", str(run), "--frames", "6", "--num", "1", "--out", str(out)]) == 0
    assert main(["export", "wan", str(run), "--out", str(tmp_path / "exported")]) == 0
    assert diffusers.WanTransformer3DModel.from_pretrained(tmp_path / "exported").config.in_channels == 3


def test_a_bf16_load_is_the_fp32_weights_rounded_and_runs_under_its_autocast(latent_wan):
    """A frozen 14B real score loads as bf16 (dist.frozen_dtype): every tensor bf16, no fp32 model on the way."""
    from mirai.device import weights_autocast

    folder, _ = latent_wan
    full = wan_io.load_wan(folder, base(attention="bidirectional")).eval()
    half = wan_io.load_wan(folder, base(attention="bidirectional"), dtype=torch.bfloat16).eval()
    norms = {f"{name}.{k}" for name, m in half.named_modules() if isinstance(m, torch.nn.LayerNorm | torch.nn.RMSNorm)
             for k, _ in m.named_parameters()}
    assert norms and {v.dtype for k, v in half.state_dict().items() if k not in norms} == {torch.bfloat16}
    assert {v.dtype for k, v in half.state_dict().items() if k in norms} == {torch.float32}  # gains: fp32 (CPU norms)
    assert all(torch.equal(v, full.state_dict()[k].to(v.dtype)) for k, v in half.state_dict().items())
    x, text = video(C=16), torch.randn(2, 5, 16, generator=torch.Generator().manual_seed(1))
    t = torch.full((2, 6), 0.37)
    with torch.no_grad(), weights_autocast(half, "cpu"):
        low = half(x, t, text)
    out = full(x, t, text).detach()
    assert (low.float() - out).abs().max() < 0.05 * out.abs().max()
