"""`mirai prepare`: a captioned video folder -> shards of latents and caption embeddings, resumable, with the
unusable files named; and the cache read back as a dataset."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mirai import prepare as prep
from mirai.cli import main
from mirai.config import PrepareConfig
from mirai.data.cache import LatentDataset
from mirai.data.captions import check_folder, scan_folder
from mirai.checkpoint import load
from tests.conftest import tiny_text_encoder_folder, tiny_vae_folder, write_video_folder

ROOT = Path(__file__).resolve().parents[1]

pytest.importorskip("diffusers")
pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """A video folder (4 good clips, one caption from captions.jsonl, a corrupt file, a video without caption)
    and tiny VAE and text encoder folders."""
    root = tmp_path_factory.mktemp("prep")
    data = write_video_folder(root / "videos", names=("a", "b", "c", "d", "nocap"))
    (data / "d.txt").unlink()
    (data / "captions.jsonl").write_text(json.dumps({"file": "d.mp4", "caption": "clip d from jsonl"}) + "\n")
    (data / "nocap.txt").unlink()
    (data / "broken.mp4").write_bytes(b"not a video at all" * 10)
    (data / "broken.txt").write_text("a caption of a broken file")
    tiny_vae_folder(root / "vae")
    tiny_text_encoder_folder(root / "text")
    return root


def settings(root, **kw):
    return PrepareConfig(frames=5, height=16, width=16, vae=str(root / "vae"), text_encoder=str(root / "text"),
                         text_len=16, batch_size=2, shard_size=3, clips_per_video=2, **kw)


def shard_tensors(out):
    return {f.name: load(f)[0] for f in sorted(out.glob("shard_*.safetensors"))}


def test_scan_and_check_report_captions_and_refusals(folders):
    entries = {e.name: e.caption for e in scan_folder(folders / "videos")}
    assert entries["a.mp4"] == "clip a of the world" and entries["d.mp4"] == "clip d from jsonl"
    assert entries["nocap.mp4"] is None
    report = check_folder(folders / "videos", settings(folders))
    assert report.videos == 6 and report.missing_captions == ["nocap.mp4"]
    assert list(report.refused) == ["broken.mp4"] and report.resolutions == {"40x24": 5}
    assert report.clips == 10 and report.frames == 60


def test_prepare_writes_shards_and_reports_bad_files_by_name(folders, tmp_path):
    manifest = prep.prepare(folders / "videos", tmp_path, settings(folders), quiet=True)
    assert set(manifest["refused"]) == {"broken.mp4", "nocap.mp4"}
    clips = [c for s in manifest["shards"] for c in s["clips"]]
    assert [(c["source"], c["clip"]) for c in clips] == [(f"{n}.mp4", j) for n in "abcd" for j in (0, 1)] and len(manifest["shards"]) == 3
    assert clips[0]["fps"] == 8 and clips[0]["frames"] == 5 and len(clips[0]["sha256"]) == 64
    assert manifest["settings"]["vae"].startswith("vae (config sha256")
    data = LatentDataset(tmp_path, clip_frames=2)
    assert data.frame_shape == (16, 2, 2) and data.text_dim == 32 and len(data) == 8
    item = data[0]
    assert item["video"].shape == (2, 16, 2, 2) and item["prompt"].shape == (16, 32)
    assert data.empty_prompt.shape == (16, 32) and data.captions[6] == "clip d from jsonl"


def test_prepare_resumes_after_a_kill_mid_shard_with_identical_shards(folders, tmp_path, monkeypatch):
    p = settings(folders)
    prep.prepare(folders / "videos", tmp_path / "ref", p, quiet=True)
    calls = {"n": 0}
    encode = prep.ShardWriter.encode

    def killed_on_third_batch(self):
        calls["n"] += 1
        if calls["n"] == 3:  # shard 0 written (batches of 2 and 1: none spans shards); shard 1 not yet
            raise KeyboardInterrupt
        encode(self)

    monkeypatch.setattr(prep.ShardWriter, "encode", killed_on_third_batch)
    with pytest.raises(KeyboardInterrupt):
        prep.prepare(folders / "videos", tmp_path / "killed", p, quiet=True)
    assert len(list((tmp_path / "killed").glob("shard_*"))) == 1
    monkeypatch.setattr(prep.ShardWriter, "encode", encode)
    resumed = prep.prepare(folders / "videos", tmp_path / "killed", p, quiet=True)
    ref, again = shard_tensors(tmp_path / "ref"), shard_tensors(tmp_path / "killed")
    assert list(ref) == list(again) == [f"shard_0000{i}.safetensors" for i in range(3)]
    for name in ref:
        assert all(torch.equal(ref[name][k], again[name][k]) for k in ref[name])
    assert resumed == json.loads((tmp_path / "ref" / "manifest.json").read_text())


def test_prepare_under_torchrun_splits_the_shards_and_writes_the_one_process_cache(folders, tmp_path):
    p = settings(folders)
    one = prep.prepare(folders / "videos", tmp_path / "one", p, quiet=True)
    sets = [f"prepare.{k}={getattr(p, k)}" for k in ("frames", "height", "width", "text_len", "batch_size",
                                                     "shard_size", "clips_per_video")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "mirai",
           "prepare", str(folders / "videos"), "--out", str(tmp_path / "two"), "--vae", p.vae,
           "--text-encoder", p.text_encoder, "--device", "cpu"] + [a for s in sets for a in ("--set", s)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    assert done.stdout.count("wrote ") == 1  # rank 0 alone reports
    two = json.loads((tmp_path / "two" / "manifest.json").read_text())
    assert two == json.loads((tmp_path / "one" / "manifest.json").read_text()) == one
    a, b = shard_tensors(tmp_path / "one"), shard_tensors(tmp_path / "two")
    assert list(a) == list(b) == [f"shard_0000{i}.safetensors" for i in range(3)]  # rank 0: 0 and 2, rank 1: 1
    for name in a:
        assert a[name].keys() == b[name].keys() and all(torch.equal(a[name][k], b[name][k]) for k in a[name]), name
    empty = [load(tmp_path / d / "empty_prompt.safetensors")[0] for d in ("one", "two")]
    assert all(torch.equal(empty[0][k], empty[1][k]) for k in empty[0])


def test_prepare_refuses_other_settings_in_the_same_cache(folders, tmp_path):
    p = settings(folders)
    prep.prepare(folders / "videos", tmp_path, p, quiet=True)
    p.height = 24
    with pytest.raises(prep.DataError, match="height"):
        prep.prepare(folders / "videos", tmp_path, p, quiet=True)


def test_cli_prepare_check_prints_the_report(folders, capsys):
    assert main(["prepare", str(folders / "videos"), "--check", "--set", "prepare.frames=5"]) == 0
    out = capsys.readouterr().out
    assert "videos: 6 (1 refused)" in out and "captions missing: 1 (nocap.mp4)" in out and "refused broken.mp4" in out
