"""The sampling pipeline (load -> inputs -> roll out -> decode): streamed chunks make the whole video, the videos are
exactly a direct rollout of the same inputs, a run folder and its model file sample alike, a teacher denoises whole,
and a model on a prepared cache samples its captions, a context clip and the cache's clips' captions in turn."""

import json

import imageio.v3 as imageio
import numpy as np
import pytest
import torch

from mirai import checkpoint as ckpt
from mirai.cli import main
from mirai.config import ConfigError, WorldConfig
from mirai.data.cache import LatentDataset
from mirai.data.frames import to_uint8
from mirai.data.prompt import PROMPT
from mirai.data.videos import resize_crop
from mirai.data.world import make_clip
from mirai.diffusion.schedule import FlowSchedule
from mirai.eval.evaluate import generate
from mirai.sampling.inputs import rollout_inputs, unseen_prompts
from mirai.sampling.pipeline import Pipeline
from mirai.sampling.rollout import rollout, sample_whole
from tests.conftest import make_caption_run, make_model

WORLD = {"image_size": 16, "sprite_sizes": [5]}
# renoise steps and context noise draw from the request's generator: a changed order of draws changes the video
SAMPLE = {"steps": 2, "solver": "renoise", "context_noise": 0.1, "cfg_scale": 2.0}


def save_run(folder, model, **settings):
    """A run folder holding `model` as model.safetensors with the settings sampling reads (as `mirai train` writes)."""
    folder.mkdir(parents=True)
    ckpt.save_model(model, folder / "model.safetensors", {"settings": settings})
    return folder


@pytest.fixture(scope="module")
def world_run(tmp_path_factory):
    model = make_model(prompt_vocab=PROMPT.vocab(WorldConfig(**WORLD)), seed=1)
    return save_run(tmp_path_factory.mktemp("world") / "run", model, world=WORLD, data={"clip_frames": 4},
                    sample=SAMPLE)


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory):
    model = make_model("bidirectional", prompt_vocab=PROMPT.vocab(WorldConfig(**WORLD)), seed=2)
    return save_run(tmp_path_factory.mktemp("teacher") / "run", model, world=WORLD, data={"clip_frames": 4},
                    sample=SAMPLE)


def streamed(pipe, request):
    return torch.cat(list(pipe.stream(request)), dim=1)


def test_streamed_chunks_concatenate_to_the_whole_video(world_run):
    pipe = Pipeline.load(world_run)
    request = pipe.inputs(2, 7, seed=3)  # 7 frames: rounded up to 4 chunks of 2
    chunks = list(pipe.stream(request))
    assert len(chunks) == pipe.stream_length(request) == 4 and all(c.shape == (2, 2, 3, 16, 16) for c in chunks)
    frames, prompts = pipe.video(pipe.inputs(2, 7, seed=3))
    assert frames.shape == (2, 8, 16, 16, 3) and frames.dtype == np.uint8
    assert np.array_equal(to_uint8(torch.cat(chunks, dim=1)), frames)
    assert np.array_equal(prompts, unseen_prompts(pipe.cfg.world, 2, 3))


def test_the_pipeline_is_a_direct_rollout_of_its_inputs(world_run):
    model, cfg = ckpt.load_model(world_run).eval(), ckpt.run_config(world_run, [])
    inputs = rollout_inputs(model, cfg.world, 2, 8, 3, "cpu")
    direct = rollout(model, FlowSchedule.from_config(cfg.schedule), inputs.noise, inputs.prompt, sample=cfg.sample,
                     generator=inputs.generator)
    pipe = Pipeline.load(world_run)
    assert pipe.cfg.sample.cfg_scale == 2.0  # guided: the doubled batch and its KV cache are exercised
    assert torch.equal(streamed(pipe, pipe.inputs(2, 8, seed=3)), direct)
    assert np.array_equal(pipe.video(pipe.inputs(2, 8, seed=3))[0], to_uint8(direct))


def test_sampling_on_a_cpu_stays_fp32_where_the_cpu_has_bf16_kernels(world_run, monkeypatch):
    """precision "auto" on a CPU: no autocast, the same numbers as before, even where bf16 would be native."""
    from mirai import device

    monkeypatch.setattr(device, "bf16_native", lambda: True)
    pipe = Pipeline.load(world_run)
    reference = streamed(pipe, pipe.inputs(2, 8, seed=3))
    entered = []
    real = torch.autocast
    monkeypatch.setattr(torch, "autocast", lambda *a, **kw: entered.append(a) or real(*a, **kw))
    assert pipe.cfg.sample.precision == "auto"
    assert torch.equal(streamed(pipe, pipe.inputs(2, 8, seed=3)), reference)
    assert np.array_equal(pipe.video(pipe.inputs(2, 8, seed=3))[0], to_uint8(reference))
    assert entered == []
    bf16 = Pipeline.load(world_run, overrides=["sample.precision=bf16"])  # forced: the autocast is really entered
    low = streamed(bf16, bf16.inputs(2, 8, seed=3))
    assert entered and low.dtype == torch.float32 and not torch.equal(low, reference)


def test_a_run_folder_and_its_model_file_give_the_same_video(world_run):
    from_folder = Pipeline.load(world_run, overrides=["sample.steps=1"])
    from_file = Pipeline.load(world_run / "model.safetensors", overrides=["sample.steps=1"])
    video = from_folder.video(from_folder.inputs(2, 4, seed=0))[0]
    assert np.array_equal(video, from_file.video(from_file.inputs(2, 4, seed=0))[0])
    default = Pipeline.load(world_run)  # the overrides were applied: the run's own 2 steps give other videos
    assert from_file.cfg.sample.steps == 1 and not np.array_equal(video, default.video(default.inputs(2, 4, seed=0))[0])


def test_generate_is_the_pipelines_evaluation_video(world_run):
    pipe = Pipeline.load(world_run)
    frames, prompts = generate(world_run, 2, 6, 5)
    expected, expected_prompts = pipe.video(pipe.inputs(2, 6, seed=5))
    assert np.array_equal(frames, expected) and np.array_equal(prompts, expected_prompts)


def test_a_teacher_denoises_the_whole_clip_and_cannot_stream(teacher_run, tmp_path, capsys):
    pipe = Pipeline.load(teacher_run)
    inputs = rollout_inputs(pipe.model, pipe.cfg.world, 2, 4, 1, "cpu")
    whole = sample_whole(pipe.model, pipe.schedule, inputs.noise, inputs.prompt, sample=pipe.cfg.sample,
                         generator=inputs.generator)
    assert np.array_equal(pipe.video(pipe.inputs(2, 4, seed=1))[0], to_uint8(whole))
    assert not np.array_equal(to_uint8(whole), to_uint8(rollout(pipe.model, pipe.schedule, inputs.noise, inputs.prompt,
                                                                sample=pipe.cfg.sample)))  # not chunk by chunk
    with pytest.raises(ValueError, match="cannot stream"):
        next(pipe.stream(pipe.inputs(2, 4, seed=1)))
    assert main(["sample", "--ckpt", str(teacher_run), "--out", str(tmp_path / "s.npz")]) == 2
    assert "is a bidirectional model; `mirai sample` rolls out causal generators" in capsys.readouterr().err


def test_a_caption_without_a_cache_model_is_one_config_error(world_run, tmp_path, capsys):
    pipe = Pipeline.load(world_run)
    for asked in ({"prompt": "a red square"}, {"negative_prompt": "blue"}):
        with pytest.raises(ConfigError, match="need a model trained on a prepared cache"):
            pipe.inputs(1, 2, seed=0, **asked)
    assert main(["sample", "--ckpt", str(world_run), "--prompt", "a", "--out", str(tmp_path / "s.npz")]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "need a model trained on a prepared cache" in err


def test_mirai_sample_writes_the_streamed_video(world_run, tmp_path):
    out = tmp_path / "s.npz"
    assert main(["sample", "--ckpt", str(world_run), "--frames", "7", "--num", "2", "--seed", "3",
                 "--out", str(out)]) == 0
    pipe = Pipeline.load(world_run)
    assert np.array_equal(np.load(out)["frames"], pipe.video(pipe.inputs(2, 7, seed=3))[0])


# --------------------------------------------------------------------------------------------------
# A caption model on a prepared cache (identity autoencoder: pixels; a tiny UMT5 text encoder)


@pytest.fixture(scope="module")
def cache_run(tmp_path_factory):
    pytest.importorskip("transformers")
    return make_caption_run(tmp_path_factory.mktemp("cache"), SAMPLE)


def test_evaluation_videos_of_a_cache_model_take_its_clips_captions_in_turn(cache_run):
    pipe = Pipeline.load(cache_run)
    data = LatentDataset(pipe.cfg.data.path, pipe.cfg.data.clip_frames)
    assert data.num_clips == 3
    request = pipe.evaluation_inputs(4, 4, seed=0)
    captions = request.inputs.prompt  # (4, L, D): clips 0, 1, 2, then 0 again
    assert all(torch.equal(captions[i], data.clip_prompt(i % 3)) for i in range(4))
    assert not torch.equal(captions[0], captions[1])
    direct = rollout(pipe.model, pipe.schedule, request.inputs.noise, captions, sample=pipe.cfg.sample,
                     generator=request.inputs.generator, uncond=request.inputs.uncond)
    frames, prompts = generate(cache_run, 4, 4, 0)
    assert prompts is None and np.array_equal(frames, to_uint8(direct))


def test_a_cache_model_streams_a_captioned_continuation_of_a_clip(cache_run):
    pipe = Pipeline.load(cache_run)
    clip = cache_run.parent / "videos" / "a.mp4"
    asked = dict(prompt="clip a of the world", negative_prompt="clip b", context=str(clip))
    request = pipe.inputs(2, 3, seed=1, **asked)  # 3 frames: rounded up to 2 chunks
    pieces = list(pipe.stream(request))
    context = request.context  # (2, Tc, 3, 16, 16): the clip's frames cut to whole chunks, pixels (identity)
    assert len(pieces) == pipe.stream_length(request) == 3 and torch.equal(pieces[0], context)
    frames, _ = pipe.video(pipe.inputs(2, 3, seed=1, **asked))
    assert frames.shape[1] == context.shape[1] + 4
    assert np.array_equal(to_uint8(torch.cat(pieces, dim=1)), frames)
    unprompted = pipe.video(pipe.inputs(2, 3, seed=1, context=asked["context"]))[0]
    assert not np.array_equal(frames, unprompted)  # the caption was used


def test_a_world_model_continues_a_clip_or_holds_an_image_still_for_a_chunk(world_run, tmp_path):
    pipe = Pipeline.load(world_run)
    clip = (make_clip(pipe.cfg.world, 7, 0, 5).frames * 255).round().astype(np.uint8)  # (5, 16, 16, 3), the world's own frames
    request = pipe.inputs(2, 4, seed=1, context=clip)
    assert request.context.shape == (2, 4, 3, 16, 16)  # cut to whole chunks of 2
    assert torch.equal(request.context[0], resize_crop(clip[:4], 16, 16))
    pieces = list(pipe.stream(request))
    inputs = request.inputs
    direct = rollout(pipe.model, pipe.schedule, inputs.noise, inputs.prompt, sample=pipe.cfg.sample,
                     context=request.context, generator=pipe.inputs(2, 4, seed=1).inputs.generator)
    assert torch.equal(pieces[0], request.context) and torch.equal(torch.cat(pieces[1:], dim=1), direct)
    assert not torch.equal(direct, streamed(pipe, pipe.inputs(2, 4, seed=1))[:, :4])  # the clip was continued
    imageio.imwrite(tmp_path / "first.png", clip[0])
    held = pipe.inputs(1, 4, seed=1, context=str(tmp_path / "first.png")).context
    assert held.shape == (1, 2, 3, 16, 16) and torch.equal(held[0, 0], held[0, 1])


# --------------------------------------------------------------------------------------------------
# Prompt switches (`mirai sample --switch FRAME:PROMPT`)


def test_a_switched_world_prompt_is_followed_from_its_chunk_on_streamed_or_whole(world_run):
    pipe = Pipeline.load(world_run)
    plain = pipe.inputs(2, 8, seed=3)
    request = pipe.with_switch(pipe.inputs(2, 8, seed=3), 3, "background=0,sprite1.color=2")  # 3 -> chunk 2
    assert [s.chunk for s in request.switches] == [2]
    edited = request.switches[0].prompt
    assert (edited[:, 0] == 1).all() and (edited[:, 2] == 3).all()  # the ids asked, + 1 (0 is "absent")
    assert torch.equal(edited[:, 3:], plain.inputs.prompt[:, 3:]) and torch.equal(edited[:, 1], plain.inputs.prompt[:, 1])
    frames, _ = pipe.video(pipe.with_switch(pipe.inputs(2, 8, seed=3), 3, "background=0,sprite1.color=2"))
    assert np.array_equal(to_uint8(streamed(pipe, request)), frames)
    unswitched, _ = pipe.video(plain)
    assert np.array_equal(frames[:, :4], unswitched[:, :4]) and not np.array_equal(frames[:, 4:], unswitched[:, 4:])


@pytest.mark.parametrize("frame, text, message", [
    (8, "background=0", "outside the rollout's 8 frames"), (0, "background=0", "outside the rollout's 8 frames"),
    (4, "sprite1.colour=2", "FIELD one of background"), (4, "background=99", "background takes an id 0..")])
def test_a_bad_switch_is_one_config_error(world_run, frame, text, message):
    pipe = Pipeline.load(world_run)
    with pytest.raises(ConfigError, match=message):
        pipe.with_switch(pipe.inputs(1, 8, seed=0), frame, text)


def test_a_cache_model_switches_to_a_caption_encoded_as_its_prompt(cache_run, tmp_path):
    pipe = Pipeline.load(cache_run)
    request = pipe.with_switch(pipe.inputs(2, 6, seed=1, prompt="clip a"), 2, "clip b")
    target = pipe.inputs(2, 6, seed=1, prompt="clip b").inputs.prompt
    assert torch.equal(request.switches[0].prompt, target)
    out = tmp_path / "switched.npz"
    assert main(["sample", "--ckpt", str(cache_run), "--frames", "6", "--num", "1", "--prompt", "clip a",
                 "--switch", "2:clip b", "--out", str(out)]) == 0
    assert json.loads((tmp_path / "switched.npz.json").read_text())["switches"] == [{"frame": 2, "prompt": "clip b"}]
