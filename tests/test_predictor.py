import torch

from mirai.models.predictor import Predictor


def test_predictor_is_the_identity_at_initialisation():
    torch.manual_seed(0)
    phi = Predictor(dim=32, encoder_dim=32, depth=3, heads=2, frames_per_chunk=2, grid=4)
    h = torch.randn(2, 6, 16, 32)
    assert torch.allclose(phi(h, torch.rand(2)), h, atol=1e-6)
    linear = Predictor(dim=32, encoder_dim=48, depth=0, heads=2, frames_per_chunk=2, grid=4)
    assert linear(h, torch.rand(2)).shape == (2, 6, 16, 48)


def test_predictor_attends_within_a_chunk_only():
    torch.manual_seed(0)
    phi = Predictor(dim=32, encoder_dim=32, depth=2, heads=2, frames_per_chunk=2, grid=4)
    with torch.no_grad():
        for p in phi.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    h, t = torch.randn(1, 6, 16, 32), torch.rand(1)
    h2 = h.clone()
    h2[:, 3] += torch.randn(16, 32)  # second frame of chunk 1 (not a constant: LayerNorm would remove it)
    a, b = phi(h, t), phi(h2, t)
    assert not torch.allclose(a[:, 2], b[:, 2])  # same chunk: seen
    assert torch.equal(a[:, :2], b[:, :2]) and torch.equal(a[:, 4:], b[:, 4:])  # other chunks: not seen
