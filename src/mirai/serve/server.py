"""Running `mirai serve`: load each checkpoint once, check the address, print where to look, serve with uvicorn
until Ctrl-C."""

from __future__ import annotations

import ipaddress
import secrets
import socket
import sys
import tempfile
from pathlib import Path

import uvicorn

from ..checkpoint import run_config
from ..config import ConfigError
from ..sampling.pipeline import Pipeline
from ..sampling.rollout import long_rollout_overrides
from .app import Server, ServeSettings


def shipped_student() -> Path:
    """The shipped base's ODE student: what a fresh clone serves."""
    return Path(__file__).resolve().parent.parent / "bases" / "world" / "ode.safetensors"


def model_name(spec: str, taken: set[str]) -> tuple[str, str]:
    """(name, path) of a --ckpt value: NAME=PATH, or a path named by its folder (and its parent when taken)."""
    name, sep, path = spec.partition("=")
    if sep and name and "/" not in name:
        return name, path
    p = Path(spec)
    name = p.stem if p.is_file() else p.name
    return (f"{p.parent.name}/{name}" if name in taken else name), spec


def load_models(specs: list[str], device: str, overrides: list[str]) -> dict[str, Pipeline]:
    """Each checkpoint loaded once. Unless `overrides` say otherwise, a model samples with the trained-range rolling
    cache (1 sink + a window inside its training clip) so a stream of any length keeps to what it learned."""
    models: dict[str, Pipeline] = {}
    for spec in specs or [str(shipped_student())]:
        name, path = model_name(spec, set(models))
        if name in models:
            raise ConfigError(f"two --ckpt values are named {name!r}: name them, NAME=PATH")
        cfg = run_config(path, [])
        window = long_rollout_overrides(cfg.data.clip_frames, cfg.model.frames_per_chunk)
        pipe = Pipeline.load(path, device=device, overrides=window + overrides)
        if not pipe.causal:
            raise ConfigError(f"{path} is a bidirectional model: only causal generators stream")
        models[name] = pipe
    return models


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: not known to stay on this machine


def check_port(host: str, port: int) -> None:
    """One clear error when the address is taken (before the models' load is wasted on it)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds: a closed server's port is free
        try:
            probe.bind((host, port))
        except OSError as e:
            raise ConfigError(f"cannot listen on {host}:{port}: {e.strerror} (another server there? pick another "
                              f"--port)") from None


def serve(specs: list[str], host: str, port: int, settings: ServeSettings, device: str = "auto",
          overrides: list[str] | None = None) -> None:
    """Serve until Ctrl-C. Any address but loopback needs a token (made here unless given), as Jupyter does."""
    if not is_loopback(host) and settings.token is None:
        settings.token = secrets.token_urlsafe(24)
    check_port(host, port)
    models = load_models(specs, device, overrides or [])
    with tempfile.TemporaryDirectory(prefix="mirai-serve-") as folder:
        server = Server(models, settings, Path(folder))
        url = f"http://{host if ':' not in host else f'[{host}]'}:{port}/"
        print(f"serving {', '.join(models)} on {url}" + (f"?token={settings.token}" if settings.token else ""),
              file=sys.stderr)
        print("Ctrl-C stops it", file=sys.stderr)
        config = uvicorn.Config(server.app(), host=host, port=port, log_level="warning", ws="websockets-sansio",
                                timeout_graceful_shutdown=5, lifespan="on")
        try:
            uvicorn.Server(config).run()  # Ctrl-C: uvicorn closes the sockets and runs the app's shutdown first...
        except KeyboardInterrupt:  # ...then raises the signal again, which ends here: a stop asked for, not a crash
            pass
        print("stopped", file=sys.stderr)
