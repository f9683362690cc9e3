"""Compare two `mirai demo` outputs that differ in one setting (e.g. the DMD stage's length), as Markdown.

    python scripts/compare_demos.py runs/demo_powered/results.json runs/demo_long/results.json \
        --names "400 steps" "800 steps"

Per endpoint: the foresight - baseline contrast in each demo (paired over training seeds, 95% t-interval), and
for each arm the change from the first demo to the second (paired over the training seeds both have). Every
figure comes from `mirai.demo.contrast`, the demo's own statistics.
"""

import argparse
import json
from pathlib import Path

import numpy as np

from mirai.demo import PRIMARY_ENDPOINT, SECONDARY_ENDPOINTS, contrast


def cell(c: dict) -> str:
    lo, hi = c["ci95"]
    interval = "no CI" if np.isnan(lo) else f"{lo:+.3f}, {hi:+.3f}"
    return f"{c['mean_diff']:+.3f} ({interval}) {c['seeds_better']}/{c['n']}"


def compare(a: dict, b: dict, names: list[str]) -> str:
    endpoints = (PRIMARY_ENDPOINT,) + SECONDARY_ENDPOINTS
    arms = [arm for arm in ("baseline", "foresight") if arm in a["arms"] and arm in b["arms"]]
    lines = ["Each cell: mean difference (95% CI over training seeds) and how many seeds are higher.", "",
             f"| metric | foresight - baseline, {names[0]} | foresight - baseline, {names[1]} | "
             + " | ".join(f"{arm}: {names[1]} - {names[0]}" for arm in arms) + " |",
             "|---" * (3 + len(arms)) + "|"]
    for m in endpoints:
        row = [cell(contrast(r["arms"]["foresight"], r["arms"]["baseline"], m)) for r in (a, b)]
        row += [cell(contrast(b["arms"][arm], a["arms"][arm], m)) for arm in arms]
        lines.append(f"| {m} | " + " | ".join(row) + " |")
    lines += ["", "Means over training seeds:", "",
              "| metric | " + " | ".join(f"{arm}, {n}" for n in names for arm in arms) + " |",
              "|---" * (1 + 2 * len(arms)) + "|"]
    for m in endpoints:
        means = [np.mean([v[m] for v in r["arms"][arm].values()]) for r in (a, b) for arm in arms]
        lines.append(f"| {m} | " + " | ".join(f"{x:.3f}" for x in means) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("first", type=Path, help="results.json of the first demo")
    parser.add_argument("second", type=Path, help="results.json of the second demo")
    parser.add_argument("--names", nargs=2, default=["first", "second"], help="what distinguishes the two demos")
    args = parser.parse_args()
    a, b = (json.loads(p.read_text()) for p in (args.first, args.second))
    print(compare(a, b, args.names), end="")


if __name__ == "__main__":
    main()
