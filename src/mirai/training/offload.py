"""A frozen model kept in host memory and streamed to the device one block at a time (`dist.teacher=offload`).

The DMD real score and a separate foresight encoder run only forward, without gradient, once or twice a step. A
GPU too small to hold them beside the trained models (one 80 GB card and a 14B real score) can keep their weights
in host memory instead: each block's weights are copied to the device when the block's forward starts and dropped
when it ends, so the device holds one block's weights at a time, at the cost of moving the whole model over the
host link once per forward (`bytes_moved`; `mirai plan` prices it). Buffers (rotary tables) are small and stay
on the device. The copies are freed at the end of each block's forward, which is correct only because nothing
keeps them for a backward: a forward with gradient is refused.
"""

from __future__ import annotations

import torch
from torch import nn


class BlockOffload:
    """Hooks on `model` (its `blocks` and the model itself, for the parameters outside the blocks) that give each
    forward device copies of its parameters. The host copies are the parameters' tensors between forwards."""

    def __init__(self, model: nn.Module, device: torch.device):
        self.device = torch.device(device)
        self.bytes_moved = 0  # host -> device bytes so far
        blocks = list(getattr(model, "blocks", ()))
        in_blocks = {id(p) for b in blocks for p in b.parameters()}
        self.units: list[tuple[nn.Module, list[nn.Parameter]]] = [(b, list(b.parameters())) for b in blocks]
        self.units.append((model, [p for p in model.parameters() if id(p) not in in_blocks]))
        pin = self.device.type == "cuda"
        self.host: dict[int, torch.Tensor] = {}
        for _, params in self.units:
            for p in params:
                p.data = p.data.pin_memory() if pin else p.data.cpu()
                self.host[id(p)] = p.data
        for name, buffer in model.named_buffers():
            owner, _, attr = name.rpartition(".")
            setattr(model.get_submodule(owner) if owner else model, attr, buffer.to(self.device))
        for module, params in self.units:
            module.register_forward_pre_hook(lambda _m, _a, params=params: self.arrive(params))
            module.register_forward_hook(lambda _m, _a, _o, params=params: self.leave(params))

    def arrive(self, params: list[nn.Parameter]) -> None:
        if torch.is_grad_enabled():
            raise RuntimeError("an offloaded frozen model (dist.teacher=offload) runs forward only without gradient")
        for p in params:  # copy=True: a device copy even where host and device are one (the CPU, a plan)
            p.data = self.host[id(p)].to(self.device, non_blocking=True, copy=True)
            self.bytes_moved += p.numel() * p.element_size()

    def leave(self, params: list[nn.Parameter]) -> None:
        for p in params:
            p.data = self.host[id(p)]


def offload(model: nn.Module, device) -> nn.Module:
    """`model` with its parameters in host memory, streamed to `device` per block (see the module docstring)."""
    model.offload = BlockOffload(model, device)
    return model
