"""Experiment (issue 11, "a strong base"): does a small autoencoder trained on the world help the teacher?

    python scripts/lever_world_ae.py ae      --out runs/lever --down 4 --channels 8 --steps 2000
    python scripts/lever_world_ae.py teacher --out runs/lever --down 4 --channels 8 --steps 1200   # on its latents
    python scripts/lever_world_ae.py teacher --out runs/lever --pixels --steps 1200               # the reference

`ae` trains a conv autoencoder (frames 32x32 -> (32/down)^2 x channels, per frame) on real clips and scores its
reconstructions with the world's probes. `teacher` trains `configs/tiny_teacher.yaml` (patch chosen so the
transformer sees 16 tokens per frame either way) on the latents, samples 32 videos per sampling seed whole
(32 Euler steps, CFG 3), decodes and prints the probes. A measurement script, not a library feature: the
dataset is swapped in by patching the stage module's `build_dataset`.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import mirai.training.supervised as supervised
from mirai import checkpoint as ckpt
from mirai.config import load_config
from mirai.data.datasets import SyntheticVideoDataset
from mirai.data.frames import to_model_range
from mirai.data.prompt import PROMPT
from mirai.data.world import make_clip
from mirai.diffusion.schedule import FlowSchedule
from mirai.eval.probes import train_probe
from mirai.rng import chunk_noise, derive_seed, generator
from mirai.sampling.inputs import unseen_prompts
from mirai.sampling.rollout import sample_whole
from mirai.training.loop import train

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "tiny_teacher.yaml"


class WorldAE(nn.Module):
    """Conv encoder/decoder, `down` = 2 or 4: the two autoencoders measured in issue 11's note, layer for layer."""

    def __init__(self, channels: int, down: int, width: int = 32):
        super().__init__()
        act, w, c = nn.SiLU, width, channels
        if down == 4:
            self.enc = nn.Sequential(nn.Conv2d(3, w, 3, padding=1), act(), nn.Conv2d(w, w, 4, 2, 1), act(),
                                     nn.Conv2d(w, 2 * w, 3, padding=1), act(), nn.Conv2d(2 * w, 2 * w, 4, 2, 1), act(),
                                     nn.Conv2d(2 * w, c, 1))
            self.dec = nn.Sequential(nn.Conv2d(c, 2 * w, 3, padding=1), act(), nn.Conv2d(2 * w, 2 * w, 3, padding=1),
                                     act(), nn.ConvTranspose2d(2 * w, w, 4, 2, 1), act(), nn.Conv2d(w, w, 3, padding=1),
                                     act(), nn.ConvTranspose2d(w, w, 4, 2, 1), act(), nn.Conv2d(w, 3, 3, padding=1))
        else:
            self.enc = nn.Sequential(nn.Conv2d(3, w, 3, padding=1), act(), nn.Conv2d(w, 2 * w, 4, 2, 1), act(),
                                     nn.Conv2d(2 * w, 2 * w, 3, padding=1), act(), nn.Conv2d(2 * w, c, 1))
            self.dec = nn.Sequential(nn.Conv2d(c, 2 * w, 3, padding=1), act(), nn.Conv2d(2 * w, 2 * w, 3, padding=1),
                                     act(), nn.ConvTranspose2d(2 * w, w, 4, 2, 1), act(), nn.Conv2d(w, w, 3, padding=1),
                                     act(), nn.Conv2d(w, 3, 3, padding=1))
        self.latent_noise = 0.1 if down == 4 else 0.05  # of the latents' std, added in training


def clips(world, seed: int, num: int, frames: int = 8):
    cs = [make_clip(world, seed, i, frames) for i in range(num)]
    return torch.from_numpy(np.stack([to_model_range(c.frames) for c in cs]).astype(np.float32)), cs


def train_ae(args, world) -> None:
    ae = WorldAE(args.channels, args.down)
    opt = torch.optim.Adam(ae.parameters(), 1e-3)
    g = torch.Generator().manual_seed(0)
    pool = clips(world, derive_seed(0, "ae-train"), 4000)[0].flatten(0, 1)
    for step in range(args.steps):
        x = pool[torch.randint(len(pool), (32,), generator=g)]
        z = ae.enc(x)
        z = z + ae.latent_noise * z.detach().std() * torch.randn(z.shape, generator=g)  # a decoder robust to imprecise latents
        y = ae.dec(z)
        loss = F.mse_loss(y, x) + 0.5 * F.l1_loss(y, x)
        opt.zero_grad()
        loss.backward()
        opt.step()
        for group in opt.param_groups:  # cosine to 0.1x
            group["lr"] = 1e-3 * (0.1 + 0.45 * (1 + np.cos(np.pi * step / args.steps)))
        if step % 200 == 0:
            print(f"ae step {step} loss {loss.item():.5f}", flush=True)
    torch.save(ae.state_dict(), args.out / "ae.pt")
    x, cs = clips(world, derive_seed(0, "real-clips"), 64)
    prompts = np.stack([PROMPT.encode(c.scene) for c in cs])
    with torch.no_grad():
        y = ae.dec(ae.enc(x.flatten(0, 1))).clamp(-1, 1).view_as(x)
    probe = train_probe(world)
    for name, v in (("real", x), ("reconstructed", y)):
        print(name, json.dumps({k: round(s, 3) for k, s in probe.score(v, prompts).summary().items()}), flush=True)


def train_teacher(args, world_cfg) -> None:
    run = args.out / ("teacher_pixels" if args.pixels else "teacher_latents")
    cfg = load_config(CONFIG, [f"train.steps={args.steps}", f"train.out_dir={run}", "train.sample_every=0",
                               f"train.ckpt_every={min(args.steps, 200)}", "train.log_every=50"])
    decode = None
    if not args.pixels:
        ae = WorldAE(args.channels, args.down)
        ae.load_state_dict(torch.load(args.out / "ae.pt"))
        ae.eval().requires_grad_(False)
        side = cfg.world.image_size // args.down
        cfg.model.channels, cfg.model.image_size, cfg.model.patch_size = args.channels, side, side // 4
        base = SyntheticVideoDataset(cfg.world, cfg.data.seed, cfg.data.clip_frames)
        with torch.no_grad():
            z = ae.enc(torch.stack([base[i]["video"] for i in range(200)]).flatten(0, 1))
        mu, sd = z.mean((0, 2, 3)).view(1, -1, 1, 1), z.std((0, 2, 3)).view(1, -1, 1, 1)

        class Latents:
            def __len__(self):
                return len(base)

            def __getitem__(self, i):
                item = base[i]
                with torch.no_grad():
                    return {"video": (ae.enc(item["video"]) - mu) / sd, "prompt": item["prompt"]}

        supervised.build_dataset = lambda cfg: Latents()

        def decode(v):
            B, T = v.shape[:2]
            return ae.dec((v * sd + mu).flatten(0, 1)).view(B, T, 3, cfg.world.image_size, cfg.world.image_size)
    t0 = time.time()
    train(cfg, quiet=True)
    print(f"teacher trained in {time.time() - t0:.0f} s", flush=True)
    model, probe = ckpt.load_model(run).eval(), train_probe(cfg.world)
    cfg.sample.steps, cfg.sample.cfg_scale, cfg.sample.solver = 32, 3.0, "euler"
    for seed in args.sampling_seeds:
        prompts = unseen_prompts(cfg.world, 32, seed)
        noise = chunk_noise(seed, 32, 1, (cfg.data.clip_frames, *model.cfg.frame_shape))
        with torch.no_grad():
            v = sample_whole(model, FlowSchedule.from_config(cfg.schedule), noise, torch.from_numpy(prompts),
                             sample=cfg.sample, generator=generator(seed, "sampler"))
            v = (decode(v) if decode else v).clamp(-1, 1)
        summary = probe.score(v, prompts).summary()
        print(f"sampling seed {seed}", json.dumps({k: round(s, 3) for k, s in summary.items()}), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", choices=["ae", "teacher"])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--down", type=int, choices=[2, 4], default=4)
    p.add_argument("--channels", type=int, default=8)
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--pixels", action="store_true", help="teacher: the pixel-space reference")
    p.add_argument("--sampling-seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    world = load_config(CONFIG, []).world
    train_ae(args, world) if args.what == "ae" else train_teacher(args, world)


if __name__ == "__main__":
    main()
