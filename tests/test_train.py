import json

import pytest
import torch

from mirai import checkpoint as ckpt
from mirai.config import config_from_dict
from mirai.training.loop import train
from mirai.training.optim import lr_at


def tiny_cfg(tmp_path, **train_kw):
    return config_from_dict({
        "world": {"image_size": 16, "sprite_sizes": [5]},
        "model": {"preset": "tiny", "dim": 32, "depth": 2, "heads": 2, "patch_size": 4, "image_size": 16},
        "data": {"clip_frames": 4},
        "train": {"steps": 6, "batch_size": 2, "lr": 1e-3, "warmup_steps": 2, "ckpt_every": 2, "sample_every": 0,
                  "log_every": 1, "out_dir": str(tmp_path), "precision": "fp32", **train_kw},
    })


def weights(run):
    return ckpt.load(run / "ckpt.safetensors")[0]


def test_resume_reproduces_the_uninterrupted_run_exactly(tmp_path):
    full = train(tiny_cfg(tmp_path / "full"), quiet=True)
    part = tiny_cfg(tmp_path / "part")
    train(part, stop_at=3, quiet=True)  # "interrupted" after step 3
    assert ckpt.load(tmp_path / "part" / "ckpt.safetensors")[1]["step"] == 3
    train(part, quiet=True)  # resumes at 3, runs to 6
    a, b = weights(full), weights(tmp_path / "part")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    losses = [json.loads(l)["loss"] for l in (tmp_path / "part" / "metrics.jsonl").read_text().splitlines()]
    assert len(losses) == 6 and all(l == l for l in losses)


def test_interrupted_checkpoint_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    cfg = tiny_cfg(tmp_path)
    train(cfg, stop_at=2, quiet=True)
    before = weights(tmp_path)

    def crash(*a, **k):
        raise KeyboardInterrupt  # as a kill in the middle of writing

    monkeypatch.setattr(ckpt, "save_file", crash)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, stop_at=4, quiet=True)
    after = weights(tmp_path)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not list(tmp_path.glob("*.tmp"))


def test_training_lowers_the_loss_and_writes_a_model(tmp_path):
    cfg = tiny_cfg(tmp_path, steps=30, lr=3e-3, log_every=1)
    run = train(cfg, quiet=True)
    losses = [json.loads(l)["loss"] for l in (run / "metrics.jsonl").read_text().splitlines()]
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5
    model = ckpt.load_model(run)
    assert model.cfg.prompt_vocab and model.cfg.attention == "causal"
    assert (run / "config.yaml").is_file()


def test_bidirectional_teacher_objective(tmp_path):
    cfg = tiny_cfg(tmp_path, objective="bidirectional", steps=2)
    run = train(cfg, quiet=True)
    assert ckpt.load_model(run).cfg.attention == "bidirectional"


def test_resume_with_another_model_is_refused(tmp_path):
    train(tiny_cfg(tmp_path), stop_at=2, quiet=True)
    other = tiny_cfg(tmp_path)
    other.model.depth = 3
    with pytest.raises(ckpt.CheckpointError, match="another model config"):
        train(other, quiet=True)


def test_lr_schedule_warms_up_then_decays():
    cfg = tiny_cfg("unused").train
    cfg.steps, cfg.warmup_steps, cfg.lr, cfg.min_lr_ratio = 100, 10, 1.0, 0.1
    assert lr_at(0, cfg) == pytest.approx(0.1) and lr_at(9, cfg) == pytest.approx(1.0)
    assert lr_at(55, cfg) < 1.0 and lr_at(100, cfg) == pytest.approx(0.1)
