"""`mirai eval` and `mirai compare` end to end on a tiny run (seconds)."""

import json

import numpy as np
import pytest

from mirai.cli import main
from mirai.eval.evaluate import ci95, real_clips, summarize
from mirai.eval.report import paired_difference
from mirai.training.loop import train
from tests.test_train import tiny_cfg


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


def test_real_clips_score_high_on_the_probes(two_runs):
    from mirai.config import WorldConfig
    from mirai.eval.evaluate import Evaluator

    world = WorldConfig(image_size=16, sprite_sizes=[5])
    frames, prompts = real_clips(world, 6, 8)
    ev = Evaluator(world)
    scores, curves = ev.score(frames, prompts, [4, 8])
    assert scores["probe_layout@8f"] > 0.9 and scores["temporal_flickering@8f"] > 0.5
    assert len(curves["identity"]) == 8


def test_eval_then_compare_writes_json_csv_and_html(two_runs, tmp_path, capsys):
    a, b = two_runs
    for run in (a, b):
        assert main(["eval", "--ckpt", str(run), "--frames", "8", "--samples", "2", "--seeds", "0", "1",
                     "--device", "cpu"]) == 0
    result = json.loads((a / "eval.json").read_text())
    assert result["lengths"] == [4, 8] and result["extractor"]["extractor"] == "effnet_lite0"
    assert "subject_consistency@effnet_lite0@8f" in result["summary"]  # a substitute extractor is labelled
    assert (a / "eval.csv").read_text().startswith("metric,mean,ci95,n,seed_0,seed_1")
    out = tmp_path / "report.html"
    assert main(["compare", str(a), str(b), "--out", str(out), "--videos", "2"]) == 0
    page = out.read_text()
    assert "<table>" in page and page.count("data:image/png;base64") >= 3 and "data:image/gif;base64" in page


def test_compare_without_eval_is_a_clear_error(two_runs, tmp_path, capsys):
    a, _ = two_runs
    assert main(["compare", str(tmp_path), "--out", str(tmp_path / "r.html")]) == 2
    assert "mirai eval" in capsys.readouterr().err
