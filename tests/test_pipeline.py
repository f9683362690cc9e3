"""The baseline pipeline end to end at toy size: teacher, AR teacher, ODE pairs + student, DMD, resume."""

import json
import math

import pytest
import torch

from mirai import checkpoint as ckpt
from mirai.training.loop import train
from tests.conftest import stage_cfg

BASE = {
    "world": {"image_size": 16, "sprite_sizes": [5]},
    "model": {"preset": "tiny", "dim": 32, "depth": 2, "heads": 2, "patch_size": 4, "image_size": 16},
    "data": {"clip_frames": 4},
    "sample": {"timesteps": [1000, 500], "solver": "renoise"},
}


def cfg(out, **sections):
    return stage_cfg(BASE, out, **sections)


@pytest.fixture(scope="module")
def stages(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    teacher = train(cfg(root / "teacher", train={"objective": "bidirectional", "steps": 2}), quiet=True)
    ar = train(cfg(root / "ar", train={"objective": "teacher_forcing", "steps": 2}), quiet=True)
    ode = train(cfg(root / "ode", train={"objective": "ode", "steps": 2, "init_from": str(ar)},
                    distill={"teacher": str(ar), "num_videos": 4, "shard_size": 2, "teacher_steps": 4}), quiet=True)
    return root, teacher, ar, ode


def dmd_cfg(root, out, teacher, ode, steps=6):
    return cfg(root / out, train={"objective": "dmd", "steps": steps, "init_from": str(ode)},
               dmd={"teacher": str(teacher), "critic_updates_per_gen": 2})


def test_ode_stage_writes_pairs_and_a_causal_student(stages):
    root, teacher, ar, ode = stages
    assert len(list((ode / "ode_pairs").glob("shard_*.safetensors"))) == 2
    assert ckpt.load_model(ode).cfg.attention == "causal"


def test_dmd_stage_logs_losses_and_resumes_exactly(stages):
    root, teacher, ar, ode = stages
    full = train(dmd_cfg(root, "dmd_full", teacher, ode), quiet=True)
    part = dmd_cfg(root, "dmd_part", teacher, ode)
    train(part, stop_at=3, quiet=True)
    train(part, quiet=True)
    a, b = ckpt.load(full / "ckpt.safetensors")[0], ckpt.load(root / "dmd_part" / "ckpt.safetensors")[0]
    for k in a:
        assert torch.equal(a[k], b[k]), k
    records = [json.loads(l) for l in (full / "metrics.jsonl").read_text().splitlines()]
    gen_records = [r for r in records if "dmd_loss" in r]
    assert len(gen_records) == 3 and all("dmd_grad_norm" in r and "critic_loss" in r for r in gen_records)
    assert set(ckpt.load_model(full).state_dict()) == set(ckpt.load_model(ode).state_dict())  # generator alone


def test_dmd_critic_learns_with_the_configured_loss_weighting(stages, monkeypatch):
    """The fake score must be trained with the real score's loss (train.loss_t_floor), not a fixed weighting."""
    from mirai.training import dmd, losses

    root, teacher, ar, ode = stages
    floors = []

    def spy(*args, t_floor=0.05, **kw):
        floors.append(t_floor)
        return losses.bidirectional_loss(*args, t_floor=t_floor, **kw)

    monkeypatch.setattr(dmd, "bidirectional_loss", spy)
    c = dmd_cfg(root, "dmd_floor", teacher, ode, steps=2)
    c.train.loss_t_floor = 1.0
    train(c, quiet=True)
    assert floors == [1.0, 1.0]


def test_wrong_kind_of_checkpoint_is_named(stages):
    root, teacher, ar, ode = stages
    with pytest.raises(ckpt.CheckpointError, match="bidirectional model, but a causal model is needed"):
        train(dmd_cfg(root, "bad1", teacher, teacher), quiet=True)  # a teacher as the causal student
    with pytest.raises(ckpt.CheckpointError, match="causal model, but a bidirectional model is needed"):
        train(dmd_cfg(root, "bad2", ar, ode), quiet=True)  # a causal run as the real score
    bigger = cfg(root / "bad3", train={"objective": "ode", "steps": 1, "init_from": str(ar)},
                 model={"depth": 3}, distill={"teacher": str(ar), "num_videos": 2, "shard_size": 2})
    with pytest.raises(ckpt.CheckpointError, match="depth: 2 vs 3"):
        train(bigger, quiet=True)


def foresight_cfg(root, out, teacher, ode, steps=4, **foresight):
    c = dmd_cfg(root, out, teacher, ode, steps)
    c.foresight.enabled = True
    for k, v in foresight.items():
        setattr(c.foresight, k, v)
    return c


def test_foresight_switch_gives_the_same_generator_file(stages):
    root, teacher, ar, ode = stages
    base = train(dmd_cfg(root, "arm_base", teacher, ode, steps=4), quiet=True)
    mirai = train(foresight_cfg(root, "arm_mirai", teacher, ode), quiet=True)
    a, b = ckpt.load(base / "model.safetensors")[0], ckpt.load(mirai / "model.safetensors")[0]
    assert {k: v.shape for k, v in a.items()} == {k: v.shape for k, v in b.items()}
    assert sum(v.numel() for v in a.values()) == sum(v.numel() for v in b.values())
    state = ckpt.load(mirai / "ckpt.safetensors")[0]
    assert any(k.startswith("predictor.") for k in state)  # the predictor is saved apart, for resuming
    records = [json.loads(l) for l in (mirai / "metrics.jsonl").read_text().splitlines()]
    assert any("foresight_loss" in r for r in records) and any("predictor_replay_loss" in r for r in records)


def test_the_foresight_loss_reaches_the_generator(stages):
    """Weight 0 and weight 0.5 make the same random draws (predictor, replay): only the alignment gradient
    differs, so the generators differ exactly when the loss reaches them."""
    root, teacher, ar, ode = stages
    runs = {w: train(foresight_cfg(root, f"weight_{w}", teacher, ode, weight=w), quiet=True) for w in (0.0, 0.5)}
    off, on = (ckpt.load(runs[w] / "ckpt.safetensors")[0] for w in (0.0, 0.5))
    assert any(not torch.equal(off[k], on[k]) for k in off if k.startswith("model."))
    # and with weight 0 nothing but the draws differs from the baseline: the first generator update is the same
    base = train(dmd_cfg(root, "weight_base", teacher, ode, steps=1), quiet=True)
    zero = train(foresight_cfg(root, "weight_zero_1", teacher, ode, steps=1, weight=0.0), quiet=True)
    a, b = ckpt.load(base / "ckpt.safetensors")[0], ckpt.load(zero / "ckpt.safetensors")[0]
    assert all(torch.equal(a[k], b[k]) for k in a if k.startswith("model."))


def test_term_gradient_diagnostic_splits_the_generator_gradient_and_changes_nothing(stages):
    """grad_norm[dmd_loss] and grad_norm[foresight term] are the parts of the update's gradient: with their
    cosine they rebuild its norm (|a + b|^2 = |a|^2 + |b|^2 + 2 |a| |b| cos); logging them changes no weight."""
    root, teacher, ar, ode = stages
    diag = foresight_cfg(root, "tg_diag", teacher, ode, steps=3)
    diag.dmd.term_grad_every = 1
    diag.train.grad_clip = 1e9  # gen_grad_norm is then the norm of the summed gradient itself
    plain_cfg = foresight_cfg(root, "tg_plain_noclip", teacher, ode, steps=3)
    plain_cfg.train.grad_clip = 1e9
    run, plain = train(diag, quiet=True), train(plain_cfg, quiet=True)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    gen = [r for r in rows if "grad_cos" in r]
    assert len(gen) == 2  # steps 0 and 2 update the generator (critic_updates_per_gen 2)
    for r in gen:
        a, b, cos = r["grad_norm[dmd_loss]"], r["grad_norm[foresight term]"], r["grad_cos"]
        assert b > 0 and -1 <= cos <= 1
        assert math.sqrt(a * a + b * b + 2 * a * b * cos) == pytest.approx(r["gen_grad_norm"], rel=1e-4)
    x, y = ckpt.load(run / "ckpt.safetensors")[0], ckpt.load(plain / "ckpt.safetensors")[0]
    assert all(torch.equal(x[k], y[k]) for k in x)


def test_foresight_run_resumes_exactly(stages):
    root, teacher, ar, ode = stages
    full = train(foresight_cfg(root, "f_full", teacher, ode, steps=5, target_source="real"), quiet=True)
    part = foresight_cfg(root, "f_part", teacher, ode, steps=5, target_source="real")
    train(part, stop_at=2, quiet=True)
    train(part, quiet=True)
    a, b = ckpt.load(full / "ckpt.safetensors")[0], ckpt.load(root / "f_part" / "ckpt.safetensors")[0]
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
