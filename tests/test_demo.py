"""`mirai demo`: its settings and stage configs, its statistics, the reference check, and a --quick run that leaves
a complete results.json and report."""

import hashlib
import json
import operator
import subprocess
import time
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch
import yaml

from mirai import checkpoint as ckpt
from mirai.cli import main
from mirai.config import ConfigError, SampleConfig
from mirai.config.files import apply_overrides
from mirai.demo import PRIMARY_ENDPOINT, Plan, load_demo, tasks
from mirai.demo.base import load_base, stage_probes
from mirai.demo.long_horizon import first_lost_horizon, long_horizon
from mirai.demo.plan import ENDPOINTS, SHARED, base_folder, eval_overrides, shipped_base
from mirai.demo.report import REPRODUCED_WITHIN, arms_table, reproduction, summary_lines
from mirai.demo.stats import contrast, length_keys, verdict
from mirai.sampling.rollout import attended_span, long_rollout_overrides
from mirai.training.loop import TrainingInterrupted

QUICK = ["--quick", "--set", "demo.sampling_seeds=[0]", "--set", "demo.samples=2", "--set", "demo.device=cpu"]


# --------------------------------------------------------------------------------------------------
# Settings and stage configs


def test_the_demo_is_configured_by_yaml_files_merged_in_order_and_set(tmp_path):
    demo = load_demo()
    assert demo.seeds == [0] and set(demo.arms) == {"baseline", "foresight"} and demo.base == "shipped"
    mine = tmp_path / "mine.yaml"
    mine.write_text("demo:\n  samples: 3\n  arms:\n    strong: {foresight: {enabled: true, weight: 1.0}}\n")
    demo = load_demo(["demo_ablation.yaml", str(mine)], ["demo.seeds=[0, 1, 2]"])
    assert demo.samples == 3 and demo.seeds == [0, 1, 2]
    assert list(demo.arms) == ["baseline", "foresight", "window_0", "window_1", "window_012", "causal_encoder", "strong"]
    with pytest.raises(ConfigError, match="Did you mean 'samples'"):
        load_demo([], ["demo.sampels=3"])
    with pytest.raises(ConfigError, match="distinct seeds"):
        load_demo([], ["demo.seeds=[]"])
    with pytest.raises(ConfigError, match="'baseline' and 'foresight'"):
        load_demo([], ["demo.arms={}"])  # an override replaces the whole mapping
    with pytest.raises(ConfigError, match="unknown: critic"):
        load_demo([], ["demo.stages.critic={config: tiny_dmd.yaml}"])
    with pytest.raises(ConfigError, match="config file not found: absent.yaml"):
        load_demo(["absent.yaml"])


def test_a_stage_is_its_train_config_then_shared_then_its_own_keys_then_the_arm(tmp_path):
    demo = load_demo([], ["demo.shared.world.max_sprites=3", "demo.stages.dmd.train.steps=7",
                          "demo.arms.foresight.train.steps=9", "demo.workers=2"])
    plan = Plan(tmp_path, demo, None)
    runs = {"teacher": tmp_path / "t", "ar": tmp_path / "a", "ode": tmp_path / "o"}
    dmd = plan.dmd_stages(runs)
    base, fore = dmd[("baseline", 0)], dmd[("foresight", 0)]
    assert (base.train.steps, fore.train.steps) == (7, 9)  # the arm's keys come last
    assert not base.foresight.enabled and fore.foresight.enabled and fore.world.max_sprites == 3
    assert base.train.init_from == str(tmp_path / "o") and base.dmd.teacher == str(tmp_path / "t")
    assert base.train.out_dir == str(tmp_path / "baseline" / "seed_0") and base.data.num_workers == 0
    stages = plan.shared_stages()
    assert [name for _, name, _ in stages] == ["teacher"] * 5 + ["ar", "ode"]  # the teacher's 4 cycles
    cfgs = [cfg for _, _, cfg in stages]
    assert all(c.world.max_sprites == 3 and c.data.num_workers == 2 for c in cfgs)
    assert [c.train.steps for c in cfgs[:5]] == [4000, 2000, 1500, 800, 4000]  # base_teacher.yaml, then the cycles
    assert [c.train.init_from for c in cfgs[1:6]] == [c.train.out_dir for c in cfgs[:5]]  # each from the last
    assert cfgs[6].train.init_from == cfgs[6].distill.teacher == cfgs[5].train.out_dir
    bad = Plan(tmp_path, load_demo([], ["demo.stages.ode.train.stpes=3"]), None)
    with pytest.raises(ConfigError, match="demo stage 'ode'.*Did you mean 'steps'"):
        bad.check()  # before anything trains


def test_quick_and_dose_files_change_sizes_steps_and_arms(tmp_path):
    quick = Plan(tmp_path, load_demo(["demo_quick.yaml"]), None)
    assert quick.base is None
    teacher = quick.shared_stages()[0][2]
    assert (teacher.model.dim, teacher.train.steps, teacher.train.ema_decay) == (32, 20, 0.998)  # tiny_teacher.yaml's
    dose = load_demo(["demo_dose.yaml"])
    arms = Plan(tmp_path, dose, None).dmd_stages({n: tmp_path for n in SHARED})
    assert arms[("foresight_w0.1", 0)].foresight.weight == 0.1 and arms[("foresight_w1", 0)].train.steps == 800


def test_the_base_is_shipped_a_folder_or_none():
    assert base_folder("shipped") == shipped_base() and base_folder(None) is None and base_folder("null") is None
    assert base_folder("some/dir") == Path("some/dir")


# --------------------------------------------------------------------------------------------------
# Statistics and tables


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
    assert single["n"] == 1 and single["ci95"] is None and single["p"] is None
    assert verdict(single, "m") == "m: difference +0.0200 with 1 training seed: no interval, no conclusion"


def test_verdict_reads_the_interval():
    c = {"n": 3, "mean_diff": -0.05, "ci95": [-0.08, -0.02], "p": 0.01, "seeds_better": 0}
    assert "excludes zero: foresight is worse" in verdict(c, "probe_identity@4x")
    c = {"n": 3, "mean_diff": 0.01, "ci95": [-0.02, 0.04], "p": 0.4, "seeds_better": 2}
    assert "includes zero" in verdict(c, "probe_identity@4x")


def test_results_md_lists_every_arm_when_there_are_more_than_two():
    c = {"n": 2, "mean_diff": 0.02, "ci95": [-0.01, 0.05], "p": 0.2, "seeds_better": 2}
    results = {"contrasts": {"foresight": {PRIMARY_ENDPOINT: c}, "window_0": {PRIMARY_ENDPOINT: {**c, "mean_diff": -0.03}}}}
    table = arms_table(results)
    assert "| window_0 | -0.030 (-0.010, +0.050) |" in table and "| foresight | +0.020" in table
    assert "2 training seed(s) (95% CI)" in table
    assert arms_table({"contrasts": {"foresight": {PRIMARY_ENDPOINT: c}}}) == ""  # two arms: the main table says it


def fake_results(seeds: list[int], shift: float = 0.0, **demo) -> dict:
    """Results of a demo whose arms score 0.5 + 0.01 * seed (+0.02 + 0.005 * seed for foresight) on every endpoint."""
    arms = {arm: {s: {m: 0.5 + 0.01 * s + (0.02 + 0.005 * s) * (arm == "foresight") + shift for m in ENDPOINTS}
                  for s in seeds}
            for arm in ("baseline", "foresight")}
    contrasts = {"foresight": {m: contrast(arms["foresight"], arms["baseline"], m) for m in ENDPOINTS}}
    settings = {**vars(load_demo()), "seeds": seeds, **demo}
    return {"plan": {"demo": settings}, "arms": {a: {str(s): v for s, v in m.items()} for a, m in arms.items()},
            "contrasts": contrasts, "verdict": verdict(contrasts["foresight"][PRIMARY_ENDPOINT], PRIMARY_ENDPOINT),
            "minutes": 9.0, "cpu": "test CPU", "command": "mirai demo --seeds 0 1 2"}


def test_a_run_is_checked_against_the_reference_seed_by_seed():
    reference = fake_results([0, 1, 2])
    same = fake_results([0])
    check = reproduction(same, reference)
    assert check["reproduced"] and check["pairs"] == 2 and check["max_abs_diff"] == 0
    off = fake_results([0], shift=0.003)
    check = reproduction(off, reference)
    assert not check["reproduced"] and check["max_abs_diff"] == pytest.approx(0.003)
    assert check["max_abs_diff"] > REPRODUCED_WITHIN and "seed 0" in check["where"]
    other = fake_results([0], samples=4)
    assert not reproduction(other, reference)["comparable"] and reproduction(other, reference)["differs"] == ["samples"]
    same["reproduction"] = reproduction(same, reference)
    printed = "\n".join(summary_lines(same, reference))
    assert "nan" not in printed.lower() and "no CI" in printed and "--seeds 0 1 2" in printed
    assert "The answer shipped with the base" in printed and "(+" in printed  # the reference's interval
    assert "reproduced" in printed and "about 18 more min" in printed  # 2 more seeds at 9 min each


# --------------------------------------------------------------------------------------------------
# Steps side by side and the time left


def test_steps_return_in_order_and_a_failure_side_by_side_stops_the_demo():
    steps = [tasks.Task(f"add {i}", operator.add, (i, 10), already_done=False) for i in range(3)]
    assert tasks.run_tasks(steps, 1, tasks.Progress([1.0] * 3)) == [10, 11, 12]
    bad = steps + [tasks.Task("fails", operator.truediv, (1, 0), already_done=False)]
    with pytest.raises(ZeroDivisionError):  # (the quick demo's test checks --jobs 2 against one process)
        tasks.run_tasks(bad, 2, tasks.Progress([1.0] * 4))


def interrupted_together(folder: str, name: str) -> None:
    """A step that waits until its partner runs too (one per worker), then is interrupted, as by a SIGINT to both."""
    (Path(folder) / name).touch()
    deadline = time.monotonic() + 120
    while len(list(Path(folder).glob("started_*"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    raise TrainingInterrupted(f"{name}: interrupted")


def test_an_interrupt_side_by_side_starts_no_queued_step(tmp_path):
    steps = [tasks.Task(f"arm {i}", interrupted_together, (str(tmp_path), f"started_{i}"), already_done=False)
             for i in range(2)]
    queued = tasks.Task("queued", interrupted_together, (str(tmp_path), "queued_ran"), already_done=False)
    with pytest.raises(TrainingInterrupted):
        tasks.run_tasks(steps + [queued], 2, tasks.Progress([1.0] * 3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["started_0", "started_1"]  # the third never started


@pytest.mark.parametrize("stop", [KeyboardInterrupt(), TrainingInterrupted("SIGTERM at step 3/10")])
def test_an_interrupted_demo_says_how_to_resume_in_one_line(tmp_path, monkeypatch, capsys, stop):
    def interrupted(plan):  # as Ctrl-C reaches the main process while it waits on an evaluation, or a stage stops
        raise stop
    monkeypatch.setattr("mirai.demo.run_demo", interrupted)
    assert main(["demo", "--out", str(tmp_path / "demo")] + QUICK) == 130
    said = capsys.readouterr().err.strip()
    assert said.startswith("stopped (") and "the same command resumes" in said and "\n" not in said
    assert str(stop) in said


def test_side_by_side_the_time_left_waits_until_each_process_has_finished_a_step(capsys):
    progress = tasks.Progress([1.0] * 4)
    progress.hold_estimate(2)  # two processes: the first step ends after 10 minutes, the other 6 seconds later
    progress.finish(600.0, report="first")
    assert "min left" not in capsys.readouterr().out  # 10 min per step would be twice the true pace
    progress.finish(6.0, report="second")
    assert "~10.1 min left" in capsys.readouterr().out  # 2 steps left at 606 s per 2 steps


def test_the_time_left_ignores_steps_already_done(capsys):
    progress = tasks.Progress([2.0, 2.0, 1.0, 1.0])
    progress.finish(0.0, already_done=True)  # resumed: it took no time and must not make the rest look free
    progress.start("next")
    assert "min left" not in capsys.readouterr().out  # nothing measured yet: no estimate
    progress.finish(120.0)  # 2 cost units in 2 minutes
    progress.start("third")
    assert "~2.0 min left" in capsys.readouterr().out  # 2 units remain at a minute each


# --------------------------------------------------------------------------------------------------
# Bases


def test_a_changed_base_or_one_of_other_shared_settings_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="no provenance.json"):
        load_base(tmp_path)
    files = {}
    for name in SHARED:
        (tmp_path / f"{name}.safetensors").write_bytes(name.encode())
        files[f"{name}.safetensors"] = {"sha256": hashlib.sha256(name.encode()).hexdigest()}
    (tmp_path / "provenance.json").write_text(json.dumps({"shared": {}, "files": files}))
    assert set(load_base(tmp_path, {})) == set(SHARED)
    with pytest.raises(ConfigError, match="was made with demo.shared="):
        load_base(tmp_path, {"model": {"dim": 32}})
    (tmp_path / "ar.safetensors").write_bytes(b"changed")
    with pytest.raises(ConfigError, match="does not match the sha256"):
        load_base(tmp_path)


def test_a_stage_is_probed_on_prompts_of_the_probes_world(monkeypatch):
    """The probes score scenes of their own world: a file of another world is probed on the probe's world."""
    from types import SimpleNamespace

    from mirai.config import load_config

    asked = []

    def fake_generate(run, num, frames, seed, device, overrides, world=None):
        asked.append((world, overrides))
        return np.zeros((num, frames, 4, 4, 3), np.uint8), None

    hard = load_config("tiny_teacher.yaml", ["world.max_sprites=3"]).world
    probe = SimpleNamespace(world=hard, score=lambda videos, prompts: SimpleNamespace(summary=lambda: {"identity": 1.0}))
    monkeypatch.setattr("mirai.demo.base.generate", fake_generate)
    assert stage_probes("file", probe, 8, [0, 1], overrides=["sample.steps=32"]) == {"identity": 1.0}
    assert asked == [(hard, ["sample.steps=32"])] * 2 and hard.max_sprites == 3


@pytest.mark.skipif(not shipped_base().is_dir(), reason="no base shipped")
def test_the_shipped_base_matches_its_provenance_and_stage_configs():
    """The shipped files are the ones provenance.json hashed, and each carries the world and sampler of the stage
    config the demo names for it, so a demo from the base evaluates in the world it was trained in."""
    assert set(load_base(shipped_base(), {})) == set(SHARED)
    plan = Plan(Path("unused"), load_demo(), shipped_base())
    for name in SHARED:
        cfg = plan.stage(name, Path("unused"))
        settings = ckpt.run_config(shipped_base() / f"{name}.safetensors", [])
        assert (settings.world, settings.sample, settings.schedule) == (cfg.world, cfg.sample, cfg.schedule)
    reference = json.loads((shipped_base() / "reference.json").read_text())
    assert len(reference["plan"]["demo"]["seeds"]) >= 3 and reference["contrasts"]["foresight"][PRIMARY_ENDPOINT]["ci95"]


# --------------------------------------------------------------------------------------------------
# End to end


def head_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent)
    except OSError:
        return None
    return out.stdout.strip() or None


def written(folder: Path) -> dict[str, int]:
    """Every training state and evaluation under a demo folder, with its modification time."""
    return {str(p): p.stat().st_mtime_ns for p in folder.rglob("*") if p.name in ("ckpt.safetensors", "eval.json")}


@pytest.mark.slow
def test_quick_demo_writes_a_complete_report(tmp_path, capsys):
    out, base = tmp_path / "demo", tmp_path / "base"
    args = ["demo", "--out", str(out), "--seeds", "0", "1"] + QUICK
    assert main(args + ["--set", f"demo.save_base={base}"]) == 0
    printed = capsys.readouterr().out
    assert "verdict: " + PRIMARY_ENDPOINT in printed and "report.html" in printed and "nan" not in printed.lower()
    assert "long horizon: H* = " in printed and "motion_kept@" in printed
    results = json.loads((out / "results.json").read_text())
    assert set(results["arms"]) == {"baseline", "foresight"} and set(results["arms"]["baseline"]) == {"0", "1"}
    for length in ("1x", "4x", "8x"):
        assert f"probe_identity@{length}" in results["arms"]["foresight"]["0"]
    assert results["contrasts"]["foresight"][PRIMARY_ENDPOINT]["n"] == 2 and results["minutes"] > 0
    table = (out / "results.md").read_text()
    assert f"| {PRIMARY_ENDPOINT} |" in table and "nan" not in table
    page = (out / "report.html").read_text()
    assert "Paired contrasts over training seeds" in page and PRIMARY_ENDPOINT in page
    for figure in ("drift.png", "drift_8x.png", "strip.png"):
        assert iio.imread(out / figure).ndim == 3
    long = results["long_horizon"]
    assert long["horizon"] in (4, 16) and long["endpoints"] == [f"identity@{long['horizon']}x",
                                                               f"motion_kept@{long['horizon']}x"]
    assert long["contrasts"]["foresight"][long["endpoints"][0]]["n"] == 2 and "Long horizon: H* =" in table
    drift = json.loads((out / "baseline" / "seed_0" / "drift" / "eval.json").read_text())
    assert drift["frames"] == 16 * 4 and drift["horizons"] == [1, 4, 16] and drift["sample"]["window_chunks"] == 1
    assert drift["real"]["metrics"]["probe_motion@block16x"] > 0  # the control: real clips as long, still moving
    before = written(out)
    assert len(before) == 2 * 2 * 3 + 4  # 2 arms x 2 seeds: a state, an evaluation, a drift each; 4 shared stages
    assert main(args) == 0  # a second run resumes: every stage and evaluation is already done, nothing is redone
    assert written(out) == before and json.loads((out / "results.json").read_text())["arms"] == results["arms"]
    # the shared stages as a base: fp16 files with provenance; a demo started from it trains no shared stage
    prov = json.loads((base / "provenance.json").read_text())
    assert set(prov["files"]) == {"teacher.safetensors", "ar.safetensors", "ode.safetensors"}
    assert prov["commit"] == head_commit()
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
    assert main(["demo", "--out", str(from_base)] + QUICK + ["--set", f"demo.base={base}"]) == 0
    assert not (from_base / "shared").exists()
    results = json.loads((from_base / "results.json").read_text())
    assert results["contrasts"]["foresight"][PRIMARY_ENDPOINT]["n"] == 1
    assert "--seeds 0 1 2" in capsys.readouterr().out  # one seed: what an interval takes
    # the arms side by side in two processes: the same numbers (up to the threads' float rounding)
    side = tmp_path / "side_by_side"
    assert main(["demo", "--out", str(side)] + QUICK + ["--set", f"demo.base={base}", "--set", "demo.jobs=2"]) == 0
    assert "steps side by side in 2 processes" in capsys.readouterr().out
    parallel = json.loads((side / "results.json").read_text())["arms"]
    for arm, seeds in results["arms"].items():
        assert parallel[arm]["0"] == pytest.approx(seeds["0"], abs=1e-5)


# --------------------------------------------------------------------------------------------------
# The long-horizon question


def test_the_long_rollouts_never_attend_past_the_trained_clip():
    """The dips at 3.25x and 6.5x the clip came from keys 26 frames back, which a model trained on 8-frame clips
    never saw (docs/long_video.md); the demo's 8x evaluation (sink 1 + window 4x) reaches 33 frames back."""
    clip, fpc = 8, 2
    sample = lambda overrides: SampleConfig(**apply_overrides({}, overrides)["sample"])  # noqa: E731
    assert attended_span(sample(long_rollout_overrides(clip, fpc)), fpc, 128 * clip) <= clip - 1
    assert attended_span(sample(eval_overrides(clip, fpc)), fpc, 8 * clip) == 33


def drift_eval(identity: list[float], motion: list[float], real_identity=1.0, real_motion=0.8) -> dict:
    """A drift eval.json of one (arm, training seed) at horizons 1, 4, 32 (one sampling seed)."""
    horizons = [1, 4, 32]
    seed = {f"probe_identity@block{h}x": i for h, i in zip(horizons, identity)}
    seed |= {f"probe_motion@block{h}x": m for h, m in zip(horizons, motion)}
    real = {f"probe_identity@block{h}x": real_identity for h in horizons}
    real |= {f"probe_motion@block{h}x": real_motion for h in horizons}
    return {"per_seed": {0: seed}, "real": {"metrics": real}}


def test_the_long_horizon_is_the_first_where_the_baseline_lost_a_clear_amount():
    horizons = [1, 4, 32]
    steady = drift_eval([0.8, 0.79, 0.78], [0.8, 0.8, 0.7])
    assert first_lost_horizon([steady], horizons)[0] == 32  # never lost: the last horizon
    forgets = drift_eval([0.8, 0.74, 0.7], [0.8, 0.8, 0.8])
    assert first_lost_horizon([forgets], horizons)[0] == 4  # identity gap widened by 0.06
    freezes = drift_eval([0.8, 0.8, 0.8], [0.8, 0.5, 0.3])
    assert first_lost_horizon([freezes], horizons) == (32, "motion 0.300 px/frame against the real clips' 0.800")
    answer = long_horizon({"baseline": {0: forgets, 1: forgets}, "foresight": {0: steady, 1: freezes}}, horizons)
    assert answer["horizon"] == 4 and answer["endpoints"] == ["identity@4x", "motion_kept@4x"]
    c = answer["contrasts"]["foresight"]["identity@4x"]
    assert c["n"] == 2 and c["per_seed"] == {"0": pytest.approx(0.05), "1": pytest.approx(0.06)}
    assert answer["arms"]["foresight"]["1"]["motion_kept@4x"] == pytest.approx(0.5 / 0.8)
