"""The precision choosers of `mirai.device`: sampling's "auto" is bf16 on a CUDA GPU with native bf16 only."""

import contextlib

import pytest
import torch

from mirai import device
from mirai.config import ConfigError


@pytest.mark.parametrize("native", [True, False])
def test_sampling_precision_is_chosen_by_the_device(monkeypatch, native):
    monkeypatch.setattr(device, "bf16_native", lambda: native)
    assert device.inference_dtype("auto", "cuda") == (torch.bfloat16 if native else None)
    assert device.inference_dtype("auto", torch.device("cuda", 1)) == (torch.bfloat16 if native else None)
    assert device.inference_dtype("auto", "cpu") is None  # a CPU with bf16 kernels too: fp32, as before
    assert device.inference_dtype("fp32", "cuda") is None
    assert device.inference_dtype("bf16", "cpu") == torch.bfloat16
    assert isinstance(device.inference_autocast("auto", "cpu"), contextlib.nullcontext)
    with device.inference_autocast("bf16", "cpu"):
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
    with pytest.raises(ConfigError, match="precision must be 'auto', 'bf16' or 'fp32', got 'fp16'"):
        device.inference_dtype("fp16", "cuda")
