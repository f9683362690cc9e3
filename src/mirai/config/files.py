"""Config files: YAML merged over the defaults, `--set a.b=value` overrides, and the configs shipped inside the
package (`mirai/configs/`, found by name from anywhere, e.g. `--config tiny.yaml` or `configs/tiny.yaml`)."""

from __future__ import annotations

import copy
import dataclasses
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from .schema import build, config_from_dict
from .sections import Config, ConfigError, ModelConfig

def _parse_value(text: str) -> Any:
    """`--set a.b=VALUE`: VALUE is read as YAML, so 3, 3e-4, true, [1, 2] and plain strings work."""
    try:
        return yaml.safe_load(text)
    except (yaml.YAMLError, ValueError):  # ValueError: YAML-shaped but impossible, e.g. the date 2024-13-45
        return text


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `a.b=value` strings to a nested dict (before it is typed, so errors name the key)."""
    data = copy.deepcopy(data)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' is not of the form section.key=value")
        key, text = item.split("=", 1)
        parts = key.strip().split(".")
        node = data
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override '{item}': '{part}' is not a section")
        node[parts[-1]] = _parse_value(text)
    return data


def shipped_configs() -> Path:
    """The folder of the configs shipped with the package (`mirai/configs/`; the repository's `configs/` links to it)."""
    return Path(str(resources.files("mirai") / "configs"))


def config_file(name: str | Path) -> Path:
    """A config file by path, or a shipped one by name: `tiny.yaml`, `tiny` or `configs/tiny.yaml` find
    `mirai/configs/tiny.yaml` when no such file exists where the command runs (so a wheel install finds them)."""
    path = Path(name)
    if path.is_file():
        return path
    shipped = shipped_configs()
    inside = path.relative_to("configs") if path.parts[:1] == ("configs",) else path  # configs/wan/x.yaml -> wan/x.yaml
    for candidate in (shipped / inside, shipped / f"{inside}.yaml"):
        if candidate.is_file():
            return candidate
    names = ", ".join(sorted(p.name for p in shipped.glob("*.yaml")))
    raise ConfigError(f"config file not found: {name} (shipped configs, usable by name: {names})")


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = config_file(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (yaml.YAMLError, ValueError) as e:  # ValueError: not UTF-8 text, or an impossible date / number
        raise ConfigError(f"config file {path} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return data


def merge(*layers: dict[str, Any]) -> dict[str, Any]:
    """Nested dicts merged in order: a later layer's mapping merges into the earlier one key by key; any other value
    (a number, a list) replaces it. This is how several --config files and a demo's stage keys combine."""
    out: dict[str, Any] = {}
    for layer in layers:
        for key, value in (layer or {}).items():
            if isinstance(value, dict) and isinstance(out.get(key), dict):
                out[key] = merge(out[key], value)
            else:
                out[key] = copy.deepcopy(value)
    return out


Paths = str | Path | list[str | Path] | tuple[str | Path, ...] | None


def load_data(paths: Paths, overrides: list[str] | None = None) -> dict[str, Any]:
    """The merged YAML of `paths` (one file, several in order, or none) with `overrides` applied, untyped."""
    files = [] if paths is None else [paths] if isinstance(paths, (str, Path)) else list(paths)
    return apply_overrides(merge(*(load_yaml(p) for p in files)), overrides or [])


def load_config(paths: Paths = None, overrides: list[str] | None = None, model_only: bool = False) -> Config:
    """A checked run Config: the defaults, then each YAML file of `paths` merged in order, then `overrides`."""
    return config_from_dict(load_data(paths, overrides), model_only)


def load_settings(cls: type, paths: Paths, overrides: list[str] | None = None) -> Any:
    """Typed settings other than a run config (e.g. the demo's) from YAML files and overrides, by the same rules."""
    return build(cls, load_data(paths, overrides))


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def save_config(cfg: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))


def model_config_from_dict(data: dict[str, Any]) -> ModelConfig:
    return build(ModelConfig, data, "model")


RUN_SETTINGS = ("world", "data", "sample", "schedule")  # what sampling a model needs besides its architecture


def run_settings(cfg: Config) -> dict[str, Any]:
    """The sections of a run's config that sampling and evaluation read; every exported model file carries them."""
    return {k: to_dict(getattr(cfg, k)) for k in RUN_SETTINGS}


def settings_config(saved: dict[str, Any], overrides: list[str]) -> Config:
    """A Config from a run's saved settings (`run_settings`, or a whole saved config; {} = defaults), with
    `sample.*` overrides applied."""
    for item in overrides:
        if not item.startswith("sample."):
            raise ConfigError(f"this command only takes sample.* overrides, got '{item}'")
    data = apply_overrides({k: saved.get(k) or {} for k in RUN_SETTINGS}, overrides)
    return build(Config, data)
