"""The GPUs a plan is priced on: dense bf16 tensor-core peak, memory bandwidth and capacity, from the vendors'
data sheets (dense, not the 2:4-sparse figures). Capacity is what `nvidia-smi` reports as total memory."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import ConfigError

GIB = 2**30


@dataclass(frozen=True)
class GPU:
    name: str
    bf16_tflops: float  # dense bf16 tensor-core peak, TFLOP/s
    bandwidth_gbs: float  # HBM / GDDR bandwidth, GB/s
    memory_gib: float  # total memory, GiB
    host_link_gbs: float  # host <-> GPU over PCIe x16, GB/s: about 80% of the link's rate (Gen4 32, Gen5 64)

    def usable_bytes(self) -> float:
        """What a training process may allocate: the total less the CUDA context and library workspaces (about
        1 GiB) and 5% for the caching allocator's fragmentation."""
        return (self.memory_gib - 1.0) * 0.95 * GIB


GPUS: dict[str, GPU] = {g.name: g for g in (
    GPU("a100", 312.0, 2039.0, 80.0, 25.0),  # A100 SXM 80 GB, PCIe Gen4
    GPU("h100", 989.0, 3350.0, 79.6, 50.0),  # H100 SXM 80 GB (81,559 MiB), PCIe Gen5
    GPU("h200", 989.0, 4800.0, 140.4, 50.0),  # H200 SXM 141 GB (143,771 MiB), PCIe Gen5
    GPU("rtx4090", 165.2, 1008.0, 24.0, 25.0),  # bf16 with fp32 accumulation (GeForce rate), PCIe Gen4
    GPU("l40s", 362.0, 864.0, 45.0, 25.0),  # PCIe Gen4
)}


def gpu(name: str) -> GPU:
    if name not in GPUS:
        raise ConfigError(f"unknown GPU {name!r}; the plan knows {', '.join(GPUS)}")
    return GPUS[name]
