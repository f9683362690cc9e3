"""What a training stage is, for the loop (`mirai.training.loop`).

A stage owns its modules, optimisers and extra state and does one optimisation step on a batch. The loop
owns everything around it: batches, the LR of the generator's optimiser, EMA, logging, progress, sample
sheets and checkpoints. Adding a stage means writing a `Stage` and registering it in
`mirai.training.stages`; the loop does not change.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from .. import checkpoint as ckpt, distributed as dist, wan_io
from ..config import Config, ConfigError
from ..data.datasets import unconditional_prompt
from ..data.prompt import PROMPT
from ..device import pick_device
from ..models.attention import use_flex
from ..diffusion.schedule import FlowSchedule
from ..data.cache import read_cache_manifest, read_empty_prompt
from ..models.build import build_model, is_conditional
from ..references import load_reference


@dataclass
class StepOutput:
    """What one stage step reports to the loop."""

    record: dict[str, float] = field(default_factory=dict)  # scalars for metrics.jsonl and the progress bar
    generator_update: int | None = None  # index of the generator update made by this step (the EMA follows
    #                                       it); None when the generator was not updated
    log: bool = False  # log this step even between `train.log_every` steps


class Stage:
    """Base of every stage. A subclass sets in its __init__:

    model (the trained generator), ema (its average, the exported model), opt (the generator's optimiser,
    whose LR the loop schedules), modules and optimizers (everything checkpointed; modules["model"] is the
    generator; an optimiser's name is its module's), forward_model (what the generator's forward passes
    call: the model, or its DDP / compiled wrapper), dataset (training items), sample_dataset (clips whose
    prompts the sample sheets use); and implements `step`.

    A step gets this process's rows of the global batch, and a generator whose per-sample draws are those
    rows' (`rng.BatchGenerator`); `distribute` wraps the modules once when several processes train.
    """

    name = "stage"
    progress_keys: tuple[str, ...] = ("loss",)  # record entries shown on the progress bar
    model: nn.Module
    ema: nn.Module
    opt: torch.optim.Optimizer
    modules: dict[str, nn.Module]
    optimizers: dict[str, torch.optim.Optimizer]
    forward_model: nn.Module

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.device = pick_device(cfg.train.device)
        use_flex(cfg.train.flex_attention)
        self.schedule = FlowSchedule.from_config(cfg.schedule)
        # a caption model's "no prompt": the empty caption
        uncond = unconditional_prompt(cfg.data, cfg.model, cfg.prepare.text_len)
        self.uncond = uncond.to(self.device) if uncond is not None else None

    def step(self, batch: dict[str, Tensor], step: int, gen: torch.Generator) -> StepOutput:
        raise NotImplementedError

    def distribute(self) -> None:
        """Per `cfg.dist`: activation checkpointing, and in a multi-process run the generator wrapped by DDP or
        sharded by FSDP2 (its EMA sharded alike). Called by the loop once, before a checkpoint is loaded."""
        d = self.cfg.dist
        dist.checkpoint_blocks(self.model, d.activation_checkpointing)
        if not dist.is_distributed():
            return
        compiled = self.forward_model is not self.model  # the stage compiles its generator (train.compile)
        self.forward_model = dist.parallelize(self.model, d.generator, d, self.device, self.opt)
        if d.generator == "fsdp":
            dist.shard(self.ema, d, self.device)
        if compiled:
            self.forward_model = torch.compile(self.forward_model)

    def extra_state(self) -> dict[str, Tensor]:
        """Tensors besides modules and optimisers that a resumed run needs."""
        return {}

    def load_extra_state(self, tensors: dict[str, Tensor]) -> None:
        pass

    def prompt_of(self, batch: dict[str, Tensor]) -> Tensor | None:
        """The batch's prompts for a conditional generator, None for an unconditional one."""
        return batch["prompt"] if is_conditional(self.model) else None


def resolve_model_config(cfg: Config) -> Config:
    """Fill derived model fields (the prompt vocabulary of the world) so the saved config is complete."""
    cfg = copy.deepcopy(cfg)
    if cfg.data.source == "cache" and cfg.model.conditional:  # captions: conditioned when the cache embedded them
        embedded = read_cache_manifest(cfg.data.path)["settings"]["text_encoder"]
        empty = read_empty_prompt(cfg.data.path) if embedded else None
        if empty is None:
            raise ConfigError(f"{cfg.data.path} holds no caption embeddings (prepared without --text-encoder); "
                              "set model.conditional=false")
        if cfg.model.text_dim == 0:  # the DiT's cross-attention reads embeddings of the cache's width
            cfg.model.text_dim = empty.shape[-1]
        cfg.model.prompt_vocab = []
    elif cfg.data.source == "random" and cfg.model.conditional:  # random caption embeddings of model.text_dim
        if not cfg.model.text_dim:
            raise ConfigError("data.source=random gives caption embeddings: set model.text_dim, or model.conditional=false")
        cfg.model.prompt_vocab = []
    elif cfg.model.conditional and not cfg.model.prompt_vocab:
        if cfg.data.source != "synthetic":
            raise ConfigError("model.conditional needs a dataset with prompts (data.source=synthetic); set model.conditional=false")
        if cfg.model.arch == "dit" and cfg.model.text_dim:
            raise ConfigError("model.text_dim: the DiT reads captions from a prepared cache (data.source=cache); the "
                              "world gives structured prompts (for captions of the world: `mirai world export`, then "
                              "`mirai prepare`)")
        cfg.model.prompt_vocab = PROMPT.vocab(cfg.world)
    if not cfg.model.conditional:
        cfg.model.prompt_vocab = []
    if cfg.train.objective == "bidirectional":
        cfg.model.attention = "bidirectional"
    return cfg


def init_generator(cfg: Config) -> nn.Module:
    """A fresh model, or the previous stage's weights (`train.init_from`), checked to be the same kind and size."""
    model = build_model(cfg.model)
    if cfg.train.init_from:
        # Stage 1 may start from the bidirectional base model (as Causal-Forcing starts from Wan): same weights
        # layout, only the mask differs. Later stages must start from a causal model.
        kind = None if cfg.train.objective == "teacher_forcing" else cfg.model.attention
        if wan_io.is_diffusers_folder(cfg.train.init_from) and kind == "causal":
            raise ckpt.CheckpointError(
                f"{cfg.train.init_from} is a diffusers base model (bidirectional); the {cfg.train.objective} "
                "stage starts from a causal Mirai run (stage 1 may start from the base)")
        previous = load_reference(cfg.train.init_from, cfg.model, kind, "train.init_from")
        ckpt.check_same_family(previous.cfg, cfg.model, cfg.train.init_from, f"this {cfg.train.objective} stage's model")
        ckpt.load_state(model, previous.state_dict(), cfg.train.init_from)
    return model
