"""The scripts under scripts/ run only as programs: a data loader's spawned workers (`data.num_workers` > 0, as on
a GPU) re-import the main module under the name `__mp_main__`, so a script that does its work at import would run
again in every worker (a one-off script of an earlier experiment failed so on its first GPU call). A script takes
its settings as arguments, never from the environment, and scripts/README.md names each one."""
import ast
import dataclasses
import json
import re
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

from mirai.config import config_from_dict
from mirai.plan.gpus import GPUS
from mirai.plan.report import make_plan

FOLDER = Path(__file__).resolve().parents[1] / "scripts"
SCRIPTS = sorted(FOLDER.glob("*.py"))
SHELL = sorted(FOLDER.glob("*.sh"))


@pytest.mark.parametrize("script", SCRIPTS, ids=[p.name for p in SCRIPTS])
def test_a_script_reimported_by_a_spawned_worker_does_nothing(script, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", [str(script)])  # as if run with no arguments: its work would fail or print
    runpy.run_path(str(script), run_name="__mp_main__")
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("script", SCRIPTS + SHELL, ids=[p.name for p in SCRIPTS + SHELL])
def test_no_script_reads_an_environment_variable(script):
    text = script.read_text()
    if script.suffix == ".py":
        names = {n.attr if isinstance(n, ast.Attribute) else n.id for n in ast.walk(ast.parse(text))
                 if isinstance(n, (ast.Attribute, ast.Name))}
        assert not names & {"environ", "getenv", "environb", "getenvb"}
    else:  # every $NAME it reads is one it sets (positional arguments are $1, $2, ...)
        code = "\n".join(line.split("#", 1)[0] if not line.startswith("#!") else "" for line in text.splitlines())
        read = set(re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", code))
        assigned = set(re.findall(r"(?:^|[\s;(])([A-Za-z_][A-Za-z0-9_]*)=", code, re.M))
        assigned |= set(re.findall(r"\bfor\s+([A-Za-z_][A-Za-z0-9_]*)\s+in\b", code))  # loop variables
        assert read <= assigned, f"reads {sorted(read - assigned)} from the environment"


def test_the_readme_names_every_script_and_no_other():
    named = set(re.findall(r"`([\w.]+\.(?:py|sh))`", (FOLDER / "README.md").read_text()))
    assert named == {p.name for p in SCRIPTS + SHELL}


def test_the_gpu_check_runs_end_to_end_at_toy_size(tmp_path):
    """scripts/gpu_check.sh --toy: the GPU day's one command, on the CPU at toy size."""
    import json
    import subprocess

    out = tmp_path / "gpu_check.json"
    done = subprocess.run(["bash", "scripts/gpu_check.sh", str(out), "--toy"], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[1], timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["toy"] and report["fps"]["with_vae"]["video_fps"] > 0
    for step in report["dmd_foresight_step"]["steps"]:
        assert abs(step["peak_ratio"] - 1) <= 0.10  # the plan of the step against the step itself


def test_plan_table_reads_the_plans_verdicts_and_fixes(tmp_path):
    """scripts/plan_table.py on two toy plans: one that fits, one that fits only after the plan's changes."""
    cfg = config_from_dict({"model": {"preset": "tiny", "dim": 64, "depth": 2, "heads": 2, "patch_size": 8},
                            "data": {"clip_frames": 4}, "train": {"batch_size": 4, "precision": "fp32"}})
    plan = make_plan(cfg, 1, ["h100"])
    (tmp_path / "teacher_forcing.1.json").write_text(json.dumps(plan.to_json()))
    small = dataclasses.replace(GPUS["h100"], name="small", memory_gib=1.0 + plan.run.steps[0].peak["total"] * 0.7 / 2**30)
    with pytest.MonkeyPatch.context() as m:
        m.setitem(GPUS, "small", small)
        tight = make_plan(cfg, 1, ["small"])
    (tmp_path / "ode.1.json").write_text(json.dumps(tight.to_json()))
    table = subprocess.run([sys.executable, str(FOLDER / "plan_table.py"), str(tmp_path), "--compact", "h100", "small"],
                           capture_output=True, text=True, check=True).stdout.splitlines()
    assert table[2].startswith("| `teacher_forcing` | 1 |") and "fits, " in table[2]
    assert table[3].startswith("| `ode` | 1 |") and "| fits with dist.activation_checkpointing=true: " in table[3]
