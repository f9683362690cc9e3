"""The diffusion process, free of any model: the rectified-flow path and its noise levels (`schedule`),
classifier-free guidance (`guidance`, the one CFG formula) and the solver steps (`solvers`).

Nothing here calls a model: the sampler (`mirai.sampling`) owns the model calls and the loops.
"""
