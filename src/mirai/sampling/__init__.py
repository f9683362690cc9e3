"""Sampling: the loops that call a model to denoise. `rollout` holds the autoregressive rollout (streaming,
KV cache, continuation, guidance), the training-time self-rollout with an exit-step gradient (DMD), and the
whole-clip sampler of bidirectional models. Models never loop; the diffusion formulas come from
`mirai.diffusion`.
"""
