"""Evaluation: `metrics` (VBench's formulas), `extractors` (offline feature extractors), `probes` (ground
truth of the synthetic world), `evaluate` (`mirai eval`: rollouts per seed, scored at several lengths) and
`report` (`mirai compare`: one HTML report).
"""
