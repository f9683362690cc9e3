"""Mirai: causal (autoregressive) video diffusion with foresight."""

__version__ = "0.1.0"
