import copy
import dataclasses
import json

import pytest
import torch

from mirai import checkpoint as ckpt
from tests.conftest import make_model


def test_model_file_roundtrip(tmp_path):
    model = make_model()
    ckpt.save_model(model, tmp_path / "model.safetensors")
    loaded = ckpt.load_model(tmp_path)
    for (k, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), k
    assert loaded.cfg == model.cfg


def test_corrupt_file_is_a_clear_error(tmp_path):
    model = make_model()
    path = tmp_path / "model.safetensors"
    ckpt.save_model(model, path)
    path.write_bytes(path.read_bytes()[:100])  # truncated, as by a crash of a non-atomic writer
    with pytest.raises(ckpt.CheckpointError, match="corrupt or truncated"):
        ckpt.load_model(path)
    (tmp_path / "junk.safetensors").write_text("hello")
    with pytest.raises(ckpt.CheckpointError, match="junk.safetensors"):
        ckpt.load_model(tmp_path / "junk.safetensors")
    with pytest.raises(ckpt.CheckpointError, match="not found"):
        ckpt.load_model(tmp_path / "missing.safetensors")


def test_wrong_kind_and_wrong_size_are_named(tmp_path):
    teacher = make_model(attention="bidirectional")
    ckpt.save_model(teacher, tmp_path / "t.safetensors")
    with pytest.raises(ckpt.CheckpointError, match="bidirectional model, but a causal model is needed"):
        ckpt.load_model(tmp_path / "t.safetensors", expect_attention="causal")
    small = make_model()
    big = make_model(mlp_ratio=2.0)
    with pytest.raises(ckpt.CheckpointError, match="shape mismatch"):
        ckpt.load_state(small, big.state_dict(), "big.safetensors")


def test_atomic_save_leaves_no_temporary_files(tmp_path):
    ckpt.atomic_save({"a": torch.ones(3)}, tmp_path / "x.safetensors", {"kind": "test"})
    assert [p.name for p in tmp_path.iterdir()] == ["x.safetensors"]
    tensors, meta = ckpt.load(tmp_path / "x.safetensors")
    assert meta == {"kind": "test"} and torch.equal(tensors["a"], torch.ones(3))


def test_optimizer_state_roundtrip(tmp_path):
    """Every parameter's AdamW state comes back from the file (through safetensors and JSON, as training/state.py
    writes it) equal tensor by tensor, and training goes on from it exactly as from the original optimiser."""
    x, t = torch.randn(1, 2, 3, 16, 16), torch.rand(1, 2)

    def step(model, opt):
        opt.zero_grad()
        model(x, t).square().mean().backward()
        opt.step()

    model = make_model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    for _ in range(2):
        step(model, opt)
    tensors, meta = ckpt.optimizer_tensors(opt.state_dict())
    ckpt.atomic_save(tensors, tmp_path / "optim.safetensors", meta)
    resumed, fresh = copy.deepcopy(model), copy.deepcopy(model)
    opt2 = torch.optim.AdamW(resumed.parameters(), lr=1e-3, weight_decay=0.01)
    opt2.load_state_dict(ckpt.optimizer_state(*ckpt.load(tmp_path / "optim.safetensors")))

    original, restored = opt.state_dict()["state"], opt2.state_dict()["state"]
    trained = sum(p.grad is not None for p in model.parameters())
    assert trained > 0 and len(original) == trained and sorted(restored) == sorted(original)
    for idx, state in original.items():
        assert set(restored[idx]) == set(state) == {"step", "exp_avg", "exp_avg_sq"}, idx
        for key in ("step", "exp_avg", "exp_avg_sq"):
            a, b = state[key], restored[idx][key]
            assert torch.is_tensor(b) and a.dtype == b.dtype and torch.equal(a, b), (idx, key)
        assert float(restored[idx]["step"]) == 2.0
    assert all(torch.count_nonzero(s["exp_avg_sq"]) > 0 for s in restored.values())
    as_json = json.loads(json.dumps(opt.state_dict()["param_groups"]))  # the file's JSON makes betas a list
    assert opt2.state_dict()["param_groups"] == as_json

    step(model, opt)
    step(resumed, opt2)
    step(fresh, torch.optim.AdamW(fresh.parameters(), lr=1e-3, weight_decay=0.01))  # no state: another step
    for (name, a), b, c in zip(model.named_parameters(), resumed.parameters(), fresh.parameters()):
        assert torch.equal(a, b), name
    assert any(not torch.equal(a, c) for a, c in zip(model.parameters(), fresh.parameters()))


def test_a_model_file_copied_out_of_its_run_samples_with_its_own_world(tmp_path):
    """A model file carries the world and sampler it was trained with: copied away from its run folder (no
    config.yaml beside it) it gets them back, not the defaults, whose prompt fields differ."""
    import shutil

    from mirai.config import ConfigError
    from mirai.data.prompt import PROMPT
    from mirai.sampling.inputs import rollout_inputs
    from mirai.training.loop import train
    from tests.conftest import tiny_cfg

    cfg = tiny_cfg(tmp_path / "run", steps=1)
    cfg.world.num_patterns, cfg.sample.steps = 1, 3  # neither is the default
    run = train(cfg, quiet=True)
    alone = tmp_path / "elsewhere" / "teacher.safetensors"
    alone.parent.mkdir()
    shutil.copy(run / "model.safetensors", alone)
    got = ckpt.run_config(alone, ["sample.cfg_scale=2.0"])
    assert got.world == cfg.world and got.data == cfg.data and got.schedule == cfg.schedule
    assert (got.sample.steps, got.sample.cfg_scale) == (3, 2.0)
    model = ckpt.load_model(alone)
    rollout_inputs(model, got.world, 2, 4, 0, "cpu")  # the prompts fit the model

    # a file without settings and with no run folder: defaults, and a clear error instead of an IndexError
    tensors, meta = ckpt.load(alone)
    ckpt.atomic_save(tensors, alone, {k: v for k, v in meta.items() if k != "settings"})
    default = ckpt.run_config(alone, [])
    assert default.world.image_size != cfg.world.image_size and PROMPT.vocab(default.world) != model.cfg.prompt_vocab
    with pytest.raises(ConfigError, match="frames: sample it with the world settings it was trained on"):
        rollout_inputs(model, default.world, 2, 4, 0, "cpu")
    default.world.image_size = cfg.world.image_size  # the right frames, another world's prompt fields
    with pytest.raises(ConfigError, match="structured prompts of another world .*: sample it with the world"):
        rollout_inputs(model, default.world, 2, 4, 0, "cpu")
    shutil.copy(run / "config.yaml", alone.parent / "config.yaml")  # an older file: its run's config.yaml
    assert ckpt.run_config(alone, []).world == cfg.world


def test_score_models_share_tokens_not_size_and_a_mismatch_names_the_key():
    from mirai.config import ModelConfig

    gen = ModelConfig(dim=32, depth=2, heads=2, patch_size=4, image_size=16)
    wider = dataclasses.replace(gen, dim=48, depth=3, heads=3, ffn_dim=96)
    ckpt.check_same_tokens(wider, gen, "teacher.safetensors", "the generator")  # a 14B beside a 1.3B: allowed
    with pytest.raises(ckpt.CheckpointError, match=r"does not match .*dim: 48 vs 32"):
        ckpt.check_same_family(wider, gen, "init.safetensors", "this stage's model")  # init_from: same size
    for key, value in (("patch_size", 8), ("frames_per_chunk", 3), ("channels", 4), ("text_dim", 16), ("arch", "wan")):
        with pytest.raises(ckpt.CheckpointError,
                           match=rf"teacher.safetensors .*does not share the tokens of the generator.*{key}: {value} vs"):
            ckpt.check_same_tokens(dataclasses.replace(wider, **{key: value}), gen, "teacher.safetensors", "the generator")
