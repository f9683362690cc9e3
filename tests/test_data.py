import imageio.v3 as iio
import numpy as np
import pytest
import torch

from mirai.config import WorldConfig
from mirai.data.datasets import DataError, SyntheticVideoDataset, VideoFolderDataset, batch_indices, get_batch


def frames(T=10, H=20, W=24, seed=0):
    return np.random.default_rng(seed).integers(0, 255, size=(T, H, W, 3), dtype=np.uint8)


def test_synthetic_items_are_in_model_range_and_deterministic():
    ds = SyntheticVideoDataset(WorldConfig(), seed=0, clip_frames=8)
    item = ds[3]
    assert item["video"].shape == (8, 3, 32, 32) and item["prompt"].shape == (10,)
    assert item["video"].min() >= -1 and item["video"].max() <= 1
    assert torch.equal(item["video"], ds[3]["video"])


def test_folder_of_gifs_mp4s_and_frame_folders(tmp_path):
    iio.imwrite(tmp_path / "a.gif", frames(10), duration=100)
    iio.imwrite(tmp_path / "b.mp4", frames(12, 32, 32), fps=8, codec="libx264", plugin="FFMPEG", macro_block_size=1)
    (tmp_path / "c").mkdir()
    for i, f in enumerate(frames(8)):
        iio.imwrite(tmp_path / "c" / f"{i:03d}.png", f)
    ds = VideoFolderDataset(tmp_path, clip_frames=4, image_size=16)
    assert len(ds) == 2 + 3 + 2
    assert ds[0]["video"].shape == (4, 3, 16, 16)
    assert torch.all(ds[0]["prompt"] == 0)


def test_empty_folder_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="empty"):
        VideoFolderDataset(tmp_path, 4, 16)


def test_unreadable_file_is_named(tmp_path):
    (tmp_path / "broken.mp4").write_bytes(b"not a video at all")
    with pytest.raises(DataError, match="broken.mp4"):
        VideoFolderDataset(tmp_path, 4, 16)


def test_too_short_video_is_named(tmp_path):
    iio.imwrite(tmp_path / "short.gif", frames(3), duration=100)
    with pytest.raises(DataError, match="short.gif has 3 frames"):
        VideoFolderDataset(tmp_path, 4, 16)


def test_missing_folder(tmp_path):
    with pytest.raises(DataError, match="not found"):
        VideoFolderDataset(tmp_path / "nope", 4, 16)


def test_batches_are_a_function_of_the_step():
    assert batch_indices(3, 4, 2**62, 0) == [12, 13, 14, 15]
    epoch = [i for s in range(5) for i in batch_indices(s, 2, 10, seed=0)]
    assert sorted(epoch) == list(range(10))  # a finite dataset: every clip once per epoch, shuffled
    assert epoch != list(range(10))
    assert batch_indices(7, 2, 10, 0) == batch_indices(7, 2, 10, 0)


def test_get_batch_stacks():
    ds = SyntheticVideoDataset(WorldConfig(), seed=0, clip_frames=4)
    batch = get_batch(ds, [0, 1, 2])
    assert batch["video"].shape == (3, 4, 3, 32, 32) and batch["prompt"].shape == (3, 10)
