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


def fix_text(fix: list[dict] | None) -> str:
    if not fix:
        return ""
    names = [f"{name} x{n}" if n > 1 else name  # a change tried repeatedly: one name with its count
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
                           f"{'yes' if g['fits'] else 'no'} | {g['step_s']:.0f} | {fix_text(g['fix'])} |")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path)
    print("\n".join(rows(parser.parse_args().folder)))


if __name__ == "__main__":
    main()
