"""Shared fixtures: tiny seeded models on the CPU (tests take seconds)."""

import json

import pytest
import torch

from mirai.config import ModelConfig, config_from_dict
from mirai.models.dit import CausalVideoDiT

# The least eval.json that `mirai compare` reads (eval.report.EVAL_KEYS): for tests of the report's inputs
EVAL_JSON = ('{"summary": {}, "per_seed": {}, "curves": {}, "seeds": [0], "frames": 8, "clip_frames": 4, "run": "r", '
             '"samples": 2, "extractor": {}}')


def make_model(attention: str = "causal", frames_per_chunk: int = 2, prompt_vocab=(), seed: int = 0, **kw):
    """A tiny model with random weights everywhere (adaLN-Zero would otherwise make outputs trivially 0)."""
    cfg = ModelConfig(preset="tiny", dim=32, depth=2, heads=2, patch_size=4, image_size=16,
                      frames_per_chunk=frames_per_chunk, attention=attention, prompt_vocab=list(prompt_vocab), **kw)
    torch.manual_seed(seed)
    model = CausalVideoDiT(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.1)
    return model


def stage_cfg(base: dict, out, **sections):
    """`base` (a config dict) with quick-run train settings writing to `out`, then `sections` merged in."""
    data = json.loads(json.dumps(base))
    data.setdefault("train", {}).update({"batch_size": 2, "sample_every": 0, "ckpt_every": 2, "log_every": 1,
                                         "out_dir": str(out), "precision": "fp32"})
    for key, value in sections.items():
        data.setdefault(key, {}).update(value)
    return config_from_dict(data)


def tiny_cfg(tmp_path, **train_kw):
    """A stage-1 config at toy size (16 px frames, 4-frame clips, a 2-block model) writing to tmp_path."""
    return config_from_dict({
        "world": {"image_size": 16, "sprite_sizes": [5]},
        "model": {"preset": "tiny", "dim": 32, "depth": 2, "heads": 2, "patch_size": 4, "image_size": 16},
        "data": {"clip_frames": 4},
        "train": {"steps": 6, "batch_size": 2, "lr": 1e-3, "warmup_steps": 2, "ckpt_every": 2, "sample_every": 0,
                  "log_every": 1, "out_dir": str(tmp_path), "precision": "fp32", **train_kw},
    })


@pytest.fixture
def model():
    return make_model()


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
