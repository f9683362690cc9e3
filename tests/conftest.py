"""Shared fixtures: tiny seeded models on the CPU (tests take seconds)."""

import contextlib
import json
import warnings

import pytest
import torch

from mirai import checkpoint as ckpt, prepare
from mirai.config import ModelConfig, PrepareConfig, config_from_dict
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


@contextlib.contextmanager
def no_warnings():
    """Any warning raised inside is an error, PyTorch's warn-once ones included (`torch.set_warn_always`:
    a TORCH_WARN_ONCE already fired by an earlier test would otherwise stay silent here)."""
    always = torch.is_warn_always_enabled()
    torch.set_warn_always(True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            yield
    finally:
        torch.set_warn_always(always)


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


def tiny_vae_folder(path):
    """diffusers' AutoencoderKLWan at its test size (base_dim 3, z_dim 16), random weights and non-trivial latent
    statistics, saved to `path`; returns the diffusers model."""
    from diffusers import AutoencoderKLWan

    torch.manual_seed(0)
    vae = AutoencoderKLWan(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                           temperal_downsample=[False, True, True], latents_mean=torch.linspace(-1, 1, 16).tolist(),
                           latents_std=torch.linspace(0.5, 2, 16).tolist())
    vae.save_pretrained(path)
    return vae.eval()


def tiny_text_encoder_folder(path, d_model: int = 32):
    """A UMT5 encoder of width 32 + ByT5Tokenizer (byte-level: no vocabulary files), saved to `path`."""
    import transformers

    tokenizer = transformers.ByT5Tokenizer()
    config = transformers.UMT5Config(vocab_size=len(tokenizer), d_model=d_model, d_kv=8, d_ff=64, num_layers=2,
                                     num_heads=4, relative_attention_num_buckets=8)
    torch.manual_seed(0)
    model = transformers.UMT5EncoderModel(config).eval()
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return model, tokenizer


def write_video_folder(root, names=("a", "b", "c"), frames: int = 12, size=(24, 40), fps: int = 8):
    """Small synthetic mp4 clips of the world (resized to `size`) with a caption .txt beside each."""
    import imageio.v3 as iio
    import numpy as np

    from mirai.config import WorldConfig
    from mirai.data.world import make_clip

    root.mkdir(parents=True, exist_ok=True)
    world = WorldConfig(image_size=size[1], sprite_sizes=[8])
    for i, name in enumerate(names):
        clip = (make_clip(world, 0, i, frames).frames[:, : size[0]] * 255).astype(np.uint8)
        iio.imwrite(root / f"{name}.mp4", clip, fps=fps, codec="libx264", plugin="FFMPEG", macro_block_size=1)
        (root / f"{name}.txt").write_text(f"clip {name} of the world")
    return root


def make_caption_run(root, sample: dict | None = None):
    """A caption model on a prepared cache in `root`: three captioned 8-frame videos (identity autoencoder: 16x16
    pixels), a tiny UMT5 text encoder, and a random model on it saved as `root/run` (as `mirai train` writes)."""
    write_video_folder(root / "videos", names=("a", "b", "c"), frames=8)
    tiny_text_encoder_folder(root / "text")
    prepare.prepare(root / "videos", root / "cache", PrepareConfig(frames=4, height=16, width=16, text_len=8,
                                                                   text_encoder=str(root / "text")), quiet=True)
    (root / "run").mkdir()
    settings = {"data": {"source": "cache", "path": str(root / "cache"), "clip_frames": 4}, "sample": sample or {}}
    ckpt.save_model(make_model(text_dim=32, seed=3), root / "run" / "model.safetensors", {"settings": settings})
    return root / "run"


@pytest.fixture
def model():
    return make_model()


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
