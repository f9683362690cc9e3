import torch

from mirai import rng


def test_derived_seeds_differ_by_purpose_and_index_and_repeat():
    seeds = {rng.derive_seed(0, p, i) for p in ("a", "b") for i in range(50)}
    assert len(seeds) == 100 and all(0 <= s < 2**63 for s in seeds)
    assert rng.derive_seed(3, "a", 1, 2) == rng.derive_seed(3, "a", 1, 2) != rng.derive_seed(3, "a", 2, 1)
    assert rng.derive_seed(0, "a", 10) != rng.derive_seed(0, "a1", 0)  # no concatenation collisions


def test_chunk_noise_is_per_video_and_chunk():
    a = rng.chunk_noise(7, num_videos=2, num_chunks=2, chunk_shape=(2, 3, 4, 4))
    b = rng.chunk_noise(7, num_videos=3, num_chunks=5, chunk_shape=(2, 3, 4, 4))
    assert a.shape == (2, 4, 3, 4, 4)
    assert torch.equal(b[:2, :4], a)  # more videos or chunks leave the first ones unchanged
    assert not torch.equal(b[0, :2], b[0, 2:4]) and not torch.equal(b[0], b[1])
    assert abs(b.std().item() - 1) < 0.1
