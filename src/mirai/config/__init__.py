"""Typed run configuration: nested dataclasses, size presets, YAML loading and `a.b=value` overrides.

Every knob of a run lives in `sections` with a comment. YAML files (`configs/`, shipped in the package) hold
partial dicts merged over these defaults, several files in order; unknown keys and wrong types are `ConfigError`s
that name the key, with a "did you mean", never a traceback deep inside torch.

    sections  the dataclasses and presets
    schema    building and checking them from dicts (`build`, `config_from_dict`, `validate`)
    files     YAML files, the shipped configs, merging, `--set` overrides (`load_config`, `load_settings`)
"""

from .files import (RUN_SETTINGS, apply_overrides, config_file, load_config, load_data, load_settings, load_yaml, merge,
                    model_config_from_dict, run_settings, save_config, settings_config, shipped_configs, to_dict)
from .schema import build, config_from_dict, validate, validate_model, validate_world
from .sections import (DIST_STRATEGIES, MODEL_PRESETS, Config, ConfigError, DataConfig, DistConfig, DistillConfig,
                       DMDConfig, ForesightConfig, ModelConfig, PrepareConfig, SampleConfig, ScheduleConfig,
                       TrainConfig, WorldConfig)

