"""Model references (`mirai.references`): headers only for configs, presets only inside random_weights()."""

import pytest

from mirai import checkpoint as ckpt
from mirai.bench import random_model
from mirai.config import config_from_dict
from mirai.references import load_reference, random_weights, reference_config


def wan_like():
    return config_from_dict({"model": {"preset": "wan-tiny", "conditional": False}}, model_only=True).model


def test_preset_keeps_the_runs_tokens_and_takes_the_presets_size():
    cfg = reference_config("preset:wan14b", wan_like(), "bidirectional")
    assert (cfg.dim, cfg.depth, cfg.heads, cfg.ffn_dim) == (5120, 40, 40, 13824)
    assert (cfg.image_size, cfg.frames_per_chunk, cfg.attention) == (16, 3, "bidirectional")


def test_a_preset_is_refused_as_weights_outside_random_weights():
    with pytest.raises(ckpt.CheckpointError, match="dmd.teacher = 'preset:wan-tiny' names a size"):
        load_reference("preset:wan-tiny", wan_like(), "bidirectional", "dmd.teacher")
    with random_weights():
        model = load_reference("preset:wan-tiny", wan_like(), "bidirectional", "dmd.teacher")
    assert model.cfg.attention == "bidirectional"


def test_a_model_file_is_read_from_its_header(tmp_path):
    model = random_model("tiny", attention="bidirectional")
    ckpt.save_model(model, tmp_path / "m.safetensors")
    assert reference_config(str(tmp_path / "m.safetensors"), wan_like()) == model.cfg
    with pytest.raises(ckpt.CheckpointError, match="bidirectional model, but a causal"):
        reference_config(str(tmp_path / "m.safetensors"), wan_like(), "causal")
