"""Typed run configuration: nested dataclasses, size presets, YAML loading and `a.b=value` overrides.

Every knob of a run lives here with a comment. YAML files under `configs/` hold partial dicts that are
merged over these defaults; unknown keys and wrong types are `ConfigError`s that name the key, never a
traceback deep inside torch.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A configuration file or override is wrong; the message names the key."""


# --------------------------------------------------------------------------------------------------
# Sections


@dataclass
class WorldConfig:
    """The built-in synthetic video world (see `mirai.world`)."""

    image_size: int = 32  # frames are image_size x image_size RGB
    num_backgrounds: int = 8  # layouts: textured backgrounds (some with an occluder pillar)
    min_sprites: int = 1
    max_sprites: int = 2  # the world supports up to 3; more sprites is a harder world
    sprite_sizes: list[int] = field(default_factory=lambda: [12])  # side of a sprite's box, pixels (large enough
    #                                                                  that a tiny model learns the object fast)
    num_shapes: int = 4  # square, circle, triangle, diamond
    num_colors: int = 6
    num_patterns: int = 2  # solid, striped
    max_speed: float = 1.0  # pixels per frame
    min_speed: float = 0.5
    momentum: float = 0.9  # velocity keeps this fraction each frame, the rest is a random nudge
    occluder_prob: float = 0.5  # probability that a layout has a pillar in front of the sprites
    pan_speed: float = 0.0  # camera pan in pixels per frame (0 = static camera)


@dataclass
class DataConfig:
    """Where training clips come from."""

    source: str = "synthetic"  # "synthetic" (the built-in world), "folder" (mp4/gif/frame folders, pixels) or
    #                            "cache" (latents and caption embeddings written by `mirai prepare`)
    path: str = ""  # the folder, for source == "folder" or "cache"
    clip_frames: int = 8  # frames per training clip (must be a multiple of model.frames_per_chunk)
    seed: int = 0  # dataset seed: clip i of the synthetic world is a pure function of (seed, i)
    frame_stride: int = 1  # for folder videos: take every n-th frame
    num_workers: int = 0  # processes that build the next batches ahead of the step (0: in the training process;
    #                       a GPU run on the synthetic world needs several, rendering is the CPU's work)


@dataclass
class PrepareConfig:
    """`mirai prepare`: a folder of videos with captions -> a cache of latents and caption embeddings."""

    frames: int = 17  # frames per clip after resampling (the Wan VAE takes 1 + 4k frames -> 1 + k latent frames)
    fps: float = 0.0  # resample every video to this frame rate (0 = keep each video's own rate)
    folder_fps: float = 16.0  # the frame rate of frame folders (and of files that declare none)
    height: int = 32  # frames are scaled and centre-cropped to height x width pixels
    width: int = 0  # 0 = height (square)
    clips_per_video: int = 1  # consecutive clips cut from each video (0 = as many as fit)
    vae: str = ""  # a local diffusers AutoencoderKLWan folder; "" = identity (the model sees pixels)
    text_encoder: str = ""  # a local transformers UMT5/T5 encoder folder (its tokenizer inside); "" = no embeddings
    text_len: int = 64  # caption tokens kept (padded with zeros, as Wan's pipelines pad)
    missing_caption: str = "skip"  # a video without a caption: "skip" (reported) or "empty" (prepared unconditional)
    batch_size: int = 4  # clips per encoder call
    shard_size: int = 32  # clips per shard file (a killed run resumes shard by shard)


@dataclass
class ModelConfig:
    """The causal video transformer (see `mirai.models`). `preset` fills every size field first."""

    preset: str = "tiny"
    arch: str = "dit"  # "dit" (Mirai's CausalVideoDiT) or "wan" (the Wan2.1 transformer, see models/wan.py)
    dim: int = 192  # transformer width
    depth: int = 6  # number of DiT blocks
    heads: int = 6
    mlp_ratio: float = 4.0  # "dit": MLP width = dim * mlp_ratio (also the foresight predictor's)
    patch_size: int = 8  # spatial patch; tokens per frame = (image_size / patch_size) * (image_width / patch_size)
    image_size: int = 32  # frame height (and width, unless image_width is set)
    image_width: int = 0  # frame width for non-square frames ("wan" only); 0 = square
    channels: int = 3
    frames_per_chunk: int = 2  # 1 = frame-wise causal generation
    attention: str = "causal"  # "causal" (block-causal over chunks) or "bidirectional"
    prompt_vocab: list[int] = field(default_factory=list)  # one vocabulary size per prompt field; [] = unconditional
    rope_theta: float = 10000.0
    prediction: str = "x0"  # what the network outputs: "x0" (clean frames), "velocity", or "edm" (x0 through
    #                         EDM preconditioning: x0 = c_skip(t) x_t + c_out(t) F(c_in(t) x_t)); forward() always
    #                         returns the velocity. x0 suits pixel patches (Li & He 2025, "Back to Basics"):
    #                         a velocity/noise output must reproduce 192-d patch noise through the network;
    #                         "edm" is x0 at t = 1 but only a residual at low noise (sharp details learn fast).
    sigma_data: float = 0.5  # "edm": RMS of the training frames (EDM's default; the world's is about 0.6)
    conditional: bool = True  # condition on the dataset's prompt: the world's structured prompt (prompt_vocab filled
    #                           from the world) or a cache's caption embeddings (cross-attention, text_dim)
    text_dim: int = 0  # width of the caption embeddings the cross-attention reads (UMT5-XXL: 4096; "dit": 0 = no
    #                    cross-attention, filled from a cache with captions). "wan" on the synthetic world: the
    #                    structured prompt becomes one text_dim embedding per field
    # "wan" only (diffusers' WanTransformer3DModel config, same names):
    ffn_dim: int = 0  # feed-forward width
    freq_dim: int = 256  # sinusoidal timestep features
    eps: float = 1e-6  # of the layer and RMS norms
    rope_max_seq_len: int = 1024  # carried for export (diffusers precomputes RoPE up to it); Mirai computes it

    @property
    def text_conditioned(self) -> bool:
        """Conditioned on caption embeddings (B, L, text_dim) through cross-attention (a model trained on a prepared
        cache with captions) rather than on the world's structured prompt."""
        return self.conditional and not self.prompt_vocab and self.text_dim > 0

    @property
    def frame_shape(self) -> tuple[int, int, int]:
        """(channels, height, width) of one frame."""
        return self.channels, self.image_size, self.image_width or self.image_size

    @property
    def grid_shape(self) -> tuple[int, int]:
        """(rows, columns) of patches in one frame."""
        return self.image_size // self.patch_size, (self.image_width or self.image_size) // self.patch_size


# Named size presets (as DiT's registry). Only size fields (and, for Wan, the architecture and the velocity
# output its weights were trained for); everything else keeps its value.
MODEL_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(dim=192, depth=6, heads=6, patch_size=8),
    "small": dict(dim=384, depth=8, heads=6, patch_size=4),
    "base": dict(dim=768, depth=12, heads=12, patch_size=4),
    # Wan2.1-T2V-1.3B: 480x832 video -> 60x104 latents (VAE 8x) -> 30x52 = 1560 tokens per latent frame;
    # 81 frames -> 21 latent frames (data.clip_frames: 21), chunks of 3 latent frames.
    "wan1.3b": dict(arch="wan", prediction="velocity", dim=1536, depth=30, heads=12, ffn_dim=8960, text_dim=4096,
                    channels=16, patch_size=2, image_size=60, image_width=104, frames_per_chunk=3),
    # diffusers' own test shape (2 heads x 12), 16 latent channels to pair with a tiny Wan VAE.
    "wan-tiny": dict(arch="wan", prediction="velocity", dim=24, depth=2, heads=2, ffn_dim=32, text_dim=16,
                     channels=16, patch_size=2, image_size=16, frames_per_chunk=3, rope_max_seq_len=32),
}


@dataclass
class ScheduleConfig:
    """Rectified-flow noising: x_t = (1 - t) x_0 + t eps, t in [0, 1], t = 1 is pure noise."""

    shift: float = 1.0  # timestep shift s: t' = s t / (1 + (s - 1) t); >1 spends more time at high noise
    train_t: str = "logit_normal"  # "logit_normal" or "uniform"
    logit_mean: float = 0.0
    logit_std: float = 1.0


@dataclass
class SampleConfig:
    """Autoregressive rollout settings (see `mirai.sampler`)."""

    steps: int = 4  # denoising steps per chunk when `timesteps` is empty
    timesteps: list[float] = field(default_factory=list)  # explicit list on a 0..1000 scale, e.g. [1000, 750, 500, 250]
    solver: str = "euler"  # "euler" (flow ODE) or "renoise" (few-step: predict x0, re-noise to the next t)
    context_noise: float = 0.0  # t at which a clean chunk is re-run to write the KV cache
    cfg_scale: float = 1.0  # classifier-free guidance (1 = off)
    sink_chunks: int = 1  # rolling cache: the first S chunks always kept
    window_chunks: int = 0  # rolling cache: the last W chunks kept; 0 = keep everything (no rolling)


@dataclass
class TrainConfig:
    """The training loop (see `mirai.train`)."""

    objective: str = "teacher_forcing"  # "teacher_forcing" (causal stage 1), "bidirectional" (the teacher),
    #                                     "ode" (stage 2) or "dmd" (stage 3)
    init_from: str = ""  # start from this model file / run folder (stages 2 and 3: the previous stage)
    steps: int = 2000
    batch_size: int = 16
    lr: float = 1e-3
    min_lr_ratio: float = 0.1  # cosine decay down to lr * min_lr_ratio
    warmup_steps: int = 100
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.99])
    grad_clip: float = 1.0
    ema_decay: float = 0.995
    ema_start: int = 0  # EMA tracks the weights from this step on
    precision: str = "auto"  # "auto" (bf16 autocast where the hardware has native bf16), "bf16" or "fp32"
    prompt_dropout: float = 0.1  # drop the prompt for classifier-free guidance (conditional models only)
    per_chunk_t: bool = True  # diffusion forcing: every chunk draws its own noise level
    context_noise_max: float = 0.0  # teacher forcing: clean context gets noise t ~ U(0, this)
    loss_t_floor: float = 0.05  # velocity loss = x0 error / max(t, floor)^2; 1.0 = plain x0 MSE (see losses.py);
    # also the DMD critic's flow-matching loss (set it to the teacher's)
    seed: int = 0
    out_dir: str = "runs/tiny"
    log_every: int = 10
    sample_every: int = 500  # write a contact sheet of samples every n steps (0 = never)
    ckpt_every: int = 250
    sample_steps: int = 16  # Euler steps for the periodic samples
    compile: bool = False  # torch.compile the model (optional; see README for the caveats)
    flex_attention: bool = True  # masked attention on CUDA through compiled FlexAttention (skips masked blocks);
    #                              false: SDPA with the boolean mask, as on the CPU (no compile: small models)
    threads: int = 0  # torch threads (0 = leave the default)
    device: str = "auto"  # "auto" (cuda when available), "cpu", "cuda", "cuda:1", ...
    on_nonfinite: str = "stop"  # a NaN/inf loss or gradient: "stop" (an error naming step, stage and term; the
    #                             last checkpoint is kept) or "skip" (skip that update, count it in the log)


@dataclass
class DistillConfig:
    """Stage 2, causal ODE distillation (see `mirai.distill`)."""

    teacher: str = ""  # the stage-1 causal (AR) teacher: a run folder or model file
    pairs_dir: str = ""  # where ODE pairs are stored ("" = <out_dir>/ode_pairs)
    num_videos: int = 512  # ODE trajectories to generate
    teacher_steps: int = 16  # Euler steps of the teacher per chunk
    shard_size: int = 64  # videos per shard file (the writer resumes shard by shard)
    teacher_cfg_scale: float = 1.0  # classifier-free guidance of the teacher's trajectories


@dataclass
class DMDConfig:
    """Stage 3, self-rollout distribution matching distillation (see `mirai.dmd`)."""

    teacher: str = ""  # the bidirectional teacher: frozen real score; the critic starts from it
    critic_lr: float = 4.0e-4
    critic_updates_per_gen: int = 5  # the generator is updated once per this many critic updates
    t_min: float = 0.02  # DMD noise levels t ~ U(t_min, t_max)
    t_max: float = 0.98
    real_cfg_scale: float = 1.0  # classifier-free guidance of the real score (conditional models)
    betas: list[float] = field(default_factory=lambda: [0.0, 0.999])  # AdamW betas of the generator and the critic
    #                                                                   (DMD2: no first moment; train.betas is
    #                                                                   not used by this stage)
    term_grad_every: int = 0  # every n-th generator update, log each loss part's own gradient norm on the generator
    #                           and their cosine (`grad_norm[...]`, `grad_cos`): does a term reach it? (0 = never;
    #                           costs one extra backward pass per part on those steps, changes no number)


@dataclass
class ForesightConfig:
    """Video-Mirai foresight training, added to the DMD stage (see `mirai.foresight`). Inference is unchanged."""

    enabled: bool = False  # the one switch: false = the Causal-Forcing baseline, true = Video-Mirai
    weight: float = 0.2  # lambda: weight of the alignment loss added to the DMD generator loss
    window: list[int] = field(default_factory=lambda: [0, 1])  # target of chunk i: mean of encoder chunks i+d
    student_block: int = 0  # generator hidden state after this block (0 = mid-depth)
    encoder: str = "teacher"  # "teacher" (the DMD real score) or a path to another frozen bidirectional model
    encoder_block: int = 0  # encoder features after this block (0 = mid-depth); later blocks are not run
    encoder_mask: str = "bidirectional"  # "causal" = the ablation whose encoder cannot see the future
    target_source: str = "rollout"  # "rollout" (the generator's completed video, as the paper) or "real" (the clip)
    predictor_depth: int = 3  # DiT layers of the predictor (0 = a linear map alone)
    predictor_lr: float = 4.0e-4
    replay_size: int = 32  # (student feature, target) batches kept to train the predictor on critic-only steps


@dataclass
class DistConfig:
    """Several processes under torchrun (see `mirai.distributed`). `train.batch_size` is the global batch:
    world size x grad_accum x the micro-batch each process runs at once. A single process ignores the
    strategies (it wraps nothing)."""

    generator: str = "ddp"  # "ddp" (DistributedDataParallel) or "fsdp" (FSDP2 fully_shard per block; the EMA
    #                         is sharded alike)
    critic: str = "ddp"  # DMD's fake score: "ddp" or "fsdp"
    predictor: str = "ddp"  # foresight's predictor: "ddp" or "fsdp"
    teacher: str = "replicate"  # the frozen DMD real score (and foresight encoder): "replicate" (a full copy per
    #                             process, no gradient to reduce) or "fsdp" (sharded, gathered block by block)
    param_dtype: str = "fp32"  # FSDP mixed precision: "bf16" computes with bf16 copies of the sharded fp32
    #                            weights and reduces gradients in fp32 (needs train.precision=bf16); "fp32" keeps
    #                            fp32
    grad_accum: int = 1  # micro-batches per optimiser step (teacher, teacher forcing and ODE stages)
    activation_checkpointing: bool = False  # recompute each block's activations in backward instead of keeping
    #                                         them (less memory, one more forward); also in a single process


DIST_STRATEGIES = ("ddp", "fsdp")


@dataclass
class Config:
    world: WorldConfig = field(default_factory=WorldConfig)
    data: DataConfig = field(default_factory=DataConfig)
    prepare: PrepareConfig = field(default_factory=PrepareConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    dmd: DMDConfig = field(default_factory=DMDConfig)
    foresight: ForesightConfig = field(default_factory=ForesightConfig)
    dist: DistConfig = field(default_factory=DistConfig)


# --------------------------------------------------------------------------------------------------
# Building from dicts, with type checking


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check `value` against the annotation `tp`, converting the harmless cases (int -> float)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, key)
            except ConfigError:
                pass
        raise ConfigError(f"config key '{key}': {value!r} is not a {tp}")
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{key}': expected a list, got {value!r}")
        (item,) = typing.get_args(tp)
        return [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"config key '{key}': expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"config key '{key}': expected an integer, got {value!r}")
    if tp is float:
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value) if abs(value) < 1e308 else math.inf  # float(10**400) would overflow
        elif isinstance(value, str):  # YAML 1.1 reads "3e-4" (no dot) as a string
            try:
                number = float(value)
            except ValueError:
                pass
        if number is None:
            raise ConfigError(f"config key '{key}': expected a number, got {value!r}")
        if not math.isfinite(number):
            raise ConfigError(f"config key '{key}': expected a finite number, got {value!r}")
        return number
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"config key '{key}': expected a string, got {value!r}")
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key)
    raise ConfigError(f"config key '{key}': unsupported type {_type_name(tp)}")


def _unknown_key(section: str, key: Any, valid: list[str]) -> ConfigError:
    key = str(key)  # YAML keys may be numbers
    where = f"'{section}.{key}'" if section else f"'{key}'"
    hint = difflib.get_close_matches(key, valid, n=1)
    maybe = f" Did you mean '{hint[0]}'?" if hint else ""
    return ConfigError(f"unknown config key {where}.{maybe} Valid keys: {', '.join(sorted(valid))}")


def _build(cls: type, data: Any, section: str = "") -> Any:
    """Build dataclass `cls` from a (partial) dict: missing keys keep their defaults."""
    if isinstance(data, cls):
        return data
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"config section '{section or 'root'}' must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    data = dict(data)
    if cls is ModelConfig:  # the preset fills the size fields before explicit keys override them
        preset = data.get("preset", ModelConfig.preset)
        if not isinstance(preset, str) or preset not in MODEL_PRESETS:
            raise ConfigError(f"unknown model preset '{preset}'; choose one of {sorted(MODEL_PRESETS)}")
        data = {**MODEL_PRESETS[preset], **data}
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            raise _unknown_key(section, key, names)
        full = f"{section}.{key}" if section else key
        kwargs[key] = _coerce(value, hints[key], full)
    obj = cls(**kwargs)
    _check_values(obj, section)
    return obj


# --------------------------------------------------------------------------------------------------
# Value ranges, checked wherever a section is built (run configs, a checkpoint's model config, sample overrides)

AT_LEAST_1 = (lambda v: v >= 1, ">= 1")
POSITIVE = (lambda v: v > 0, "> 0")
NON_NEGATIVE = (lambda v: v >= 0, ">= 0")
UNIT = (lambda v: 0 <= v <= 1, "in [0, 1]")
UNIT_BELOW_1 = (lambda v: 0 <= v < 1, "in [0, 1)")
UNIT_ABOVE_0 = (lambda v: 0 < v <= 1, "in (0, 1]")
TIMESTEP = (lambda v: 0 < v <= 1000, "in (0, 1000]")

VALUE_RULES: dict[str, dict[str, tuple]] = {  # section -> key -> (test, requirement); lists: every item
    "world": dict(image_size=AT_LEAST_1, num_backgrounds=AT_LEAST_1, min_sprites=AT_LEAST_1, max_sprites=AT_LEAST_1,
                  sprite_sizes=AT_LEAST_1, num_shapes=AT_LEAST_1, num_colors=AT_LEAST_1, num_patterns=AT_LEAST_1,
                  max_speed=NON_NEGATIVE, min_speed=NON_NEGATIVE, momentum=UNIT, occluder_prob=UNIT),
    "data": dict(clip_frames=AT_LEAST_1, frame_stride=AT_LEAST_1, num_workers=NON_NEGATIVE),
    "prepare": dict(frames=AT_LEAST_1, fps=NON_NEGATIVE, folder_fps=POSITIVE, height=AT_LEAST_1, width=NON_NEGATIVE,
                    clips_per_video=NON_NEGATIVE, text_len=AT_LEAST_1, batch_size=AT_LEAST_1, shard_size=AT_LEAST_1),
    "model": dict(dim=AT_LEAST_1, depth=AT_LEAST_1, heads=AT_LEAST_1, mlp_ratio=POSITIVE, patch_size=AT_LEAST_1,
                  image_size=AT_LEAST_1, channels=AT_LEAST_1, frames_per_chunk=AT_LEAST_1, prompt_vocab=AT_LEAST_1,
                  rope_theta=POSITIVE, sigma_data=POSITIVE, text_dim=NON_NEGATIVE),
    "schedule": dict(shift=POSITIVE, logit_std=POSITIVE),
    "sample": dict(steps=AT_LEAST_1, timesteps=TIMESTEP, context_noise=UNIT_BELOW_1, cfg_scale=NON_NEGATIVE,
                   sink_chunks=NON_NEGATIVE, window_chunks=NON_NEGATIVE),
    "train": dict(steps=AT_LEAST_1, batch_size=AT_LEAST_1, lr=POSITIVE, min_lr_ratio=UNIT, warmup_steps=NON_NEGATIVE,
                  weight_decay=NON_NEGATIVE, grad_clip=POSITIVE, ema_decay=UNIT, ema_start=NON_NEGATIVE,
                  prompt_dropout=UNIT, context_noise_max=UNIT_BELOW_1, loss_t_floor=UNIT_ABOVE_0,
                  log_every=AT_LEAST_1, sample_every=NON_NEGATIVE, ckpt_every=AT_LEAST_1, sample_steps=AT_LEAST_1,
                  threads=NON_NEGATIVE),
    "distill": dict(num_videos=AT_LEAST_1, teacher_steps=AT_LEAST_1, shard_size=AT_LEAST_1,
                    teacher_cfg_scale=NON_NEGATIVE),
    "dmd": dict(critic_lr=POSITIVE, critic_updates_per_gen=AT_LEAST_1, t_min=UNIT_ABOVE_0, t_max=UNIT_ABOVE_0,
                real_cfg_scale=NON_NEGATIVE),
    "foresight": dict(weight=NON_NEGATIVE, window=NON_NEGATIVE, student_block=NON_NEGATIVE,
                      encoder_block=NON_NEGATIVE, predictor_depth=NON_NEGATIVE, predictor_lr=POSITIVE,
                      replay_size=AT_LEAST_1),
    "dist": dict(grad_accum=AT_LEAST_1),
}


def _check_values(obj: Any, section: str) -> None:
    """One ConfigError naming the first key whose value is out of its range, e.g. 'train.steps must be >= 1'."""
    for key, (ok, requirement) in VALUE_RULES.get(section, {}).items():
        value = getattr(obj, key)
        if not all(ok(v) for v in (value if isinstance(value, list) else [value])):
            what = "every item of " if isinstance(value, list) else ""
            raise ConfigError(f"{what}{section}.{key} must be {requirement}, got {value!r}")
    if section == "sample" and any(a <= b for a, b in zip(obj.timesteps, obj.timesteps[1:])):
        raise ConfigError(f"sample.timesteps must be strictly decreasing, got {obj.timesteps}")


def config_from_dict(data: dict[str, Any], model_only: bool = False) -> Config:
    """A checked Config; `model_only` checks the model section alone (a run folder written by an import,
    whose data settings only matter once it trains)."""
    cfg = _build(Config, data)
    validate_model(cfg.model) if model_only else validate(cfg)
    return cfg


def validate_model(m: ModelConfig) -> None:
    """Checks of the model section alone (also run on model configs read from files)."""
    if m.arch not in ("dit", "wan"):
        raise ConfigError(f"model.arch must be 'dit' or 'wan', got '{m.arch}'")
    if m.image_size % m.patch_size or m.image_width % m.patch_size:
        raise ConfigError(f"model.image_size={m.image_size} and model.image_width={m.image_width} must be "
                          f"divisible by model.patch_size={m.patch_size}")
    if m.dim % m.heads:
        raise ConfigError(f"model.dim={m.dim} is not divisible by model.heads={m.heads}")
    if (m.dim // m.heads) % 2:
        raise ConfigError(f"head dim {m.dim // m.heads} must be even for rotary positions")
    if m.prediction not in ("x0", "velocity", "edm"):
        raise ConfigError(f"model.prediction must be 'x0', 'velocity' or 'edm', got '{m.prediction}'")
    if m.attention not in ("causal", "bidirectional"):
        raise ConfigError(f"model.attention must be 'causal' or 'bidirectional', got '{m.attention}'")
    if m.arch == "dit" and m.text_dim > 0 and m.prompt_vocab:
        raise ConfigError("model.text_dim (captions, cross-attention) and model.prompt_vocab (the world's structured "
                          "prompt) are two kinds of prompt: the DiT reads one; set one of them to 0 / []")
    if m.arch == "dit" and m.image_width not in (0, m.image_size):
        raise ConfigError("model.image_width (non-square frames) needs model.arch=wan; the DiT's positions are square")
    if m.arch == "wan":
        if m.prediction != "velocity":
            raise ConfigError(f"model.arch=wan predicts the flow velocity: set model.prediction=velocity, not '{m.prediction}'")
        if m.ffn_dim <= 0 or m.text_dim <= 0:
            raise ConfigError(f"model.arch=wan needs model.ffn_dim and model.text_dim > 0, got {m.ffn_dim}, {m.text_dim}")


def validate_world(w: WorldConfig) -> None:
    """Cross-field checks of the world section alone (also run by `mirai world export`)."""
    if not 1 <= w.min_sprites <= w.max_sprites <= 3:
        raise ConfigError(f"world sprites must satisfy 1 <= min_sprites <= max_sprites <= 3, got {w.min_sprites}..{w.max_sprites}")
    if not w.sprite_sizes or max(w.sprite_sizes) > w.image_size:
        raise ConfigError(f"world.sprite_sizes must be a non-empty list of sizes <= world.image_size={w.image_size}, "
                          f"got {w.sprite_sizes}")
    if w.min_speed > w.max_speed:
        raise ConfigError(f"world.min_speed={w.min_speed} is larger than world.max_speed={w.max_speed}")


def validate(cfg: Config) -> None:
    """Cross-field checks with messages a user can act on."""
    m = cfg.model
    validate_model(m)
    if cfg.data.clip_frames % m.frames_per_chunk:
        raise ConfigError(
            f"data.clip_frames={cfg.data.clip_frames} is not a multiple of model.frames_per_chunk={m.frames_per_chunk}"
        )
    if cfg.data.source not in ("synthetic", "folder", "cache"):
        raise ConfigError(f"data.source must be 'synthetic', 'folder' or 'cache', got '{cfg.data.source}'")
    if cfg.prepare.missing_caption not in ("skip", "empty"):
        raise ConfigError(f"prepare.missing_caption must be 'skip' or 'empty', got '{cfg.prepare.missing_caption}'")
    if cfg.data.source == "synthetic" and cfg.world.image_size != m.image_size:
        raise ConfigError(f"world.image_size={cfg.world.image_size} differs from model.image_size={m.image_size}")
    if cfg.sample.solver not in ("euler", "renoise"):
        raise ConfigError(f"sample.solver must be 'euler' or 'renoise', got '{cfg.sample.solver}'")
    objectives = ("teacher_forcing", "bidirectional", "ode", "dmd")
    if cfg.train.objective not in objectives:
        raise ConfigError(f"train.objective must be one of {objectives}, got '{cfg.train.objective}'")
    if cfg.train.precision not in ("auto", "bf16", "fp32"):
        raise ConfigError(f"train.precision must be 'auto', 'bf16' or 'fp32', got '{cfg.train.precision}'")
    if cfg.schedule.train_t not in ("logit_normal", "uniform"):
        raise ConfigError(f"schedule.train_t must be 'logit_normal' or 'uniform', got '{cfg.schedule.train_t}'")
    if cfg.train.on_nonfinite not in ("stop", "skip"):
        raise ConfigError(f"train.on_nonfinite must be 'stop' or 'skip', got '{cfg.train.on_nonfinite}'")
    for key, betas in (("train.betas", cfg.train.betas), ("dmd.betas", cfg.dmd.betas)):
        if len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas):
            raise ConfigError(f"{key} must be two numbers in [0, 1), got {betas}")
    f = cfg.foresight
    if f.encoder_mask not in ("bidirectional", "causal"):
        raise ConfigError(f"foresight.encoder_mask must be 'bidirectional' or 'causal', got '{f.encoder_mask}'")
    if f.target_source not in ("rollout", "real"):
        raise ConfigError(f"foresight.target_source must be 'rollout' or 'real', got '{f.target_source}'")
    if not f.window or min(f.window) < 0:
        raise ConfigError(f"foresight.window must be a non-empty list of offsets >= 0, got {f.window}")
    for key in ("student_block", "encoder_block"):
        if not 0 <= getattr(f, key) <= m.depth:
            raise ConfigError(f"foresight.{key}={getattr(f, key)} must be within 0..model.depth={m.depth}")
    validate_world(cfg.world)
    for key in ("generator", "critic", "predictor"):
        if getattr(cfg.dist, key) not in DIST_STRATEGIES:
            raise ConfigError(f"dist.{key} must be 'ddp' or 'fsdp', got '{getattr(cfg.dist, key)}'")
    if cfg.dist.teacher not in ("replicate", "fsdp"):
        raise ConfigError(f"dist.teacher must be 'replicate' or 'fsdp', got '{cfg.dist.teacher}'")
    if cfg.dist.param_dtype not in ("fp32", "bf16"):
        raise ConfigError(f"dist.param_dtype must be 'fp32' or 'bf16', got '{cfg.dist.param_dtype}'")
    if cfg.dist.param_dtype == "bf16" and cfg.train.precision != "bf16":
        raise ConfigError("dist.param_dtype=bf16 runs the model under bf16 autocast (its own fp32 tensors, such as "
                          f"timestep features, meet bf16 weights): set train.precision=bf16, not '{cfg.train.precision}'")
    if cfg.dist.grad_accum > 1 and cfg.train.objective == "dmd":
        raise ConfigError("dist.grad_accum > 1 is for the teacher, teacher forcing and ODE stages; the DMD stage "
                          "updates with its whole batch (use more processes or a smaller train.batch_size)")
    if cfg.train.batch_size % cfg.dist.grad_accum:
        raise ConfigError(f"train.batch_size={cfg.train.batch_size} (the global batch) is not divisible by "
                          f"dist.grad_accum={cfg.dist.grad_accum}")
    if not cfg.dmd.t_min < cfg.dmd.t_max:
        raise ConfigError(f"dmd.t_min={cfg.dmd.t_min} must be smaller than dmd.t_max={cfg.dmd.t_max}")


# --------------------------------------------------------------------------------------------------
# YAML files and overrides


def _parse_value(text: str) -> Any:
    """`--set a.b=VALUE`: VALUE is read as YAML, so 3, 3e-4, true, [1, 2] and plain strings work."""
    try:
        return yaml.safe_load(text)
    except (yaml.YAMLError, ValueError):  # ValueError: YAML-shaped but impossible, e.g. the date 2024-13-45
        return text


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `a.b=value` strings to a nested dict (before it is typed, so errors name the key)."""
    data = copy.deepcopy(data)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' is not of the form section.key=value")
        key, text = item.split("=", 1)
        parts = key.strip().split(".")
        node = data
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override '{item}': '{part}' is not a section")
        node[parts[-1]] = _parse_value(text)
    return data


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (yaml.YAMLError, ValueError) as e:  # ValueError: not UTF-8 text, or an impossible date / number
        raise ConfigError(f"config file {path} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return data


def load_config(path: str | Path | None = None, overrides: list[str] | None = None, model_only: bool = False) -> Config:
    data = load_yaml(path) if path else {}
    return config_from_dict(apply_overrides(data, overrides or []), model_only)


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def save_config(cfg: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))


def model_config_from_dict(data: dict[str, Any]) -> ModelConfig:
    return _build(ModelConfig, data, "model")


RUN_SETTINGS = ("world", "data", "sample", "schedule")  # what sampling a model needs besides its architecture


def run_settings(cfg: Config) -> dict[str, Any]:
    """The sections of a run's config that sampling and evaluation read; every exported model file carries them."""
    return {k: to_dict(getattr(cfg, k)) for k in RUN_SETTINGS}


def settings_config(saved: dict[str, Any], overrides: list[str]) -> Config:
    """A Config from a run's saved settings (`run_settings`, or a whole saved config; {} = defaults), with
    `sample.*` overrides applied."""
    for item in overrides:
        if not item.startswith("sample."):
            raise ConfigError(f"this command only takes sample.* overrides, got '{item}'")
    data = apply_overrides({k: saved.get(k) or {} for k in RUN_SETTINGS}, overrides)
    return _build(Config, data)
