"""The README's Wan table from the JSON plans `scripts/plan_wan.sh` writes: per config and GPU count, per GPU
kind, the per-rank peak, the step time, whether it fits, and for a kind it does not fit, the changes the plan
found (and their peak).

    python scripts/plan_table.py OUT_DIR
"""

import argparse
import json
from itertools import groupby
from pathlib import Path

GIB = 2**30
ORDER = ["teacher_forcing", "ode", "dmd_foresight_1.3b", "dmd_foresight"]
SHORT = {"half the micro-batch": "micro-batch", "frozen models in host memory": "offload"}


def short(change: str) -> str:
    for start, name in SHORT.items():
        if change.startswith(start):
            return name
    return change.split("(")[-1].rstrip(")")


def fix_text(fix: list[dict] | None, rows: int) -> str:
    """"+ change, change: peak, verdict"; halving the micro-batch n times reads "micro-batch of rows / 2^n"."""
    if not fix:
        return ""
    names = [f"micro-batch of {rows >> n}" if name == "micro-batch" else name
             for name, n in ((k, len(list(g))) for k, g in groupby(short(step["change"]) for step in fix))]
    verdict = "fits" if fix[-1]["fits"] else "still not"
    return f"+ {', '.join(names)}: {fix[-1]['peak_bytes'] / GIB:.1f} GiB, {verdict}"


def rows(folder: Path) -> list[str]:
    out = ["| config | GPUs | clips / micro-batch x micro-batches | GPU | peak GiB | fits | step s | "
           "what makes it fit |", "|---|---|---|---|---|---|---|---|"]
    for ranks in (8, 1):
        for stage in ORDER:
            path = folder / f"{stage}.{ranks}.json"
            if not path.is_file() or not path.stat().st_size:  # not planned (yet)
                continue
            plan = json.loads(path.read_text())
            for name, g in plan["gpus"].items():
                out.append(f"| `{stage}` | {ranks} | {plan['clips_per_micro_batch']} x {plan['micro_batches']} | "
                           f"{name} ({g['usable_bytes'] / GIB:.0f}) | {plan['peak_bytes'] / GIB:.1f} | "
                           f"{'yes' if g['fits'] else 'no'} | {g['step_s']:.0f} | {fix_text(g['fix'], plan['clips_per_micro_batch'])} |")
    return out


def cell(g: dict, rows: int) -> str:
    if g["fits"]:
        return f"fits, {g['step_s']:.0f} s"
    if g["fix"] and g["fix"][-1]["fits"]:
        return f"fits with {fix_text(g['fix'], rows)[2:].removesuffix(', fits')}"
    return f"does not fit ({fix_text(g['fix'], rows)[2:].removesuffix(', still not')})" if g["fix"] else "does not fit"


def compact(folder: Path, gpus: list[str]) -> list[str]:
    """One row per config and GPU count, one column per GPU kind: fits and the step time, or what makes it fit."""
    out = ["| config | GPUs | peak per GPU | " + " | ".join(gpus) + " |", "|---" * (3 + len(gpus)) + "|"]
    for ranks in (8, 1):
        for stage in ORDER:
            path = folder / f"{stage}.{ranks}.json"
            if not path.is_file() or not path.stat().st_size:
                continue
            plan = json.loads(path.read_text())
            out.append(f"| `{stage}` | {ranks} | {plan['peak_bytes'] / GIB:.1f} GiB | "
                       + " | ".join(cell(plan["gpus"][g], plan["clips_per_micro_batch"]) if g in plan["gpus"] else "" for g in gpus) + " |")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--compact", nargs="+", metavar="GPU", help="one column per GPU kind (the README's table)")
    args = parser.parse_args()
    print("\n".join(compact(args.folder, args.compact) if args.compact else rows(args.folder)))


if __name__ == "__main__":
    main()
