"""One real training step and one streaming rollout of a config, run on fake tensors (shapes, no memory).

`plan_run` builds the stage of a config exactly as `mirai train` does (the same classes, the same `distribute`
wrapping) with every model reference replaced by its architecture (random weights, headers read only), under
PyTorch's `FakeTensorMode` and, for N ranks, a fake process group of N ranks seen from rank 0. It then runs the
stage's own `step` (after warm-up steps that create the optimiser states, with the replay buffer full as it is in
steady state) and one rollout of the generator, and measures them with PyTorch's tools:
- memory: `torch.distributed._tools.mem_tracker.MemTracker`, every live tensor by kind (parameters, gradients,
  optimiser state, activations, temporaries, and here also KV cache and replay buffer), peak per step;
- FLOPs: torch's flop formulas (`torch.utils.flop_counter.flop_registry`, what `FlopCounterMode` sums; its module
  tracker is left out: like MemTracker's, its hooks keep checkpointed activations alive);
- time: a roofline per operator (its FLOPs at the GPU's peak or its bytes at the GPU's bandwidth, whichever is
  longer), summed: `Roofline`, priced later per GPU kind (`mirai.plan.report`).
What a fake tensor cannot say (a loss value, a random draw) is stood in for by `ScalarStandIns`.
"""

from __future__ import annotations

import contextlib
import copy
from unittest import mock
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
import torch.distributed as torch_dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode, unset_fake_temporarily
from torch._guards import active_fake_mode
from torch.distributed._tools.mem_tracker import _TOTAL_KEY, MemTracker, _RefType
from torch.distributed.tensor import DTensor
from torch.utils._python_dispatch import TorchDispatchMode
from torch.testing._internal.distributed.fake_pg import FakeStore  # torch's fake process group's store
from torch.utils.flop_counter import flop_registry

from .. import distributed as dist, references
from ..config import Config, ConfigError
from ..diffusion.schedule import FlowSchedule
from ..device import autocast_context
from ..models import attention as attention_module, dit, wan
from ..models.attention import ChunkMask
from ..models.build import build_model
from ..rng import BatchGenerator
from ..sampling.rollout import iter_rollout
from ..training.optim import ema_update
from ..training.stage import resolve_model_config
from ..training.stages import STAGES, build_dmd
from ..training.supervised import ODEStage
from .attention import planned_sdpa

# --------------------------------------------------------------------------------------------------
# What is measured


class Kind(_RefType):
    """MemTracker's kinds of memory (the same names, so its own bookkeeping files into them) and two of Mirai's."""

    PARAM = "Parameter"
    BUFFER = "Buffer"
    GRAD = "Gradient"
    ACT = "Activation"
    TEMP = "Temp"
    OPT = "Optstate"
    OTH = "Other"
    KV = "KV cache"
    REPLAY = "Replay buffer"
    OFFLOADED = "Offloaded"  # a frozen model's weights kept in host memory (dist.teacher=offload)


KIND_NAMES = {Kind.PARAM: "parameters", Kind.BUFFER: "buffers", Kind.GRAD: "gradients", Kind.OPT: "optimiser",
              Kind.ACT: "activations", Kind.TEMP: "temporaries", Kind.KV: "kv_cache", Kind.REPLAY: "replay",
              Kind.OFFLOADED: "offloaded", Kind.OTH: "other"}


class PlanTracker(MemTracker):
    """MemTracker without its module hooks. Its ModTracker registers gradient hooks on every module call's
    tensors, which keep a checkpointed block's recomputed activations alive through the rest of backward (depth
    x a block's activations, as if nothing were checkpointed, with real tensors as with fake ones), and its
    module-wise statistics refuse a module called many times (a rollout). Here forward vs backward is autograd's
    own state: a tensor made while a backward pass runs is a temporary (recomputed activations included), any
    other an activation; optimiser steps and gradients are told by MemTracker's optimiser and gradient hooks."""

    def __init__(self, host: tuple[Kind, ...] = ()) -> None:
        """host: kinds kept in host memory (a CPU replay buffer): reported, but not part of the device's total, so
        not of its peak either."""
        super().__init__()
        self._ref_class = Kind
        self.host = host

    def _device_bytes(self, snap: dict) -> int:
        return snap[_TOTAL_KEY] - sum(snap.get(kind, 0) for kind in self.host)

    def track_trained(self, *modules: nn.Module) -> None:
        """Parameters and buffers of these modules, with hooks that file their gradients as gradients."""
        for module in modules:
            self._track_module_params_and_buffers(module, install_grad_hooks=True)

    def __enter__(self) -> "PlanTracker":
        self._fake_mode_on_entry = active_fake_mode()
        self._register_global_optimizer_hook()
        self._track_resize()
        self._peak_mem_snap = self.get_tracker_snapshot()
        self._peak_mem = {dev: self._device_bytes(snap) for dev, snap in self._peak_mem_snap.items()}
        TorchDispatchMode.__enter__(self)
        return self

    def __exit__(self, *args) -> None:
        self._deregister_param_and_optimizer_hooks()
        self._restore_resize()
        TorchDispatchMode.__exit__(self, *args)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if any(t is DTensor for t in types):
            return NotImplemented  # count the local operators DTensor runs
        if func is torch.ops._c10d_functional.wait_tensor.default and active_fake_mode():
            res = args[0]  # as MemTracker: a fake wait returns a new tensor where a real one returns its input
        else:
            res = func(*args, **(kwargs or {}))
        if active_fake_mode() is self._fake_mode_on_entry:  # not DTensor's own shape propagation
            in_backward = torch._C._current_graph_task_id() != -1
            kind = Kind.OPT if self._in_opt else Kind.TEMP if in_backward else Kind.ACT
            for t in _tensors(res):
                self._track(kind, t)
            self._update_peak_stats(None)
        return res

    def _track_module_params_and_buffers(self, module: nn.Module, install_grad_hooks: bool = True):
        """MemTracker hooks every parameter's gradient, and a frozen one (the real score) cannot take a hook."""
        frozen = [p for p in module.parameters() if not p.requires_grad]
        for p in frozen:  # no hook is installed where one is recorded (these never get a gradient)
            self._param_to_grad_hook_handles.setdefault(p, (_NO_HOOK, _NO_HOOK))
        return super()._track_module_params_and_buffers(module, install_grad_hooks)

    def _update_peak_stats(self, peak_state) -> None:
        """The process's peak alone: MemTracker also updates every tracked module's own peak at every operator,
        which costs (modules x operators), minutes at Wan size, for statistics a plan does not read."""
        for device, snap in self._curr_mem_snap.items():
            if self._peak_mem.get(device, 0) < self._device_bytes(snap):
                self._peak_mem[device] = self._device_bytes(snap)
                self._peak_mem_snap[device] = dict(snap)

    def mark(self, tensors, kind: Kind) -> None:
        """File these tensors' storages under `kind` (from now on, and moved there if already tracked)."""
        for t in tensors:
            self._update_and_maybe_create_winfos(t, kind)

    def peak(self) -> dict[str, int]:
        """Bytes by kind at the moment of the device's peak; "total": the device's (host kinds left out), "host":
        the host kinds' bytes then."""
        snapshots = self.get_tracker_snapshot("peak")
        out = {name: 0 for name in KIND_NAMES.values()}
        out["total"] = out["host"] = 0
        for snap in snapshots.values():
            for kind, value in snap.items():
                if kind != _TOTAL_KEY:
                    out[KIND_NAMES.get(kind, "other")] += value
            out["total"] += self._device_bytes(snap)
            out["host"] += sum(snap.get(kind, 0) for kind in self.host)
        return out


class _NoHook:
    def remove(self) -> None:
        pass


_NO_HOOK = _NoHook()


class Roofline(TorchDispatchMode):
    """Per operator: FLOPs (torch's flop formulas) and bytes read and written (its tensors' sizes; views move
    nothing). `seconds(peak, bandwidth)` is the roofline bound sum(max(flops / peak, bytes / bandwidth))."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[tuple[int, int]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if any(t is DTensor for t in types):
            return NotImplemented  # count the local operators DTensor runs
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if getattr(func, "is_view", False):
            return out
        formula = flop_registry.get(func.overloadpacket)
        flops = formula(*args, **kwargs, out_val=out) if formula else 0
        moved = sum(t.numel() * t.element_size() for t in _tensors((args, kwargs, out)))
        self.ops.append((int(flops), int(moved)))
        return out

    def mark(self) -> int:
        return len(self.ops)

    def flops(self, start: int = 0, end: int | None = None) -> int:
        return sum(f for f, _ in self.ops[start:end])

    def bytes(self, start: int = 0, end: int | None = None) -> int:
        return sum(b for _, b in self.ops[start:end])

    def seconds(self, peak_flops: float, bandwidth: float, start: int = 0, end: int | None = None) -> float:
        return sum(max(f / peak_flops, b / bandwidth) for f, b in self.ops[start:end])


def _tensors(tree) -> Iterator[Tensor]:
    if isinstance(tree, Tensor):
        yield tree
    elif isinstance(tree, (list, tuple)):
        for item in tree:
            yield from _tensors(item)
    elif isinstance(tree, dict):
        for item in tree.values():
            yield from _tensors(item)


def _key(t: Tensor) -> int:
    """The identity of a tensor's storage (what Python hands back may be another wrapper of the same tensor)."""
    return t.untyped_storage()._cdata


class ScalarStandIns(TorchDispatchMode):
    """What fake tensors cannot give, a Python number, stood in for: a random integer draw is the largest value it
    can take (DMD's exit step: the last, the most work), a boolean is True (every finite-check passes), any other
    scalar is 1. Real tensors keep their values, except that random integer draws are made the same way, so a run
    with real tensors (the check against reality) takes the same branches."""

    RANDINT = {torch.ops.aten.randint.low, torch.ops.aten.randint.low_generator, torch.ops.aten.randint.default,
               torch.ops.aten.randint.generator}

    def __init__(self) -> None:
        super().__init__()
        self.values: dict[int, tuple[Tensor, int]] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in self.RANDINT:
            high = args[1] if func in (torch.ops.aten.randint.low, torch.ops.aten.randint.low_generator) else args[0]
            out = func(*args, **kwargs)
            if isinstance(out, FakeTensor):
                self.values[_key(out)] = (out, high - 1)  # the tensor is kept: its key is not reused
            else:
                out.fill_(high - 1)
            return out
        if func is torch.ops.aten._local_scalar_dense.default and isinstance(args[0], FakeTensor):
            t = args[0]
            if _key(t) in self.values:
                return self.values[_key(t)][1]
            if t.constant is not None:  # made from Python numbers (a schedule's step list): the fake mode knows it
                return t.constant.item()
            return True if t.dtype == torch.bool else (1 if not t.is_floating_point() else 1.0)
        return func(*args, **kwargs)


# --------------------------------------------------------------------------------------------------
# The fake world


def overwritten_parameters():
    """`module.to(...)`, `.float()` and the like replace fake parameters by new ones instead of swapping them in
    place: torch always swaps a fake parameter, and refuses to, since the fake mode holds a weak reference to it."""

    def _apply(module: nn.Module, fn, recurse: bool = True) -> nn.Module:
        for m in module.modules() if recurse else [module]:
            for group in (m._parameters, m._buffers):
                for name, t in group.items():
                    if t is None:
                        continue
                    with torch.no_grad():
                        new = fn(t)
                    if new is not t:
                        group[name] = nn.Parameter(new, t.requires_grad) if isinstance(t, nn.Parameter) else new
        return module

    return mock.patch.object(nn.Module, "_apply", _apply)


@contextlib.contextmanager
def fake_process_group(ranks: int) -> Iterator[None]:
    """A process group of `ranks` fake ranks, this process rank 0 (collectives return at once, move nothing)."""
    if ranks <= 1:
        yield
        return
    if torch_dist.is_initialized():
        raise RuntimeError("mirai plan runs in a process of its own, not under torchrun")
    torch_dist.init_process_group("fake", rank=0, world_size=ranks, store=FakeStore())
    try:
        dist.mesh("cpu")  # made with real tensors, before fake mode: a device mesh reads its ranks' values
        yield
    finally:
        torch_dist.destroy_process_group()
        dist.forget_mesh()


def real_schedule():
    """A sampler's step list is a few numbers computed from Python numbers (and read back with `.tolist()`): it is
    computed for real, not faked."""
    original = FlowSchedule.inference_steps

    def inference_steps(self, *args, **kwargs):
        with unset_fake_temporarily():
            return original(self, *args, **kwargs)

    return mock.patch.object(FlowSchedule, "inference_steps", inference_steps)


@dataclass(frozen=True)
class PlannedMask:
    """What a GPU builds from a chunk mask, a block mask of a few KB, reduced to what the plan needs of it."""

    density: float  # the fraction of (query, key) pairs it keeps


def chunk_mask_density(mask: ChunkMask) -> float:
    """Kept pairs / L^2 of a chunk mask. Block-causal: chunk i (n_i tokens) sees the n_0 + ... + n_i tokens up to it;
    teacher forcing: K^2 chunk pairs of (2K - 1)^2 (clean j sees clean <= j; noisy i sees clean < i and itself)."""
    n, L = mask.tokens_per_chunk, mask.L
    if mask.kind == "teacher_forcing":
        K = mask.num_chunks
        return K * K / (2 * K - 1) ** 2
    seen, kept = 0, 0
    for size in (min(n, L - i * n) for i in range(mask.num_chunks)):
        seen += size
        kept += size * seen
    return kept / L**2


def gpu_attention(enabled: bool) -> contextlib.ExitStack:
    """Attention as a GPU runs it (see `mirai.plan.attention`): a chunk mask becomes a `PlannedMask` (the GPU's
    block mask holds no L x L tensor) and attention the fused operator, its FLOPs those of the pairs the mask keeps
    (a dense mask, whose fake values are unknown, counts as full)."""
    stack = contextlib.ExitStack()
    if not enabled:
        return stack
    original_mask = attention_module.flex_mask

    def flex_mask(mask, device=None):
        return PlannedMask(chunk_mask_density(mask)) if isinstance(mask, ChunkMask) else original_mask(mask, device)

    def sdpa(q, k, v, attn_mask=None, **kwargs):
        return planned_sdpa(q, k, v, density=attn_mask.density if isinstance(attn_mask, PlannedMask) else 1.0)

    for module in (attention_module, dit, wan):  # each imported flex_mask by name
        stack.enter_context(mock.patch.object(module, "flex_mask", flex_mask))
    stack.enter_context(mock.patch.object(F, "scaled_dot_product_attention", sdpa))
    return stack


def marked_kv_caches(tracker: PlanTracker):
    """File every KV cache a rollout allocates under "kv_cache"."""
    original = attention_module.KVCache.allocate.__func__

    def allocate(cls, *args, **kwargs):
        cache = original(cls, *args, **kwargs)
        tracker.mark((cache.k, cache.v), Kind.KV)
        return cache

    return mock.patch.object(attention_module.KVCache, "allocate", classmethod(allocate))


class PlannedDataParallel(nn.Module):
    """DDP as a plan sees it. DDP cannot run on fake tensors (its C++ reducer reads the parameters' storage), and
    what it changes in memory is one thing: its gradient buckets, a second copy of the trained parameters'
    gradients (DDP's default, gradient_as_bucket_view=False), allocated once. So: the module itself, plus
    buckets of that size. The all-reduce is communication, which a plan does not price."""

    def __init__(self, module: nn.Module, **_ddp_options):
        super().__init__()
        self.module = module
        trained = [p for p in module.parameters() if p.requires_grad]
        self.buckets = [torch.empty(sum(p.numel() for p in trained if p.dtype == dtype), dtype=dtype)
                        for dtype in {p.dtype for p in trained}]
        PlannedDataParallel.made.append(self)

    made: list["PlannedDataParallel"] = []

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.module, name)

    @contextlib.contextmanager
    def no_sync(self):
        yield


@contextlib.contextmanager
def planned_ddp() -> Iterator[None]:
    """`dist.parallelize`'s DDP replaced by `PlannedDataParallel` (and recognised by `dist.gradient_sync`)."""
    PlannedDataParallel.made = []
    with mock.patch.object(dist, "DataParallel", PlannedDataParallel), \
            mock.patch.object(dist, "DistributedDataParallel", PlannedDataParallel):
        yield


def ddp_buckets() -> list[Tensor]:
    return [t for wrapper in PlannedDataParallel.made for t in wrapper.buckets]


# --------------------------------------------------------------------------------------------------
# Running the step


@dataclass
class StepMeasure:
    """One measured step: peak bytes by kind (rank 0), FLOPs, and the roofline's operator list."""

    name: str
    peak: dict[str, int]
    flops: int
    roofline: Roofline
    host_to_device_bytes: int = 0  # offloaded frozen weights copied to the GPU (dist.teacher=offload)


@dataclass
class RolloutMeasure:
    frames: int
    peak: dict[str, int]
    flops: int
    first_chunk: tuple[int, int]  # operator range of the first chunk in `roofline`
    roofline: Roofline


@dataclass
class RunMeasure:
    stage: str
    ranks: int
    rows: int  # clips per rank in one micro-batch (the one measured)
    micro_batches: int  # per optimiser step: dist.grad_accum (FLOPs and time of a step are the measured x this)
    steps: list[StepMeasure] = field(default_factory=list)  # DMD: a generator step, then a critic-only step
    rollout: RolloutMeasure | None = None
    parameters: dict[str, int] = field(default_factory=dict)  # per module, whole (not sharded)


class RandomPairs:
    """ODE pairs of the right shapes for a planned ODE step (the teacher's trajectories are not simulated)."""

    def __init__(self, timesteps: Tensor):
        self.timesteps = timesteps

    def __len__(self) -> int:
        return 2**62


def planning_config(cfg: Config) -> Config:
    """The config as the plan runs it: random data of the config's shapes on the CPU, nothing written."""
    cfg = copy.deepcopy(cfg)
    if cfg.data.source == "cache":  # caption embeddings of model.text_dim; the cache itself is not read
        cfg.data.source = "random"
    cfg = resolve_model_config(cfg)  # the world's structured prompt stays one
    cfg.data.source = "random"
    cfg.data.num_workers = 0
    cfg.train.device = "cpu"
    cfg.train.compile = False
    cfg.train.flex_attention = False
    cfg.train.sample_every = 0
    return cfg


def build_planned_stage(cfg: Config):
    """The stage of cfg.train.objective, as `mirai train` builds it (ODE: with stand-in pairs)."""
    if cfg.train.objective == "ode":
        schedule = FlowSchedule.from_config(cfg.schedule)
        ts = schedule.inference_steps(cfg.sample.steps, cfg.sample.timesteps)[:-1]
        return ODEStage(cfg, quiet=True, pairs=RandomPairs(ts.float()))
    if cfg.train.objective == "dmd":
        return build_dmd(cfg, quiet=True)
    return STAGES[cfg.train.objective](cfg, True)


def batch_of(stage, cfg: Config, rows: int) -> dict[str, Tensor]:
    """This rank's rows of a step's batch, in the shapes the stage's dataset gives."""
    m = cfg.model
    prompt = (torch.randn(rows, cfg.prepare.text_len, m.text_dim) if m.text_conditioned
              else torch.zeros(rows, len(m.prompt_vocab), dtype=torch.long))
    if cfg.train.objective == "ode":
        S = len(stage.dataset.timesteps)
        return {"states": torch.randn(rows, S, cfg.data.clip_frames, *m.frame_shape),
                "clean": torch.randn(rows, cfg.data.clip_frames, *m.frame_shape), "prompt": prompt}
    return {"video": torch.randn(rows, cfg.data.clip_frames, *m.frame_shape), "prompt": prompt}


def replay_tensors(stage) -> list[Tensor]:
    return [t for term in getattr(stage, "terms", []) for pair in term.replay for t in pair]


def fill_replay(stage) -> None:
    """Steady state: every term's replay buffer holds `replay_size` entries (copies of the one it has)."""
    for term in getattr(stage, "terms", []):
        if term.replay:
            while len(term.replay) < term.replay.maxlen:
                term.replay.append(tuple(t.clone() for t in term.replay[-1]))


def frozen_modules(stage) -> list[nn.Module]:
    """The frozen models a stage holds besides its checkpointed modules: DMD's real score, a separate encoder."""
    frozen = [stage.teacher] if getattr(stage, "teacher", None) is not None else []
    for term in getattr(stage, "terms", []):
        encoder = getattr(term, "encoder", None)
        if encoder is not None and all(encoder.model is not m for m in frozen):
            frozen.append(encoder.model)
    return frozen


def persistent(stage) -> list:
    """What lives across steps: every module and optimiser of the stage, and its frozen models."""
    return [*stage.modules.values(), *frozen_modules(stage), *stage.optimizers.values()]


def host_kinds(cfg: Config) -> tuple[Kind, ...]:
    """The kinds of memory this config keeps in host memory, not on the GPU."""
    return (Kind.REPLAY,) * (cfg.foresight.replay_device == "cpu") + (Kind.OFFLOADED,) * (cfg.dist.teacher == "offload")


def offloaded(stage) -> list:
    """The `BlockOffload`s of the stage's frozen models kept in host memory (dist.teacher=offload)."""
    return [m.offload for m in frozen_modules(stage) if hasattr(m, "offload")]


def mark_kinds(tracker: PlanTracker, stage) -> None:
    """And DDP's gradient buckets, under gradients (they are a plan's own tensors, not the stage's)."""
    tracker.mark(ddp_buckets(), Kind.GRAD)
    tracker.mark(replay_tensors(stage), Kind.REPLAY)
    tracker.mark([t for o in offloaded(stage) for t in o.host.values()], Kind.OFFLOADED)


def measured_step(stage, cfg: Config, batch, gen, step: int, name: str) -> StepMeasure:
    tracker, roofline = PlanTracker(host_kinds(cfg)), Roofline()
    tracker.track_external(*persistent(stage))
    tracker.track_trained(*stage.modules.values())
    mark_kinds(tracker, stage)
    moved = sum(o.bytes_moved for o in offloaded(stage))
    with marked_kv_caches(tracker), tracker, roofline:
        result = stage.step(batch, step, gen)
        if result.generator_update is not None:
            ema_update(stage.ema, stage.model, 0.99)
    return StepMeasure(name, tracker.peak(), roofline.flops(), roofline,
                       sum(o.bytes_moved for o in offloaded(stage)) - moved)


def measured_rollout(cfg: Config, batch: int = 1) -> RolloutMeasure:
    """The generator alone on one GPU, bf16 weights when training in bf16, rolling out one clip chunk by chunk."""
    m = cfg.model
    model = build_model(m).eval().requires_grad_(False)
    if cfg.train.precision == "bf16":
        model.to(torch.bfloat16)
    tracker, roofline = PlanTracker(), Roofline()
    tracker.track_external(model)
    noise = torch.randn(batch, cfg.data.clip_frames, *m.frame_shape)
    prompt = torch.randn(batch, cfg.prepare.text_len, m.text_dim) if m.text_conditioned else None
    first = (0, 0)
    with marked_kv_caches(tracker), tracker, roofline:
        with autocast_context(cfg.train.precision, "cpu"):
            for i, _chunk in enumerate(iter_rollout(model, FlowSchedule.from_config(cfg.schedule), noise, prompt,
                                                    sample=cfg.sample)):
                if i == 0:
                    first = (0, roofline.mark())
    return RolloutMeasure(batch * cfg.data.clip_frames, tracker.peak(), roofline.flops(), first, roofline)


def parameter_counts(stage) -> dict[str, int]:
    out = {}
    for name, module in stage.modules.items():
        out[name] = sum(p.numel() for p in module.parameters())
    teacher = getattr(stage, "teacher", None)
    if teacher is not None:
        out["teacher (frozen)"] = sum(p.numel() for p in teacher.parameters())
    for term in getattr(stage, "terms", []):
        encoder = getattr(term, "encoder", None)
        if encoder is not None and encoder.model is not teacher:
            out["foresight encoder (frozen)"] = sum(p.numel() for p in encoder.model.parameters())
    return out


def updates_per_generator_step(cfg: Config) -> int:
    """Steps per generator update: DMD's critic updates per generator update, 1 for every other stage."""
    return cfg.dmd.critic_updates_per_gen if cfg.train.objective == "dmd" else 1


def one_micro_batch(cfg: Config, ranks: int) -> Config:
    """The config of one of its micro-batches: gradient accumulation repeats the same micro-batch step (the same
    shapes, the same peak: the gradients it accumulates into exist after the first), so a plan measures one and
    counts its FLOPs and time `dist.grad_accum` times."""
    if cfg.dist.grad_accum == 1:
        return cfg
    cfg = copy.deepcopy(cfg)
    cfg.train.batch_size //= cfg.dist.grad_accum
    cfg.dist.grad_accum = 1
    return cfg


def warmed_stage(cfg: Config, rows: int, device: torch.device | None = None):
    """The stage built and distributed, a batch of `rows` clips, its generator, and steps run until every
    optimiser has its state (DMD: a generator step and a critic-only step), the replay buffers full."""
    torch.manual_seed(cfg.train.seed)
    stage = build_planned_stage(cfg)
    stage.distribute()
    gen = BatchGenerator(cfg.train.seed)
    batch = {key: value.to(device or stage.device) for key, value in batch_of(stage, cfg, rows).items()}
    k = updates_per_generator_step(cfg)
    stage.step(batch, 0, gen)  # step 0 updates every module (DMD: the generator and the critic)
    fill_replay(stage)
    return stage, batch, gen, k


def plan_run(cfg: Config, ranks: int = 1, fused: bool = True, fake: bool = True, rollout: bool = True) -> RunMeasure:
    """Build `cfg`'s stage for `ranks` ranks and measure a step (DMD: a generator step and a critic-only step) and,
    when `rollout`, one rollout. fake=False runs the same with real tensors (random weights): the check against
    reality, at toy sizes on the CPU. fused: attention as on a GPU (see `gpu_attention`)."""
    cfg = planning_config(cfg)
    if cfg.train.batch_size % (ranks * cfg.dist.grad_accum):
        raise ConfigError(f"train.batch_size={cfg.train.batch_size} is not divisible by {ranks} ranks x "
                          f"dist.grad_accum {cfg.dist.grad_accum}")
    accum = cfg.dist.grad_accum
    cfg = one_micro_batch(cfg, ranks)
    rows = cfg.train.batch_size // ranks
    mode = FakeTensorMode(allow_non_fake_inputs=True) if fake else contextlib.nullcontext()
    with fake_process_group(ranks), references.random_weights(everything=True), gpu_attention(fused), \
            real_schedule(), planned_ddp():
        with overwritten_parameters() if fake else contextlib.nullcontext(), mode, ScalarStandIns():
            stage, batch, gen, k = warmed_stage(cfg, rows)
            run = RunMeasure(cfg.train.objective, ranks, rows, accum, parameters=parameter_counts(stage))
            run.steps.append(measured_step(stage, cfg, batch, gen, k, "generator step" if k > 1 else "step"))
            if k > 1:
                run.steps.append(measured_step(stage, cfg, batch, gen, k + 1, "critic-only step"))
            if rollout and cfg.model.attention == "causal":
                run.rollout = measured_rollout(cfg)
    return run
