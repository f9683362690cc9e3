"""A demo base from continued stages: the bidirectional teacher and AR teacher given as model files (e.g. the
probed EMAs that scripts/continue_stage.py writes), the ODE student distilled afresh from that AR teacher with the
recipe's ODE stage (as `mirai demo` distils it), each stage probed at 1x as `mirai.demo.base_probes` does, and all
three written as a base (fp16 files + provenance.json, `mirai.demo.save_base`). The provenance also records the
lineage of each continued file: every run it came through (its folder, the file it started from, its steps,
peak LR and batch), back to the base it began as, whose own provenance is kept whole.
Usage: python scripts/continued_base.py TEACHER_FILE AR_FILE OUT [--quick] [--recipe FILE] [--device cuda --workers 14]
  e.g. python scripts/continued_base.py runs/teacher_more2/ema_1500.safetensors runs/ar_more/ema_800.safetensors \
       runs/base_continued        (then `mirai demo --base runs/base_continued/base`)
--recipe (default configs/demo_base.yaml): the recipe whose ODE stage and world the student is distilled with
and the probes take (e.g. configs/demo_base_hard.yaml, for stages continued in its world), recorded in the base.
Resumable: the ODE stage resumes from its checkpoint in OUT/ode.
"""
import argparse
import json
from pathlib import Path

import yaml

from mirai.demo import BASE_RECIPE, STAGE_CONFIGS, DemoPlan, base_probes, run_stage, save_base, stage_config


def run_dir(path: Path) -> Path:
    """The folder of a run given as its folder or as a model file in it."""
    return path if path.is_dir() else path.parent


def lineage(model_file: Path) -> list[dict]:
    """The runs a model file came through, newest first: each run folder's config.yaml names the file it
    started from (train.init_from); the walk ends at a file whose folder is not a run (e.g. a shipped base),
    whose provenance.json is recorded when there is one."""
    chain, path = [], Path(model_file)
    while (config := run_dir(path) / "config.yaml").is_file():
        train = yaml.safe_load(config.read_text())["train"]
        chain.append({"file": str(path), "run": str(config.parent), "init_from": train["init_from"],
                      "steps": train["steps"], "lr": train["lr"], "batch_size": train["batch_size"],
                      "warmup_steps": train["warmup_steps"], "ema_decay": train["ema_decay"]})
        if not train["init_from"]:
            return chain
        path = Path(train["init_from"])
    prov = run_dir(path) / "provenance.json"
    chain.append({"file": str(path), "provenance": json.loads(prov.read_text()) if prov.is_file() else None})
    return chain


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("teacher", type=Path)
    parser.add_argument("ar", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--quick", action="store_true", help="toy sizes (a smoke test; the numbers mean nothing)")
    parser.add_argument("--recipe", type=Path, default=BASE_RECIPE, help="the ODE stage's and the world's recipe")
    parser.add_argument("--device", default="cpu", help="where the ODE stage trains and the probes sample")
    parser.add_argument("--workers", type=int, default=0, help="data.num_workers of the ODE stage")
    args = parser.parse_args()
    for f in (args.teacher, args.ar):
        if not f.is_file():
            parser.error(f"no model file at {f}")
    plan = DemoPlan(out=args.out, quick=args.quick, device=args.device, workers=args.workers, sampling_seeds=[0, 1],
                    recipe=args.recipe)
    ode = stage_config(plan, STAGE_CONFIGS["ode"], "ode", args.out / "ode",
                       [f"train.init_from={args.ar}", f"distill.teacher={args.ar}"])
    runs = {"teacher": args.teacher, "ar": args.ar, "ode": run_stage(ode)}
    print("the base's probes at 1x (teacher, AR teacher, ODE student)", flush=True)
    probes = base_probes(runs, plan, samples=4 if args.quick else 64)
    base = args.out / "base"
    save_base(runs, base, plan, probes)
    prov = json.loads((base / "provenance.json").read_text())
    prov["lineage"] = {"teacher": lineage(args.teacher), "ar": lineage(args.ar),
                       "ode": "distilled here from the AR teacher above with the recipe's ODE stage"}
    (base / "provenance.json").write_text(json.dumps(prov, indent=1))
    for name, scores in probes.items():
        print(name, {k: round(scores[k], 3) for k in ("identity", "coherence", "count", "continuity")})
    print(f"base written to {base}")


if __name__ == "__main__":
    main()
