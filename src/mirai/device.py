"""Where and in which precision tensors live: device choice and bf16 autocast."""

from __future__ import annotations

import contextlib

import torch

from .config import ConfigError


def bf16_native() -> bool:
    """True where bf16 matmuls run natively (CUDA with bf16, or a CPU with AVX512-BF16/AMX)."""
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def autocast_context(precision: str, device="cpu"):
    """bf16 autocast, or nothing. "auto" only uses bf16 where it is fast: emulated bf16 is ~100x slower."""
    use_bf16 = precision == "bf16" or (precision == "auto" and bf16_native())
    kind = torch.device(device).type
    return torch.autocast(kind, dtype=torch.bfloat16) if use_bf16 else contextlib.nullcontext()


def weights_autocast(model: torch.nn.Module, device):
    """bf16 autocast around a model whose weights are bf16 (a frozen model, dist.frozen_dtype=bf16), else nothing:
    its fp32 inputs and own fp32 tensors (timestep features, rotary angles) then meet bf16 weights through
    autocast's casts, whatever train.precision is."""
    weight = next(model.parameters(), None)
    if weight is None or weight.dtype != torch.bfloat16:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)


def inference_dtype(precision: str, device) -> torch.dtype | None:
    """The autocast dtype of sampling and ODE-pair generation (None: fp32). "auto" is bf16 on a CUDA device with
    native bf16 only: a CPU samples in fp32, bit for bit as before, even where it has bf16 kernels (unlike
    training's "auto", whose CPU bf16 was chosen for speed, not to keep earlier samples)."""
    if precision not in ("auto", "bf16", "fp32"):
        raise ConfigError(f"precision must be 'auto', 'bf16' or 'fp32', got '{precision}'")
    cuda = torch.device(device).type == "cuda"
    return torch.bfloat16 if precision == "bf16" or (precision == "auto" and cuda and bf16_native()) else None


def inference_autocast(precision: str, device):
    """The context of `inference_dtype`: bf16 autocast on the device's type, or nothing."""
    dtype = inference_dtype(precision, device)
    return torch.autocast(torch.device(device).type, dtype=dtype) if dtype else contextlib.nullcontext()


def pick_device(name: str) -> torch.device:
    """"auto" is CUDA when available, else the CPU; "cpu", "cuda" or "cuda:N" when that device exists."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ConfigError(f"unknown device '{name}'; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cpu":
        return device
    if device.type != "cuda":
        raise ConfigError(f"device '{name}' is not supported; use auto, cpu, cuda or cuda:N")
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if (device.index or 0) >= count:
        raise ConfigError(f"device '{name}' is not available: this machine has {count} CUDA device(s); use --device cpu")
    return device
