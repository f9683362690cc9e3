import torch

from mirai.models.attention import (KVCache, apply_rope, chunk_causal_mask, rope_angles, teacher_forcing_mask,
                             token_positions)
from tests.conftest import make_model


def test_chunk_causal_mask_blocks_the_future():
    ids = torch.tensor([0, 0, 1, 1, 2])
    mask = chunk_causal_mask(ids)
    for q in range(5):
        for k in range(5):
            assert mask[q, k] == (ids[k] <= ids[q])


def test_teacher_forcing_mask_matches_brute_force():
    K, n = 3, 2
    mask = teacher_forcing_mask(K, n)
    tokens = [("clean", j) for j in range(K - 1) for _ in range(n)] + [("noisy", i) for i in range(K) for _ in range(n)]
    assert mask.shape == (len(tokens), len(tokens))
    for a, (qk, qc) in enumerate(tokens):
        for b, (kk, kc) in enumerate(tokens):
            if qk == "clean":
                want = kk == "clean" and kc <= qc
            else:
                want = (kk == "clean" and kc < qc) or (kk == "noisy" and kc == qc)
            assert bool(mask[a, b]) == want, (tokens[a], tokens[b])


def test_rope_scores_depend_only_on_relative_position():
    torch.manual_seed(0)
    q, k = torch.randn(1, 1, 1, 24), torch.randn(1, 1, 1, 24)

    def score(pq, pk):
        aq = rope_angles(*[torch.tensor([v]) for v in pq], 24, 10000.0)
        ak = rope_angles(*[torch.tensor([v]) for v in pk], 24, 10000.0)
        return (apply_rope(q, aq) * apply_rope(k, ak)).sum()

    assert torch.allclose(score((5, 1, 2), (3, 0, 0)), score((105, 4, 5), (103, 3, 3)), atol=1e-4)
    assert not torch.allclose(score((5, 1, 2), (3, 0, 0)), score((9, 1, 2), (3, 0, 0)), atol=1e-3)


def test_token_positions_are_frame_major():
    t, h, w = token_positions(torch.tensor([7, 8]), grid=2)
    assert t.tolist() == [7, 7, 7, 7, 8, 8, 8, 8]
    assert h.tolist() == [0, 0, 1, 1, 0, 0, 1, 1]
    assert w.tolist() == [0, 1, 0, 1, 0, 1, 0, 1]


def test_cache_is_sized_from_the_model_config():
    model = make_model()
    cache = KVCache.allocate(model.cfg, batch=3, max_chunks=5)
    assert cache.k.shape == (2, 3, 2, 5 * model.tokens_per_chunk, 16)
    rolling = KVCache.allocate(model.cfg, batch=1, max_chunks=100, sink_chunks=1, window_chunks=3)
    assert rolling.capacity == 4


def test_rolling_eviction_reindexes_keys_one_chunk_earlier():
    """After eviction the window's keys must equal keys rotated at their new (earlier) positions."""
    model = make_model()
    cache = KVCache.allocate(model.cfg, batch=1, max_chunks=0, sink_chunks=1, window_chunks=2)
    tpc, hd = cache.tokens_per_chunk, cache.head_dim
    raw = torch.randn(3, 1, 2, tpc, hd)  # un-rotated keys of chunks 0, 1, 2
    grid = model.grid

    def rotated(chunk, slot):
        pos = torch.arange(slot * 2, slot * 2 + 2)
        return apply_rope(raw[chunk], rope_angles(*token_positions(pos, grid), hd, 10000.0))

    for c in range(3):
        for layer in range(2):
            cache.write(layer, rotated(c, c), torch.zeros(1, 2, tpc, hd))
        cache.advance()
    cache.make_room()  # evicts chunk 1 (the oldest window chunk); chunk 2 moves to slot 1
    assert cache.num_chunks == 2 and cache.total_chunks == 3
    k0, _ = cache.layer(0)
    torch.testing.assert_close(k0[:, :, :tpc], rotated(0, 0), atol=1e-5, rtol=0)
    torch.testing.assert_close(k0[:, :, tpc:], rotated(2, 1), atol=1e-5, rtol=0)
