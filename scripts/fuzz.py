"""Run the fuzz properties of tests/test_fuzz.py with many examples and print {target: {cases, failures}}.

    python scripts/fuzz.py --examples 2000 [--targets cli video_loader] [--show 3]

Every case runs to the end (a failure is recorded, not raised), so the counts cover the whole run; the first
few distinct failures of each target are printed with their input.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import warnings
import tempfile
import time
from pathlib import Path

from hypothesis import HealthCheck, given, settings

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.test_fuzz import TARGETS, cli_fixture  # noqa: E402


def run_target(name: str, examples: int, show: int) -> dict:
    strategy_for, check = TARGETS[name]
    tmp = cli_fixture(Path(tempfile.mkdtemp(prefix=f"mirai-fuzz-{name}-")))
    stats = {"cases": 0, "failures": 0, "examples": {}}

    @settings(max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(strategy_for(tmp))
    def run(value):
        stats["cases"] += 1
        try:
            check(value)
        except Exception as e:  # a bug: record it, keep fuzzing
            stats["failures"] += 1
            key = f"{type(e).__name__}: {str(e).strip().splitlines()[-1][:200] if str(e).strip() else ''}"
            if key not in stats["examples"] and len(stats["examples"]) < show:
                stats["examples"][key] = repr(value)[:300]

    start = time.time()
    run()
    stats["seconds"] = round(time.time() - start, 1)
    return stats


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--examples", type=int, default=2000, help="examples per target")
    p.add_argument("--targets", nargs="+", default=list(TARGETS), choices=list(TARGETS))
    p.add_argument("--show", type=int, default=3, help="distinct failures printed per target")
    args = p.parse_args()
    logging.disable(logging.WARNING)  # imageio writers' notes on lossy conversion and resizing, thousands of times
    warnings.simplefilter("ignore")
    summary = {name: run_target(name, args.examples, args.show) for name in args.targets}
    print(json.dumps(summary, indent=2))
    return 1 if any(s["failures"] for s in summary.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
