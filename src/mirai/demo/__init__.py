"""`mirai demo`: does foresight help? The paper's claim in miniature, as one resumable command.

1. The shared stages once (or the shipped base's): bidirectional teacher, teacher forcing (the AR teacher),
   causal ODE distillation.
2. The DMD stage from the same ODE student for every training seed, once per arm: the Causal-Forcing baseline
   (`foresight.enabled: false`), Video-Mirai (`true`), and any further arms (configs/demo_ablation.yaml, ...).
3. Every arm evaluated over several sampling seeds on one rollout of `eval_length` x the training clip (a rolling
   KV cache of sink 1 + 4x the clip's chunks, so 8x runs past the cache), scored at 1x, 2x, 4x and 8x.
4. Paired contrasts against the baseline over training seeds (each seed's value is its mean over sampling seeds):
   mean difference, 95% t-interval, p; a verdict on the primary endpoint, declared before any result
   (`plan.PRIMARY_ENDPOINT`); the reference answer shipped with the base, and whether this run reproduced it.

    plan     the demo's settings (configs/demo.yaml + --config + --set) and every stage's run config
    tasks    steps one after another or side by side in worker processes, with the time left
    run      the stages, the evaluations, the contrasts, the outputs
    stats    per-seed means, paired contrasts, the verdict
    report   tables, the reference answer, the reproduction check
    figures  drift curves and the strip of frames
    base     a base's files, provenance and probes; its reference answer
"""

from .plan import PRIMARY_ENDPOINT, SECONDARY_ENDPOINTS, DemoConfig, Plan, load_demo
from .run import run_demo
