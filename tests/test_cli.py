import json

import pytest

from mirai.cli import main
from mirai.training.loop import train
from tests.conftest import tiny_cfg


def test_dry_run_prints_the_resolved_config(capsys):
    assert main(["train", "--dry-run", "--set", "train.steps=7"]) == 0
    out = capsys.readouterr().out
    assert "steps: 7" in out and "prompt_vocab:" in out


def test_bad_config_key_is_one_clear_error(capsys):
    assert main(["train", "--dry-run", "--set", "train.stepz=7"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown config key 'train.stepz'") and "Traceback" not in err


def test_missing_checkpoint_is_one_clear_error(tmp_path, capsys):
    assert main(["sample", "--ckpt", str(tmp_path / "nope"), "--out", str(tmp_path / "x.gif")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return train(tiny_cfg(tmp_path_factory.mktemp("run"), steps=2), quiet=True)


@pytest.mark.parametrize("suffix", ["mp4", "gif", "png"])
def test_sample_writes_videos(run_dir, tmp_path, suffix):
    out = tmp_path / f"s.{suffix}"
    assert main(["sample", "--ckpt", str(run_dir), "--frames", "8", "--num", "2", "--out", str(out),
                 "--set", "sample.steps=2"]) == 0
    assert out.stat().st_size > 0
    meta = json.loads((tmp_path / f"s.{suffix}.json").read_text())
    assert meta["frames"] == 8 and meta["sample"]["steps"] == 2


def test_sample_says_when_it_attends_past_the_trained_clip(run_dir, tmp_path, capsys):
    clip = tiny_cfg(tmp_path).data.clip_frames  # 2 frames a chunk
    long = ["sample", "--ckpt", str(run_dir), "--frames", str(2 * clip), "--num", "1", "--set", "sample.steps=1"]
    assert main(long + ["--out", str(tmp_path / "a.npz")]) == 0
    err = capsys.readouterr().err
    assert f"attend up to {2 * clip - 1} frames back" in err
    assert f"--set sample.window_chunks={clip // 2 - 1} keeps the span inside" in err
    assert main(long + ["--out", str(tmp_path / "b.npz"), "--set", f"sample.window_chunks={clip // 2 - 1}"]) == 0
    assert "attend up to" not in capsys.readouterr().err


def test_sample_rejects_non_sample_overrides(run_dir, tmp_path, capsys):
    assert main(["sample", "--ckpt", str(run_dir), "--out", str(tmp_path / "x.gif"), "--set", "train.lr=1"]) == 2
    assert "only takes sample.*" in capsys.readouterr().err


def test_a_longer_sample_begins_with_the_shorter_one(run_dir, tmp_path):
    import numpy as np

    def frames(n, seed):
        out = tmp_path / f"s{n}_{seed}.npz"
        assert main(["sample", "--ckpt", str(run_dir), "--frames", str(n), "--num", "2", "--seed", str(seed),
                     "--out", str(out), "--set", "sample.steps=2"]) == 0
        return np.load(out)["frames"]

    assert np.array_equal(frames(16, 5)[:, :8], frames(8, 5))


def test_the_command_line_parses_without_importing_torch():
    """`mirai --help` and a bad flag answer at once: the parser needs no torch (each command imports what it runs)."""
    import subprocess
    import sys

    code = ("import sys, mirai.cli as c\ntry:\n    c._parser().parse_args(['--help'])\nexcept SystemExit:\n    pass\n"
            "assert 'torch' not in sys.modules, 'the parser imported torch'")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
