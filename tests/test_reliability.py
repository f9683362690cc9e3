"""Nothing lost on a kill, Ctrl-C, a full disk or a NaN; corrupt checkpoints named. The full kill count lives in
scripts/kill_harness.py (the harness: tests/harness/kill.py); here a few targeted kills run in CI."""

import errno
import json
import os
import signal
from pathlib import Path

import pytest
import torch

from mirai import checkpoint as ckpt
from mirai.cli import main
from mirai.training import supervised
from mirai.training.dmd import CriticMonitor
from mirai.training.loop import TrainingInterrupted, train
from mirai.training.optim import NonFiniteError
from tests.conftest import tiny_cfg
from tests.harness import kill


@pytest.fixture(scope="module")
def harness():
    return kill


def logged_steps(run: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]


# ---------------------------------------------------------------- SIGKILL at the worst moments


@pytest.mark.parametrize("site", ["checkpoint-between-files", "checkpoint-before-rename"])
def test_a_kill_inside_the_last_checkpoint_then_a_rerun_gives_the_uninterrupted_files(harness, tmp_path, site):
    reference, out = tmp_path / "reference", tmp_path / "killed"
    assert harness.run(harness.stage_args("teacher_forcing", tmp_path, reference))[0] == 0
    argv = harness.stage_args("teacher_forcing", tmp_path, out)
    hits = {"checkpoint-between-files": 4, "checkpoint-before-rename": 7}[site]  # inside the last of 4 saves
    code, _ = harness.run(argv, fault=(site, hits))
    assert harness.killed(code)
    assert harness.run(argv)[0] == 0
    assert harness.compare(out, reference) == []


def test_an_observer_sees_every_site_of_every_checkpoint_write_in_order(tmp_path, monkeypatch):
    """The named points the harness kills at: each save writes the training state, is between the two files,
    then writes the exported model; nothing is reached when no observer is registered."""
    seen = []
    monkeypatch.setattr(ckpt, "observers", [seen.append])
    train(tiny_cfg(tmp_path, steps=4, ckpt_every=2), quiet=True)
    save = ["checkpoint-before-rename", "checkpoint-between-files", "checkpoint-before-rename"]
    assert seen == save * 2


def test_kill_at_kills_at_the_nth_hit_of_its_site_only(harness, tmp_path):
    out = tmp_path / "killed"
    argv = harness.stage_args("teacher", tmp_path, out)
    code, _ = harness.run(argv, fault=("checkpoint-between-files", 2))
    assert harness.killed(code)
    assert ckpt.load(out / "ckpt.safetensors")[1]["step"] == 4  # the second save committed, its model not yet
    assert ckpt.load(out / "model.safetensors")[1]["step"] == 2
    assert harness.run(argv, fault=("no-such-site", 1))[0] == 0


def test_random_kills_of_the_dmd_foresight_stage_lose_nothing(harness, tmp_path):
    import random

    harness.prepare(tmp_path)
    reference = tmp_path / "reference"
    code, duration = harness.run(harness.stage_args("dmd_foresight", tmp_path, reference))
    assert code == 0
    out = tmp_path / "trial"
    result = harness.trial(harness.stage_args("dmd_foresight", tmp_path, out), out, reference, duration, 4,
                           random.Random(1))
    assert result["problems"] == [] and result["errors"] == 0 and result["kills"] >= 1


def test_the_harness_sees_a_stale_model_file(harness, tmp_path):
    """The comparison itself must fail when the exported model and the training state disagree."""
    run = train(tiny_cfg(tmp_path / "run", steps=4), quiet=True)
    state, meta = ckpt.load(run / "ckpt.safetensors")
    ckpt.save_model(ckpt.load_model(run), run / "model.safetensors", {"step": meta["step"] - 2})
    assert any("step" in p for p in harness.compare(run, run))


def test_metrics_log_keeps_no_step_twice_after_a_resume(tmp_path):
    cfg = tiny_cfg(tmp_path, steps=6, ckpt_every=2)
    train(cfg, stop_at=2, quiet=True)
    with (tmp_path / "metrics.jsonl").open("a") as f:  # what a run killed at step 3.5 had logged
        f.write(json.dumps({"step": 3, "loss": 1.0}) + "\n" + '{"step": 4, "lo')
    train(cfg, quiet=True)
    assert logged_steps(tmp_path) == [1, 2, 3, 4, 5, 6]


def test_stale_temporary_files_are_removed(tmp_path):
    cfg = tiny_cfg(tmp_path, steps=2)
    (tmp_path / "ckpt.safetensors1234abcd.tmp").write_bytes(b"half a checkpoint")
    train(cfg, quiet=True)
    assert not list(tmp_path.glob("*.tmp"))


# ---------------------------------------------------------------- Ctrl-C / SIGTERM


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_checkpoints_the_current_step_and_says_how_to_resume(tmp_path, monkeypatch, sig):
    full = train(tiny_cfg(tmp_path / "full", steps=6, ckpt_every=4), quiet=True)
    cfg = tiny_cfg(tmp_path / "part", steps=6, ckpt_every=4)
    step = supervised.SupervisedStage.step

    def step_then_signal(self, batch, i, gen):
        out = step(self, batch, i, gen)
        if i == 2:  # during the third step, as a user pressing Ctrl-C
            os.kill(os.getpid(), sig)
        return out

    monkeypatch.setattr(supervised.SupervisedStage, "step", step_then_signal)
    before = signal.getsignal(signal.SIGINT)  # default, or ignored when started in the background (nohup, CI)
    with pytest.raises(TrainingInterrupted, match="at step 3/6.*run the same command again to resume"):
        train(cfg, quiet=True)
    assert ckpt.load(tmp_path / "part" / "ckpt.safetensors")[1]["step"] == 3
    assert signal.getsignal(signal.SIGINT) == before  # handlers restored
    monkeypatch.undo()
    train(cfg, quiet=True)
    a, b = ckpt.load(full / "ckpt.safetensors")[0], ckpt.load(tmp_path / "part" / "ckpt.safetensors")[0]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_the_cli_reports_an_interrupted_run_with_its_own_exit_code(tmp_path, monkeypatch, capsys):
    def interrupted(*a, **k):
        raise TrainingInterrupted("SIGINT at step 3/6: checkpoint written to x; run the same command again to resume")

    monkeypatch.setattr("mirai.training.loop.train", interrupted)
    assert main(["train", "--set", f"train.out_dir={tmp_path}"]) == 130
    assert capsys.readouterr().err.startswith("stopped: SIGINT at step 3/6")


# ---------------------------------------------------------------- NaN / inf


def nan_at(step_to_break: int, monkeypatch):
    loss = supervised.TeacherForcingStage.loss

    def broken(self, batch, gen):
        value = loss(self, batch, gen)
        return value * float("nan") if self._step == step_to_break else value

    step = supervised.SupervisedStage.step

    def counting(self, batch, i, gen):
        self._step = i
        return step(self, batch, i, gen)

    monkeypatch.setattr(supervised.TeacherForcingStage, "loss", broken)
    monkeypatch.setattr(supervised.SupervisedStage, "step", counting)


def test_a_nan_loss_stops_the_run_naming_step_stage_and_term_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    cfg = tiny_cfg(tmp_path, steps=6, ckpt_every=2)
    train(cfg, stop_at=2, quiet=True)
    good = ckpt.load(tmp_path / "ckpt.safetensors")[0]
    nan_at(3, monkeypatch)
    with pytest.raises(NonFiniteError, match="non-finite loss = nan at step 3 of stage teacher_forcing"):
        train(cfg, quiet=True)
    kept, meta = ckpt.load(tmp_path / "ckpt.safetensors")
    assert meta["step"] == 2 and all(torch.equal(good[k], kept[k]) for k in good)


def test_skip_policy_skips_the_bad_step_and_counts_it(tmp_path, monkeypatch):
    nan_at(3, monkeypatch)
    run = train(tiny_cfg(tmp_path, steps=6, on_nonfinite="skip"), quiet=True)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r.get("skipped_nonfinite")] == [4]
    state = ckpt.load(run / "ckpt.safetensors")[0]
    assert all(torch.isfinite(v).all() for k, v in state.items() if v.is_floating_point())


def test_critic_collapse_is_flagged():
    monitor = CriticMonitor(warmup=5)
    assert not any(monitor.update(0.1) for _ in range(20))
    assert monitor.update(5.0)  # 50x its running average
    assert not CriticMonitor(warmup=5).update(5.0)  # nothing to compare with yet


# ---------------------------------------------------------------- disks and files


def test_a_full_disk_gives_a_clear_error_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch, capsys):
    cfg = tiny_cfg(tmp_path, steps=4, ckpt_every=2)
    train(cfg, stop_at=2, quiet=True)
    before = (tmp_path / "ckpt.safetensors").read_bytes()

    def full_disk(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"partial")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(ckpt, "save_file", full_disk)
    with pytest.raises(ckpt.CheckpointError, match=r"could not write .*\.safetensors: No space left on device"):
        train(cfg, quiet=True)
    assert (tmp_path / "ckpt.safetensors").read_bytes() == before and not list(tmp_path.glob("*.tmp"))
    args = ["train", "--set", "train.steps=4", "--set", "train.ckpt_every=2"]
    args += [a for item in ("world.image_size=16", "world.sprite_sizes=[5]", "model.dim=32", "model.depth=2",
                            "model.heads=2", "model.patch_size=4", "model.image_size=16", "data.clip_frames=4",
                            "train.batch_size=2", "train.sample_every=0", f"train.out_dir={tmp_path}")
             for a in ("--set", item)]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: could not write") and "No space left" in err[0]


def test_a_flipped_bit_and_a_truncated_file_are_named(tmp_path):
    run = train(tiny_cfg(tmp_path, steps=2), quiet=True)
    data = bytearray((run / "model.safetensors").read_bytes())
    data[-100] ^= 0x01  # one bit of one weight
    flipped = tmp_path / "flipped.safetensors"
    flipped.write_bytes(bytes(data))
    with pytest.raises(ckpt.CheckpointError, match="flipped.safetensors is corrupt: its tensors do not match"):
        ckpt.load(flipped)
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(bytes(data[: len(data) // 2]))
    with pytest.raises(ckpt.CheckpointError, match="truncated.safetensors is not a readable safetensors"):
        ckpt.load(truncated)


def test_resuming_another_stage_is_refused(tmp_path):
    train(tiny_cfg(tmp_path, steps=2), quiet=True)
    with pytest.raises(ckpt.CheckpointError, match="training state of a 'teacher_forcing' stage, not of this 'bidirectional'"):
        train(tiny_cfg(tmp_path, steps=4, objective="bidirectional"), quiet=True)
