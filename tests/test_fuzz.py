"""Fuzzing the three doors bad input comes through: the config parser, the CLI and the video loader.

The property everywhere: the only outcomes are success or one of the project's own errors with a message.
For the CLI: exit code 0 or 2 and, on 2, exactly one `error:` line (argparse's usage errors end with theirs)
and never a traceback. `scripts/fuzz.py` runs the same `TARGETS` with many more examples and counts failures.
The CLI is only fuzzed where it fails fast: `train --dry-run`, and the other commands with a bad checkpoint.
"""

import contextlib
import io
import tempfile
from pathlib import Path

import imageio.v3 as iio
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mirai.cli import main
from mirai.config import Config, ConfigError, apply_overrides, config_from_dict, load_config, to_dict
from mirai.data.datasets import DataError, VideoFolderDataset
from tests.conftest import EVAL_JSON

EXAMPLES = 25  # per target in CI (the file stays well under a minute); scripts/fuzz.py runs thousands

SECTIONS = to_dict(Config())
KEYS = [f"{s}.{k}" for s, d in SECTIONS.items() for k in d]

# --------------------------------------------------------------------------------------------------
# Strategies

# Text as it can reach us from a shell or a file: no NUL (argv cannot hold one) and no lone surrogates.
text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12)
scalars = st.one_of(st.none(), st.booleans(), st.integers(-(10**6), 10**6), st.integers(), st.floats(), text,
                    st.sampled_from(["1e-3", "3e-4", "nan", "inf", "-1", "0", "euler", "tiny", "[1, 2]"]))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
                      max_leaves=6)
sections = st.dictionaries(st.sampled_from(list(SECTIONS)) | text,
                           st.dictionaries(st.sampled_from(sorted({k.split(".")[1] for k in KEYS})) | text, values,
                                           max_size=4) | values, max_size=4)
override_values = st.one_of(text, st.integers().map(str), st.floats().map(str),
                            st.sampled_from(["true", "[1, 2]", "{a: 1}", "2024-13-45", "!!float x", "[", "- 1", "~",
                                             "0", "-3", "1e400", ".nan", "!!python/object:os.system"]))
override_keys = st.sampled_from(KEYS) | st.sampled_from(list(SECTIONS)) | text
overrides = st.lists(st.builds(lambda k, v, eq: f"{k}{eq}{v}", override_keys, override_values,
                               st.sampled_from(["=", "=", ":", ""])), max_size=4)


def cli_argv(tmp: Path):
    """Argument lists built from the real subcommands and flags, with values that are often wrong."""
    ints = st.integers(-5, 40).map(str) | text
    out = st.sampled_from(["s.mp4", "s.gif", "s.png", "s.npz", "s.xyz", "s", "afile/x.mp4", "d/e/f.gif", "x.html"])
    ckpt = st.sampled_from(["missing", "afile", "corrupt.safetensors", "rundir", "."])
    flag_values = {
        "sample": {"--frames": ints, "--num": ints, "--seed": ints, "--out": out, "--device": st.sampled_from(
            ["cpu", "auto", "cuda", "cuda:7", "gpu", "", "meta"]), "--set": overrides.map(lambda o: o[0] if o else "")},
        "eval": {"--frames": ints, "--samples": ints, "--out": out, "--extractor": st.sampled_from(
            ["effnet_lite0", "dino_vitb16", "nope"]), "--weights": st.sampled_from(["afile", "evil.pth", "missing"]),
            "--device": st.sampled_from(["cpu", "cuda"]), "--set": overrides.map(lambda o: o[0] if o else "")},
        "train": {"--config": st.sampled_from(["missing.yaml", "afile", "bad.yaml"]),
                  "--set": overrides.map(lambda o: o[0] if o else "train.steps=1"), "--init-from": ckpt},
        "compare": {"--out": out, "--videos": ints, "--frames": ints},
        "bench": {"--batch": ints, "--preset": st.sampled_from(["tiny", "huge"]), "--json": st.just(None)},
    }

    @st.composite
    def build(draw):
        command = draw(st.sampled_from(list(flag_values)))
        argv = [command]
        if command in ("sample", "eval"):
            argv += ["--ckpt", str(tmp / draw(ckpt))]
        elif command == "train":
            argv.append("--dry-run")  # never real training
        elif command == "compare":
            argv += [str(tmp / r) for r in draw(st.lists(st.sampled_from(["rundir", "evaljunk", "evalpartial", "missing"]),
                                                         min_size=1, max_size=2))]
        else:
            argv += ["sampling", "--ckpt", str(tmp / draw(ckpt))]  # a bad checkpoint: never a real benchmark
        for flag in draw(st.lists(st.sampled_from(list(flag_values[command])), max_size=4)):
            value = draw(flag_values[command][flag])
            argv += [flag] if value is None else [flag, str(tmp / value) if flag in ("--out", "--config",
                                                                                     "--weights") else value]
        if draw(st.booleans()):
            argv.insert(draw(st.integers(0, len(argv))), draw(text | st.sampled_from(["--frames", "-h"])))
        return argv
    return build()


def cli_fixture(tmp: Path) -> Path:
    """The files the CLI fuzz points at: a plain file, a corrupt checkpoint, a run folder without weights ..."""
    (tmp / "afile").write_text("not a folder")
    (tmp / "corrupt.safetensors").write_bytes(b"\x00" * 20)
    (tmp / "rundir").mkdir()
    (tmp / "rundir" / "model.safetensors").write_bytes(b"junk")
    (tmp / "rundir" / "eval.json").write_text(EVAL_JSON)
    (tmp / "evalpartial").mkdir()
    (tmp / "evalpartial" / "eval.json").write_text('{"summary": [], "seeds": []}')
    (tmp / "evaljunk").mkdir()
    (tmp / "evaljunk" / "eval.json").write_text("{not json")
    (tmp / "bad.yaml").write_text("train: [1\n")
    (tmp / "evil.pth").write_bytes(b"\x80\x04junk")
    return tmp


# --------------------------------------------------------------------------------------------------
# Properties: each returns None, or raises AssertionError describing the bug


def check_config(data) -> None:
    try:
        config_from_dict(data)
    except ConfigError as e:
        assert str(e), "an empty ConfigError"


def check_overrides(items) -> None:
    try:
        load_config(None, items)
        apply_overrides({"train": {"steps": 1}}, items)
    except ConfigError as e:
        assert str(e), "an empty ConfigError"


def check_yaml(content: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "c.yaml"
        path.write_bytes(content)
        try:
            load_config(path)
        except ConfigError as e:
            assert str(path) in str(e) or "config key" in str(e) or "must" in str(e) or "unknown" in str(e), str(e)


def run_cli(argv: list[str]) -> tuple[int, str]:
    """(exit code, stderr) of `mirai argv`, with argparse's SystemExit turned into its code."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(argv)
        except SystemExit as e:  # argparse: usage errors (2) and --help (0)
            code = e.code
    return code, err.getvalue()


def check_cli(argv: list[str]) -> None:
    code, err = run_cli(argv)
    assert "Traceback" not in err, err
    assert code in (0, 2), f"exit code {code}: {err}"
    lines = err.strip().splitlines()
    if code == 2:
        assert lines, "exit code 2 without a message"
        if lines[0].startswith("usage:"):  # argparse's own error: the usage, then `prog: error: ...` (which
            assert ": error: " in err, err  # repeats the argument, control characters and all)
        else:
            assert len(lines) == 1 and lines[0].startswith("error: "), err


def write_video_inputs(root: Path, spec) -> None:
    """Random bytes as .mp4/.gif/.png, or random arrays saved by imageio, under `root`."""
    for i, (kind, payload) in enumerate(spec):
        if kind == "bytes":
            suffix, data = payload
            target = root / f"f{i}" / "000.png" if suffix == ".png" else root / f"v{i}{suffix}"
            target.parent.mkdir(exist_ok=True)
            target.write_bytes(data)
        else:
            suffix, array = payload
            try:
                if suffix == ".png":
                    (root / f"f{i}").mkdir()
                    for j, frame in enumerate(array):
                        iio.imwrite(root / f"f{i}" / f"{j:03d}.png", frame)
                else:
                    iio.imwrite(root / f"v{i}{suffix}", array, **({"fps": 4} if suffix == ".mp4" else {}))
            except Exception:  # imageio cannot write every array: then there is no such file to read
                pass


arrays = st.builds(
    lambda t, h, w, c, dtype, seed: np.random.default_rng(seed).integers(
        0, 2 if dtype == "bool" else np.iinfo(dtype).max, size=(t, h, w) + ((c,) if c else ()), endpoint=True
    ).astype(dtype),
    st.integers(1, 6), st.integers(1, 12), st.integers(1, 12), st.sampled_from([0, 1, 2, 3, 4]),
    st.sampled_from(["uint8", "uint8", "uint16", "bool"]), st.integers(0, 2**32 - 1))
video_specs = st.lists(st.one_of(
    st.tuples(st.just("bytes"), st.tuples(st.sampled_from([".mp4", ".gif", ".png"]), st.binary(max_size=64))),
    st.tuples(st.just("array"), st.tuples(st.sampled_from([".mp4", ".gif", ".png"]), arrays))), min_size=1, max_size=3)


def check_videos(args) -> None:
    spec, clip_frames, image_size = args
    with tempfile.TemporaryDirectory() as tmp:
        write_video_inputs(Path(tmp), spec)
        try:
            ds = VideoFolderDataset(tmp, clip_frames, image_size)
        except DataError as e:
            assert str(e), "an empty DataError"
            return
        for i in range(len(ds)):
            video = ds[i]["video"]
            assert video.shape == (clip_frames, 3, image_size, image_size), video.shape
            assert video.min() >= -1 and video.max() <= 1


videos = st.tuples(video_specs, st.integers(1, 4), st.integers(1, 16))

# name -> (strategy, property); the CLI strategy needs its fixture folder, so it is built per run
TARGETS = {
    "config_dict": (lambda tmp: sections, check_config),
    "overrides": (lambda tmp: overrides, check_overrides),
    "yaml_file": (lambda tmp: st.binary(max_size=80) | text.map(str.encode), check_yaml),
    "cli": (cli_argv, check_cli),
    "video_loader": (lambda tmp: videos, check_videos),
}

# --------------------------------------------------------------------------------------------------
# The CI tests: the same properties, few examples

FAST = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))


@FAST
@given(sections)
def test_fuzz_config_dict(data):
    check_config(data)


@FAST
@given(overrides)
def test_fuzz_overrides(items):
    check_overrides(items)


@FAST
@given(st.binary(max_size=80) | text.map(str.encode))
def test_fuzz_yaml_file(content):
    check_yaml(content)


_CLI_DIR = cli_fixture(Path(tempfile.mkdtemp(prefix="mirai-fuzz-cli-")))


@FAST
@given(cli_argv(_CLI_DIR))
def test_fuzz_cli(argv):
    check_cli(argv)


@settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck))
@given(videos)
def test_fuzz_video_loader(args):
    check_videos(args)
