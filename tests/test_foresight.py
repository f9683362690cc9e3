import pytest
import torch

from mirai.config import ForesightConfig, SampleConfig
from mirai.training.foresight import TeacherEncoder, foresight_loss, foresight_targets, target_window
from mirai.models.predictor import Predictor
from mirai.sampling.rollout import rollout_with_exit
from mirai.diffusion.schedule import FlowSchedule
from tests.conftest import make_model


def video(seed=0):
    return torch.randn(2, 6, 3, 16, 16, generator=torch.Generator().manual_seed(seed))


def targets_of(encoder, x, f: ForesightConfig):
    return foresight_targets(encoder(x, None), 2, target_window(f))


def test_targets_carry_the_next_chunk_and_the_causal_ablation_does_not():
    teacher = make_model(attention="bidirectional")
    x = video()
    x2 = x.clone()
    x2[:, 2:4] += 0.5  # perturb chunk 1 (frames 2, 3)
    bidir, causal = TeacherEncoder(teacher, block=1), TeacherEncoder(teacher, block=1, causal=True)
    f = ForesightConfig()
    assert not torch.allclose(targets_of(bidir, x, f)[:, :2], targets_of(bidir, x2, f)[:, :2])  # target 0 sees chunk 1
    ablation = ForesightConfig(encoder_mask="causal")
    assert torch.equal(targets_of(causal, x, ablation)[:, :2], targets_of(causal, x2, ablation)[:, :2])
    # window {0} with the bidirectional encoder still leaks the future through attention (the paper's {0} arm)
    w0 = ForesightConfig(window=[0])
    assert not torch.allclose(targets_of(bidir, x, w0)[:, :2], targets_of(bidir, x2, w0)[:, :2])


def test_target_window_means_matched_positions():
    feats = torch.arange(6.0)[None, :, None, None].expand(1, 6, 4, 3).clone()  # frame index as the feature
    out = foresight_targets(feats, 2, [0, 1])
    assert out[0, :, 0, 0].tolist() == [1.0, 2.0, 3.0, 4.0, 4.0, 5.0]  # frame f of chunk i <- mean(i, i+1); last keeps its own
    assert foresight_targets(feats, 2, [1])[0, :, 0, 0].tolist() == [2.0, 3.0, 4.0, 5.0, 4.0, 5.0]
    assert foresight_targets(feats, 2, [0, 1, 2])[0, 0, 0, 0].item() == 2.0


def test_encoder_early_stop_equals_the_full_forward_read_at_that_block():
    teacher = make_model(attention="bidirectional")
    x = video()
    _, hidden = teacher(x, torch.zeros(2, 6), return_hidden=1)
    assert torch.equal(TeacherEncoder(teacher, block=1)(x, None), hidden)


def test_alignment_gradient_stops_at_the_student_block():
    from mirai.config import ModelConfig
    from mirai.models.dit import CausalVideoDiT

    torch.manual_seed(0)
    model = CausalVideoDiT(ModelConfig(dim=32, depth=4, heads=2, patch_size=4, image_size=16))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    sample = SampleConfig(steps=2, solver="renoise")
    _, hidden = rollout_with_exit(model, FlowSchedule(), video(), None, 1, sample=sample,
                                  generator=torch.Generator().manual_seed(0), return_hidden=2)
    phi = Predictor(32, 32, 1, 2, 2, model.grid)
    foresight_loss(phi(hidden, torch.rand(2)), torch.randn(2, 6, 16, 32)).backward()
    for i, block in enumerate(model.blocks):
        grads = [p.grad for p in block.parameters()]
        if i < 2:
            assert any(g is not None and g.abs().sum() > 0 for g in grads), i
        else:
            assert all(g is None for g in grads), i
    assert all(p.grad is None for p in model.final.parameters())


def test_loss_is_minus_cosine():
    a = torch.randn(2, 4, 3, 8)
    assert torch.allclose(foresight_loss(a, a), torch.tensor(-1.0))
    assert torch.allclose(foresight_loss(a, -a), torch.tensor(1.0))
    assert torch.allclose(foresight_loss(a, 3 * a), torch.tensor(-1.0))  # scale-free


def foresight_term(teacher, **foresight):
    from mirai.config import config_from_dict
    from mirai.training.foresight import ForesightTerm

    cfg = config_from_dict({"world": {"image_size": 16},
                            "model": {"dim": 32, "depth": 2, "heads": 2, "patch_size": 4, "image_size": 16},
                            "data": {"clip_frames": 6}, "foresight": {"enabled": True, **foresight}})
    return ForesightTerm(cfg, teacher=teacher, generator=make_model(), device="cpu")


def test_the_encoder_stops_at_the_configured_block():
    teacher, x = make_model(attention="bidirectional"), video()
    hidden = [teacher(x, torch.zeros(2, 6), return_hidden=k)[1] for k in (1, 2)]
    assert torch.equal(foresight_term(teacher).encoder(x, None), hidden[0])  # 0 = mid-depth (block 1 of 2)
    assert torch.equal(foresight_term(teacher, encoder_block=2).encoder(x, None), hidden[1])
    assert not torch.allclose(hidden[0], hidden[1])


def test_targets_come_from_the_real_clip_when_asked():
    teacher = make_model(attention="bidirectional")
    rollout, real = video(0), video(1)
    term = foresight_term(teacher, target_source="real")
    from_real = foresight_targets(term.encoder(real, None), 2, [0, 1])
    assert torch.equal(term.targets(rollout, None, real), from_real)
    default = foresight_term(teacher)  # "rollout": the generator's own completed video, as the paper
    assert torch.equal(default.targets(rollout, None, real), foresight_targets(default.encoder(rollout, None), 2, [0, 1]))
    assert not torch.allclose(default.targets(rollout, None, real), from_real)


# --------------------------------------------------------------------------------------------------
# Where the replay buffer lives (foresight.replay_device)


def replayed_update(replay_device: str, device: str = "cpu"):
    """One generator-step pair into the buffer, one critic-only replay of it: (predictor params, the term)."""
    from mirai.training.dmd import GeneratorRollout

    teacher = make_model(attention="bidirectional").to(device)
    term = foresight_term(teacher, replay_device=replay_device)
    if device != "cpu":
        term.device, term.encoder, term.predictor = device, term.encoder.to(device), term.predictor.to(device)
    torch.manual_seed(5)
    hidden = torch.randn(2, 6, 16, 32, device=device)
    rollout = GeneratorRollout(video=video().to(device), hidden=hidden, prompt=None, real=video(1).to(device),
                               t_exit=0.5)
    term.loss(rollout, torch.Generator().manual_seed(0))
    logs = term.critic_only_step(torch.Generator().manual_seed(0))
    return [p.detach().cpu().clone() for p in term.predictor.parameters()], term, hidden, logs


def test_a_replayed_pair_gives_the_same_predictor_update_wherever_the_buffer_is():
    on_host, host_term, host_hidden, host_logs = replayed_update("cpu")
    on_device, device_term, device_hidden, device_logs = replayed_update("device")
    assert host_logs == device_logs and all(torch.equal(a, b) for a, b in zip(on_host, on_device))
    stored = host_term.replay[0][0]
    assert stored.device.type == "cpu" and stored.is_pinned() == torch.cuda.is_available()
    assert stored.data_ptr() != host_hidden.data_ptr() and torch.equal(stored, host_hidden)  # a copy, same values
    assert device_term.replay[0][0].data_ptr() == device_hidden.data_ptr()  # "device": kept as it was (today)
    resumed = foresight_term(host_term.encoder.model, replay_device="cpu")
    resumed.load_extra_state(host_term.extra_state())
    assert all(torch.equal(a, b) for a, b in zip(resumed.replay[0], host_term.replay[0]))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (pinned host memory vs device memory)")
def test_on_cuda_the_host_buffer_is_pinned_and_replays_the_same_update():
    on_host, host_term, _, _ = replayed_update("cpu", "cuda")
    on_device, device_term, _, _ = replayed_update("device", "cuda")
    assert host_term.replay[0][0].is_pinned() and device_term.replay[0][0].is_cuda
    assert all(torch.equal(a, b) for a, b in zip(on_host, on_device))
