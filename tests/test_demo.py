"""`mirai demo`: its statistics, and a --quick run that leaves a complete results.json and report."""

import hashlib
import json
import math
import operator
import time
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch
import yaml

from mirai import checkpoint as ckpt, demo
from mirai.cli import main
from mirai.config import ConfigError, load_config
from mirai.demo import PRIMARY_ENDPOINT, DemoPlan, contrast, length_keys, load_base, verdict
from mirai.training.loop import TrainingInterrupted


def test_lengths_are_named_as_multiples_of_the_clip():
    keys = length_keys({"probe_identity@8f": 0, "probe_identity@32f": 0, "fd@effnet_lite0@8f": 0, "x@5f": 0}, 8)
    assert keys == {"probe_identity@8f": "probe_identity@1x", "probe_identity@32f": "probe_identity@4x",
                    "fd@effnet_lite0@8f": "fd@effnet_lite0@1x"}


def test_contrast_is_paired_over_training_seeds():
    base = {0: {"m": 0.50, "fd@x": 1.0}, 1: {"m": 0.40, "fd@x": 1.0}, 2: {"m": 0.30, "fd@x": 1.0}}
    arm = {0: {"m": 0.52, "fd@x": 0.9}, 1: {"m": 0.43, "fd@x": 1.1}, 2: {"m": 0.31, "fd@x": 0.8}}
    c = contrast(arm, base, "m")
    assert c["n"] == 3 and c["mean_diff"] == pytest.approx(0.02) and c["seeds_better"] == 3
    lo, hi = c["ci95"]
    # differences 0.02, 0.03, 0.01: mean 0.02, t-interval half-width t(0.975, 2) * 0.01 / sqrt(3) = 0.0248
    assert lo == pytest.approx(-0.00484, abs=1e-4) and hi == pytest.approx(0.04484, abs=1e-4)
    assert c["p"] == pytest.approx(0.0742, abs=1e-3)
    assert "includes zero" in verdict(c, "m")  # 3 of 3 seeds better is not yet an effect
    assert contrast(arm, base, "fd@x")["seeds_better"] == 2  # lower FD is better
    single = contrast({0: arm[0]}, {0: base[0]}, "m")
    assert single["n"] == 1 and math.isnan(single["ci95"][0]) and "no conclusion" in verdict(single, "m")


def test_verdict_reads_the_interval():
    c = {"n": 3, "mean_diff": -0.05, "ci95": [-0.08, -0.02], "p": 0.01, "seeds_better": 0}
    assert "excludes zero: foresight is worse" in verdict(c, "probe_identity@4x")
    c = {"n": 3, "mean_diff": 0.01, "ci95": [-0.02, 0.04], "p": 0.4, "seeds_better": 2}
    assert "includes zero" in verdict(c, "probe_identity@4x")


@pytest.mark.slow
def test_quick_demo_writes_a_complete_report(tmp_path, capsys):
    out = tmp_path / "demo"
    base = tmp_path / "base"
    args = ["demo", "--quick", "--out", str(out), "--seeds", "0", "1", "--sampling-seeds", "0", "--samples", "2",
            "--device", "cpu"]
    assert main(args + ["--save-base", str(base)]) == 0
    printed = capsys.readouterr().out
    assert "verdict: " + PRIMARY_ENDPOINT in printed and "report.html" in printed
    results = json.loads((out / "results.json").read_text())
    assert set(results["arms"]) == {"baseline", "foresight"} and set(results["arms"]["baseline"]) == {"0", "1"}
    for length in ("1x", "4x", "8x"):
        assert f"probe_identity@{length}" in results["arms"]["foresight"]["0"]
    assert results["contrasts"]["foresight"][PRIMARY_ENDPOINT]["n"] == 2
    table = (out / "results.md").read_text()
    assert f"| {PRIMARY_ENDPOINT} |" in table and "verdict" not in table.split("\n")[0]
    page = (out / "report.html").read_text()
    assert "Paired contrasts over training seeds" in page and PRIMARY_ENDPOINT in page
    for figure in ("drift.png", "strip.png"):
        assert iio.imread(out / figure).ndim == 3
    before = (out / "results.json").stat().st_mtime_ns
    assert main(args) == 0  # a second run resumes: every stage and evaluation is already done
    assert (out / "results.json").stat().st_mtime_ns >= before
    # the shared stages as a shipped base: fp16 files with provenance; a demo started from it trains no shared stage
    prov = json.loads((base / "provenance.json").read_text())
    assert set(prov["files"]) == {"teacher.safetensors", "ar.safetensors", "ode.safetensors"} and prov["commit"]
    assert set(prov["probes_1x"]) == {"teacher", "ar", "ode"}  # each stage's samples scored by the world's probes
    assert all(0 <= p["identity"] <= 1 and 0 <= p["coherence"] <= 1 for p in prov["probes_1x"].values())
    assert all(v.dtype == torch.float16 for v in ckpt.load(base / "ode.safetensors")[0].values())
    # the teacher's extra cycle ran from the teacher stage's end; the AR teacher and the base start from its end
    cycle = yaml.safe_load((out / "shared" / "teacher_c2" / "config.yaml").read_text())["train"]
    assert cycle["init_from"] == prov["files"]["teacher.safetensors"]["source"].replace("teacher_c2", "teacher")
    assert Path(prov["files"]["teacher.safetensors"]["source"]).parts[-1] == "teacher_c2"
    assert yaml.safe_load((out / "shared" / "ar" / "config.yaml").read_text())["train"]["init_from"] == \
        prov["files"]["teacher.safetensors"]["source"]
    from_base = tmp_path / "from_base"
    assert main(["demo", "--quick", "--out", str(from_base), "--seeds", "0", "--sampling-seeds", "0", "--samples",
                 "2", "--device", "cpu", "--base", str(base)]) == 0
    assert not (from_base / "shared").exists()
    results = json.loads((from_base / "results.json").read_text())
    assert results["contrasts"]["foresight"][PRIMARY_ENDPOINT]["n"] == 1
    # the arms side by side in two processes (--jobs 2): the same numbers (up to the threads' float rounding)
    side = tmp_path / "side_by_side"
    assert main(["demo", "--quick", "--out", str(side), "--seeds", "0", "--sampling-seeds", "0", "--samples", "2",
                 "--device", "cpu", "--base", str(base), "--jobs", "2"]) == 0
    assert "steps side by side in 2 processes" in capsys.readouterr().out
    parallel = json.loads((side / "results.json").read_text())["arms"]
    for arm, seeds in results["arms"].items():
        assert parallel[arm]["0"] == pytest.approx(seeds["0"], abs=1e-5)


def test_steps_return_in_order_and_a_failure_side_by_side_stops_the_demo():
    tasks = [demo.Task(f"add {i}", operator.add, (i, 10), already_done=False) for i in range(3)]
    assert demo.run_tasks(tasks, 1, demo.Progress([1.0] * 3)) == [10, 11, 12]
    bad = tasks + [demo.Task("fails", operator.truediv, (1, 0), already_done=False)]
    with pytest.raises(ZeroDivisionError):  # (the quick demo's test checks --jobs 2 against one process)
        demo.run_tasks(bad, 2, demo.Progress([1.0] * 4))


def interrupted_together(folder: str, name: str) -> None:
    """A step that waits until its partner runs too (one per worker), then is interrupted, as by a SIGINT to both."""
    (Path(folder) / name).touch()
    deadline = time.monotonic() + 120
    while len(list(Path(folder).glob("started_*"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    raise TrainingInterrupted(f"{name}: interrupted")


def test_an_interrupt_side_by_side_starts_no_queued_step(tmp_path):
    tasks = [demo.Task(f"arm {i}", interrupted_together, (str(tmp_path), f"started_{i}"), already_done=False)
             for i in range(2)]
    queued = demo.Task("queued", interrupted_together, (str(tmp_path), "queued_ran"), already_done=False)
    with pytest.raises(TrainingInterrupted):
        demo.run_tasks(tasks + [queued], 2, demo.Progress([1.0] * 3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["started_0", "started_1"]  # the third never started


@pytest.mark.parametrize("stop", [KeyboardInterrupt(), TrainingInterrupted("SIGTERM at step 3/10")])
def test_an_interrupted_demo_says_how_to_resume_in_one_line(tmp_path, monkeypatch, capsys, stop):
    def interrupted(plan):  # as Ctrl-C reaches the main process while it waits on an evaluation, or a stage stops
        raise stop
    monkeypatch.setattr("mirai.cli.run_demo", interrupted)
    assert main(["demo", "--quick", "--out", str(tmp_path / "demo"), "--device", "cpu"]) == 130
    said = capsys.readouterr().err.strip()
    assert said.startswith("stopped (") and "the same command resumes" in said and "\n" not in said
    assert str(stop) in said


def test_side_by_side_the_time_left_waits_until_each_process_has_finished_a_step(capsys):
    progress = demo.Progress([1.0] * 4)
    progress.hold_estimate(2)  # two processes: the first step ends after 10 minutes, the other 6 seconds later
    progress.finish(600.0, report="first")
    assert "min left" not in capsys.readouterr().out  # 10 min per step would be twice the true pace
    progress.finish(6.0, report="second")
    assert "~10.1 min left" in capsys.readouterr().out  # 2 steps left at 606 s per 2 steps


def test_the_time_left_ignores_steps_already_done(capsys):
    progress = demo.Progress([2.0, 2.0, 1.0, 1.0])
    progress.finish(0.0, already_done=True)  # resumed: it took no time and must not make the rest look free
    progress.start("next")
    assert "min left" not in capsys.readouterr().out  # nothing measured yet: no estimate
    progress.finish(120.0)  # 2 cost units in 2 minutes
    progress.start("third")
    assert "~2.0 min left" in capsys.readouterr().out  # 2 units remain at a minute each


def test_results_md_lists_every_arm_when_there_are_more_than_two():
    c = {"n": 2, "mean_diff": 0.02, "ci95": [-0.01, 0.05], "p": 0.2, "seeds_better": 2}
    results = {"contrasts": {"foresight": {PRIMARY_ENDPOINT: c}, "window_0": {PRIMARY_ENDPOINT: {**c, "mean_diff": -0.03}}}}
    table = demo.arms_table(results)
    assert "| window_0 | -0.030 (-0.010, +0.050) |" in table and "| foresight | +0.020" in table
    assert "2 training seed(s) (95% CI)" in table
    assert demo.arms_table({"contrasts": {"foresight": {PRIMARY_ENDPOINT: c}}}) == ""  # two arms: the main table says it


def test_dose_arms_set_the_foresight_weight(tmp_path):
    arms = DemoPlan(tmp_path, weights=[0.1, 1.0]).arms()
    assert arms["foresight_w0.1"] == ["foresight.enabled=true", "foresight.weight=0.1"]
    assert set(arms) == {"baseline", "foresight", "foresight_w0.1", "foresight_w1"}


def test_a_changed_base_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="no provenance.json"):
        load_base(tmp_path)
    files = {}
    for name in ("teacher", "ar", "ode"):
        (tmp_path / f"{name}.safetensors").write_bytes(name.encode())
        files[f"{name}.safetensors"] = {"sha256": hashlib.sha256(name.encode()).hexdigest()}
    (tmp_path / "provenance.json").write_text(json.dumps({"quick": False, "files": files}))
    assert set(load_base(tmp_path)) == {"teacher", "ar", "ode"}
    with pytest.raises(ConfigError, match="made without --quick"):
        load_base(tmp_path, quick=True)
    (tmp_path / "ar.safetensors").write_bytes(b"changed")
    with pytest.raises(ConfigError, match="does not match the sha256"):
        load_base(tmp_path)


def test_the_demo_starts_from_a_shipped_base_unless_told_otherwise(tmp_path, monkeypatch):
    import mirai.demo as demo

    monkeypatch.setattr(demo, "SHIPPED_BASE", tmp_path / "absent")
    assert demo.default_base(None, from_scratch=False, quick=False) is None
    monkeypatch.setattr(demo, "SHIPPED_BASE", tmp_path)
    assert demo.default_base(None, from_scratch=False, quick=False) == tmp_path
    assert demo.default_base(None, from_scratch=True, quick=False) is None
    assert demo.default_base(None, from_scratch=False, quick=True) is None
    assert demo.default_base("other", from_scratch=True, quick=False) == Path("other")


def test_the_recipe_sets_the_shared_stages_outside_quick(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("teacher: [train.steps=7, train.batch_size=4]\node: [distill.num_videos=8]\n")
    plan = DemoPlan(tmp_path, recipe=recipe, workers=3)
    teacher = demo.stage_overrides(plan, "teacher", tmp_path / "t", ["train.seed=1"])
    assert teacher[:3] == ["train.steps=7", "train.batch_size=4", "data.num_workers=3"] and teacher[-1] == "train.seed=1"
    assert demo.stage_overrides(plan, "ar", tmp_path / "a", [])[0] == "data.num_workers=3"  # no overrides for ar
    assert not any("num_workers" in o or "steps=7" in o for o in demo.stage_overrides(plan, "dmd", tmp_path, []))
    quick = DemoPlan(tmp_path, quick=True, recipe=recipe)
    assert "train.steps=7" not in demo.stage_overrides(quick, "teacher", tmp_path, [])
    for bad in ("critic: [train.steps=1]\n", "teacher: train.steps=1\n", "teacher: [steps]\n"):
        recipe.write_text(bad)
        with pytest.raises(ConfigError, match="demo recipe"):
            demo.read_recipe(recipe)
    with pytest.raises(ConfigError, match="no demo recipe"):
        demo.read_recipe(tmp_path / "missing.yaml")
    assert set(demo.read_recipe(demo.BASE_RECIPE)) == {"teacher", "ar", "ode", "teacher_cycles"}
    for bad in ("teacher_cycles: [train.steps=1]\n", "teacher_cycles: [[steps]]\n", "teacher_cycles: 3\n"):
        recipe.write_text(bad)
        with pytest.raises(ConfigError, match="teacher_cycles"):
            demo.read_recipe(recipe)
    recipe.write_text("teacher: [train.steps=7]\nteacher_cycles: [[train.steps=3, train.lr=1e-4], [train.steps=5]]\n")
    assert demo.teacher_cycles(DemoPlan(tmp_path, recipe=recipe)) == [["train.steps=3", "train.lr=1e-4"],
                                                                      ["train.steps=5"]]
    assert demo.shared_costs(DemoPlan(tmp_path, recipe=recipe)) == pytest.approx([3.0, 3 * 3 / 7, 3 * 5 / 7, 2.0, 1.5])
    assert demo.teacher_cycles(DemoPlan(tmp_path, recipe=recipe, base=tmp_path)) == []  # a base's teacher is done


def test_the_recipes_model_size_reaches_every_stage_and_the_arms_of_its_base(tmp_path):
    """A base of another size: every shared stage and every DMD arm is built at the recipe's `model` size, and a demo
    from a base takes the size its provenance.json records (the arms start from its ODE student)."""
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("model: [model.dim=48, model.depth=3]\nteacher: [train.steps=7]\n")
    plan = DemoPlan(tmp_path, recipe=recipe)
    for name, config in {**demo.STAGE_CONFIGS, "dmd": "tiny_dmd.yaml"}.items():
        cfg = demo.stage_config(plan, config, name, tmp_path / name, [])
        assert (cfg.model.dim, cfg.model.depth) == (48, 3), name
    assert demo.stage_config(plan, "tiny_teacher.yaml", "teacher", tmp_path, []).train.steps == 7
    base = tmp_path / "base"
    base.mkdir()
    (base / "provenance.json").write_text(json.dumps({"recipe": {"model": ["model.dim=96"], "teacher": []}}))
    from_base = DemoPlan(tmp_path, recipe=recipe, base=base)
    assert demo.stage_config(from_base, "tiny_dmd.yaml", "dmd", tmp_path / "d", []).model.dim == 96
    default = load_config(demo.CONFIGS / "tiny_dmd.yaml", [])
    quick_base = tmp_path / "quick_base"
    quick_base.mkdir()
    (quick_base / "provenance.json").write_text(json.dumps({"recipe": None}))
    assert demo.stage_config(DemoPlan(tmp_path, base=quick_base), "tiny_dmd.yaml", "dmd", tmp_path, []).model == \
        default.model
    recipe.write_text("model: [train.steps=1]\n")
    with pytest.raises(ConfigError, match="only model"):
        demo.read_recipe(recipe)


def test_the_recipes_world_reaches_every_stage_the_evaluation_and_the_probes(tmp_path, monkeypatch):
    """A recipe's `world` (e.g. a harder one) is the world of every shared stage and DMD arm, of a demo from its
    base (through the base's provenance), and of the probes that score the base."""
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("world: [world.max_sprites=3, world.pan_speed=0.5]\nteacher: [train.steps=7]\n")
    plan = DemoPlan(tmp_path, recipe=recipe)
    for name, config in {**demo.STAGE_CONFIGS, "dmd": "tiny_dmd.yaml"}.items():
        world = demo.stage_config(plan, config, name, tmp_path / name, []).world
        assert (world.max_sprites, world.pan_speed) == (3, 0.5), name
    base = tmp_path / "base"
    base.mkdir()
    (base / "provenance.json").write_text(json.dumps({"recipe": demo.read_recipe(recipe)}))
    assert demo.stage_config(DemoPlan(tmp_path, base=base), "tiny_dmd.yaml", "dmd", tmp_path, []).world.pan_speed == 0.5
    probed = []
    monkeypatch.setattr(demo, "train_probe", lambda world: probed.append(world))
    assert demo.base_probes({}, plan) == {} and probed[0].pan_speed == 0.5
    recipe.write_text("world: [model.dim=8]\n")
    with pytest.raises(ConfigError, match="only world"):
        demo.read_recipe(recipe)


def test_a_stage_is_probed_on_prompts_of_the_probes_world(monkeypatch):
    """The probes score scenes of their own world: a file continued from a base of another world is probed (at its
    step 0 too) on prompts of the world it is being continued in, not on those its file was trained with."""
    from types import SimpleNamespace

    asked = []

    def fake_generate(run, num, frames, seed, device, overrides, world=None):
        asked.append(world)
        return np.zeros((num, frames, 4, 4, 3), np.uint8), None

    hard_world = demo.read_recipe(demo.CONFIGS / "demo_base_hard.yaml")["world"]
    hard = load_config(demo.CONFIGS / "tiny_teacher.yaml", hard_world).world
    probe = SimpleNamespace(world=hard, score=lambda videos, prompts: SimpleNamespace(summary=lambda: {"identity": 1.0}))
    monkeypatch.setattr(demo, "generate", fake_generate)
    assert demo.stage_probes("file", "teacher", probe, 8, [0, 1]) == {"identity": 1.0}
    assert asked == [hard, hard] and hard.max_sprites == 3

def test_a_recipe_extends_another_replacing_only_the_lists_it_gives(tmp_path):
    """`extends: FILE` starts from that recipe (relative to this file's folder); the lists this file gives replace
    that recipe's, the others stay. The hard-world recipe is the demo's recipe with a world and nothing else."""
    (tmp_path / "parent.yaml").write_text("teacher: [train.steps=7]\nar: [train.steps=5]\n"
                                          "teacher_cycles: [[train.steps=3]]\n")
    child = tmp_path / "child.yaml"
    child.write_text("extends: parent.yaml\nworld: [world.max_sprites=3]\nar: [train.steps=9]\n")
    assert demo.read_recipe(child) == {"teacher": ["train.steps=7"], "ar": ["train.steps=9"], "ode": [],
                                       "world": ["world.max_sprites=3"], "teacher_cycles": [["train.steps=3"]]}
    child.write_text("extends: parent.yaml\nworld: [model.dim=8]\n")
    with pytest.raises(ConfigError, match="only world"):
        demo.read_recipe(child)
    (tmp_path / "parent.yaml").write_text("extends: child.yaml\n")
    with pytest.raises(ConfigError, match="extends itself"):
        demo.read_recipe(child)
    child.write_text("extends: absent.yaml\n")
    with pytest.raises(ConfigError, match="no demo recipe"):
        demo.read_recipe(child)
    hard, default = demo.read_recipe(demo.CONFIGS / "demo_base_hard.yaml"), demo.read_recipe(demo.BASE_RECIPE)
    assert {k: v for k, v in hard.items() if k != "world"} == default and hard["world"]


FIRST_BASE = demo.SHIPPED_BASE.parent / "world_h200"


def runs_back(chain: list[dict]) -> list[dict]:
    """A lineage, checked unbroken (each run began at the next one's file), with each earlier base it went through
    opened up: where it ends at a base's file whose provenance has a lineage of its own, the runs that made that
    file take its place."""
    *runs, last = chain
    assert all(run["init_from"] == older["file"] for run, older in zip(chain, chain[1:]))
    prov = last.get("provenance") or {}
    if "lineage" not in prov:
        return chain
    stage = Path(last["file"]).stem  # teacher.safetensors: that base's teacher lineage
    made = prov["lineage"][stage]
    assert prov["files"][f"{stage}.safetensors"]["source"] == made[0]["file"]  # that base shipped its chain's end
    return runs + runs_back(made)


@pytest.mark.skipif(not FIRST_BASE.is_dir(), reason="no first base kept")
def test_the_shipped_base_descends_from_the_first_base_kept_beside_it():
    """checkpoints/world_h200 is intact, and the lineage of the shipped teacher and AR teacher (every run they came
    through, from provenance.json, through each earlier base's own lineage) begins at it: its whole provenance is
    what the chain started from."""
    first = json.loads((FIRST_BASE / "provenance.json").read_text())
    assert set(load_base(FIRST_BASE)) == {"teacher", "ar", "ode"}  # every file matches its recorded sha256
    lineage = json.loads((demo.SHIPPED_BASE / "provenance.json").read_text())["lineage"]
    for stage in ("teacher", "ar"):
        chain = runs_back(lineage[stage])
        assert chain[-1]["provenance"] == first and chain[-1]["file"].endswith("teacher.safetensors")
        assert len(chain) >= 3  # a run of this base's own, and the earlier base's runs
    tail = lineage["ar"][1:]  # teacher forcing started from a teacher of the shipped teacher's own chain
    assert tail == lineage["teacher"][len(lineage["teacher"]) - len(tail):]


@pytest.mark.skipif(not FIRST_BASE.is_dir(), reason="no first base kept")
def test_the_recipe_trains_the_chain_the_shipped_base_went_through():
    """`mirai demo --from-scratch` makes the shipped base's chain: the recipe's teacher stage made the first base's
    teacher, and its teacher cycles, in order, are the runs of the shipped teacher's lineage (steps, peak LR,
    warm-up, batch, EMA); its AR stage is the shipped AR teacher's run."""
    recipe = demo.read_recipe(demo.BASE_RECIPE)
    lineage = json.loads((demo.SHIPPED_BASE / "provenance.json").read_text())["lineage"]
    *runs, first = runs_back(lineage["teacher"])
    assert first["provenance"]["files"]["teacher.safetensors"]["step"] == \
        load_config(demo.CONFIGS / "tiny_teacher.yaml", recipe["teacher"]).train.steps
    made = [load_config(demo.CONFIGS / "tiny_teacher.yaml", recipe["teacher"] + c).train
            for c in recipe["teacher_cycles"]]
    ar = load_config(demo.CONFIGS / "tiny_ar.yaml", recipe["ar"]).train
    fields = ("steps", "lr", "warmup_steps", "batch_size", "ema_decay")
    assert [tuple(run[k] for k in fields) for run in reversed(runs)] == \
        [tuple(getattr(t, k) for k in fields) for t in made]
    assert tuple(lineage["ar"][0][k] for k in fields) == tuple(getattr(ar, k) for k in fields)


@pytest.mark.skipif(not demo.SHIPPED_BASE.is_dir(), reason="no base shipped")
def test_the_shipped_base_matches_its_provenance_and_recipe():
    """The files in checkpoints/world are the ones its provenance.json hashed, made with configs/demo_base.yaml."""
    assert set(load_base(demo.SHIPPED_BASE)) == {"teacher", "ar", "ode"}
    prov = json.loads((demo.SHIPPED_BASE / "provenance.json").read_text())
    assert prov["recipe"] == demo.read_recipe(demo.BASE_RECIPE)
    for name in demo.SHARED:  # each file carries the world and sampler of its stage, so it samples on its own
        cfg = load_config(demo.CONFIGS / demo.STAGE_CONFIGS[name], prov["recipe"][name])
        settings = ckpt.run_config(demo.SHIPPED_BASE / f"{name}.safetensors", [])
        assert (settings.world, settings.sample, settings.schedule) == (cfg.world, cfg.sample, cfg.schedule)
