"""A frozen model in host memory, streamed to the device per block (`dist.teacher=offload`): the same outputs as
the model held whole, one block's weights at a time, the whole model moved once per forward."""

import pytest
import torch

from mirai.training.offload import offload
from tests.conftest import make_model


def test_an_offloaded_model_computes_what_the_whole_model_computes():
    torch.manual_seed(0)
    model = make_model(attention="bidirectional").eval().requires_grad_(False)
    x = torch.randn(2, 4, *model.cfg.frame_shape)
    t = torch.rand(2, 4)
    with torch.no_grad():
        expected, features = model(x, t, None), model(x, t, None, stop_after=1)
    hosts = [p.data for p in model.parameters()]
    offload(model, "cpu")
    with torch.no_grad():
        assert torch.equal(model(x, t, None), expected)
        assert torch.equal(model(x, t, None, stop_after=1), features)  # the foresight encoder's read
    # between forwards every parameter is its host tensor again (the device copies were dropped)
    assert all(p.data.data_ptr() == h.data_ptr() for p, h in zip(model.parameters(), hosts))
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    block = sum(p.numel() * p.element_size() for p in model.blocks[1].parameters())
    assert model.offload.bytes_moved == 2 * weights - block  # the whole model, less the block a read stops before


def test_each_block_sees_device_copies_only_during_its_own_forward():
    torch.manual_seed(0)
    model = make_model(attention="bidirectional").eval().requires_grad_(False)
    offload(model, "cpu")
    hosts = {id(p): p.data.data_ptr() for p in model.parameters()}
    seen = []

    def look(block, _args):
        own = [p.data.data_ptr() != hosts[id(p)] for p in block.parameters()]
        others = [p.data.data_ptr() != hosts[id(p)] for b in model.blocks if b is not block for p in b.parameters()]
        seen.append((all(own), any(others)))

    for block in model.blocks:
        block.register_forward_pre_hook(look)  # after the offload's own hook: the block's copies are there
    with torch.no_grad():
        model(torch.randn(1, 4, *model.cfg.frame_shape), torch.rand(1, 4), None)
    assert seen == [(True, False)] * len(model.blocks)


def test_a_forward_with_gradient_is_refused():
    model = offload(make_model(attention="bidirectional").eval().requires_grad_(False), "cpu")
    with pytest.raises(RuntimeError, match="dist.teacher=offload"):
        model(torch.randn(1, 4, *model.cfg.frame_shape), torch.rand(1, 4), None)
