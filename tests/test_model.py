import pytest
import torch

from mirai.models.attention import KVCache
from mirai.config import ModelConfig
from mirai.models.dit import CausalVideoDiT
from tests.conftest import make_model, no_warnings


def video(B=2, T=6, seed=0):
    return torch.randn(B, T, 3, 16, 16, generator=torch.Generator().manual_seed(seed))


def test_output_shape_and_adaln_zero_at_init():
    x, t = video(), torch.rand(2, 6) + 0.1
    velocity = CausalVideoDiT(ModelConfig(dim=32, depth=2, heads=2, patch_size=4, image_size=16, prediction="velocity"))
    out = velocity(x, t)
    assert out.shape == x.shape
    assert torch.count_nonzero(out) == 0  # adaLN-Zero: the untrained network is the zero map
    x0_model = CausalVideoDiT(ModelConfig(dim=32, depth=2, heads=2, patch_size=4, image_size=16, prediction="x0"))
    # predicting x0 = 0 means the velocity (x_t - 0) / t
    assert torch.allclose(x0_model(x, t), x / t[..., None, None, None])


def test_later_chunks_do_not_change_earlier_outputs(model):
    x, t = video(), torch.rand(2, 6)
    out = model(x, t)
    x2 = x.clone()
    x2[:, 4:] = torch.randn_like(x2[:, 4:])  # perturb chunk 2 (frames 4, 5)
    out2 = model(x2, t)
    assert torch.equal(out[:, :4], out2[:, :4])
    assert not torch.allclose(out[:, 4:], out2[:, 4:])


def test_frames_within_a_chunk_see_each_other(model):
    x, t = video(), torch.rand(2, 6)
    x2 = x.clone()
    x2[:, 3] += 1.0  # second frame of chunk 1 changes the first frame of chunk 1
    assert not torch.allclose(model(x, t)[:, 2], model(x2, t)[:, 2])


def test_bidirectional_mask_sees_the_future():
    model = make_model(attention="bidirectional")
    x, t = video(), torch.rand(2, 6)
    x2 = x.clone()
    x2[:, 5] += 1.0
    assert not torch.allclose(model(x, t)[:, 0], model(x2, t)[:, 0], atol=1e-5)


def test_cached_chunks_equal_one_masked_forward(model):
    """Chunk-by-chunk with the KV cache == one uncached forward with the block-causal mask (fp32)."""
    x, t = video(), torch.rand(2, 6)
    full = model(x, t)
    cache = KVCache.allocate(model.cfg, batch=2, max_chunks=3)
    outs = [model(x[:, i : i + 2], t[:, i : i + 2], kv_cache=cache, commit=True) for i in range(0, 6, 2)]
    assert (torch.cat(outs, 1) - full).abs().max() < 1e-4


def test_prompt_changes_the_output():
    model = make_model(prompt_vocab=[4, 5])
    x, t = video(), torch.rand(2, 6)
    a = model(x, t, torch.tensor([[1, 2], [1, 2]]))
    b = model(x, t, torch.tensor([[3, 4], [3, 4]]))
    assert not torch.allclose(a, b)
    assert torch.equal(model(x, t, None), model(x, t, torch.zeros(2, 2, dtype=torch.long)))  # None = dropped


def test_hidden_state_and_early_stop_agree(model):
    x, t = video(), torch.rand(2, 6)
    out, hidden = model(x, t, return_hidden=1)
    assert hidden.shape == (2, 6, model.tokens_per_frame, 32)
    assert torch.equal(out, model(x, t))
    assert torch.equal(hidden, model(x, t, stop_after=1))


def test_cache_requires_one_chunk(model):
    cache = KVCache.allocate(model.cfg, batch=2, max_chunks=3)
    with pytest.raises(ValueError, match="one chunk"):
        model(video(), torch.rand(2, 6), kv_cache=cache)


def test_frame_wise_variant():
    model = make_model(frames_per_chunk=1)
    x, t = video(T=3), torch.rand(2, 3)
    full = model(x, t)
    x2 = x.clone()
    x2[:, 2] += 1
    assert torch.equal(full[:, :2], model(x2, t)[:, :2])


def test_edm_preconditioning_is_x0_at_full_noise_and_unit_variance_target():
    from mirai.models.dit import edm_scalings

    c_skip, c_out, c_in = edm_scalings(torch.tensor([1.0, 0.0]), sigma_data=0.5)
    assert c_skip[0] == 0 and c_out[0] == 0.5 and c_skip[1] == 1 and c_out[1] == 0  # x0 at t=1, identity at t=0
    # For data of std sigma_data, the network's target (x0 - c_skip x_t) / c_out has unit variance, and
    # c_skip is the least-squares skip: any other skip gives a larger target variance.
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(200_000, generator=g) * 0.5, torch.randn(200_000, generator=g)
    for t in (0.1, 0.5, 0.9):
        xt = (1 - t) * x0 + t * eps
        c_skip, c_out, c_in = edm_scalings(torch.tensor(t), 0.5)
        assert abs(((x0 - c_skip * xt) / c_out).var().item() - 1) < 0.02
        assert abs((xt * c_in).var().item() - 1) < 0.02
        assert ((x0 - c_skip * xt) ** 2).mean() < ((x0 - 1.1 * c_skip * xt) ** 2).mean()


def test_edm_model_starts_as_the_skip_and_caches_exactly():
    x, t = video(), torch.rand(2, 6) * 0.9 + 0.05
    fresh = CausalVideoDiT(ModelConfig(dim=32, depth=2, heads=2, patch_size=4, image_size=16, prediction="edm"))
    from mirai.models.dit import edm_scalings

    c_skip = edm_scalings(t, 0.5)[0][..., None, None, None]
    # adaLN-Zero output F = 0, so x0 = c_skip x_t and v = (x_t - x0) / t
    assert torch.allclose(fresh(x, t), (1 - c_skip) * x / t[..., None, None, None], atol=1e-5)
    model = make_model(prediction="edm")
    cache = KVCache.allocate(model.cfg, batch=2, max_chunks=3)
    outs = [model(x[:, i : i + 2], t[:, i : i + 2], kv_cache=cache, commit=True) for i in range(0, 6, 2)]
    assert (torch.cat(outs, 1) - model(x, t)).abs().max() < 1e-4


# --------------------------------------------------------------------------------------------------
# Caption embeddings: cross-attention to the text (model.text_dim)


def captions(B=2, L=5, seed=3):
    return torch.randn(B, L, 8, generator=torch.Generator().manual_seed(seed))


def test_caption_model_has_cross_attention_the_structured_one_does_not():
    text, structured = make_model(text_dim=8), make_model(prompt_vocab=[4, 5])
    assert text.cfg.text_conditioned and all(b.cross_attn is not None for b in text.blocks)
    assert not any("cross" in k or "text_embed" in k for k in structured.state_dict())
    fresh = CausalVideoDiT(ModelConfig(dim=32, depth=2, heads=2, patch_size=4, image_size=16, text_dim=8))
    assert all(torch.count_nonzero(b.cross_attn.proj.weight) == 0 for b in fresh.blocks)  # identity blocks at init


def test_caption_changes_the_output_and_reaches_every_frame():
    model, x, t = make_model(text_dim=8), video(), torch.rand(2, 6)
    a, b = model(x, t, captions(seed=3)), model(x, t, captions(seed=4))
    assert all(not torch.allclose(a[:, f], b[:, f]) for f in range(6))
    mixed = torch.cat([captions(seed=3)[:1], captions(seed=4)[1:]])  # each video reads its own caption
    assert torch.allclose(model(x, t, mixed), torch.cat([a[:1], b[1:]]), atol=1e-5)


def test_caption_model_cached_chunks_equal_one_masked_forward_and_stay_causal():
    model, x, t, text = make_model(text_dim=8), video(), torch.rand(2, 6), captions()
    full = model(x, t, text)
    cache = KVCache.allocate(model.cfg, batch=2, max_chunks=3)
    outs = [model(x[:, i : i + 2], t[:, i : i + 2], text, kv_cache=cache, commit=True) for i in range(0, 6, 2)]
    assert (torch.cat(outs, 1) - full).abs().max() < 1e-4
    x2 = x.clone()
    x2[:, 4:] += 1.0
    assert torch.equal(model(x2, t, text)[:, :4], full[:, :4])


def test_dit_reads_one_kind_of_prompt():
    from mirai.config import ConfigError, validate_model

    with pytest.raises(ConfigError, match="two kinds of prompt"):
        validate_model(ModelConfig(text_dim=8, prompt_vocab=[4]))


# --------------------------------------------------------------------------------------------------
# bf16 autocast: q/k RMSNorm gains stay fp32 while the activations are bf16


@pytest.mark.parametrize("kw", [{}, {"text_dim": 8}], ids=["self-attention", "cross-attention"])
def test_bf16_autocast_forward_and_backward_raise_no_warning(kw):
    model, x, t = make_model(**kw), video(), torch.rand(2, 6)
    text = captions() if kw else None
    reference = model(x, t, text)
    seen = []  # (input dtype, gain dtype) of every q/k norm call: the mixed case is what autocast gives them
    for name, m in model.named_modules():
        if name.endswith(("q_norm", "k_norm")):
            m.register_forward_hook(lambda m, args, out: seen.append((args[0].dtype, m.weight.dtype, out.dtype)))
    with no_warnings(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x, t, text)
        out.float().square().mean().backward()
    assert len(seen) == 2 * len(model.blocks) * (2 if kw else 1)
    assert set(seen) == {(torch.bfloat16, torch.float32, torch.bfloat16)}
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters() if p.requires_grad)
    assert (out.float() - reference).abs().max() < 0.05 * reference.abs().max()  # bf16 rounding, not another map


# --------------------------------------------------------------------------------------------------
# Activation checkpointing of the forwards that read the KV cache (the exit steps of rollout_with_exit)


def wan_tiny():
    from mirai.config import model_config_from_dict
    from mirai.models.build import build_model

    torch.manual_seed(0)
    return build_model(model_config_from_dict({"preset": "wan-tiny"})).eval()


def exit_rollout_gradients(model, on: bool, sample) -> tuple[list[torch.Tensor], int]:
    """Gradients of a loss on rollout_with_exit's video, and the bytes autograd saved for backward outside
    checkpointed blocks (a checkpointed block keeps its inputs only, and recomputes the rest in backward)."""
    from mirai.diffusion.schedule import FlowSchedule
    from mirai.sampling.rollout import rollout_with_exit

    C, H = model.cfg.channels, model.cfg.image_size
    noise = torch.randn(2, 4 * model.cfg.frames_per_chunk, C, H, H, generator=torch.Generator().manual_seed(0))
    model.zero_grad(set_to_none=True)
    model.checkpoint_blocks, saved = on, [0]

    def pack(t):
        saved[0] += t.numel() * t.element_size()
        return t

    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            video, _ = rollout_with_exit(model, FlowSchedule(shift=3.0), noise, None, 1, sample=sample,
                                         generator=torch.Generator().manual_seed(1))
        (video.float() - 0.3).square().mean().backward()  # backward after every chunk was committed
    finally:
        model.checkpoint_blocks = False
    return [p.grad.clone() for p in model.parameters() if p.grad is not None], saved[0]


@pytest.mark.parametrize("arch", ["dit", "wan"])
@pytest.mark.parametrize("window", [0, 2])  # 2: a rolling cache (sink 1 + window 2) that shifts before backward
def test_checkpointed_cached_forwards_give_the_same_gradients_and_keep_less(arch, window):
    from mirai.config import SampleConfig

    model = make_model() if arch == "dit" else wan_tiny()
    sample = SampleConfig(steps=3, context_noise=0.1, sink_chunks=1, window_chunks=window)
    plain, plain_bytes = exit_rollout_gradients(model, False, sample)
    checkpointed, checkpointed_bytes = exit_rollout_gradients(model, True, sample)
    assert len(plain) == len(checkpointed) == len(list(model.parameters()))
    for a, b in zip(plain, checkpointed):
        torch.testing.assert_close(b, a, atol=1e-6, rtol=1e-5)
    assert checkpointed_bytes < plain_bytes / 3, (checkpointed_bytes, plain_bytes)


@torch.no_grad()
def test_a_cache_snapshot_keeps_what_the_forward_read():
    model = make_model()
    cache = KVCache.allocate(model.cfg, batch=1, max_chunks=3)
    chunk = torch.randn(1, 2, 3, 16, 16)
    model(chunk, torch.zeros(1, 2), kv_cache=cache, commit=True)
    snap = cache.snapshot()
    keys = snap.k.clone()
    model(chunk, torch.zeros(1, 2), kv_cache=cache, commit=True)  # a later chunk is appended
    assert snap.length == model.tokens_per_chunk and torch.equal(snap.k, keys)
    with pytest.raises(RuntimeError, match="full"):
        model(chunk, torch.zeros(1, 2), kv_cache=snap, commit=True)
    rolling = KVCache.allocate(model.cfg, batch=1, max_chunks=0, sink_chunks=1, window_chunks=1)
    model(chunk, torch.zeros(1, 2), kv_cache=rolling, commit=True)
    model(chunk * 2, torch.zeros(1, 2), kv_cache=rolling, commit=True)
    snap, keys = rolling.snapshot(), rolling.k.clone()
    rolling.make_room()  # shifts the window in place: the snapshot is a copy
    model(chunk * 3, torch.zeros(1, 2), kv_cache=rolling, commit=True)
    assert torch.equal(snap.k, keys) and not torch.equal(rolling.k, keys)
