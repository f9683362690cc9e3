#!/usr/bin/env bash
# The GPU check of issue 30, one command for the day a GPU is lent (random weights at real size, nothing is
# downloaded; about 8 minutes on one H100):
#   scripts/gpu_check.sh OUT.json            Wan2.1-1.3B at 832x480, on the GPU
#   scripts/gpu_check.sh OUT.json --toy      the same steps at toy size on the CPU (what the tests run)
# (a) streaming speed of the causal generator: 21 latent frames in chunks of 3, 4 steps, bf16, KV cache; denoising
#     only and with every chunk decoded by a Wan2.1 VAE as it streams; first-chunk latency; warm-up excluded.
# (b) one DMD + foresight training step of configs/wan/dmd_foresight_1.3b.yaml (a 1.3B real score: fits one GPU):
#     its peak memory against `mirai plan`'s for the same step.
# (c) everything, with the device, in OUT.json.
set -euo pipefail
out="${1:?usage: scripts/gpu_check.sh OUT.json [--toy]}"
toy="${2:-}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

if [ "$toy" = "--toy" ]; then
    device=cpu; preset=wan-tiny; vae=random-tiny; frames=9
    sizes=(--set model.preset=wan-tiny --set train.init_from=preset:wan-tiny --set dmd.teacher=preset:wan-tiny
           --set dmd.critic=preset:wan-tiny --set prepare.text_len=16 --set data.clip_frames=9)
else
    device=cuda; preset=wan1.3b; vae=random; frames=21
    sizes=()
fi

mirai bench fps --preset "$preset" --frames "$frames" --vae "$vae" --device "$device" --json > "$work/fps.json"
mirai bench step --config configs/wan/dmd_foresight_1.3b.yaml --set train.batch_size=1 --set dist.grad_accum=1 \
    "${sizes[@]}" --device "$device" --json > "$work/step.json"

python - "$work/fps.json" "$work/step.json" "$out" "$toy" <<'PY'
import json, platform, sys

import torch

fps, step, out, toy = json.load(open(sys.argv[1])), json.load(open(sys.argv[2])), sys.argv[3], sys.argv[4]
device = torch.cuda.get_device_name(0) if torch.cuda.is_available() and not toy else f"cpu ({platform.processor()})"
report = {"device": device, "toy": bool(toy), "torch": torch.__version__, "fps": fps, "dmd_foresight_step": step,
          "reference_fps_h100": {"Self-Forcing": 17.0, "LongLive": 20.7}}
json.dump(report, open(out, "w"), indent=2)
worst = max(abs(s["peak_ratio"] - 1) for s in step["steps"])
print(f"{device}: {fps['fps']:.1f} latent fps denoising, {fps['with_vae']['video_fps']:.1f} video fps with the VAE, "
      f"first chunk {fps['first_chunk_latency_s']:.3f} s; DMD+foresight step peak within {worst:.1%} of the plan")
PY
echo "wrote $out"
