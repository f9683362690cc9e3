"""Networks: `dit` (the causal video DiT, block-causal or bidirectional), `attention` (3-D rotary positions,
chunk masks, the KV cache), `predictor` (the training-only foresight predictor phi).
"""
