"""`mirai plan` against reality: the step on fake tensors allocates what the same step allocates with real tensors
(tracked the same way), counts the same FLOPs as `mirai bench train`, and the verdicts follow from the GPU table."""

import dataclasses
import math

import pytest
import torch

from mirai import bench
from mirai.config import config_from_dict
from mirai.models.attention import ChunkMask
from mirai.plan.gpus import GPUS
from mirai.plan.report import Plan, peak_bytes, step_seconds
from mirai.plan.simulate import chunk_mask_density, plan_run

SMALL = {"model": {"preset": "tiny", "dim": 64, "depth": 2, "heads": 2, "patch_size": 8},
         "data": {"clip_frames": 4}, "train": {"batch_size": 2, "precision": "fp32"}}
STAGES = {
    "bidirectional": {"train": {"objective": "bidirectional"}},
    "teacher_forcing": {"train": {"objective": "teacher_forcing"}},
    "ode": {"train": {"objective": "ode", "init_from": "missing/run"}, "distill": {"teacher": "missing/run"},
            "sample": {"timesteps": [1000, 500]}},
    "dmd_foresight": {"train": {"objective": "dmd", "init_from": "missing/run"},
                      "dmd": {"teacher": "missing/teacher", "critic_updates_per_gen": 2},
                      "sample": {"timesteps": [1000, 750, 500], "solver": "renoise"},
                      "foresight": {"enabled": True, "predictor_depth": 1, "replay_size": 3}},
}


def config(stage: str, **extra):
    data = {k: {**SMALL.get(k, {}), **STAGES[stage].get(k, {})} for k in {*SMALL, *STAGES[stage]}}
    for key, value in extra.items():
        data.setdefault(key, {}).update(value)
    return config_from_dict(data)


@pytest.mark.parametrize("stage", list(STAGES))
def test_the_fake_step_allocates_what_the_real_step_allocates(stage):
    cfg = config(stage)
    fake = plan_run(cfg, fused=False, fake=True)
    real = plan_run(cfg, fused=False, fake=False)
    for f, r in zip(fake.steps, real.steps):
        assert f.flops == r.flops > 0
        assert abs(f.peak["total"] - r.peak["total"]) <= 0.10 * r.peak["total"], (f.peak, r.peak)
        for kind in ("parameters", "optimiser"):  # (gradients, replay: a kind may be filed apart at the peak)
            assert abs(f.peak[kind] - r.peak[kind]) <= 0.10 * max(r.peak[kind], 1), kind
    if real.rollout is not None:
        assert fake.rollout.flops == real.rollout.flops
        assert abs(fake.rollout.peak["total"] - real.rollout.peak["total"]) <= 0.10 * real.rollout.peak["total"]
        assert fake.rollout.peak["kv_cache"] > 0


def test_parameters_gradients_and_adam_are_what_the_model_has():
    run = plan_run(config("teacher_forcing"), fused=False)
    n = run.parameters["model"]
    peak = run.steps[0].peak
    assert peak["parameters"] >= 2 * 4 * n  # the model and its EMA, fp32
    assert peak["optimiser"] == pytest.approx(2 * 4 * n, rel=1e-3)  # AdamW's two moments (and its step counts)
    assert peak["gradients"] == 4 * n


def test_the_flops_are_mirai_bench_trains():
    stats = bench._train_step_stats("tiny", 2, 4, "fp32", 1)
    cfg = config_from_dict({"model": {"preset": "tiny", "conditional": False, "image_size": 32},
                            "data": {"clip_frames": 4}, "train": {"batch_size": 2, "precision": "fp32"}})
    run = plan_run(cfg, fused=False, rollout=False)
    assert run.steps[0].flops == pytest.approx(stats["gflop_per_step"] * 1e9, rel=1e-9)


def test_fsdp_over_ranks_shards_what_is_trained():
    cfg = config("teacher_forcing", dist={"generator": "fsdp"}, train={"batch_size": 4})
    one, four = plan_run(cfg, ranks=1, rollout=False), plan_run(cfg, ranks=4, rollout=False)
    assert four.steps[0].peak["optimiser"] == pytest.approx(one.steps[0].peak["optimiser"] / 4, rel=0.05)
    assert (one.rows, four.rows) == (4, 1)


def test_chunk_mask_density_counts_the_pairs_the_mask_keeps():
    for mask in (ChunkMask("causal", 5, 4), ChunkMask("causal", 5, 4, 17), ChunkMask("teacher_forcing", 3, 4)):
        dense = mask.dense()
        assert chunk_mask_density(mask) == pytest.approx(dense.float().mean().item())


def test_a_gpu_plan_counts_only_the_attention_pairs_the_mask_keeps(monkeypatch):
    cfg = config("teacher_forcing")
    masked = plan_run(cfg, fused=True, rollout=False)
    monkeypatch.setattr("mirai.plan.simulate.chunk_mask_density", lambda mask: 1.0)
    dense = plan_run(cfg, fused=True, rollout=False)
    assert masked.steps[0].flops < dense.steps[0].flops


def test_the_verdict_follows_the_gpu_table():
    cfg = config("teacher_forcing")
    plan = Plan(cfg, plan_run(cfg, rollout=False), list(GPUS.values()), 0.4)
    table = plan.to_json()
    assert table["peak_bytes"] == peak_bytes(plan.run)
    assert all(g["fits"] for g in table["gpus"].values())  # a toy step fits every card
    tiny_gpu = type(plan.gpus[0])("toy", 1.0, 1.0, 1.0 + plan.run.steps[0].peak["total"] / 2**30 / 2, 1.0)
    assert not plan.fits(tiny_gpu)


def test_activation_checkpointing_lowers_the_peak_the_tracker_sees():
    """The tracker must not itself keep recomputed activations alive (torch's module trackers do): with real
    tensors and with fake ones, checkpointing every block cuts the step's peak to well under half."""
    peaks = {}
    for on in (True, False):
        cfg = config_from_dict({"model": {"preset": "wan-tiny", "dim": 96, "ffn_dim": 384, "depth": 4, "image_size": 32,
                                          "conditional": False},
                                "data": {"clip_frames": 9}, "train": {"batch_size": 1, "precision": "fp32"},
                                "dist": {"activation_checkpointing": on}})
        for fake in (True, False):
            peaks[on, fake] = plan_run(cfg, rollout=False, fake=fake).steps[0].peak["total"]
    for fake in (True, False):
        assert peaks[True, fake] < 0.5 * peaks[False, fake]
    assert peaks[True, True] == pytest.approx(peaks[True, False], rel=0.10)


def test_a_replay_buffer_in_host_memory_is_reported_but_not_on_the_gpu():
    on_host = plan_run(config("dmd_foresight", foresight={"replay_device": "cpu"}), fused=False, rollout=False)
    on_gpu = plan_run(config("dmd_foresight", foresight={"replay_device": "device"}), fused=False, rollout=False)
    for host, gpu in zip(on_host.steps, on_gpu.steps):
        assert host.peak["host"] > 0 and gpu.peak["host"] == 0
        assert host.peak["total"] < gpu.peak["total"]
        # the buffer is the same bytes either way; on the GPU it adds them to the peak (less what the host peak
        # moment keeps of them at the GPU's peak)
        assert gpu.peak["total"] - host.peak["total"] <= host.peak["host"] * 1.01
        assert gpu.peak["replay"] == pytest.approx(host.peak["host"], rel=0.5)


def test_an_offloaded_teacher_is_host_memory_and_its_copies_are_priced_on_the_host_link():
    held = plan_run(config("dmd_foresight"), fused=False, rollout=False)
    off = plan_run(config("dmd_foresight", dist={"teacher": "offload"}), fused=False, rollout=False)
    teacher = 4 * held.parameters["teacher (frozen)"]  # fp32 weights
    step_held, step_off = held.steps[0], off.steps[0]
    assert step_off.peak["offloaded"] == pytest.approx(teacher, rel=0.01) and step_held.peak["offloaded"] == 0
    assert step_off.peak["total"] < step_held.peak["total"]
    assert step_off.host_to_device_bytes >= teacher and step_held.host_to_device_bytes == 0
    h100 = GPUS["h100"]
    instant_link = dataclasses.replace(h100, host_link_gbs=math.inf)
    slower = step_seconds(off, h100, 0.4, 2)[0] - step_seconds(off, instant_link, 0.4, 2)[0]
    link = sum(s.host_to_device_bytes for s in off.steps)  # a generator step and k - 1 = 1 critic-only step
    assert slower == pytest.approx(link / (h100.host_link_gbs * 1e9), rel=1e-9)


def test_ddp_over_ranks_replicates_and_adds_its_gradient_buckets():
    one = plan_run(config("teacher_forcing", train={"batch_size": 2}), ranks=1, rollout=False)
    two = plan_run(config("teacher_forcing", dist={"generator": "ddp"}, train={"batch_size": 4}), ranks=2,
                   rollout=False)
    assert one.rows == two.rows == 2
    n = one.parameters["model"]
    a, b = one.steps[0].peak, two.steps[0].peak
    assert b["optimiser"] == a["optimiser"]  # nothing sharded
    assert b["total"] - a["total"] == 4 * n  # DDP's buckets: one fp32 copy of the gradients
