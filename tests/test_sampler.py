from dataclasses import replace

import pytest
import torch

from mirai.config import SampleConfig
from mirai.models.attention import KVCache, cache_dtype
from mirai.config import model_config_from_dict
from mirai.models.wan import WanVideoModel
from mirai.sampling.rollout import Rollout, attended_span, iter_rollout, rollout, rollout_with_exit
from mirai.diffusion.schedule import FlowSchedule
from tests.conftest import make_model

SCHED = FlowSchedule(shift=3.0)


def noise(B=2, T=8, seed=0):
    return torch.randn(B, T, 3, 16, 16, generator=torch.Generator().manual_seed(seed))


def run(model, n, sample, prompt=None, seed=1, **kw):
    return rollout(model, SCHED, n, prompt, sample=sample, generator=torch.Generator().manual_seed(seed), **kw)


def test_cached_rollout_equals_recomputing_the_prefix(model):
    for sample in (SampleConfig(steps=3), SampleConfig(steps=2, solver="renoise", context_noise=0.2)):
        cached, uncached = run(model, noise(), sample), run(model, noise(), sample, use_cache=False)
        assert (cached - uncached).abs().max() < 1e-4


def test_guided_rollout_equals_uncached():
    model = make_model(prompt_vocab=[4, 5])
    prompt = torch.tensor([[1, 2], [3, 4]])
    sample = SampleConfig(steps=2, cfg_scale=3.0)
    cached, uncached = run(model, noise(), sample, prompt), run(model, noise(), sample, prompt, use_cache=False)
    assert (cached - uncached).abs().max() < 1e-4
    assert not torch.allclose(cached, run(model, noise(), SampleConfig(steps=2), prompt))  # guidance matters


def test_rolling_cache_with_a_window_covering_the_video_equals_the_plain_cache(model):
    plain = run(model, noise(T=10), SampleConfig(steps=2))
    rolling = run(model, noise(T=10), SampleConfig(steps=2, sink_chunks=1, window_chunks=4))
    assert torch.equal(plain, rolling)


def test_rolling_cache_runs_past_its_capacity(model):
    sample = SampleConfig(steps=1, sink_chunks=1, window_chunks=2)
    chunks = list(iter_rollout(model, SCHED, noise(T=24), sample=sample))
    assert len(chunks) == 12 and all(c.shape == (2, 2, 3, 16, 16) for c in chunks)
    assert all(torch.isfinite(c).all() for c in chunks)
    # a small window differs from the full history once chunks are evicted
    full = torch.cat(list(iter_rollout(model, SCHED, noise(T=24), sample=SampleConfig(steps=1))), 1)
    assert torch.equal(full[:, :6], torch.cat(chunks, 1)[:, :6])  # 3 chunks fit: sink 1 + window 2
    assert not torch.allclose(full[:, 6:], torch.cat(chunks, 1)[:, 6:])


def query_positions(model, sample, T=24):
    """The temporal position of every chunk a rollout denoises, and its frames."""
    run_ = Rollout(model, SCHED, noise(T=T), sample=sample, generator=torch.Generator().manual_seed(1))
    positions, chunks = [], []
    while run_.remaining:
        run_.cache.make_room()
        positions.append(run_.cache.next_frame_position())
        chunks.append(run_.next_chunk()[0])
    return positions, torch.cat(chunks, 1)


def test_window_positions_never_exceed_the_cache_and_absolute_ones_count_the_rollout(model):
    rolling = SampleConfig(steps=1, sink_chunks=1, window_chunks=2)
    window, _ = query_positions(model, rolling)
    absolute, _ = query_positions(model, replace(rolling, positions="absolute"))
    # a full cache evicts before the next chunk is denoised: it sits in the last of the sink + window slots
    assert window == [0, 2] + [2 * (1 + 2 - 1)] * 10
    assert absolute == [2 * i for i in range(12)]  # each chunk at its index in the rollout


@pytest.mark.parametrize("sink, window, chunks", [(1, 3, 40), (0, 2, 9), (1, 16, 32), (1, 16, 10), (0, 0, 12)])
def test_the_attended_span_is_the_farthest_key_a_rollout_reads(model, sink, window, chunks):
    sample = SampleConfig(steps=1, sink_chunks=sink, window_chunks=window)
    positions, _ = query_positions(model, sample, T=2 * chunks)
    farthest = max(p + 2 - 1 for p in positions)  # a chunk's last frame to the first key, at position 0
    assert attended_span(sample, 2, 2 * chunks) == farthest


def test_absolute_positions_change_only_the_distance_to_the_sinks(model):
    """Rotary attention reads only query-key distances: without a sink, absolute indices and the re-indexed window
    give the same video; with one, they agree until the first eviction and differ after it."""
    for sink, same_after in ((0, True), (1, False)):
        rolling = SampleConfig(steps=1, sink_chunks=sink, window_chunks=2)
        _, window = query_positions(model, rolling)
        _, absolute = query_positions(model, replace(rolling, positions="absolute"))
        fits = 2 * (sink + 2)  # frames made before the first eviction
        assert (window[:, :fits] - absolute[:, :fits]).abs().max() < 1e-5
        assert ((window[:, fits:] - absolute[:, fits:]).abs().max() < 1e-5) == same_after


def test_recache_keeps_absolute_positions(model):
    """Re-cached under absolute positions, a window chunk's layer-0 keys (its own frames, rotated at its index) are
    the keys it was first written with."""
    rolling = SampleConfig(steps=2, sink_chunks=1, window_chunks=2, positions="absolute")
    runs = [Rollout(model, SCHED, noise(T=16), sample=replace(rolling, recache_every=every),
                    generator=torch.Generator().manual_seed(1)) for every in (0, 2)]
    for r in runs:
        for _ in range(6):
            r.next_chunk()
    plain, recached = (r.cache.k for r in runs)
    assert torch.allclose(plain[0], recached[0], atol=1e-6)


def test_streaming_yields_chunks_in_order(model):
    n = noise()
    chunks = list(iter_rollout(model, SCHED, n, sample=SampleConfig(steps=2)))
    assert torch.equal(torch.cat(chunks, 1), rollout(model, SCHED, n, sample=SampleConfig(steps=2)))


def test_continuation_depends_on_the_context(model):
    sample = SampleConfig(steps=2)
    ctx_a, ctx_b = noise(T=4, seed=5), noise(T=4, seed=6)
    a = run(model, noise(T=4), sample, context=ctx_a)
    b = run(model, noise(T=4), sample, context=ctx_b)
    assert a.shape == (2, 4, 3, 16, 16)
    assert not torch.allclose(a, b)
    # continuing from context == a rollout whose first chunks happened to be that context (uncached reference)
    assert (a - run(model, noise(T=4), sample, context=ctx_a, use_cache=False)).abs().max() < 1e-4


def test_same_seed_same_video(model):
    sample = SampleConfig(steps=2, solver="renoise")
    assert torch.equal(run(model, noise(), sample, seed=3), run(model, noise(), sample, seed=3))
    assert not torch.equal(run(model, noise(), sample, seed=3), run(model, noise(), sample, seed=4))


def test_a_longer_rollout_with_the_same_seed_starts_with_the_shorter_one():
    from mirai.config import WorldConfig
    from mirai.sampling.inputs import rollout_inputs

    model, world = make_model(), WorldConfig(image_size=16, sprite_sizes=[5])
    sample = SampleConfig(steps=3, solver="renoise", context_noise=0.1)  # the solver draws noise too

    def video(frames, seed):
        inputs = rollout_inputs(model, world, 2, frames, seed, "cpu")
        return rollout(model, FlowSchedule(), inputs.noise, inputs.prompt, sample=sample, generator=inputs.generator)

    short, long = video(4, seed=5), video(8, seed=5)
    assert torch.equal(long[:, :4], short)
    assert not torch.allclose(video(4, seed=6), short)


def test_the_cache_is_written_at_context_noise(model):
    """Chunk 1 must see chunk 0 as written: (1 - c) x0 + c eps, eps the solver generator's next draw."""
    c, sample = 0.3, SampleConfig(steps=2, context_noise=0.3)  # Euler: the only draw is the context noise
    n = noise(T=4)
    video = run(model, n, sample, seed=7)
    gen = torch.Generator().manual_seed(7)
    first = video[:, :2]
    written = (1 - c) * first + c * torch.randn(first.shape, generator=gen)
    ts = SCHED.inference_steps(2).tolist()
    x = n[:, 2:]
    with torch.no_grad():
        for t, t_next in zip(ts[:-1], ts[1:]):
            t_frames = torch.tensor([c, c, t, t]).expand(2, 4)
            x = x + (t_next - t) * model(torch.cat([written, x], 1), t_frames)[:, 2:]
    assert (video[:, 2:] - x).abs().max() < 1e-4
    assert not torch.allclose(video[:, 2:], run(model, n, SampleConfig(steps=2), seed=7)[:, 2:])  # c matters


def test_guided_caption_rollout_equals_uncached_and_follows_the_negative_prompt():
    model = make_model(text_dim=8)
    captions, empty, negative = torch.randn(2, 5, 8), torch.randn(5, 8), torch.randn(5, 8)
    sample = SampleConfig(steps=2, cfg_scale=3.0, solver="renoise", context_noise=0.1)
    cached = run(model, noise(), sample, captions, uncond=empty)
    assert (cached - run(model, noise(), sample, captions, uncond=empty, use_cache=False)).abs().max() < 1e-4
    assert not torch.allclose(cached, run(model, noise(), sample, captions, uncond=negative))


# --------------------------------------------------------------------------------------------------
# The KV cache's dtype (sample.kv_cache_dtype)


def allocated_dtypes(monkeypatch) -> list:
    """The dtype of every KV cache the rollouts allocate from now on."""
    import mirai.sampling.rollout as rollout_module

    seen, allocate = [], KVCache.allocate

    def spy(*args, **kw):
        cache = allocate(*args, **kw)
        seen.append(cache.k.dtype)
        return cache

    monkeypatch.setattr(rollout_module.KVCache, "allocate", spy)
    return seen


def test_auto_cache_dtype_without_autocast_is_fp32_and_the_same_rollout(model, monkeypatch):
    seen = allocated_dtypes(monkeypatch)
    sample = SampleConfig(steps=2, solver="renoise", context_noise=0.2)
    auto, fp32 = run(model, noise(), sample), run(model, noise(), replace(sample, kv_cache_dtype="fp32"))
    assert seen == [torch.float32, torch.float32] and torch.equal(auto, fp32)
    gen = [torch.Generator().manual_seed(3) for _ in range(2)]
    exits = [rollout_with_exit(model, SCHED, noise(), None, 1, sample=replace(sample, kv_cache_dtype=d), generator=g)[0]
             for d, g in zip(("auto", "fp32"), gen)]
    assert seen[2:] == [torch.float32, torch.float32] and torch.equal(*exits)


def test_auto_cache_dtype_under_bf16_autocast_is_bf16_and_matches_the_fp32_cache(model, monkeypatch):
    seen = allocated_dtypes(monkeypatch)
    sample = SampleConfig(steps=2, solver="renoise", context_noise=0.2, sink_chunks=1, window_chunks=2)  # rolls
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto = run(model, noise(T=10), sample)
        fp32 = run(model, noise(T=10), replace(sample, kv_cache_dtype="fp32"))
        plain = run(model, noise(T=10), replace(sample, kv_cache_dtype="bf16", window_chunks=0))
    assert seen == [torch.bfloat16, torch.float32, torch.bfloat16]
    assert (auto.float() - fp32.float()).abs().max() < 1e-2  # keys are bf16 under autocast: only rolls round
    assert (auto.float() - plain.float()).abs().max() > 0  # the window did roll
    assert cache_dtype("bf16", "cpu") == torch.bfloat16 and cache_dtype("auto", "cpu") == torch.float32


# --------------------------------------------------------------------------------------------------
# Switching the prompt mid-stream (`Rollout.switch`) and re-caching (`Rollout.recache`)


def switched(model, n, sample, first, second, at, use_cache=True, recache=True, **kw):
    """The video of a rollout that follows `first` for `at` chunks, then `second`."""
    run_ = Rollout(model, SCHED, n, first, sample=sample, generator=torch.Generator().manual_seed(1),
                   use_cache=use_cache, **kw)
    chunks = [run_.next_chunk()[0] for _ in range(at)]
    run_.switch(second, recache=recache)
    chunks += [run_.next_chunk()[0] for _ in range(run_.remaining)]
    return torch.cat(chunks, 1)


def wan_text_model():
    torch.manual_seed(0)
    model = WanVideoModel(model_config_from_dict({"preset": "wan-tiny", "channels": 3, "image_size": 16,
                                                  "frames_per_chunk": 2, "conditional": True})).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


def prompts_of(model):
    if model.cfg.text_conditioned:
        g = torch.Generator().manual_seed(3)
        return [torch.randn(2, 5, model.cfg.text_dim, generator=g) for _ in range(2)], torch.zeros(5, model.cfg.text_dim)
    return [torch.tensor([[1, 2], [3, 4]]), torch.tensor([[2, 1], [3, 1]])], None


@pytest.mark.parametrize("kind", ["structured", "caption", "wan caption"])
def test_a_switch_with_recache_equals_the_uncached_rollout_under_the_new_prompt(kind):
    model = {"structured": lambda: make_model(prompt_vocab=[4, 5]), "caption": lambda: make_model(text_dim=8),
             "wan caption": wan_text_model}[kind]()
    (a, b), uncond = prompts_of(model)
    sample = SampleConfig(steps=2, cfg_scale=2.0, solver="renoise", context_noise=0.1)
    cached = switched(model, noise(), sample, a, b, at=2, uncond=uncond)
    uncached = switched(model, noise(), sample, a, b, at=2, use_cache=False, uncond=uncond)
    assert (cached - uncached).abs().max() < 1e-4
    unswitched = run(model, noise(), sample, a, uncond=uncond)
    assert torch.equal(cached[:, :4], unswitched[:, :4])  # before the switch: the first prompt's video
    assert not torch.allclose(cached[:, 4:], unswitched[:, 4:], atol=1e-3)  # after it: the new prompt's
    kept = switched(model, noise(), sample, a, b, at=2, recache=False, uncond=uncond)
    assert torch.equal(kept[:, :4], cached[:, :4]) and not torch.allclose(kept[:, 4:], cached[:, 4:], atol=1e-4)
    assert not torch.allclose(kept[:, 4:], unswitched[:, 4:], atol=1e-4)  # kept keys, yet the new prompt read


def test_recaching_a_cache_that_holds_everything_changes_nothing(model):
    sample = SampleConfig(steps=2, context_noise=0.2)
    run_ = Rollout(model, SCHED, noise(), sample=sample, generator=torch.Generator().manual_seed(1))
    chunks = []
    while run_.remaining:
        chunks.append(run_.next_chunk()[0])
        run_.recache()  # the keys recomputed in order from the same frames: the same keys
    assert (torch.cat(chunks, 1) - run(model, noise(), sample)).abs().max() < 1e-5


def test_a_switched_prompt_of_another_shape_is_refused(model):
    run_ = Rollout(make_model(prompt_vocab=[4, 5]), SCHED, noise(), torch.tensor([[1, 2], [3, 4]]))
    with pytest.raises(ValueError, match=r"shape of the rollout's prompt \(2, 2\), got \(1, 2\)"):
        run_.switch(torch.tensor([[1, 2]]))


def test_recache_every_n_chunks_rewrites_a_rolling_windows_keys(model):
    rolling = SampleConfig(steps=2, sink_chunks=1, window_chunks=2, context_noise=0.2)
    runs = [Rollout(model, SCHED, noise(T=16), sample=replace(rolling, recache_every=every),
                    generator=torch.Generator().manual_seed(1)) for every in (0, 2)]
    chunks = [[r.next_chunk()[0] for _ in range(4)] for r in runs]  # 4 chunks: the 4th's commit evicted chunk 2
    assert all(torch.equal(a, b) for a, b in zip(*chunks))  # the same frames (their keys differ past layer 0 only)
    (plain, recached), tpc = (r.cache.k for r in runs), runs[0].cache.tokens_per_chunk
    # layer 0: a chunk's keys are of its own frames (up to the rounding of the window's in-place re-rotation)
    assert torch.allclose(plain[0], recached[0], atol=1e-6)
    # deeper: a window chunk's keys were written while evicted chunks were in the cache; recomputed, they are not
    assert not torch.allclose(plain[1, :, :, tpc : 2 * tpc], recached[1, :, :, tpc : 2 * tpc], atol=1e-5)
    whole = SampleConfig(steps=1)  # a cache that holds everything: recaching recomputes the same keys
    assert (run(model, noise(T=16), replace(whole, recache_every=1)) - run(model, noise(T=16), whole)).abs().max() < 1e-5
