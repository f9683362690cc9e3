"""The scripts under scripts/ run only as programs: a data loader's spawned workers (`data.num_workers` > 0, as on
a GPU) re-import the main module under the name `__mp_main__`, so a script that does its work at import would run
again in every worker, which is how `continue_stage.py` failed on its first GPU call."""
import runpy
import sys
from pathlib import Path

import pytest

SCRIPTS = sorted((Path(__file__).resolve().parents[1] / "scripts").glob("*.py"))


@pytest.mark.parametrize("script", SCRIPTS, ids=[p.name for p in SCRIPTS])
def test_a_script_reimported_by_a_spawned_worker_does_nothing(script, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", [str(script)])  # as if run with no arguments: its work would fail or print
    runpy.run_path(str(script), run_name="__mp_main__")
    assert capsys.readouterr().out == ""
