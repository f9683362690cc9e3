"""End to end on real-data plumbing at toy size: a folder of captioned mp4 clips -> `mirai prepare` (tiny Wan VAE
and UMT5 text encoder) -> teacher, teacher forcing, ODE, DMD + foresight (a Wan generator reading caption
embeddings) -> `mirai sample --prompt` and `--context first_frame.png` -> decoded mp4s."""

import json

import pytest

from mirai import checkpoint as ckpt
from mirai.cli import main
from mirai.data.videos import read_source
from mirai.training.loop import train
from tests.conftest import stage_cfg, tiny_text_encoder_folder, tiny_vae_folder, write_video_folder

pytest.importorskip("diffusers")
pytest.importorskip("transformers")


@pytest.mark.slow
def test_prepare_train_every_stage_and_sample_from_captions_and_an_image(tmp_path):
    import imageio.v3 as iio

    write_video_folder(tmp_path / "videos", names=("a", "b", "c"), frames=9, size=(32, 32))
    tiny_vae_folder(tmp_path / "vae")
    tiny_text_encoder_folder(tmp_path / "text")
    cache = tmp_path / "cache"
    assert main(["prepare", str(tmp_path / "videos"), "--out", str(cache), "--vae", str(tmp_path / "vae"),
                 "--text-encoder", str(tmp_path / "text"), "--set", "prepare.frames=9", "--set", "prepare.height=32",
                 "--set", "prepare.text_len=16"]) == 0
    base = {"data": {"source": "cache", "path": str(cache), "clip_frames": 3},  # 9 frames -> 3 latent frames
            "model": {"preset": "wan-tiny", "image_size": 4, "text_dim": 32, "frames_per_chunk": 1},
            "sample": {"timesteps": [1000, 500], "solver": "renoise"}}
    teacher = train(stage_cfg(base, tmp_path / "teacher", train={"objective": "bidirectional", "steps": 2}), quiet=True)
    ar = train(stage_cfg(base, tmp_path / "ar", train={"objective": "teacher_forcing", "steps": 2}), quiet=True)
    ode = train(stage_cfg(base, tmp_path / "ode", train={"objective": "ode", "steps": 2, "init_from": str(ar)},
                          distill={"teacher": str(ar), "num_videos": 2, "shard_size": 2, "teacher_steps": 2}), quiet=True)
    dmd = train(stage_cfg(base, tmp_path / "dmd", train={"objective": "dmd", "steps": 2, "init_from": str(ode)},
                          dmd={"teacher": str(teacher), "critic_updates_per_gen": 2}, foresight={"enabled": True}),
                quiet=True)
    model = ckpt.load_model(dmd)
    assert model.cfg.text_conditioned and model.cfg.channels == 16
    assert any("foresight_loss" in json.loads(line) for line in (dmd / "metrics.jsonl").read_text().splitlines())

    iio.imwrite(tmp_path / "first_frame.png", read_source(tmp_path / "videos" / "a.mp4")[0])
    assert main(["sample", "--ckpt", str(dmd), "--prompt", "clip a of the world", "--num", "2", "--frames", "3",
                 "--out", str(tmp_path / "t2v.mp4"), "--set", "sample.cfg_scale=2"]) == 0
    assert main(["sample", "--ckpt", str(dmd), "--context", str(tmp_path / "first_frame.png"), "--prompt", "clip a",
                 "--num", "1", "--frames", "2", "--out", str(tmp_path / "i2v.mp4")]) == 0
    assert read_source(tmp_path / "t2v.mp4").shape[0] == 9  # 3 latent frames -> 1 + 4 + 4 frames
    assert read_source(tmp_path / "i2v.mp4").shape[0] == 9  # the image's latent frame, then 2 generated ones


@pytest.mark.slow
def test_world_captions_train_the_dit_with_cross_attention_through_every_stage_then_sample_and_eval(tmp_path):
    """The text path on the world: `mirai world export` (mp4 + captions of the ground truth) -> `mirai prepare`
    (tiny Wan VAE, tiny UMT5) -> the DiT with cross-attention through every stage, caption dropout to the empty
    caption and guidance away from it -> `mirai sample --prompt --negative-prompt` -> `mirai eval` decoding."""
    videos, cache = tmp_path / "videos", tmp_path / "cache"
    assert main(["world", "export", "--clips", "3", "--frames", "9", "--out", str(videos)]) == 0  # 32 px
    tiny_vae_folder(tmp_path / "vae")
    tiny_text_encoder_folder(tmp_path / "text")
    assert main(["prepare", str(videos), "--out", str(cache), "--vae", str(tmp_path / "vae"), "--text-encoder",
                 str(tmp_path / "text"), "--set", "prepare.frames=9", "--set", "prepare.height=32",
                 "--set", "prepare.text_len=16"]) == 0
    base = {"data": {"source": "cache", "path": str(cache), "clip_frames": 3},
            "model": {"dim": 32, "depth": 2, "heads": 2, "patch_size": 2, "image_size": 4, "channels": 16,
                      "frames_per_chunk": 1},  # text_dim comes from the cache (UMT5 width 32)
            "sample": {"timesteps": [1000, 500], "solver": "renoise"}, "train": {"prompt_dropout": 0.5}}
    teacher = train(stage_cfg(base, tmp_path / "teacher", train={"objective": "bidirectional", "steps": 2}), quiet=True)
    ar = train(stage_cfg(base, tmp_path / "ar", train={"objective": "teacher_forcing", "steps": 2}), quiet=True)
    ode = train(stage_cfg(base, tmp_path / "ode", train={"objective": "ode", "steps": 2, "init_from": str(ar)},
                          distill={"teacher": str(ar), "num_videos": 2, "shard_size": 2, "teacher_steps": 2,
                                   "teacher_cfg_scale": 2.0}), quiet=True)
    dmd = train(stage_cfg(base, tmp_path / "dmd", train={"objective": "dmd", "steps": 2, "init_from": str(ode)},
                          dmd={"teacher": str(teacher), "critic_updates_per_gen": 2, "real_cfg_scale": 2.0},
                          foresight={"enabled": True}), quiet=True)
    model = ckpt.load_model(dmd)
    assert model.cfg.arch == "dit" and model.cfg.text_conditioned and model.cfg.text_dim == 32
    assert all(block.cross_attn is not None for block in model.blocks)
    assert any("foresight_loss" in json.loads(line) for line in (dmd / "metrics.jsonl").read_text().splitlines())

    caption = (videos / "clip_00000.txt").read_text().strip()
    assert main(["sample", "--ckpt", str(dmd), "--prompt", caption, "--negative-prompt", "a green circle",
                 "--num", "2", "--frames", "3", "--out", str(tmp_path / "t2v.mp4"), "--set", "sample.cfg_scale=2"]) == 0
    assert read_source(tmp_path / "t2v.mp4").shape[:2] == (9, 128)  # 3 latent frames -> 9 frames of 32 px, x4

    assert main(["eval", "--ckpt", str(dmd), "--frames", "3", "--samples", "2", "--seeds", "0"]) == 0
    result = json.loads((dmd / "eval.json").read_text())
    assert result["lengths"] == [9] and result["clip_frames"] == 9  # 3 latent frames decoded to 1 + 4 + 4
    assert result["decoded_by"] == str((tmp_path / "vae").resolve()) and result["probe"] is None
    assert not any(k.startswith("probe_") for k in result["per_seed"]["0"]) and "fd@effnet_lite0@9f" in result["per_seed"]["0"]
