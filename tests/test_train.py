import json

import pytest
import torch

from mirai import checkpoint as ckpt
from mirai.data.datasets import batch_indices, build_dataset, get_batch
from mirai.diffusion.schedule import FlowSchedule
from mirai.training.loop import train
from mirai.training.losses import bidirectional_loss, drop_prompt, teacher_forcing_loss
from mirai.training.stage import resolve_model_config
from mirai.training.optim import lr_at
from tests.conftest import make_model, tiny_cfg


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


def test_resume_reads_the_state_one_tensor_at_a_time(tmp_path, monkeypatch):
    """The state file is never read whole (load_file), and each of its tensors is read once, alone."""
    from mirai.training import state

    cfg = tiny_cfg(tmp_path / "run")
    train(cfg, stop_at=2, quiet=True)
    reads = []

    class Counting:
        def __init__(self, handle):
            self.handle = handle

        def __enter__(self):
            self.handle.__enter__()
            return self

        def __exit__(self, *exc):
            return self.handle.__exit__(*exc)

        def keys(self):
            return self.handle.keys()

        def get_slice(self, key):
            return self.handle.get_slice(key)  # shapes (header only); rows of sharded modules

        def get_tensor(self, key):
            reads.append(key)
            return self.handle.get_tensor(key)

    real_open = state.safe_open
    monkeypatch.setattr(state, "safe_open", lambda *a, **kw: Counting(real_open(*a, **kw)))
    monkeypatch.setattr(ckpt, "load_file", lambda *a, **kw: pytest.fail("the state file was read whole"))
    train(cfg, stop_at=3, quiet=True)
    with real_open(tmp_path / "run" / "ckpt.safetensors", "pt") as f:
        assert sorted(reads) == sorted(f.keys())  # each tensor once (the file now holds step 3: same names)


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
    """The teacher's first logged loss is full-sequence flow matching of its initial model under the run's draws
    (not the stage-1 loss), and the exported teacher sees the future."""
    cfg = tiny_cfg(tmp_path / "run", objective="bidirectional", steps=1, log_every=1)
    resolved = resolve_model_config(cfg)
    start = make_model("bidirectional", prompt_vocab=resolved.model.prompt_vocab)  # random, so the mask matters
    ckpt.save_model(start, tmp_path / "start.safetensors")
    cfg.train.init_from = str(tmp_path / "start.safetensors")
    run = train(cfg, quiet=True)
    logged = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])["loss"]

    gen = torch.Generator().manual_seed(resolved.train.seed)
    batch = get_batch(build_dataset(resolved), batch_indices(0, 2, 2**62, resolved.data.seed))
    prompt = drop_prompt(batch["prompt"], resolved.train.prompt_dropout, gen)
    state = gen.get_state()
    expected = bidirectional_loss(start, FlowSchedule(), batch["video"], prompt, gen, True, resolved.train.loss_t_floor)
    assert logged == pytest.approx(expected.item(), rel=1e-5)
    gen.set_state(state)
    causal = teacher_forcing_loss(start, FlowSchedule(), batch["video"], prompt, gen, True, 0.0, resolved.train.loss_t_floor)
    assert logged != pytest.approx(causal.item(), rel=1e-3)  # the stage-1 objective would log another value

    teacher = ckpt.load_model(run)
    assert teacher.cfg.attention == "bidirectional"
    x, t = torch.randn(1, 4, 3, 16, 16), torch.full((1, 4), 0.5)
    y = x.clone()
    y[:, 2:] += 1.0  # change only the second chunk
    with torch.no_grad():
        assert not torch.allclose(teacher(x, t)[:, :2], teacher(y, t)[:, :2])  # the first chunk sees it


def test_exported_model_is_the_ema_of_the_trained_weights(tmp_path):
    """With ema_decay 0 the EMA is the trained model itself; a frozen EMA would export the initial weights."""
    run = train(tiny_cfg(tmp_path, ema_decay=0.0, steps=2), quiet=True)
    state, exported = weights(run), ckpt.load(run / "model.safetensors")[0]
    for k, v in exported.items():
        assert torch.equal(v, state[f"model.{k}"]) and torch.equal(v, state[f"ema.{k}"]), k
    smooth = train(tiny_cfg(tmp_path / "smooth", ema_decay=0.9, ema_start=0, steps=3), quiet=True)
    state, exported = weights(smooth), ckpt.load(smooth / "model.safetensors")[0]
    moved = [k for k in exported if not torch.equal(exported[k], state[f"model.{k}"])]
    assert moved and all(torch.equal(exported[k], state[f"ema.{k}"]) for k in exported)


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


def test_batch_workers_give_the_same_run_and_resume(tmp_path):
    """data.num_workers builds batches in spawned processes ahead of the step: the same batches, so the same
    weights, also across an interruption (the workers start again at the resumed step)."""
    here = train(tiny_cfg(tmp_path / "here"), quiet=True)
    ahead = tiny_cfg(tmp_path / "ahead")
    ahead.data.num_workers = 2
    train(ahead, stop_at=2, quiet=True)
    train(ahead, quiet=True)
    a, b = weights(here), weights(tmp_path / "ahead")
    assert all(torch.equal(a[k], b[k]) for k in a)
