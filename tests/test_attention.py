import warnings

import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention.flex_attention import create_block_mask

from mirai.models.attention import (ChunkMask, KVCache, apply_rope, chunk_causal_mask, default_mask, rope_angles,
                                    run_flex, teacher_forcing_mask, token_positions)
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


# --------------------------------------------------------------------------------------------------
# ChunkMask: the structured masks as descriptions (no (L, L) tensor for FlexAttention)

# (kind, tokens_per_chunk, num_chunks, length): L a multiple of 128 or not, chunks aligned to blocks or not
CHUNK_MASKS = [("causal", 48, 5, 0), ("causal", 128, 3, 0), ("causal", 100, 4, 350), ("causal", 7, 40, 0),
               ("teacher_forcing", 48, 3, 0), ("teacher_forcing", 128, 3, 0), ("teacher_forcing", 130, 4, 0),
               ("teacher_forcing", 33, 6, 0)]


@pytest.mark.parametrize("spec", CHUNK_MASKS)
def test_chunk_mask_dense_is_the_dense_helpers_mask_and_mask_mod_agrees(spec):
    kind, n, k, length = spec
    m = ChunkMask(kind, n, k, length)
    if kind == "causal":
        want = chunk_causal_mask(torch.arange(m.L) // n)
    else:
        want = teacher_forcing_mask(k, n)
    assert m.dense().dtype == torch.bool and torch.equal(m.dense(), want)
    q, kv = torch.arange(m.L)[:, None], torch.arange(m.L)[None, :]
    zero = torch.zeros((), dtype=torch.long)
    assert torch.equal(m.mask_mod(zero, zero, q, kv), want)


@pytest.mark.parametrize("spec", CHUNK_MASKS)
def test_chunk_block_mask_has_the_block_structure_of_the_dense_reference(spec):
    m = ChunkMask(*spec)
    dense = m.dense()
    reference = create_block_mask(lambda b, h, q, k: dense[q, k], None, None, m.L, m.L, device="cpu")
    built = m.block_mask(torch.device("cpu"))
    assert built.seq_lengths == reference.seq_lengths == (m.L, m.L)
    for name in ("kv_num_blocks", "kv_indices", "full_kv_num_blocks", "full_kv_indices", "q_num_blocks",
                 "q_indices", "full_q_num_blocks", "full_q_indices"):
        assert torch.equal(getattr(built, name), getattr(reference, name)), name
    assert torch.equal(built.to_dense(), reference.to_dense())


def test_the_chunk_mask_cases_have_full_partial_and_empty_tiles():
    """Else the structure test above could pass with one kind of tile wrong."""
    tiles = [ChunkMask(*spec).block_mask(torch.device("cpu")) for spec in CHUNK_MASKS]
    assert any(b.full_kv_num_blocks.sum() > 0 for b in tiles) and any(b.kv_num_blocks.sum() > 0 for b in tiles)
    assert any((b.to_dense() == 0).any() for b in tiles)


def test_chunk_block_mask_runs_flex_attention_as_sdpa_with_the_dense_mask():
    m = ChunkMask("teacher_forcing", 100, 3)
    q, k, v = torch.randn(3, 1, 2, m.L, 8, generator=torch.Generator().manual_seed(0)).unbind(0)
    with warnings.catch_warnings():  # eager FlexAttention on the CPU warns (once) that it is unfused
        warnings.simplefilter("ignore")
        out = run_flex(q, k, v, m.block_mask(torch.device("cpu")))
    assert (out - F.scaled_dot_product_attention(q, k, v, attn_mask=m.dense())).abs().max() < 1e-5


def test_the_models_take_a_chunk_mask_or_its_dense_tensor_alike():
    model = make_model()
    x, t = torch.randn(2, 6, 3, 16, 16), torch.rand(2, 6)
    chunk = ChunkMask("causal", model.tokens_per_chunk, 3)
    with torch.no_grad():
        default, described, dense = model(x, t), model(x, t, mask=chunk), model(x, t, mask=chunk.dense())
        full = model(x, t, mask=None)
    assert torch.equal(default, described) and torch.equal(default, dense)
    assert not torch.allclose(default, full)  # the mask is applied at all
    assert torch.equal(default_mask(model.cfg, 5, model.tokens_per_frame, "cpu"),
                       chunk_causal_mask((torch.arange(5) // 2).repeat_interleave(model.tokens_per_frame)))
