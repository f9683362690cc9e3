"""The diffusion process, free of any model: the rectified-flow path and its noise levels (`schedule`),
classifier-free guidance (`guidance`, the one CFG formula) and the solver steps (`solvers`).

Nothing here loops over chunks or owns a model call's arguments beyond one forward: the sampler
(`mirai.sampling`) owns the loops.
"""
