"""DMD on a toy problem with a known answer, and the exit-step gradient of the self-rollout."""

import torch
from torch import nn

from mirai.config import SampleConfig
from mirai.training.dmd import dmd_gradient, dmd_loss
from mirai.rng import randn
from mirai.sampling.rollout import rollout_with_exit
from mirai.models.attention import KVCache
from mirai.diffusion.schedule import FlowSchedule
from tests.conftest import make_model

# ---------------------------------------------------------------- toy: 2-D Gaussian mixture
MEANS = torch.tensor([[2.0, 2.0], [-2.0, 2.0]])
STD = 0.3


def real_x0(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Exact E[x0 | x_t] of the mixture under x_t = (1 - t) x0 + t eps (the teacher with a known answer)."""
    a, var = (1 - t)[:, None], ((1 - t) ** 2 * STD**2 + t**2)[:, None]
    logits = torch.stack([-((x_t - a * m) ** 2).sum(-1) / (2 * var[:, 0]) for m in MEANS], -1)
    w = logits.softmax(-1)  # (B, K)
    post = torch.stack([m + a * STD**2 / var * (x_t - a * m) for m in MEANS], 1)  # (B, K, 2)
    return (w[..., None] * post).sum(1)


def mlp(inp, out):
    return nn.Sequential(nn.Linear(inp, 64), nn.SiLU(), nn.Linear(64, 64), nn.SiLU(), nn.Linear(64, out))


def distance_to_data(x: torch.Tensor) -> float:
    """Mean distance of samples to the nearest mixture mean (0.38 for real samples)."""
    return torch.cdist(x, MEANS).min(-1).values.mean().item()


def run_toy_dmd(sign: float, steps: int = 150) -> tuple[float, float]:
    torch.manual_seed(0)
    sched = FlowSchedule()
    gen_net, critic = mlp(2, 2), mlp(3, 2)  # critic: (x_t, t) -> velocity
    with torch.no_grad():
        gen_net[-1].bias.copy_(torch.tensor([0.0, -2.0]))  # the generator starts far from the data
    opt_g = torch.optim.Adam(gen_net.parameters(), 1e-3, betas=(0.0, 0.999))
    opt_c = torch.optim.Adam(critic.parameters(), 1e-3, betas=(0.0, 0.999))
    z = torch.randn(512, 2)
    before = distance_to_data(gen_net(z).detach())
    for step in range(steps * 5):
        x = gen_net(torch.randn(256, 2))
        # critic: flow matching on the generator's detached samples
        t, eps = torch.rand(256), torch.randn(256, 2)
        x_t = sched.add_noise(x.detach(), eps, t)
        c_loss = ((critic(torch.cat([x_t, t[:, None]], -1)) - sched.velocity(x.detach(), eps)) ** 2).mean()
        opt_c.zero_grad(); c_loss.backward(); opt_c.step()
        if step % 5 == 0:
            t = 0.02 + 0.96 * torch.rand(256)
            x_t = sched.add_noise(x.detach(), torch.randn(256, 2), t)
            with torch.no_grad():
                fake = sched.x0_from_velocity(x_t, critic(torch.cat([x_t, t[:, None]], -1)), t)
                real = real_x0(x_t, t)
            if sign < 0:
                real, fake = fake, real  # sign-flipped DMD
            loss, _ = dmd_loss(x, real, fake)
            opt_g.zero_grad(); loss.backward(); opt_g.step()
    return before, distance_to_data(gen_net(z).detach())


def test_dmd_moves_samples_towards_the_teacher_and_flipped_dmd_away():
    before, after = run_toy_dmd(+1)
    assert after < 0.6 * before, (before, after)
    before_f, after_f = run_toy_dmd(-1)
    assert after_f > before_f, (before_f, after_f)


def test_dmd_gradient_is_normalised_and_points_from_fake_to_real():
    x = torch.zeros(2, 3)
    real, fake = torch.ones(2, 3), -torch.ones(2, 3)
    g = dmd_gradient(x, real, fake)
    assert torch.allclose(g, torch.full((2, 3), -2.0))  # (fake - real) / mean|x - real|
    x.requires_grad_(True)
    loss, _ = dmd_loss(x, real, fake)
    loss.backward()
    assert torch.allclose(x.grad, g / x.numel())  # descending moves x towards real


# ---------------------------------------------------------------- exit-step gradient


def hand_built_rollout(model, sched, noise, exit_step, sample, gen):
    """Reference graph: steps before `exit_step` detached, only step `exit_step` of each chunk with gradient."""
    fpc, (B, T) = model.cfg.frames_per_chunk, noise.shape[:2]
    ts = sched.inference_steps(sample.steps).tolist()
    cache = KVCache.allocate(model.cfg, B, T // fpc)
    chunks = []
    for i in range(T // fpc):
        x = noise[:, i * fpc : (i + 1) * fpc]
        for k in range(exit_step):  # renoise steps, written out: x0 = x - t v, then back to t_next with noise
            with torch.no_grad():
                x0 = x - ts[k] * model(x, torch.full((B, fpc), ts[k]), kv_cache=cache)
                x = (1 - ts[k + 1]) * x0 + ts[k + 1] * randn(x0.shape, gen)
        v = model(x, torch.full((B, fpc), ts[exit_step]), kv_cache=cache)
        x0 = x - ts[exit_step] * v
        chunks.append(x0)
        with torch.no_grad():
            c = sample.context_noise
            x_ctx = (1 - c) * x0.detach() + c * randn(x0.shape, gen) if c > 0 else x0.detach()
            model(x_ctx, torch.full((B, fpc), c), kv_cache=cache, commit=True)
    return torch.cat(chunks, 1)


def test_exit_step_gradient_reaches_only_the_chosen_step():
    model, sched = make_model(), FlowSchedule()
    sample = SampleConfig(steps=3, solver="renoise", context_noise=0.1)
    noise = torch.randn(2, 6, 3, 16, 16)
    weight = torch.randn(2, 6, 3, 16, 16)
    grads = {}
    for exit_step in (0, 2):
        for name, fn in (("ours", lambda: rollout_with_exit(model, sched, noise, None, exit_step, sample=sample,
                                                             generator=torch.Generator().manual_seed(0))[0]),
                         ("hand", lambda: hand_built_rollout(model, sched, noise, exit_step, sample,
                                                             torch.Generator().manual_seed(0)))):
            model.zero_grad()
            (fn() * weight).sum().backward()
            grads[name, exit_step] = [p.grad.clone() for p in model.parameters()]
        for a, b in zip(grads["ours", exit_step], grads["hand", exit_step]):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    assert any(not torch.allclose(a, b) for a, b in zip(grads["ours", 0], grads["ours", 2]))


def test_exit_rollout_without_grad_matches_inference_at_the_last_step():
    """Exiting at the last step is exactly the inference rollout (same cache writes, same noise draws)."""
    from mirai.sampling.rollout import rollout

    model, sched = make_model(), FlowSchedule()
    sample = SampleConfig(steps=3, solver="renoise")
    noise = torch.randn(2, 6, 3, 16, 16)
    with torch.no_grad():
        a, _ = rollout_with_exit(model, sched, noise, None, 2, sample=sample, generator=torch.Generator().manual_seed(0))
    b = rollout(model, sched, noise, sample=sample, generator=torch.Generator().manual_seed(0))
    assert (a - b).abs().max() < 1e-5


# ---------------------------------------------------------------- the stage: score models, frozen dtype, accumulation

import dataclasses

import diffusers
import pytest

from mirai import checkpoint as ckpt, wan_io
from mirai.config import config_from_dict
from mirai.models.build import build_model
from mirai.rng import BatchGenerator
from mirai.training.stage import resolve_model_config

TOY = {  # 16 px frames, 2 chunks of 2 frames, a 2-block generator; a 2-step renoise rollout
    "world": {"image_size": 16, "sprite_sizes": [5], "num_patterns": 1},
    "model": {"preset": "tiny", "dim": 32, "depth": 2, "heads": 2, "patch_size": 4, "image_size": 16},
    "data": {"clip_frames": 4},
    "sample": {"timesteps": [1000, 500], "solver": "renoise", "context_noise": 0.1},
    "train": {"batch_size": 4, "sample_every": 0, "precision": "fp32", "lr": 1e-3, "objective": "dmd"},
    "dmd": {"critic_updates_per_gen": 2, "critic_lr": 1e-3},
    "foresight": {"enabled": True, "weight": 0.5},
}
WIDE = {"dim": 48, "depth": 3, "heads": 3}  # the teacher's own size (a 14B beside a 1.3B, at toy scale)


WAN_TOY = {"model": {"preset": "wan-tiny", "channels": 3, "image_size": 16}, "data": {"clip_frames": 6}}  # 2 chunks of 3
WAN_WIDE = {"dim": 48, "depth": 3, "heads": 3, "ffn_dim": 64}


def toy_config(models, arch="dit", **sections):
    data = {k: dict(v) for k, v in TOY.items()}
    if arch == "wan":
        data.update(WAN_TOY)
    data["train"]["init_from"] = str(models / "student.safetensors")
    data["dmd"]["teacher"] = str(models / "teacher.safetensors")
    for key, value in sections.items():
        data.setdefault(key, {}).update(value)
    return config_from_dict(data)


def write_models(folder, arch="dit"):
    """Random models of the toy tokens: a causal student, a wider and deeper bidirectional teacher, a
    bidirectional critic of the student's size, and a teacher whose patches differ (other tokens)."""
    m = resolve_model_config(toy_config(folder, arch)).model
    wide = WAN_WIDE if arch == "wan" else WIDE
    for name, attention, seed, size in (("student", "causal", 2, {}), ("teacher", "bidirectional", 1, wide),
                                        ("critic", "bidirectional", 3, {}),
                                        ("other_tokens", "bidirectional", 4, {"patch_size": 8})):
        torch.manual_seed(seed)
        model = build_model(dataclasses.replace(m, attention=attention, **size))
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p) * 0.05)
        ckpt.save_model(model, folder / f"{name}.safetensors")
    return folder


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return write_models(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def wan_models(tmp_path_factory):
    return write_models(tmp_path_factory.mktemp("wan_models"), "wan")


def build(cfg):
    from mirai.training.stages import build_dmd

    torch.manual_seed(0)  # the predictor's initialisation
    return build_dmd(resolve_model_config(cfg), quiet=True)


def toy_batch(stage, n=4):
    items = [stage.dataset[i] for i in range(n)]
    return {k: torch.stack([item[k] for item in items]) for k in items[0]}


def test_dmd_with_foresight_runs_with_a_wider_teacher_and_a_separate_critic(models):
    stage = build(toy_config(models, dmd={"critic": str(models / "critic.safetensors")}))
    assert (stage.teacher.cfg.dim, stage.model.cfg.dim, stage.critic.cfg.dim) == (48, 32, 32)
    critic_file = ckpt.load_model(models / "critic.safetensors").state_dict()
    assert all(torch.equal(v, critic_file[k]) for k, v in stage.critic.state_dict().items())  # its initial weights
    term = stage.terms[0]
    assert term.encoder.model is stage.teacher and term.encoder.dim == 48 and term.encoder.block == 1  # 3 // 2
    batch, gen = toy_batch(stage), BatchGenerator(0)
    records = [stage.step(batch, step, gen).record for step in (0, 1)]
    assert all(torch.isfinite(torch.tensor(v)) for r in records for v in r.values())
    assert {"dmd_loss", "foresight_loss", "critic_loss"} <= records[0].keys()
    assert "predictor_replay_loss" in records[1]


def test_without_dmd_critic_the_critic_is_the_teachers_copy(models):
    stage = build(toy_config(models, foresight={"enabled": False}))
    teacher = ckpt.load_model(models / "teacher.safetensors").state_dict()
    assert all(torch.equal(v, teacher[k]) for k, v in stage.critic.state_dict().items())
    assert stage.critic.cfg.dim == 48 and all(p.requires_grad for p in stage.critic.parameters())


@pytest.mark.parametrize("key", ["teacher", "critic", "encoder"])
def test_score_models_with_other_tokens_are_refused_naming_the_key(models, key):
    other = str(models / "other_tokens.safetensors")
    section = {"foresight": {"encoder": other}} if key == "encoder" else {"dmd": {key: other}}
    with pytest.raises(ckpt.CheckpointError, match=r"other_tokens.safetensors .*does not share the tokens of the "
                                                   r"generator.*patch_size: 8 vs 4"):
        build(toy_config(models, **section))


def weight_dtypes(model):
    """(dtypes of the weights outside norm layers, dtypes of the norm layers' gains)."""
    from mirai.models.build import NORMS

    norms = {id(p) for m in model.modules() if isinstance(m, NORMS) for p in m.parameters()}
    params = list(model.parameters())
    return {p.dtype for p in params if id(p) not in norms}, {p.dtype for p in params if id(p) in norms}


def test_a_bf16_frozen_teacher_and_encoder_give_finite_losses(models):
    cfg = toy_config(models, dist={"frozen_dtype": "bf16"}, dmd={"critic": str(models / "critic.safetensors")},
                     foresight={"encoder": str(models / "teacher.safetensors")})  # a separate encoder, cast alike
    stage = build(cfg)
    encoder = stage.terms[0].encoder.model
    assert encoder is not stage.teacher
    for model in stage.teacher, encoder:  # bf16 but the norm gains (fp32: the models normalise in fp32)
        assert weight_dtypes(model) == ({torch.bfloat16}, {torch.float32})
    assert {p.dtype for p in [*stage.critic.parameters(), *stage.model.parameters()]} == {torch.float32}
    record = stage.step(toy_batch(stage), 0, BatchGenerator(0)).record  # train.precision=fp32: no outer autocast
    assert all(torch.isfinite(torch.tensor(record[k])) for k in ("dmd_loss", "foresight_loss", "critic_loss"))


def test_the_papers_recipe_at_toy_size_wan_bf16_wide_teacher_and_encoder_separate_critic(wan_models):
    """Wan generator; a wider, deeper Wan real score = foresight encoder, held in bf16; a critic of the
    generator's size from its own file."""
    cfg = toy_config(wan_models, "wan", dist={"frozen_dtype": "bf16"},
                     dmd={"critic": str(wan_models / "critic.safetensors")})
    stage = build(cfg)
    assert (stage.teacher.cfg.dim, stage.terms[0].encoder.dim, stage.critic.cfg.dim) == (48, 48, 24)
    assert stage.teacher.blocks[0].attn1.to_q.weight.dtype == torch.bfloat16
    batch, gen = toy_batch(stage), BatchGenerator(0)
    records = [stage.step(batch, step, gen).record for step in (0, 1)]
    assert all(torch.isfinite(torch.tensor(v)) for r in records for v in r.values())
    assert {"dmd_loss", "foresight_loss", "critic_loss"} <= records[0].keys()


def test_a_bf16_teacher_copied_into_the_critic_leaves_the_critic_fp32(models):
    stage = build(toy_config(models, dist={"frozen_dtype": "bf16"}, foresight={"enabled": False}))
    teacher = ckpt.load_model(models / "teacher.safetensors").state_dict()
    assert all(torch.equal(v, teacher[k]) for k, v in stage.critic.state_dict().items())  # not rounded to bf16
    assert weight_dtypes(stage.teacher)[0] == {torch.bfloat16}


def trained(stage, names=("model", "critic", "predictor")):
    return {f"{n}.{k}": v.detach().clone() for n in names for k, v in stage.modules[n].state_dict().items()}


def test_grad_accumulation_updates_as_the_whole_batch(models):
    """Batch 4 in 2 micro-batches of 2 = batch 4 at once: the generator (with the foresight term), the critic and
    the predictor (on the generator update and on the critic-only step's replay) end with the same weights."""
    critic = {"critic": str(models / "critic.safetensors")}
    whole, split = (build(toy_config(models, dmd=critic, dist={"grad_accum": a})) for a in (1, 2))
    batch = toy_batch(whole)
    start = trained(whole)
    gens = BatchGenerator(0), BatchGenerator(0)
    for step in (0, 1):  # 0: generator + critic update; 1: critic only, the predictor replays step 0's entry
        records = [stage.step(batch, step, gen).record for stage, gen in zip((whole, split), gens)]
        a, b = trained(whole), trained(split)
        for name in a:
            torch.testing.assert_close(b[name], a[name], atol=1e-5, rtol=0, msg=f"step {step}: {name}")
        for key in ("critic_loss", "dmd_loss", "foresight_loss", "predictor_replay_loss", "dmd_grad_norm",
                    "gen_grad_norm", "critic_grad_norm"):  # the norms: Adam's first steps would hide a loss scale
            if key in records[0]:
                assert records[1][key] == pytest.approx(records[0][key], rel=1e-4, abs=1e-6), (step, key)
        for module in ("model", "critic", "predictor"):  # every trained module moved, far beyond the tolerance
            moved = max((a[k] - start[k]).abs().max().item() for k in a if k.startswith(module + "."))
            assert moved > 1e-4, (step, module)
    assert gens[0].get_state().equal(gens[1].get_state())  # the same draws consumed
    assert len(split.terms[0].replay) == 1 and split.terms[0].replay[0][0].shape[0] == 4  # one entry per update


@pytest.mark.parametrize("arch", ["dit", "wan"])
def test_a_frozen_teacher_and_encoder_offloaded_to_host_memory_train_as_held_whole(models, wan_models, arch, tmp_path):
    """dist.teacher=offload (the real score and a separate encoder streamed block by block) trains the same
    weights as the models held on the device, and the trained Wan exports to a folder diffusers loads."""
    folder = wan_models if arch == "wan" else models
    sections = {"dmd": {"critic": str(folder / "critic.safetensors")},
                "foresight": {"encoder": str(folder / "teacher.safetensors")}}
    held, offloaded = (build(toy_config(folder, arch, dist={"teacher": t}, **sections)) for t in ("replicate", "offload"))
    assert hasattr(offloaded.teacher, "offload") and hasattr(offloaded.terms[0].encoder.model, "offload")
    batch, gens = toy_batch(held), (BatchGenerator(0), BatchGenerator(0))
    for step in (0, 1):
        records = [stage.step(batch, step, gen).record for stage, gen in zip((held, offloaded), gens)]
        assert records[0] == records[1]
        a, b = trained(held), trained(offloaded)
        assert all(torch.equal(a[k], b[k]) for k in a), step
    moved = offloaded.teacher.offload.bytes_moved
    assert moved >= sum(p.numel() * p.element_size() for p in offloaded.teacher.parameters())
    if arch == "wan":
        ckpt.save_model(offloaded.model, tmp_path / "model.safetensors")
        out = wan_io.export_wan(tmp_path / "model.safetensors", tmp_path / "exported")
        _, info = diffusers.WanTransformer3DModel.from_pretrained(out, output_loading_info=True)
        assert info["missing_keys"] == info["unexpected_keys"] == []
