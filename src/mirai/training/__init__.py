"""Training: one loop (`loop`) for every stage (`stages`: the bidirectional teacher, teacher forcing, causal
ODE distillation, DMD with optional foresight), their losses (`losses`), the ODE pair writer (`distill`),
the training state on disk (`state`), the optimiser pieces (`optim`) and the sample sheets (`samples`).
"""
