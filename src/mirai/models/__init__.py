"""Networks: `dit` (the causal video DiT, block-causal or bidirectional), `wan` (the Wan2.1 transformer in the
same interface), `build` (the one factory, by `model.arch`), `attention` (3-D rotary positions, chunk masks,
the KV cache), `predictor` (the training-only foresight predictor phi).
"""
