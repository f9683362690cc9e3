"""One clear message for every kind of bad input: configs, CLI arguments, video files and weights files.

`CASES` is the table: (name, what to run, the exact one-line message, with {tmp} for the test's folder).
CLI cases run `mirai.cli.main` and compare its stderr's last line (argparse errors come after their usage);
the others compare `TypeName: message` of the error raised. `scripts/bad_inputs.py` prints the table.
"""

import contextlib
import io
import os
import pickle
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from mirai.cli import main
from mirai.config import config_from_dict, load_config
from mirai.data.datasets import VideoFolderDataset
from mirai.eval.extractors import load_extractor
from tests.conftest import EVAL_JSON

MARKER = "pwned.txt"  # what the malicious pickle would write


class Malicious:
    """Unpickling this runs a shell command that writes MARKER next to the file."""

    def __init__(self, folder: Path):
        self.folder = folder

    def __reduce__(self):
        return os.system, (f"touch {self.folder / MARKER}",)


def frames(T, H=8, W=8, C=3):
    return np.random.default_rng(0).integers(0, 255, size=(T, H, W, C) if C else (T, H, W), dtype=np.uint8)


# --------------------------------------------------------------------------------------------------
# Inputs: each takes the test folder and returns the folder/file the case reads


def video_folder(tmp: Path, make) -> Path:
    root = tmp / "videos"
    root.mkdir()
    make(root)
    return root


def frame_folder(root: Path, pictures) -> None:
    (root / "clip").mkdir()
    for i, p in enumerate(pictures):
        iio.imwrite(root / "clip" / f"{i:03d}.png", p)


def run_dir(tmp: Path) -> Path:
    """A run folder whose model file is corrupt (enough for every check that comes before loading it)."""
    (tmp / "run").mkdir(exist_ok=True)
    (tmp / "run" / "model.safetensors").write_bytes(b"\x00" * 16)
    return tmp / "run"


def cli(*argv):
    return lambda tmp: ("cli", [a.format(tmp=tmp) for a in argv])


def config(data):
    return lambda tmp: ("call", lambda: config_from_dict(data))


def videos(make, clip_frames=8):
    return lambda tmp: ("call", lambda: VideoFolderDataset(video_folder(tmp, make), clip_frames, 16))


def weights(write):
    def case(tmp):
        path = tmp / "weights.pth"
        write(path)
        return "call", lambda: load_extractor("dino_vitb16", weights=path)
    return case


def setup_file(name: str, content: str):
    """A CLI case that needs a file first."""
    def prepare(tmp, argv):
        (tmp / name).write_text(content)
        return cli(*argv)(tmp)
    return prepare


# name -> (case, expected message)
CASES = {
    # configs
    "config: negative steps": (config({"train": {"steps": -3}}), "ConfigError: train.steps must be >= 1, got -3"),
    "config: zero batch": (config({"train": {"batch_size": 0}}), "ConfigError: train.batch_size must be >= 1, got 0"),
    "config: lr <= 0": (config({"train": {"lr": 0}}), "ConfigError: train.lr must be > 0, got 0.0"),
    "config: NaN lr": (config({"train": {"lr": "nan"}}),
                       "ConfigError: config key 'train.lr': expected a finite number, got 'nan'"),
    "config: wrong type": (config({"train": {"steps": "many"}}),
                           "ConfigError: config key 'train.steps': expected an integer, got 'many'"),
    "config: unknown key": (config({"sample": {"windw_chunks": 2}}),
                            "ConfigError: unknown config key 'sample.windw_chunks'. Did you mean 'window_chunks'? "
                            "Valid keys: cfg_scale, context_noise, kv_cache_dtype, positions, precision, "
                            "recache_every, sink_chunks, solver, steps, switch, timesteps, window_chunks"),
    "config: positions": (config({"sample": {"positions": "relative"}}),
                          "ConfigError: sample.positions must be 'window' or 'absolute', got 'relative'"),
    "config: switch mode": (config({"sample": {"switch": "swap"}}),
                            "ConfigError: sample.switch must be 'recache' or 'keep', got 'swap'"),
    "config: replay device": (config({"foresight": {"replay_device": "gpu"}}),
                              "ConfigError: foresight.replay_device must be 'cpu' or 'device', got 'gpu'"),
    "config: kv cache dtype": (config({"sample": {"kv_cache_dtype": "fp16"}}),
                               "ConfigError: sample.kv_cache_dtype must be 'auto', 'fp32' or 'bf16', got 'fp16'"),
    "config: probability > 1": (config({"train": {"prompt_dropout": 1.5}}),
                                "ConfigError: train.prompt_dropout must be in [0, 1], got 1.5"),
    "config: occluder_prob < 0": (config({"world": {"occluder_prob": -0.1}}),
                                  "ConfigError: world.occluder_prob must be in [0, 1], got -0.1"),
    "config: context_noise = 1": (config({"sample": {"context_noise": 1}}),
                                  "ConfigError: sample.context_noise must be in [0, 1), got 1.0"),
    "config: negative window": (config({"sample": {"window_chunks": -1}}),
                                "ConfigError: sample.window_chunks must be >= 0, got -1"),
    "config: negative sink": (config({"sample": {"sink_chunks": -2}}),
                              "ConfigError: sample.sink_chunks must be >= 0, got -2"),
    "config: cfg_scale < 0": (config({"sample": {"cfg_scale": -1}}),
                              "ConfigError: sample.cfg_scale must be >= 0, got -1.0"),
    "config: rising timesteps": (config({"sample": {"timesteps": [500, 1000]}}),
                                 "ConfigError: sample.timesteps must be strictly decreasing, got [500.0, 1000.0]"),
    "config: DMD t range": (config({"dmd": {"t_min": 0.9, "t_max": 0.5}}),
                            "ConfigError: dmd.t_min=0.9 must be smaller than dmd.t_max=0.5"),
    "config: zero critic updates": (config({"dmd": {"critic_updates_per_gen": 0}}),
                                    "ConfigError: dmd.critic_updates_per_gen must be >= 1, got 0"),
    "config: zero shard size": (config({"distill": {"shard_size": 0}}),
                                "ConfigError: distill.shard_size must be >= 1, got 0"),
    "config: sample precision": (config({"sample": {"precision": "fp16"}}),
                                 "ConfigError: sample.precision must be 'auto', 'bf16' or 'fp32', got 'fp16'"),
    "config: zero replay": (config({"foresight": {"replay_size": 0}}),
                            "ConfigError: foresight.replay_size must be >= 1, got 0"),
    "config: negative window offset": (config({"foresight": {"window": [-1, 0]}}),
                                       "ConfigError: every item of foresight.window must be >= 0, got [-1, 0]"),
    "config: frames_per_chunk 0": (config({"model": {"frames_per_chunk": 0}}),
                                   "ConfigError: model.frames_per_chunk must be >= 1, got 0"),
    "config: patch_size 0": (config({"model": {"patch_size": 0}}),
                             "ConfigError: model.patch_size must be >= 1, got 0"),
    "config: depth 0": (config({"model": {"depth": 0}}), "ConfigError: model.depth must be >= 1, got 0"),
    "config: chunk does not divide clip": (config({"data": {"clip_frames": 7}}),
                                           "ConfigError: data.clip_frames=7 is not a multiple of "
                                           "model.frames_per_chunk=2"),
    "config: sprite larger than image": (config({"world": {"sprite_sizes": [40]}}),
                                         "ConfigError: world.sprite_sizes must be a non-empty list of sizes <= "
                                         "world.image_size=32, got [40]"),
    "config: no colours": (config({"world": {"num_colors": 0}}),
                           "ConfigError: world.num_colors must be >= 1, got 0"),
    "config: preset not a name": (config({"model": {"preset": ["tiny"]}}),
                                  "ConfigError: unknown model preset '['tiny']'; choose one of "
                                  "['base', 'small', 'tiny', 'wan-tiny', 'wan1.3b', 'wan14b']"),
    "config: override without =": (lambda tmp: ("call", lambda: load_config(None, ["train.steps"])),
                                   "ConfigError: override 'train.steps' is not of the form section.key=value"),
    # the CLI
    "cli: --frames -4": (cli("sample", "--ckpt", "{tmp}/run", "--frames", "-4"),
                         "mirai sample: error: argument --frames: must be >= 1, got -4"),
    "cli: --frames 0": (cli("sample", "--ckpt", "{tmp}/run", "--frames", "0"),
                        "mirai sample: error: argument --frames: must be >= 1, got 0"),
    "cli: --num 0": (cli("sample", "--ckpt", "{tmp}/run", "--num", "0"),
                     "mirai sample: error: argument --num: must be >= 1, got 0"),
    "cli: --out .xyz": (cli("sample", "--ckpt", "{tmp}/run", "--out", "{tmp}/video.xyz"),
                        "error: {tmp}/video.xyz: unknown output format '.xyz' (use .mp4, .gif, .png, .npz)"),
    "cli: --out under a file": (setup_file("afile", "x"), ["sample", "--ckpt", "{tmp}/run", "--out",
                                                            "{tmp}/afile/v.mp4"]),
    "cli: --out is a folder": (cli("sample", "--ckpt", "{tmp}/run", "--out", "{tmp}"),
                               "error: {tmp}: unknown output format '' (use .mp4, .gif, .png, .npz)"),
    "cli: missing checkpoint": (cli("sample", "--ckpt", "{tmp}/nope", "--out", "{tmp}/s.gif"),
                                "error: checkpoint not found: {tmp}/nope"),
    "cli: corrupt checkpoint": (lambda tmp: cli("sample", "--ckpt", str(run_dir(tmp)), "--out", "{tmp}/s.gif")(tmp),
                                "error: {tmp}/run/model.safetensors is not a readable safetensors checkpoint "
                                "(corrupt or truncated?): Error while deserializing header: invalid JSON in header: EOF while parsing a "
                                "value at line 1 column 0"),
    "cli: unknown device": (cli("sample", "--ckpt", "{tmp}/run", "--out", "{tmp}/s.gif", "--device", "gpu"),
                            "error: unknown device 'gpu'; use auto, cpu, cuda or cuda:N"),
    "cli: eval --samples 0": (cli("eval", "--ckpt", "{tmp}/run", "--samples", "0"),
                              "mirai eval: error: argument --samples: must be >= 1, got 0"),
    "cli: eval --seeds empty": (cli("eval", "--ckpt", "{tmp}/run", "--seeds"),
                                "mirai eval: error: argument --seeds: expected at least one argument"),
    "cli: eval unknown extractor": (cli("eval", "--ckpt", "{tmp}/run", "--extractor", "inception"),
                                    "mirai eval: error: argument --extractor: invalid choice: 'inception' (choose "
                                    "from 'effnet_lite0', 'dino_vitb16', 'clip_vitb32', 'clip_vitl14', 'i3d_k400', "
                                    "'raft_things', 'amt_s', 'musiq_spaq')"),
    "cli: compare without eval": (cli("compare", "{tmp}", "--out", "{tmp}/r.html"),
                                  "error: {tmp}/eval.json not found: run `mirai eval --ckpt {tmp}` first"),
    "cli: compare corrupt eval.json": (setup_file("eval.json", "{oops"), ["compare", "{tmp}", "--out", "{tmp}/r.html"]),
    "cli: compare --out under a file": (setup_file("eval.json", EVAL_JSON),
                                        ["compare", "{tmp}", "--out", "{tmp}/eval.json/r.html"]),
    "cli: train missing config": (cli("train", "--config", "{tmp}/nope.yaml", "--dry-run"),
                                  "error: config file not found: {tmp}/nope.yaml (shipped configs, usable by name: "
                                  "base_ar.yaml, base_ode.yaml, base_teacher.yaml, demo.yaml, demo_ablation.yaml, "
                                  "demo_dose.yaml, demo_quick.yaml, tiny.yaml, tiny_ar.yaml, tiny_dmd.yaml, tiny_ode.yaml, "
                                  "tiny_teacher.yaml, wan_cache.yaml)"),
    "cli: train bad YAML date": (setup_file("c.yaml", "train:\n  out_dir: 2024-13-45\n"),
                                 ["train", "--config", "{tmp}/c.yaml", "--dry-run"]),
    "cli: train negative steps": (cli("train", "--dry-run", "--set", "train.steps=-3"),
                                  "error: train.steps must be >= 1, got -3"),
    # video folders
    "video: 0-byte mp4": (videos(lambda r: (r / "a.mp4").write_bytes(b"")),
                          "DataError: video file {tmp}/videos/a.mp4 is empty (0 bytes)"),
    "video: text renamed .mp4": (videos(lambda r: (r / "a.mp4").write_text("hello, not a video")),
                                 "DataError: cannot read video file {tmp}/videos/a.mp4 (corrupt, or not a video?): "
                                 "Could not load meta information"),
    "video: 2-frame gif, 8 needed": (videos(lambda r: iio.imwrite(r / "a.gif", frames(2), duration=100)),
                                     "DataError: {tmp}/videos/a.gif has 2 frames (stride 1), fewer than the 8 a "
                                     "clip needs"),
    "video: frames of different sizes": (videos(lambda r: frame_folder(r, [frames(1)[0], frames(1, 8, 10)[0]]), 2),
                                         "DataError: frames in {tmp}/videos/clip differ in size: 001.png is 10x8, "
                                         "the first 8x8"),
    "video: empty frame folder": (videos(lambda r: (r / "clip").mkdir()),
                                  "DataError: frame folder {tmp}/videos/clip holds no .png, .jpg, .jpeg, .bmp images"),
    "video: folder without videos": (videos(lambda r: (r / "notes.txt").write_text("x")),
                                     "DataError: video folder {tmp}/videos is empty: no .mp4, .gif, .webm, .mov, "
                                     ".avi, .mkv files or frame folders"),
    "video: missing folder": (lambda tmp: ("call", lambda: VideoFolderDataset(tmp / "nope", 8, 16)),
                              "DataError: video folder not found: {tmp}/nope"),
    # weights files
    "weights: malicious pickle": (weights(lambda p: p.write_bytes(pickle.dumps({"w": Malicious(p.parent)}, 2))),
                                  "WeightsMismatch: refused to load weights file {tmp}/weights.pth: not a plain state "
                                  "dict of tensors (other pickled objects could run code, so they are never "
                                  "unpickled); save the weights with torch.save(model.state_dict()) or as "
                                  "safetensors"),
    "weights: truncated zip": (weights(lambda p: p.write_bytes(b"PK\x03\x04" + b"\x00" * 30)),
                               "WeightsMismatch: cannot read weights file {tmp}/weights.pth as a state dict: "
                               "PytorchStreamReader failed reading zip archive: failed finding central directory. "
                               "This is an internal miniz error. If you are seeing this error, there is a high "
                               "likelihood that your checkpoint file is corrupted. This can happen if the checkpoint "
                               "was not saved properly, was transferred incorrectly, or the file was modified after "
                               "saving."),
}

# The cases whose message depends on a file the case writes first: (case, argv) -> message
FILE_CASES = {
    "cli: --out under a file": "error: cannot write {tmp}/afile/v.mp4: {tmp}/afile is a file, not a folder",
    "cli: compare corrupt eval.json": "error: {tmp}/eval.json is not a readable eval.json (Expecting property name "
                                      "enclosed in double quotes: line 1 column 2 (char 1)); run `mirai eval --ckpt "
                                      "{tmp}` again",
    "cli: compare --out under a file": "error: cannot write {tmp}/eval.json/r.html: {tmp}/eval.json is a file, not a "
                                       "folder",
    "cli: train bad YAML date": "error: config file {tmp}/c.yaml is not valid YAML: month must be in 1..12",
}


def message_of(name: str, tmp: Path) -> tuple[str, str]:
    """(the message case `name` gives, the expected one) with {tmp} filled in; raises on anything unexpected."""
    case, expected = CASES[name]
    if isinstance(expected, list):  # a case that writes a file before running the CLI
        kind, run = case(tmp, expected)
        expected = FILE_CASES[name]
    else:
        kind, run = case(tmp)
    if kind == "cli":
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                code = main(run)
            except SystemExit as e:  # argparse
                code = e.code
        text = err.getvalue()
        assert code == 2 and "Traceback" not in text, text
        lines = text.strip().splitlines()
        assert lines[0].startswith("usage:") or len(lines) == 1, text  # ours: exactly one line
        got = lines[-1]
    else:
        try:
            run()
        except Exception as e:  # the table says which type is expected
            got = f"{type(e).__name__}: {e}"
        else:
            got = "(no error)"
    return got, expected.format(tmp=tmp)


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_gives_one_clear_message(name, tmp_path):
    got, expected = message_of(name, tmp_path)
    assert got == expected


def test_malicious_pickle_never_runs(tmp_path):
    message_of("weights: malicious pickle", tmp_path)
    assert not (tmp_path / MARKER).exists()
    pickle.loads(pickle.dumps(Malicious(tmp_path), 2))  # the same bytes, unpickled by plain pickle, do run
    assert (tmp_path / MARKER).exists()


@pytest.mark.parametrize("channels", [None, 2, 4])  # gray (H, W), gray + alpha, RGBA
def test_gray_and_alpha_frames_are_converted(tmp_path, channels):
    frame_folder(tmp_path, list(frames(8, C=channels)))
    video = VideoFolderDataset(tmp_path, 8, 16)[0]["video"]
    assert video.shape == (8, 3, 16, 16)
    assert torch.equal(video[:, 0], video[:, 2]) == (channels != 4)  # gray repeated; RGBA keeps its colours


def test_gray_gif_is_converted(tmp_path):
    iio.imwrite(tmp_path / "a.gif", frames(8, C=None), duration=100)
    assert VideoFolderDataset(tmp_path, 8, 16)[0]["video"].shape == (8, 3, 16, 16)


def test_16_bit_frames_keep_their_range(tmp_path):
    frame_folder(tmp_path, [np.full((8, 8), 65535, np.uint16)] * 4)
    assert VideoFolderDataset(tmp_path, 4, 8)[0]["video"].min() == 1.0


def test_a_refused_output_writes_nothing(tmp_path):
    (tmp_path / "afile").write_text("x")
    message_of("cli: --out .xyz", tmp_path)
    message_of("cli: --out under a file", tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


@pytest.mark.skipif(not Path("/sys/kernel").is_dir(), reason="needs a read-only /sys (Linux)")
def test_a_read_only_output_is_refused_before_any_work(tmp_path, capsys):
    assert main(["sample", "--ckpt", str(tmp_path / "nope"), "--out", "/sys/x.mp4"]) == 2
    assert capsys.readouterr().err == "error: cannot write /sys/x.mp4: Permission denied\n"
