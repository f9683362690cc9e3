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
