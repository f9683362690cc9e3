"""Data: `world` (the built-in synthetic video world with ground truth), `prompt` (its structured prompt
layout), `frames` (pictures <-> model range) and `datasets` (the world and folders of videos as datasets,
batches as a pure function of the step).
"""
