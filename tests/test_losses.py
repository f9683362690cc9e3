import pytest
"""The training objectives: what each regresses, and what the teacher-forcing sequence lets a chunk see."""

import torch

from mirai.diffusion.schedule import FlowSchedule
from mirai.training.losses import (bidirectional_loss, drop_prompt, flow_matching_loss, ode_regression_loss,
                                   teacher_forcing_forward, teacher_forcing_loss)
from tests.conftest import make_model

SCHED = FlowSchedule()


def clip(B=2, T=6, seed=0):
    return torch.randn(B, T, 3, 16, 16, generator=torch.Generator().manual_seed(seed)).clamp(-1, 1)


def test_flow_matching_loss_is_velocity_mse_above_the_floor_and_x0_error_below():
    x0, eps = clip(), clip(seed=1)
    t = torch.tensor([[0.5] * 6, [0.02] * 6])
    x_t = SCHED.add_noise(x0, eps, t)
    v = SCHED.velocity(x0, eps) + 0.1 * clip(seed=2)  # an imperfect velocity
    err = (x_t - t[..., None, None, None] * v) - x0  # error of the clean estimate
    expected = torch.stack([(err[0] / 0.5) ** 2, (err[1] / 0.05) ** 2]).mean()  # t=0.02 is floored at 0.05
    assert torch.allclose(flow_matching_loss(v, x_t, x0, t, t_floor=0.05), expected)
    assert torch.allclose(flow_matching_loss(v, x_t, x0, t, t_floor=1.0), (err**2).mean())  # plain x0 MSE
    v_true = SCHED.velocity(x0, eps)
    assert flow_matching_loss(v_true, x_t, x0, t) < 1e-10


def test_drop_prompt_zeroes_whole_prompts_at_the_rate():
    prompt = torch.randint(1, 5, (4000, 10))
    dropped = drop_prompt(prompt, 0.25, torch.Generator().manual_seed(0))
    zero_rows = (dropped == 0).all(1)
    assert abs(zero_rows.float().mean().item() - 0.25) < 0.03
    assert torch.equal(dropped[~zero_rows], prompt[~zero_rows])
    assert drop_prompt(prompt, 0.0, None) is prompt and drop_prompt(None, 0.5, None) is None


def test_drop_prompt_replaces_captions_by_the_empty_caption_not_zeros():
    captions, empty = torch.randn(400, 6, 8), torch.randn(6, 8)
    dropped = drop_prompt(captions, 0.25, torch.Generator().manual_seed(0), empty)
    empty_rows = (dropped == empty).all(2).all(1)
    assert abs(empty_rows.float().mean().item() - 0.25) < 0.07 and not (dropped == 0).all(2).all(1).any()
    assert torch.equal(dropped[~empty_rows], captions[~empty_rows])
    with pytest.raises(ValueError, match="empty caption"):
        drop_prompt(captions, 0.25, None)  # zeros would be a prompt the encoder never gives


def test_teacher_forcing_noisy_chunk_sees_the_clean_past_and_not_the_clean_present():
    model, fpc = make_model(), 2
    x0, x_noisy = clip(), clip(seed=1)
    t_ctx, t_noisy = torch.zeros(2, 4), torch.full((2, 6), 0.5)

    def out(ctx, noisy):
        with torch.no_grad():
            return teacher_forcing_forward(model, ctx, t_ctx, noisy, t_noisy, None)

    ref = out(x0[:, :4], x_noisy)
    ctx = x0[:, :4].clone()
    ctx[:, 2:4] += 1.0  # clean chunk 1
    moved = out(ctx, x_noisy)
    assert torch.allclose(moved[:, :4], ref[:, :4], atol=1e-6)  # noisy chunks 0, 1 do not see clean chunk 1
    assert not torch.allclose(moved[:, 4:], ref[:, 4:])  # noisy chunk 2 does
    noisy = x_noisy.clone()
    noisy[:, 2:4] += 1.0  # noisy chunk 1 is seen by no other chunk
    moved = out(x0[:, :4], noisy)
    assert torch.allclose(moved[:, :2], ref[:, :2], atol=1e-6) and torch.allclose(moved[:, 4:], ref[:, 4:], atol=1e-6)


def test_teacher_forcing_loss_regresses_the_noisy_half():
    model, x0 = make_model(), clip()
    gen = torch.Generator().manual_seed(3)
    loss = teacher_forcing_loss(model, SCHED, x0, None, gen, per_chunk_t=True, t_floor=1.0)
    gen = torch.Generator().manual_seed(3)  # the same draws, in the order the loss makes them: noise, then t
    noise = torch.randn(x0.shape, generator=gen)
    t = SCHED.sample_t((2, 3), gen).repeat_interleave(2, dim=1)
    x_t = SCHED.add_noise(x0, noise, t)
    v = teacher_forcing_forward(model, x0[:, :4], torch.zeros(2, 4), x_t, t, None)
    assert torch.allclose(loss, ((x_t - t[..., None, None, None] * v - x0) ** 2).mean())


def test_ode_regression_maps_a_stored_state_to_the_clean_chunk():
    model = make_model()
    states, clean = torch.stack([clip(seed=1), clip(seed=2)], 1), clip()  # (B, S=2, T, ...)
    ts = torch.tensor([1.0, 0.5])
    gen = torch.Generator().manual_seed(4)
    loss = ode_regression_loss(model, states, clean, ts, None, torch.Generator().manual_seed(4))
    k = torch.randint(0, 2, (2, 3), generator=gen).repeat_interleave(2, dim=1)  # one stored step per chunk
    x_t = torch.stack([states[b, k[b, f], f] for b in range(2) for f in range(6)]).view(2, 6, 3, 16, 16)
    t = ts[k]
    v = teacher_forcing_forward(model, clean[:, :4], torch.zeros(2, 4), x_t, t, None)
    assert torch.allclose(loss, ((x_t - t[..., None, None, None] * v - clean) ** 2).mean())


def test_bidirectional_loss_uses_the_full_sequence():
    teacher, x0 = make_model("bidirectional"), clip()
    gen = torch.Generator().manual_seed(5)
    loss = bidirectional_loss(teacher, SCHED, x0, None, torch.Generator().manual_seed(5), t_floor=1.0)
    noise = torch.randn(x0.shape, generator=gen)
    t = SCHED.sample_t((2, 1), gen).expand(2, 3).repeat_interleave(2, dim=1)
    x_t = SCHED.add_noise(x0, noise, t)
    v = teacher(x_t, t)
    assert torch.allclose(loss, ((x_t - t[..., None, None, None] * v - x0) ** 2).mean())
