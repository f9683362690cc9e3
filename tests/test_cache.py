"""The prepared cache read back lazily: the same items and batches as reading every shard into memory, with at most
`max_open` shards open, and a corrupt shard still named."""

import pytest
import torch

from mirai import checkpoint as ckpt
from mirai import prepare as prep
from mirai.config import PrepareConfig
from mirai.data.cache import LatentDataset
from mirai.data.datasets import batch_indices, get_batch
from tests.conftest import tiny_text_encoder_folder, write_video_folder

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """Pixels (identity autoencoder) and caption embeddings of 5 videos x 2 clips, in shards of 3 clips."""
    root = tmp_path_factory.mktemp("cache")
    write_video_folder(root / "videos", names=("a", "b", "c", "d", "e"), frames=12)
    tiny_text_encoder_folder(root / "text")
    p = PrepareConfig(frames=6, height=8, width=8, text_encoder=str(root / "text"), text_len=8, shard_size=3,
                      clips_per_video=2)
    prep.prepare(root / "videos", root / "out", p, quiet=True)
    return root / "out"


def whole_cache(folder):
    """The reading this replaces: every shard in memory, concatenated."""
    parts = [ckpt.load(folder / s["file"])[0] for s in LatentDataset(folder, 2).manifest["shards"]]
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


def test_lazy_items_equal_the_whole_cache_in_memory(cache):
    ref = whole_cache(cache)
    data = LatentDataset(cache, clip_frames=2, max_open=1)
    assert len(data.reader.files) == 4 and data.num_clips == 10 and len(data) == 30  # 6 frames -> 3 windows of 2
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(0)).tolist()  # jumps between shards
    for index in order:
        clip, start = divmod(index, 3)
        item = data[index]
        assert torch.equal(item["video"], ref["latents"][clip, 2 * start : 2 * start + 2].float())
        assert torch.equal(item["prompt"], ref["prompt"][clip].float())
        assert len(data.reader.open) <= 1
    assert data.reader.verified == {0, 1, 2, 3}  # each shard's checksum checked once


def test_batches_are_the_same_function_of_the_step(cache):
    ref = whole_cache(cache)
    data = LatentDataset(cache, clip_frames=2, max_open=2)
    for step in range(12):  # four epochs of 30 windows in batches of 10: every batch crosses shards
        indices = batch_indices(step, 10, len(data), seed=3)
        batch = get_batch(data, indices)
        clips = [i // 3 for i in indices]
        want = torch.stack([ref["latents"][c, 2 * (i % 3) : 2 * (i % 3) + 2].float() for c, i in zip(clips, indices)])
        assert torch.equal(batch["video"], want)
        assert torch.equal(batch["prompt"], ref["prompt"][clips].float())
    assert len(data.reader.open) == 2


def test_a_corrupt_shard_is_named_when_first_read(cache, tmp_path):
    import shutil

    shutil.copytree(cache, tmp_path / "c")
    shard = tmp_path / "c" / "shard_00001.safetensors"
    raw = bytearray(shard.read_bytes())
    raw[-5] ^= 0xFF  # a flipped bit in the last tensor's bytes
    shard.write_bytes(bytes(raw))
    data = LatentDataset(tmp_path / "c", clip_frames=2)
    data[0]  # shard 0 is fine
    with pytest.raises(ckpt.CheckpointError, match="shard_00001.safetensors is corrupt"):
        data[3 * 3]  # clip 3 is the first of shard 1
