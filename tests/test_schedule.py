import pytest
import torch

from mirai.diffusion.schedule import FlowSchedule


def test_add_noise_endpoints_and_velocity_roundtrip():
    s = FlowSchedule()
    x0, eps = torch.randn(2, 4, 3, 8, 8), torch.randn(2, 4, 3, 8, 8)
    assert torch.equal(s.add_noise(x0, eps, torch.zeros(2, 4)), x0)
    assert torch.equal(s.add_noise(x0, eps, torch.ones(2, 4)), eps)
    t = torch.rand(2, 4)
    x_t = s.add_noise(x0, eps, t)
    assert torch.allclose(s.x0_from_velocity(x_t, s.velocity(x0, eps), t), x0, atol=1e-5)


def test_per_frame_t_broadcasts():
    s = FlowSchedule()
    x0, eps = torch.zeros(1, 2, 1, 2, 2), torch.ones(1, 2, 1, 2, 2)
    out = s.add_noise(x0, eps, torch.tensor([[0.25, 0.75]]))
    assert out[0, 0].unique().item() == 0.25 and out[0, 1].unique().item() == 0.75


def test_inference_steps_shifted_and_decreasing():
    s = FlowSchedule(shift=5.0)
    ts = s.inference_steps(timesteps=[1000, 750, 500, 250])
    assert ts[0] == 1.0 and ts[-1] == 0.0 and len(ts) == 5
    assert torch.all(ts[1:] < ts[:-1])
    assert torch.allclose(ts[2], torch.tensor(5 * 0.5 / (1 + 4 * 0.5)))  # shift pushes t towards 1
    assert torch.allclose(FlowSchedule().inference_steps(4), torch.tensor([1.0, 0.75, 0.5, 0.25, 0.0]))
    with pytest.raises(ValueError):
        s.inference_steps(timesteps=[500, 750])


def test_train_t_in_range_and_seeded():
    s = FlowSchedule(shift=3.0)
    a = s.sample_t((1000,), torch.Generator().manual_seed(0))
    b = s.sample_t((1000,), torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and a.min() > 0 and a.max() < 1
    assert a.mean() > 0.6  # shift 3 moves the logit-normal mass to high noise
    u = FlowSchedule(train_t="uniform").sample_t((10000,), torch.Generator().manual_seed(0))
    assert abs(u.mean().item() - 0.5) < 0.02
