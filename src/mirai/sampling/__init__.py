"""Sampling: where a model is called to denoise. `pipeline` is the one way from a model file or run folder to
decoded videos (load, inputs, stream or whole video); `inputs` makes what a rollout starts from; `rollout` holds
the loops: the autoregressive rollout (streaming, KV cache, continuation, guidance), the training-time
self-rollout with an exit-step gradient (DMD) and the whole-clip sampler of bidirectional models; `guided` calls
a model under classifier-free guidance. Models never loop; the diffusion formulas come from `mirai.diffusion`.
"""
