"""The `mirai` command line: train, sample, bench.

    mirai world export --clips 64 --out DATA [--frames 17] [--set world.image_size=32 ...]   (mp4 + caption .txt)
    mirai prepare DATA --out CACHE [--vae DIR] [--text-encoder DIR] [--set prepare.frames=17 ...] [--check]
    mirai train --config configs/tiny.yaml [--set train.steps=100 ...] [--dry-run]
    mirai sample --ckpt runs/tiny --frames 32 --out samples.mp4   (.gif, .png contact sheet, .npz)
    mirai sample --ckpt runs/cached --prompt "a red square moves left" [--negative-prompt "..."] [--context img.png]
    mirai eval --ckpt runs/tiny --frames 32 --samples 32 --seeds 0 1 2
    mirai compare runs/baseline runs/mirai --out report.html
    mirai serve [--ckpt baseline=RUN --ckpt foresight=RUN] [--host 127.0.0.1] [--port 8000]   (watch and steer live)
    mirai bench sampling --json | mirai bench train --json | mirai bench foresight --json | mirai bench fps --json
    mirai bench ddp --json      (1 process x 2 threads against 2 processes x 1 thread, the same global batch)
    torchrun --nproc_per_node N -m mirai train ...   (several processes: see mirai.distributed and the README)
    mirai import wan --transformer DIR --out runs/wan [--config configs/wan_tiny.yaml] [--set ...]
    mirai export wan runs/wan --out DIR     (a diffusers folder: WanTransformer3DModel.from_pretrained(DIR))

Bad input (unknown config keys, wrong types, missing or corrupt files) ends in one `error:` line.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

# Only what the parser needs is imported here (no torch): `mirai --help` and a bad flag answer at once. Each
# command imports what it runs.
from .config import MODEL_PRESETS, ConfigError

def user_errors() -> tuple[type[BaseException], ...]:
    """The project's errors for bad input: each ends the command with one `error:` line and exit code 2. Anything
    else (a bug) keeps its traceback. The OSErrors are those of reading inputs and writing outputs."""
    from .checkpoint import CheckpointError
    from .data.datasets import DataError
    from .eval.extractors import ExtractorUnsupported, WeightsMismatch
    from .training.optim import NonFiniteError
    from .video import OutputError

    return (ConfigError, CheckpointError, DataError, OutputError, WeightsMismatch, ExtractorUnsupported,
            NonFiniteError, FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)


class ExtractorNames:
    """The feature extractors' names as argparse choices, read from their registry only when a command asks (the
    registry's module imports torch)."""

    def names(self) -> list[str]:
        from .eval.extractors import REGISTRY

        return list(REGISTRY)

    def __contains__(self, name: object) -> bool:
        return name in self.names()

    def __iter__(self):
        return iter(self.names())


def at_least(minimum: int):
    """An argparse type: an integer >= minimum (so --frames -4 or --num 0 is refused before any work)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value
    return parse


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mirai", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("prepare", help="a folder of captioned videos -> cached latents and caption embeddings")
    r.add_argument("data", help="the video folder (clip.mp4 + clip.txt, or a captions.jsonl; see the README)")
    r.add_argument("--out", help="the cache folder to write (resumed when it exists)")
    r.add_argument("--check", action="store_true", help="only print what the folder holds; write nothing")
    r.add_argument("--vae", help="a local diffusers AutoencoderKLWan folder (default: identity, pixels)")
    r.add_argument("--text-encoder", help="a local UMT5/T5 encoder folder with its tokenizer")
    r.add_argument("--config", help="YAML whose prepare section gives frames, fps, size, ...")
    r.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a prepare.* key, e.g. --set prepare.fps=16 --set prepare.height=480")
    r.add_argument("--device", default="auto")

    w = sub.add_parser("world", help="the synthetic world as a folder of captioned videos (for `mirai prepare`)")
    w.add_argument("action", choices=["export"])
    w.add_argument("--out", required=True, help="the folder to write (clip_00000.mp4 + clip_00000.txt, ...)")
    w.add_argument("--clips", type=at_least(1), default=64, help="clips to write")
    w.add_argument("--frames", type=at_least(1), default=17, help="frames per clip")
    w.add_argument("--seed", type=int, default=0, help="clip i is the world's clip i for this seed")
    w.add_argument("--fps", type=at_least(1), default=8)
    w.add_argument("--config", help="YAML whose world section sets the world")
    w.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a world.* key, e.g. --set world.image_size=32 --set world.max_sprites=1")

    t = sub.add_parser("train", help="train a model from a YAML config")
    t.add_argument("--config", help="YAML file (configs/*.yaml); defaults are used for missing keys")
    t.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set train.steps=100 (repeatable)")
    t.add_argument("--init-from", help="start from this model file / run folder's weights")
    t.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")

    s = sub.add_parser("sample", help="roll out videos from a trained model")
    s.add_argument("--ckpt", required=True, help="a run folder or a model.safetensors file")
    s.add_argument("--frames", type=at_least(1), default=None, help="frames to generate (default: 4x the training clip)")
    s.add_argument("--out", default="samples.mp4",
                   help="output .mp4, .gif, .png (contact sheet) or .npz (uint8 frames + prompts, for `mirai eval`)")
    s.add_argument("--device", default="auto", help="auto (cuda when available), cpu, cuda, ...")
    s.add_argument("--num", type=at_least(1), default=4, help="videos to generate (shown side by side)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--prompt", help="a caption, encoded with the text encoder of the run's prepared cache")
    s.add_argument("--negative-prompt", help="a caption to guide away from (sample.cfg_scale > 1), encoded as --prompt "
                                             "(default: the empty caption)")
    s.add_argument("--switch", action="append", default=[], metavar="FRAME:PROMPT",
                   help="from model frame FRAME on (rounded up to a chunk) follow PROMPT: a caption (a model on a "
                        "cache) or an edit of each video's world prompt, e.g. 64:background=2,sprite1.color=0; "
                        "repeatable; sample.switch=recache|keep says what happens to the cached past")
    s.add_argument("--context", help="an image or clip to continue from (image-to-video), encoded with the cache's "
                                     "autoencoder")
    s.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a sample.* setting, e.g. --set sample.steps=8 --set sample.window_chunks=8")

    e = sub.add_parser("eval", help="evaluate a run's rollouts (VBench-style, probes, distances) -> eval.json/csv")
    e.add_argument("--ckpt", required=True, help="a run folder (its config.yaml gives the world and sampler)")
    e.add_argument("--frames", type=at_least(1), default=None, help="rollout length (default: 4x the training clip)")
    e.add_argument("--horizons", type=at_least(1), nargs="+", default=None, metavar="H",
                   help="score the training-clip-long block ending at H x the clip, for each H (default: 1 4 8 32 128 "
                        "where they fit, and the last clip); real clips as long are scored the same way")
    e.add_argument("--samples", type=at_least(1), default=32, help="videos per seed")
    e.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    e.add_argument("--out", default=None, help="folder for eval.json/eval.csv (default: the run folder)")
    e.add_argument("--extractor", default="effnet_lite0", choices=ExtractorNames(), metavar="NAME",
                   help="feature extractor (see mirai.eval.extractors.REGISTRY)")
    e.add_argument("--weights", default=None, help="local weights file for the extractor")
    e.add_argument("--device", default="auto")
    e.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a sample.* setting of the run, e.g. --set sample.steps=4")

    c = sub.add_parser("compare", help="one self-contained HTML report comparing evaluated runs")
    c.add_argument("runs", nargs="+", help="run folders holding eval.json (the first is the reference)")
    c.add_argument("--out", default="report.html")
    c.add_argument("--videos", type=at_least(0), default=4, help="side-by-side videos per run (same seed, same prompts)")
    c.add_argument("--frames", type=at_least(1), default=None, help="length of the side-by-side videos (default: evaluated length)")

    d = sub.add_parser("demo", help="does foresight help? shared stages, both DMD arms per seed, evaluation, verdict")
    d.add_argument("--out", default="runs/demo", help="folder of every run, results.json and report.html (resumable)")
    d.add_argument("--config", action="append", default=[], metavar="FILE",
                   help="a demo config merged over configs/demo.yaml (repeatable), e.g. demo_ablation.yaml")
    d.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a demo key, e.g. --set demo.jobs=2 --set demo.stages.dmd.train.steps=800")
    d.add_argument("--seeds", type=at_least(0), nargs="+", default=None,
                   help="training seeds of the DMD arms (default 0; 3 or more give a confidence interval): "
                        "--set demo.seeds=[0,1,2]")
    d.add_argument("--quick", action="store_true",
                   help="toy sizes and a few steps, minutes, meaningless numbers: --config demo_quick.yaml")
    d.add_argument("--dry-run", action="store_true", help="print the demo's settings and every stage, run nothing")

    i = sub.add_parser("import", help="a local diffusers Wan2.1 transformer folder -> a Mirai run folder")
    i.add_argument("arch", choices=["wan"])
    i.add_argument("--transformer", required=True, help="folder with config.json + diffusion_pytorch_model*.safetensors")
    i.add_argument("--out", required=True, help="the run folder to write (model.safetensors, config.yaml)")
    i.add_argument("--config", help="YAML whose model section gives frame size, chunking, mask and prompt (the "
                                    "architecture comes from config.json)")
    i.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set model.attention=bidirectional (for a DMD teacher)")

    x = sub.add_parser("export", help="a Mirai Wan run -> a diffusers folder (WanTransformer3DModel)")
    x.add_argument("arch", choices=["wan"])
    x.add_argument("ckpt", help="a run folder or a model.safetensors file")
    x.add_argument("--out", required=True, help="the diffusers folder to write")

    n = sub.add_parser("plan", help="what a run needs per GPU: one real step on fake tensors, memory by kind, FLOPs, "
                                    "time, fits")
    n.add_argument("--config", action="append", default=[], metavar="FILE",
                   help="the run's config (repeatable, merged in order), e.g. configs/wan/dmd_foresight.yaml")
    n.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set dist.activation_checkpointing=false")
    n.add_argument("--gpus", type=at_least(1), default=1, help="GPUs (ranks) the run trains on")
    n.add_argument("--gpu", action="append", default=[], choices=["a100", "h100", "h200", "rtx4090", "l40s"],
                   help="GPU kinds to price and check (repeatable; default all)")
    n.add_argument("--mfu", type=float, default=0.4, help="model-FLOPs utilisation the step time is priced at")
    n.add_argument("--no-fix", action="store_true", help="do not plan the changes that make a failing kind fit")
    n.add_argument("--json", action="store_true", help="print one JSON object instead of the table")

    v = sub.add_parser("serve", help="a web page that streams rollouts live: steer the prompt, compare two models")
    v.add_argument("--ckpt", action="append", default=[], metavar="[NAME=]RUN",
                   help="a run folder or model file to serve (repeat for several; default: the shipped base's student)")
    v.add_argument("--host", default="127.0.0.1", help="address to listen on; any but loopback requires a token")
    v.add_argument("--port", type=at_least(1), default=8000)
    v.add_argument("--token", help="the token every request must carry (default: made and printed for a non-loopback "
                                   "host, none on loopback)")
    v.add_argument("--max-sessions", type=at_least(1), default=8, help="concurrent streams; the next viewer is told "
                                                                      "the server is busy")
    v.add_argument("--max-frames", type=at_least(1), default=1024, help="longest stream a viewer may ask for")
    v.add_argument("--max-upload-mb", type=float, default=16.0, help="largest image or clip a viewer may upload")
    v.add_argument("--queue", type=at_least(1), default=16, help="chunks waiting per viewer before the oldest drop")
    v.add_argument("--device", default="auto")
    v.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a sample.* setting of every model (default: 1 sink + the trained window)")

    b = sub.add_parser("bench", help="benchmarks printing one JSON object")
    b.add_argument("what", choices=["sampling", "train", "foresight", "fps", "ddp", "step"])
    b.add_argument("--json", action="store_true", help="print only the JSON object")
    b.add_argument("--ckpt", help="sampling, fps: benchmark this model instead of a random one")
    b.add_argument("--batch", type=at_least(1), default=None,
                   help="sampling (default 4), fps (default 1): videos rolled out together; ddp: global batch (default 8)")
    b.add_argument("--preset", default=None, choices=list(MODEL_PRESETS),
                   help="train: model preset (default small); fps: random model of this preset (default wan-tiny); "
                        "ddp: default tiny")
    b.add_argument("--frames", type=at_least(1), default=None, help="fps: frames per video (default 4 chunks)")
    b.add_argument("--device", default="auto", help="fps: auto (cuda when available), cpu, cuda, ...")
    b.add_argument("--vae", help="fps: also decode each chunk with a Wan VAE: a diffusers folder, 'random' (the Wan2.1 "
                                 "architecture, random weights) or 'random-tiny'")
    b.add_argument("--config", action="append", default=[], metavar="FILE",
                   help="step: the run's config, whose step is run for real (random weights) and planned")
    b.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="step: override a config key")
    b.add_argument("--baseline", help="foresight: a baseline generator to time (default: random tiny)")
    b.add_argument("--foresight", help="foresight: a foresight-trained generator to time (default: random tiny)")
    return p


# --------------------------------------------------------------------------------------------------


def cmd_train(args) -> int:
    import yaml

    from . import distributed as dist
    from .config import load_config, to_dict
    from .training.loop import TrainingInterrupted, train
    from .training.stage import resolve_model_config
    from .video import check_output

    cfg = load_config(args.config, args.overrides)
    if args.dry_run:
        print(yaml.safe_dump(to_dict(resolve_model_config(cfg)), sort_keys=False))
        return
    check_output(cfg.train.out_dir, folder=True)
    try:
        out = train(cfg, init_from=args.init_from)  # under torchrun: one process of several (mirai.distributed)
        if dist.is_main():
            print(f"done: {out}/model.safetensors")
    except TrainingInterrupted as e:
        if dist.is_main():
            print(f"stopped: {e}", file=sys.stderr)
        return 130
    finally:
        dist.shutdown()
    return 0


def cmd_prepare(args) -> None:
    from . import distributed as dist, prepare
    from .config import load_config
    from .data.captions import check_folder
    from .device import pick_device
    from .video import check_output

    flags = [f"prepare.vae={args.vae}"] * bool(args.vae) + [f"prepare.text_encoder={args.text_encoder}"] * bool(args.text_encoder)
    p = load_config(args.config, args.overrides + flags).prepare
    if args.check:
        print("\n".join(check_folder(args.data, p).lines()))
        return
    if not args.out:
        raise ConfigError("mirai prepare needs --out CACHE (or --check)")
    check_output(args.out, folder=True)
    dist.init(args.device)  # under torchrun: the ranks split the shards
    main_rank = dist.is_main()
    manifest = prepare.prepare(args.data, args.out, p, pick_device(args.device), quiet=not main_rank)
    dist.shutdown()
    if not main_rank:
        return
    clips = sum(len(s["clips"]) for s in manifest["shards"])
    for name, why in manifest["refused"].items():
        print(f"refused {name}: {why}", file=sys.stderr)
    print(f"wrote {args.out}: {clips} clips in {len(manifest['shards'])} shards, {len(manifest['refused'])} videos refused")


def cmd_world(args) -> None:
    from .config import load_config, validate_world
    from .video import check_output
    from .world_export import export_world

    world = load_config(args.config, args.overrides, model_only=True).world  # the world alone: no model to match
    validate_world(world)
    check_output(args.out, folder=True)
    videos = export_world(world, args.out, args.clips, args.frames, args.seed, args.fps)
    print(f"wrote {args.out}: {len(videos)} clips of {args.frames} frames with captions (next: mirai prepare {args.out} ...)")


def cmd_sample(args) -> None:
    import torch
    from tqdm import tqdm

    from .checkpoint import CheckpointError
    from .config import to_dict
    from .sampling.pipeline import Pipeline
    from .video import VIDEO_FORMATS, check_output, save_npz, save_video

    check_output(args.out, (*VIDEO_FORMATS, ".npz"))
    pipe = Pipeline.load(args.ckpt, args.device, args.overrides)
    if not pipe.causal:
        raise CheckpointError(f"{args.ckpt} is a bidirectional model; `mirai sample` rolls out causal generators")
    request = pipe.inputs(args.num, args.frames or 4 * pipe.cfg.data.clip_frames, args.seed, args.prompt,
                          args.negative_prompt, args.context)
    for switch in args.switch:
        frame, sep, text = switch.partition(":")
        if not sep or not frame.strip().isdigit():
            raise ConfigError(f"--switch {switch!r}: expected FRAME:PROMPT, e.g. 64:background=2")
        request = pipe.with_switch(request, int(frame), text)
    warn_past_trained_span(pipe, request)
    stream = tqdm(pipe.stream(request), total=pipe.stream_length(request), desc="sample", unit="chunk")
    video = torch.cat([chunk.cpu() for chunk in stream], dim=1)  # the continued clip (if any) opens the video
    inputs, frames, sample = request.inputs, request.frames, pipe.cfg.sample
    if args.out.endswith(".npz"):
        out = save_npz(video, inputs.prompt, args.out)
    else:
        out = save_video(video, args.out)
    Path(str(out) + ".json").write_text(json.dumps({"ckpt": str(args.ckpt), "frames": frames, "num": args.num,
                                                   "seed": args.seed, "prompt": args.prompt, "context": args.context,
                                                   "negative_prompt": args.negative_prompt,
                                                   "switches": [{"frame": sw.chunk * pipe.model.cfg.frames_per_chunk,
                                                                 "prompt": sw.text} for sw in request.switches],
                                                   "sample": to_dict(sample)}, indent=2))
    print(f"wrote {out} ({args.num} videos x {video.shape[1]} frames)")


def warn_past_trained_span(pipe, request) -> None:
    """One line when the rollout attends farther back than the model's training clips reached."""
    from .sampling.rollout import attended_span, trained_window

    sample, fpc, clip = pipe.cfg.sample, pipe.model.cfg.frames_per_chunk, pipe.cfg.data.clip_frames
    context = 0 if request.context is None else request.context.shape[1]
    span = attended_span(sample, fpc, request.frames + context)
    if span > clip - 1:
        window = trained_window(clip, fpc, sample.sink_chunks)
        print(f"note: frames attend up to {span} frames back, and the model was trained on {clip}-frame clips; keys "
              f"farther than it has seen can alias onto near ones (docs/long_video.md). --set "
              f"sample.window_chunks={window} keeps the span inside.", file=sys.stderr)


def cmd_eval(args) -> None:
    from .checkpoint import CheckpointError, load_model, run_config
    from .device import pick_device
    from .eval.evaluate import Evaluator, evaluate_run
    from .video import check_output

    cfg = run_config(args.ckpt, args.overrides)
    if not (Path(args.ckpt) / "model.safetensors").is_file():
        raise CheckpointError(f"{args.ckpt} is not a run folder with a model.safetensors")
    load_model(args.ckpt, expect_attention="causal")  # a corrupt or bidirectional model is refused before any work
    check_output(args.out or args.ckpt, folder=True)
    pick_device(args.device)
    frames = args.frames or 4 * cfg.data.clip_frames
    ev = Evaluator(cfg.world, args.extractor, args.weights)
    ev.extractor  # load (and hash-check) the weights now: a bad file is refused before any rollout
    if args.horizons and max(args.horizons) * cfg.data.clip_frames > frames:
        raise ConfigError(f"--horizons {max(args.horizons)} needs {max(args.horizons) * cfg.data.clip_frames} frames "
                          f"(the clip is {cfg.data.clip_frames}); --frames is {frames}")
    result = evaluate_run(args.ckpt, frames, args.samples, args.seeds, args.out, evaluator=ev, device=args.device,
                          overrides=args.overrides, horizons=args.horizons)
    out = Path(args.out or args.ckpt)
    print(f"wrote {out / 'eval.json'} and {out / 'eval.csv'}")
    for key, s in result["summary"].items():
        print(f"  {key:45s} {s['mean']:.4f} +- {s['ci95']:.4f}")


def cmd_compare(args) -> None:
    from .eval.evaluate import generate
    from .eval.report import load_eval, write_report
    from .video import check_output

    evals = [load_eval(r) for r in args.runs]
    check_output(args.out)
    videos = []
    if args.videos:
        seed, frames = evals[0]["seeds"][0], args.frames or evals[0]["frames"]
        videos = [generate(r, args.videos, frames, seed)[0] for r in args.runs]
    print(f"wrote {write_report(args.runs, args.out, videos)}")


def demo_plan(args):
    """The demo a `mirai demo` command line asks for: --quick and --config files over demo.yaml, --set, --seeds."""
    from .demo import Plan, load_demo
    from .demo.plan import QUICK_CONFIG

    seeds = [f"demo.seeds={args.seeds}"] if args.seeds else []
    return Plan.make(args.out, load_demo([QUICK_CONFIG] * args.quick + args.config, args.overrides + seeds))


def cmd_demo(args) -> int | None:
    from .demo import run_demo
    from .demo.base import read_reference
    from .demo.report import summary_lines
    from .device import pick_device
    from .training.loop import TrainingInterrupted
    from .video import check_output

    plan = demo_plan(args)
    if args.dry_run:
        print("\n".join(plan.describe()))
        return
    plan.check()
    check_output(args.out, folder=True)
    pick_device(plan.demo.device)
    try:
        results = run_demo(plan)
    except (KeyboardInterrupt, TrainingInterrupted) as e:  # Ctrl-C or SIGTERM, in a training step or an evaluation
        detail = str(e) if isinstance(e, TrainingInterrupted) else "Ctrl-C"
        print(f"stopped ({detail}); every finished stage and evaluation is kept in {plan.out}, and the same command "
              "resumes from them", file=sys.stderr)
        return 130
    if plan.demo.shared_only:
        saved = plan.demo.save_base
        print(f"shared stages: {results['shared']}" + (f"; base written to {saved}" if saved else ""))
        return
    print("\n".join(summary_lines(results, read_reference(plan.base))))
    print(f"wrote {plan.out / 'results.json'}, results.md, report.html, drift.png, drift_8x.png and strip.png")


def cmd_bench(args) -> None:
    import tempfile

    from . import bench
    from .checkpoint import load_model

    if args.what == "sampling":
        model = None
        if args.ckpt:
            model = load_model(args.ckpt).eval()
        result = bench.bench_sampling(model, batch=args.batch or 4)
    elif args.what == "train":
        result = bench.bench_train(args.preset or "small")
    elif args.what == "ddp":
        result = bench.bench_ddp(args.preset or "tiny", batch=args.batch or 8)
    elif args.what == "fps":
        model = load_model(args.ckpt) if args.ckpt else bench.random_model(args.preset or "wan-tiny", conditional=True)
        with tempfile.TemporaryDirectory() as tmp:
            vae = None
            if args.vae in ("random", "random-tiny"):
                vae = bench.random_wan_vae(tmp, tiny=args.vae == "random-tiny")
            elif args.vae:
                from .models.wan_vae import WanAutoencoder

                vae = WanAutoencoder(args.vae)
            result = bench.bench_fps(model, batch=args.batch or 1, frames=args.frames, device=args.device, vae=vae)
    elif args.what == "step":
        from .config import load_config
        from .plan.check import real_step

        result = real_step(load_config(args.config, args.overrides), args.device)
    else:
        result = bench.bench_foresight(args.baseline, args.foresight)
    print(json.dumps(result, indent=None if args.json else 2))


def cmd_serve(args) -> None:
    from .serve.app import ServeSettings
    from .serve.server import serve

    settings = ServeSettings(max_frames=args.max_frames, max_sessions=args.max_sessions, queue_chunks=args.queue,
                             max_upload_mb=args.max_upload_mb, token=args.token)
    serve(args.ckpt, args.host, args.port, settings, device=args.device, overrides=args.overrides)


def cmd_plan(args) -> None:
    from .config import load_config
    from .plan import make_plan

    cfg = load_config(args.config, args.overrides)
    plan = make_plan(cfg, args.gpus, args.gpu, args.mfu, fix=not args.no_fix)
    print(json.dumps(plan.to_json(), indent=2) if args.json else "\n".join(plan.table()))


def cmd_import(args) -> None:
    from . import wan_io
    from .config import load_config
    from .training.stage import resolve_model_config

    cfg = resolve_model_config(load_config(args.config, args.overrides, model_only=True))
    out = wan_io.import_wan(args.transformer, cfg, args.out)
    print(f"wrote {out}/model.safetensors and {out}/config.yaml ({cfg.model.attention} Wan, from {args.transformer})")


def cmd_export(args) -> None:
    from . import wan_io

    out = wan_io.export_wan(args.ckpt, args.out)
    print(f"wrote {out}/{wan_io.CONFIG} and {out}/{wan_io.WEIGHTS}")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        commands = {"world": cmd_world, "prepare": cmd_prepare, "train": cmd_train, "sample": cmd_sample, "eval": cmd_eval,
                    "compare": cmd_compare, "bench": cmd_bench, "plan": cmd_plan, "demo": cmd_demo, "import": cmd_import,
                    "export": cmd_export, "serve": cmd_serve}
        code = commands[args.command](args)
    except Exception as e:
        if not isinstance(e, user_errors()):
            raise
        message = " ".join(line.strip() for line in str(e).splitlines() if line.strip())
        print(f"error: {message or type(e).__name__}", file=sys.stderr)
        return 2
    return code or 0


if __name__ == "__main__":
    sys.exit(main())
