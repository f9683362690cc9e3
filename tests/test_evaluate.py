"""`mirai eval` and `mirai compare` end to end on a tiny run (seconds)."""

import json

import numpy as np
import pytest

from mirai.cli import main
from mirai.config import WorldConfig
from mirai.eval import metrics as M
from mirai.eval.evaluate import Evaluator, ci95, real_clips, summarize
from mirai.eval.report import paired_difference
from mirai.training.loop import train
from tests.conftest import tiny_cfg


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    a = train(tiny_cfg(root / "a", steps=2), quiet=True)
    b = train(tiny_cfg(root / "b", steps=3), quiet=True)
    return a, b


def test_ci95_and_summary():
    mean, half = ci95([1.0, 2.0, 3.0])
    assert mean == 2.0 and half == pytest.approx(4.303 * 1.0 / 3**0.5, rel=1e-3)
    assert ci95([5.0]) == (5.0, 0.0)
    s = summarize({0: {"m": 1.0}, 1: {"m": 3.0}})
    assert s["m"]["mean"] == 2.0 and s["m"]["n"] == 2


def test_paired_difference():
    a = {"per_seed": {"0": {"m": 1.0}, "1": {"m": 2.0}, "2": {"m": 3.0}}}
    b = {"per_seed": {"0": {"m": 2.0}, "1": {"m": 3.1}, "2": {"m": 3.9}}}
    d, p, n = paired_difference(a, b, "m")
    assert d == pytest.approx(1.0) and n == 3 and p < 0.01


WORLD = WorldConfig(image_size=16, sprite_sizes=[5])


@pytest.fixture(scope="module")
def evaluator():
    return Evaluator(WORLD)


class OtherExtractor:
    """A second, different feature extractor (stands in for CLIP B/32 in the background role)."""

    name, weights_sha256, reference_for, is_reference = "other", "cd" * 32, (), False

    def label(self, dim):
        return f"{dim}@{self.name}"

    def frames_batch(self, frames):
        return np.stack([[np.histogram(f, bins=8, range=(0, 256))[0] + 1.0 for f in v] for v in frames])

    def provenance(self):
        return {"extractor": self.name, "weights_sha256": self.weights_sha256, "is_reference": False}


def test_real_clips_score_high_on_the_probes(evaluator):
    frames, prompts = real_clips(WORLD, 6, 8)
    scores, curves = evaluator.score(frames, prompts, [4, 8])
    assert scores["probe_layout@8f"] > 0.9 and scores["temporal_flickering@raw@8f"] > 0.5
    assert len(curves["identity"]) == 8


def test_block_scores_see_a_video_freeze_and_are_the_blocks_own_means(evaluator):
    frames, prompts = real_clips(WORLD, 4, 24)
    frozen = frames.copy()
    frozen[:, 8:] = frames[:, 7:8]  # the scene stops after the first clip
    real, real_curves = evaluator.score(frames, prompts, [], block=8, horizons=[1, 3])
    still, _ = evaluator.score(frozen, prompts, [], block=8, horizons=[1, 3])
    assert real["probe_motion@block1x"] == pytest.approx(still["probe_motion@block1x"])
    assert real["probe_motion@block3x"] > 0.5 * WORLD.min_speed and still["probe_motion@block3x"] < 0.02
    assert still["dynamic_degree@farneback@block3x"] == 0.0
    assert real["probe_identity@block3x"] == pytest.approx(np.mean(real_curves["identity"][16:24]))
    assert len(real_curves["block_probe_identity"]) == 3 and len(real_curves["identity"]) == 24
    with pytest.raises(ValueError, match="horizon 4x needs 32 frames"):
        evaluator.score(frames, prompts, [], block=8, horizons=[4])


def test_one_extractor_is_not_counted_twice_in_the_aggregate(evaluator):
    frames, prompts = real_clips(WORLD, 4, 8)
    scores, _ = evaluator.score(frames, prompts, [8])
    assert not any(k.startswith("background_consistency") for k in scores)  # same features: no second number
    dims = ["subject_consistency@effnet_lite0", "temporal_flickering@raw", "motion_smoothness@linear",
            "dynamic_degree@farneback"]
    hand = M.quality_score_partial({d: scores[d + "@8f"] for d in dims})
    assert hand.weight_sum == 3.5
    (key,) = [k for k in scores if k.startswith("quality_score_partial")]
    assert key == "quality_score_partial@effnet_lite0+farneback+linear+raw@8f"  # labelled a proxy aggregate
    assert scores[key] == pytest.approx(hand.value, abs=1e-12)  # subject consistency counted once
    meta = evaluator.metadata()
    assert meta["background_extractor"] is None and "not reported" in meta["protocols"]["background_consistency"]
    assert meta["consistency_extractors"] == {"subject_consistency@effnet_lite0": "effnet_lite0"}


def test_a_distinct_background_extractor_gets_its_own_role(evaluator):
    ev = Evaluator(WORLD, background_extractor_name="other", _extractor=evaluator.extractor,
                   _background=OtherExtractor(), _probe=evaluator.probe)
    frames, prompts = real_clips(WORLD, 4, 8)
    scores, _ = ev.score(frames, prompts, [8])
    assert scores["background_consistency@other@8f"] == pytest.approx(
        M.consistency_scores(OtherExtractor().frames_batch(frames)).aggregate)
    q = scores["quality_score_partial@effnet_lite0+farneback+linear+other+raw@8f"]
    dims = ["subject_consistency@effnet_lite0", "background_consistency@other", "temporal_flickering@raw",
            "motion_smoothness@linear", "dynamic_degree@farneback"]
    assert q == pytest.approx(M.quality_score_partial({d: scores[d + "@8f"] for d in dims}).value)
    assert ev.metadata()["background_extractor"]["extractor"] == "other"


def test_eval_then_compare_writes_json_csv_and_html(two_runs, tmp_path, capsys):
    a, b = two_runs
    for run in (a, b):
        assert main(["eval", "--ckpt", str(run), "--frames", "8", "--samples", "2", "--seeds", "0", "1",
                     "--device", "cpu"]) == 0
    result = json.loads((a / "eval.json").read_text())
    assert result["lengths"] == [4, 8] and result["extractor"]["extractor"] == "effnet_lite0"
    assert "subject_consistency@effnet_lite0@8f" in result["summary"]  # a substitute extractor is labelled
    assert not any(k.startswith("background_consistency") for k in result["summary"])
    assert "temporal_flickering@raw@8f" in result["summary"] and "temporal_flickering@8f" not in result["summary"]
    assert "static filter" in result["protocols"]["temporal_flickering@raw"]
    assert "quality_score_partial@effnet_lite0+farneback+linear+raw@8f" in result["summary"]
    assert (a / "eval.csv").read_text().startswith("metric,mean,ci95,n,seed_0,seed_1")
    out = tmp_path / "report.html"
    assert main(["compare", str(a), str(b), "--out", str(out), "--videos", "2"]) == 0
    page = out.read_text()
    assert "<table>" in page and page.count("data:image/png;base64") >= 3 and "data:image/gif;base64" in page


def test_compare_without_eval_is_a_clear_error(two_runs, tmp_path, capsys):
    a, _ = two_runs
    assert main(["compare", str(tmp_path), "--out", str(tmp_path / "r.html")]) == 2
    assert "mirai eval" in capsys.readouterr().err


def test_a_bidirectional_run_is_sampled_whole(tmp_path):
    """`generate` denoises a teacher's frames all at once (its own mask), as DMD's real score sees them,
    not chunk by chunk with a cache (which would hide the future from the teacher's early frames)."""
    import torch

    from mirai import checkpoint as ckpt
    from mirai.data.frames import to_uint8
    from mirai.diffusion.schedule import FlowSchedule
    from mirai.eval.evaluate import generate
    from mirai.sampling.inputs import rollout_inputs
    from mirai.sampling.rollout import rollout, sample_whole

    run = train(tiny_cfg(tmp_path / "teacher", objective="bidirectional", steps=2), quiet=True)
    model, cfg = ckpt.load_model(run).eval(), ckpt.run_config(run, ["sample.steps=3"])
    inputs = rollout_inputs(model, cfg.world, 2, 4, 0, "cpu")
    args = dict(sample=cfg.sample, generator=inputs.generator)
    with torch.no_grad():
        whole = to_uint8(sample_whole(model, FlowSchedule.from_config(cfg.schedule), inputs.noise, inputs.prompt, **args))
    videos, _ = generate(run, 2, 4, 0, overrides=["sample.steps=3"])
    assert np.array_equal(videos, whole)
    inputs = rollout_inputs(model, cfg.world, 2, 4, 0, "cpu")
    with torch.no_grad():
        chunked = to_uint8(rollout(model, FlowSchedule.from_config(cfg.schedule), inputs.noise, inputs.prompt,
                                   sample=cfg.sample, generator=inputs.generator))
    assert not np.array_equal(videos, chunked)


def test_generate_takes_prompts_of_the_world_it_is_given(two_runs):
    """A run rolled out for another world (e.g. a harder one a base is continued in): its prompts are that world's
    scenes, not those of the world the file was trained in; without one, the file's own."""
    from mirai import checkpoint as ckpt
    from mirai.data.prompt import PROMPT
    from mirai.eval.evaluate import generate

    own = ckpt.run_config(two_runs[0], []).world
    other = WorldConfig(**{**own.__dict__, "min_sprites": 3, "max_sprites": 3})
    _, prompts = generate(two_runs[0], 4, 2, seed=0, world=other)
    assert all(len(PROMPT.sprites(p)) == 3 for p in prompts)
    _, prompts = generate(two_runs[0], 4, 2, seed=0)
    assert all(own.min_sprites <= len(PROMPT.sprites(p)) <= own.max_sprites for p in prompts) and own.max_sprites < 3
