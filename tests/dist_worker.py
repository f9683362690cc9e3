"""One process of the multi-process tests (tests/test_distributed.py), started by torchrun:

    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/dist_worker.py JOBS.json

JOBS.json: a list of {"config": a config dict, "stop_at": int | null, "wrong_rows": bool}. Each job is one
`train()` call, in order, in every process. `wrong_rows` deliberately breaks the data sharding (every rank
trains on rank 0's rows): the tests check that their comparison catches it. `plant_orphan: S` first leaves a
folder of rank files for step S that no state file names, as a kill between the files would. `count_reads` records how many
elements of each tensor of the training state this rank read on resume, in OUT_DIR/reads_<rank>.json.
"""

import json
import shutil
import sys
from pathlib import Path

import torch

from mirai import distributed as dist
from mirai.config import config_from_dict
from mirai.training import loop, state


READ = state.read


def counting(read, counts: dict):
    def wrapped(f, key, like):
        t = read(f, key, like)
        counts[key] = counts.get(key, 0) + t.numel()
        return t
    return wrapped


def plant_orphan(out: str, step: int) -> None:
    """What a kill between the rank files of `step` and its state file leaves: a step folder the state file does
    not name (here: the committed step's files, copied; a resume must not read them)."""
    replay = Path(out) / "replay"
    committed = sorted(replay.glob("step_*"))[-1]
    shutil.copytree(committed, replay / f"step_{step:08d}")


def main(path: str) -> None:
    torch.set_num_threads(1)
    right = dist.batch_share
    for job in json.loads(open(path).read()):
        loop.dist.batch_share = (lambda *a: (0, right(*a)[1])) if job.get("wrong_rows") else right
        if job.get("plant_orphan") and dist.rank() == 0:
            plant_orphan(job["config"]["train"]["out_dir"], job["plant_orphan"])
        counts = {}
        state.read = counting(state.read, counts) if job.get("count_reads") else READ
        loop.train(config_from_dict(job["config"]), stop_at=job.get("stop_at"), quiet=True)
        if job.get("count_reads"):
            out = job["config"]["train"]["out_dir"]
            open(f"{out}/reads_{dist.rank()}.json", "w").write(json.dumps(counts))
    dist.shutdown()


if __name__ == "__main__":
    main(sys.argv[1])
