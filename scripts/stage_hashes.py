"""Fingerprint what every training stage writes, to show a refactor changes no number.

Runs each stage (bidirectional teacher, teacher forcing, ODE pairs + student, DMD, DMD + foresight) for a
few steps at toy size through the `mirai train` command, then hashes every tensor of every file the stage
leaves (exported model, training state, ODE pair shards). Metadata (paths, times) is not hashed.

    python scripts/stage_hashes.py --out hashes.json          # record
    python scripts/stage_hashes.py --check hashes.json        # compare; exit 1 on any difference

Hashes are bit-exact fingerprints: they hold on one machine and one torch build, not across CPU kinds
(AVX2 and AVX-512 kernels round differently). Record and check on the same machine.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file

from mirai.cli import main as mirai

TOY = [
    "world.image_size=16", "world.sprite_sizes=[5]", "world.num_patterns=1",
    "model.dim=32", "model.depth=2", "model.heads=2", "model.patch_size=4", "model.image_size=16",
    "data.clip_frames=6", "sample.timesteps=[1000,500]", "sample.solver=renoise", "sample.context_noise=0.1",
    "train.batch_size=2", "train.sample_every=0", "train.log_every=1", "train.precision=fp32",
    "train.warmup_steps=2", "train.ema_decay=0.9", "train.threads=1",
]


def stage_commands(root: Path) -> dict[str, list[str]]:
    teacher, ar, ode = root / "teacher", root / "ar", root / "ode"
    return {
        "teacher": ["train.objective=bidirectional", "train.steps=4", "train.ckpt_every=2", f"train.out_dir={teacher}"],
        "teacher_forcing": ["train.objective=teacher_forcing", "train.steps=4", "train.ckpt_every=2",
                            "train.context_noise_max=0.2", f"train.out_dir={ar}"],
        "ode": ["train.objective=ode", "train.steps=4", "train.ckpt_every=2", f"train.init_from={ar}",
                f"distill.teacher={ar}", "distill.num_videos=4", "distill.shard_size=2", "distill.teacher_steps=4",
                "distill.teacher_cfg_scale=2.0", f"train.out_dir={ode}"],
        "dmd": ["train.objective=dmd", "train.steps=6", "train.ckpt_every=3", f"train.init_from={ode}",
                f"dmd.teacher={teacher}", "dmd.critic_updates_per_gen=2", "dmd.real_cfg_scale=2.0",
                "train.loss_t_floor=1.0", f"train.out_dir={root / 'dmd'}"],
        "dmd_foresight": ["train.objective=dmd", "train.steps=6", "train.ckpt_every=3", f"train.init_from={ode}",
                          f"dmd.teacher={teacher}", "dmd.critic_updates_per_gen=2", "dmd.real_cfg_scale=2.0",
                          "train.loss_t_floor=1.0", "foresight.enabled=true", "foresight.weight=0.5",
                          f"train.out_dir={root / 'dmd_foresight'}"],
    }


def file_hash(path: Path) -> str:
    tensors = load_file(path)
    h = hashlib.sha256()
    for key in sorted(tensors):
        t = tensors[key].contiguous().reshape(-1)
        h.update(key.encode())
        h.update(str(t.dtype).encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def run_all() -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for name, sets in stage_commands(root).items():
            args = ["train"] + [a for s in TOY + sets for a in ("--set", s)]
            if mirai(args) != 0:
                raise SystemExit(f"stage {name} failed")
            folder = Path(sets[-1].split("=", 1)[1])
            files = sorted(folder.glob("*.safetensors")) + sorted(folder.glob("ode_pairs/*.safetensors"))
            out[name] = {str(f.relative_to(folder)): file_hash(f) for f in files}
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", help="write the hashes to this JSON file")
    p.add_argument("--check", help="compare with the hashes in this JSON file")
    args = p.parse_args()
    torch.set_num_threads(1)
    hashes = run_all()
    if args.out:
        Path(args.out).write_text(json.dumps(hashes, indent=1) + "\n")
    if args.check:
        expected = json.loads(Path(args.check).read_text())
        bad = [f"{s}/{f}" for s in expected for f in expected[s] if hashes.get(s, {}).get(f) != expected[s][f]]
        print(json.dumps({"checked": sum(len(v) for v in expected.values()), "different": bad}))
        return 1 if bad else 0
    print(json.dumps(hashes, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
