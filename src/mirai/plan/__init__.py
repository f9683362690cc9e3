"""`mirai plan`: what a run needs, from one real step on fake tensors (simulate), priced per GPU kind (report)."""

from .gpus import GPUS, GPU
from .report import Plan, make_plan

__all__ = ["GPU", "GPUS", "Plan", "make_plan"]
