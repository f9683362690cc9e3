import pytest

from mirai.config import ConfigError, config_from_dict, load_config


def test_defaults_and_presets():
    cfg = config_from_dict({"model": {"preset": "small"}})
    assert cfg.model.dim == 384 and cfg.model.depth == 8
    cfg = config_from_dict({"model": {"preset": "small", "depth": 2}})
    assert cfg.model.depth == 2  # explicit keys win over the preset


def test_unknown_key_names_it_and_suggests():
    with pytest.raises(ConfigError, match=r"'train.lrr'.*Did you mean 'lr'"):
        config_from_dict({"train": {"lrr": 1e-3}})
    with pytest.raises(ConfigError, match="unknown config key 'trian'"):
        config_from_dict({"trian": {}})


def test_wrong_types_are_named():
    with pytest.raises(ConfigError, match="train.steps.*integer"):
        config_from_dict({"train": {"steps": "many"}})
    with pytest.raises(ConfigError, match="train.lr.*number"):
        config_from_dict({"train": {"lr": "fast"}})
    assert config_from_dict({"train": {"lr": 1}}).train.lr == 1.0  # ints are fine where floats are expected


def test_cross_field_checks():
    with pytest.raises(ConfigError, match="clip_frames"):
        config_from_dict({"data": {"clip_frames": 7}})
    with pytest.raises(ConfigError, match="preset"):
        config_from_dict({"model": {"preset": "huge"}})


def test_yaml_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  steps: 5\nmodel:\n  preset: tiny\n")
    cfg = load_config(path, ["train.lr=3e-4", "sample.timesteps=[1000, 500]", "train.out_dir=runs/x"])
    assert cfg.train.steps == 5 and cfg.train.lr == 3e-4 and cfg.sample.timesteps == [1000.0, 500.0]
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="section.key=value"):
        load_config(path, ["train.steps"])
