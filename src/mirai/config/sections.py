"""The sections of a run's configuration: typed dataclasses with a comment on every field, and the model size
presets. Loading, checking and overriding them is `config.schema` and `config.files`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


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
    #                            "cache" (latents and caption embeddings written by `mirai prepare`) or "random"
    #                            (Gaussian clips of the model's frame shape and, for a caption model, Gaussian
    #                            caption embeddings of prepare.text_len x model.text_dim: for plans, GPU checks and
    #                            speed tests at real size without data; it teaches nothing)
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
    # Wan2.1-T2V-14B: the paper's real score and foresight encoder (same tokens as the 1.3B, 40 layers of 5120).
    "wan14b": dict(arch="wan", prediction="velocity", dim=5120, depth=40, heads=40, ffn_dim=13824, text_dim=4096,
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
    positions: str = "window"  # temporal RoPE positions of a rolling cache: "window" (re-indexed at each eviction,
    #                            StreamingLLM-style: the sinks, then the window right after them, so no position
    #                            exceeds (sink + window + 1) chunks) or "absolute" (each frame keeps its index in the
    #                            rollout: the sinks drift ever further from the queries, past any trained range)
    kv_cache_dtype: str = "auto"  # "auto" (the autocast dtype where autocast is on for the cache's device, else
    #                               fp32: under bf16 autocast the keys are bf16 already, an fp32 cache only doubles
    #                               its memory), "fp32" or "bf16"
    precision: str = "auto"  # "auto" (bf16 autocast on a CUDA GPU with native bf16; fp32 on a CPU), "bf16" or "fp32"
    switch: str = "recache"  # a prompt switch (`mirai sample --switch`): "recache" (the cached keys recomputed under
    #                          the new prompt, LongLive's KV re-cache: obeyed within a chunk) or "keep" (the past's
    #                          keys kept: the new prompt acts through the new chunks alone)
    recache_every: int = 0  # recompute the cache's keys from the frames it holds (at context_noise) every N chunks:
    #                         a rolling window's keys then lose what evicted chunks wrote into them; 0 = never


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
    precision: str = "auto"  # the teacher's rollouts: "auto" (bf16 autocast on a CUDA GPU with native bf16; fp32
    #                          on a CPU), "bf16" or "fp32"


@dataclass
class DMDConfig:
    """Stage 3, self-rollout distribution matching distillation (see `mirai.dmd`)."""

    teacher: str = ""  # the bidirectional teacher: frozen real score (a reference: a Mirai run or file, a diffusers
    #                    Wan folder); its width and depth may differ from the generator's, its tokens may not
    critic: str = ""  # the critic's (fake score's) initial weights, a bidirectional reference with the generator's
    #                   tokens (e.g. a 1.3B base beside a 14B teacher); "" = a copy of the teacher
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
    replay_device: str = "cpu"  # where the replay buffer is kept: "cpu" (pinned host memory when CUDA is there,
    #                             moved to the device when a pair is replayed: the same numbers, none of the device's
    #                             memory; ~10 GB at Wan 1.3B's size) or "device" (on the training device)


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
    #                             process, no gradient to reduce), "fsdp" (sharded, gathered block by block) or
    #                             "offload" (every process keeps it in host memory and copies one block at a time
    #                             to its GPU: one block's weights on the GPU, the model over the host link per
    #                             forward; for one GPU)
    param_dtype: str = "fp32"  # FSDP mixed precision: "bf16" computes with bf16 copies of the sharded fp32
    #                            weights and reduces gradients in fp32 (needs train.precision=bf16); "fp32" keeps
    #                            fp32
    grad_accum: int = 1  # micro-batches per optimiser step (every stage; DMD: the generator's, the critic's and
    #                      the foresight predictor's updates)
    frozen_dtype: str = "fp32"  # dtype of the frozen DMD real score and of a separate foresight encoder: "bf16"
    #                             halves their memory (cast on the CPU, before they reach the device; they then run
    #                             under bf16 autocast); the trained critic stays fp32
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
