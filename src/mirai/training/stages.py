"""The stages by `train.objective`, and their composition: foresight is a term given to the DMD stage.

To add a stage, write a `mirai.training.stage.Stage` and add a builder here; to add another generator loss
to DMD, write a `mirai.training.dmd.GeneratorTerm` and add it in `build_dmd`. The loop is not edited.
"""

from __future__ import annotations

from collections.abc import Callable

from ..config import Config
from .dmd import DMDStage
from .foresight import ForesightTerm
from .stage import Stage
from .supervised import ODEStage, TeacherForcingStage, TeacherStage


def build_dmd(cfg: Config, quiet: bool = False) -> DMDStage:
    """Causal-Forcing's DMD stage; with `foresight.enabled`, Video-Mirai's alignment term added to it."""
    stage = DMDStage(cfg)
    stage.quiet = quiet
    if cfg.foresight.enabled:
        stage.add_term(ForesightTerm(cfg, teacher=stage.teacher, generator=stage.model, device=stage.device))
    return stage


STAGES: dict[str, Callable[[Config, bool], Stage]] = {
    "bidirectional": lambda cfg, quiet: TeacherStage(cfg),
    "teacher_forcing": lambda cfg, quiet: TeacherForcingStage(cfg),
    "ode": lambda cfg, quiet: ODEStage(cfg, quiet),
    "dmd": build_dmd,
}


def build_stage(cfg: Config, quiet: bool = False) -> Stage:
    """The stage of `cfg.train.objective` (validated by the config)."""
    return STAGES[cfg.train.objective](cfg, quiet)
