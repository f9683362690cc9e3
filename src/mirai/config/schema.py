"""Building typed sections from (partial) dicts: type checks with "did you mean" for unknown keys, value ranges,
and the checks across sections. Every config the library reads goes through `build`."""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from typing import Any

from .sections import DIST_STRATEGIES, MODEL_PRESETS, Config, ConfigError, ModelConfig, WorldConfig

def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check `value` against the annotation `tp`, converting the harmless cases (int -> float)."""
    origin = typing.get_origin(tp)
    if tp is Any:  # a free-form fragment (e.g. a demo stage's config keys): checked where it is built into a config
        return value
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
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}': expected a mapping, got {value!r}")
        _, item = typing.get_args(tp)
        return {str(k): _coerce(v, item, f"{key}.{k}") for k, v in value.items()}
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


def build(cls: type, data: Any, section: str = "") -> Any:
    """A dataclass `cls` (a config section, or any typed settings such as the demo's) from a partial dict, checked:
    unknown keys (with a "did you mean"), types and value ranges name the key."""
    return _build(cls, data, section)


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
                   sink_chunks=NON_NEGATIVE, window_chunks=NON_NEGATIVE,
                   recache_every=NON_NEGATIVE),
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
    if cfg.data.source not in ("synthetic", "folder", "cache", "random"):
        raise ConfigError(f"data.source must be 'synthetic', 'folder', 'cache' or 'random', got '{cfg.data.source}'")
    if cfg.prepare.missing_caption not in ("skip", "empty"):
        raise ConfigError(f"prepare.missing_caption must be 'skip' or 'empty', got '{cfg.prepare.missing_caption}'")
    if cfg.data.source == "synthetic" and cfg.world.image_size != m.image_size:
        raise ConfigError(f"world.image_size={cfg.world.image_size} differs from model.image_size={m.image_size}")
    for key, value in (("sample.precision", cfg.sample.precision), ("distill.precision", cfg.distill.precision)):
        if value not in ("auto", "bf16", "fp32"):
            raise ConfigError(f"{key} must be 'auto', 'bf16' or 'fp32', got '{value}'")
    if cfg.sample.solver not in ("euler", "renoise"):
        raise ConfigError(f"sample.solver must be 'euler' or 'renoise', got '{cfg.sample.solver}'")
    if cfg.sample.switch not in ("recache", "keep"):
        raise ConfigError(f"sample.switch must be 'recache' or 'keep', got '{cfg.sample.switch}'")
    if cfg.sample.positions not in ("window", "absolute"):
        raise ConfigError(f"sample.positions must be 'window' or 'absolute', got '{cfg.sample.positions}'")
    if cfg.sample.kv_cache_dtype not in ("auto", "fp32", "bf16"):
        raise ConfigError(f"sample.kv_cache_dtype must be 'auto', 'fp32' or 'bf16', got '{cfg.sample.kv_cache_dtype}'")
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
    if f.replay_device not in ("cpu", "device"):
        raise ConfigError(f"foresight.replay_device must be 'cpu' or 'device', got '{f.replay_device}'")
    if not f.window or min(f.window) < 0:
        raise ConfigError(f"foresight.window must be a non-empty list of offsets >= 0, got {f.window}")
    if not 0 <= f.student_block <= m.depth:
        raise ConfigError(f"foresight.student_block={f.student_block} must be within 0..model.depth={m.depth}")
    if f.encoder_block < 0:  # its upper bound is the encoder's depth, which may differ (checked when it loads)
        raise ConfigError(f"foresight.encoder_block={f.encoder_block} must be >= 0")
    validate_world(cfg.world)
    for key in ("generator", "critic", "predictor"):
        if getattr(cfg.dist, key) not in DIST_STRATEGIES:
            raise ConfigError(f"dist.{key} must be 'ddp' or 'fsdp', got '{getattr(cfg.dist, key)}'")
    if cfg.dist.teacher not in ("replicate", "fsdp", "offload"):
        raise ConfigError(f"dist.teacher must be 'replicate', 'fsdp' or 'offload', got '{cfg.dist.teacher}'")
    if cfg.dist.param_dtype not in ("fp32", "bf16"):
        raise ConfigError(f"dist.param_dtype must be 'fp32' or 'bf16', got '{cfg.dist.param_dtype}'")
    if cfg.dist.param_dtype == "bf16" and cfg.train.precision != "bf16":
        raise ConfigError("dist.param_dtype=bf16 runs the model under bf16 autocast (its own fp32 tensors, such as "
                          f"timestep features, meet bf16 weights): set train.precision=bf16, not '{cfg.train.precision}'")
    if cfg.dist.frozen_dtype not in ("fp32", "bf16"):
        raise ConfigError(f"dist.frozen_dtype must be 'fp32' or 'bf16', got '{cfg.dist.frozen_dtype}'")
    if cfg.dist.grad_accum > 1 and cfg.dmd.term_grad_every:  # each part's norm would be of one micro-batch
        raise ConfigError("dmd.term_grad_every is a diagnostic of whole-batch updates: set it to 0 with "
                          f"dist.grad_accum={cfg.dist.grad_accum}")
    if cfg.train.batch_size % cfg.dist.grad_accum:
        raise ConfigError(f"train.batch_size={cfg.train.batch_size} (the global batch) is not divisible by "
                          f"dist.grad_accum={cfg.dist.grad_accum}")
    if not cfg.dmd.t_min < cfg.dmd.t_max:
        raise ConfigError(f"dmd.t_min={cfg.dmd.t_min} must be smaller than dmd.t_max={cfg.dmd.t_max}")


# --------------------------------------------------------------------------------------------------
# YAML files and overrides
