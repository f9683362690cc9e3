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


def test_config_files_merge_in_order_and_shipped_ones_are_found_by_name(tmp_path, monkeypatch):
    from mirai.config import config_file, load_config, merge, shipped_configs

    monkeypatch.chdir(tmp_path)  # no configs/ folder here: the shipped ones are found by name
    assert config_file("tiny.yaml") == config_file("configs/tiny.yaml") == config_file("tiny") == \
        shipped_configs() / "tiny.yaml"
    (tmp_path / "more.yaml").write_text("train:\n  steps: 7\nworld:\n  sprite_sizes: [5]\n")
    cfg = load_config(["tiny.yaml", "more.yaml"], ["train.lr=3e-4"])
    assert (cfg.train.steps, cfg.train.lr, cfg.train.batch_size, cfg.world.sprite_sizes) == (7, 3e-4, 8, [5])
    assert cfg.world.num_patterns == 1  # tiny.yaml's, kept: a mapping merges key by key
    assert merge({"a": {"b": 1, "c": [1, 2]}}, {"a": {"c": [3]}}) == {"a": {"b": 1, "c": [3]}}  # lists replace
    with pytest.raises(ConfigError, match="config file not found: nope.yaml .shipped configs"):
        load_config("nope.yaml")
