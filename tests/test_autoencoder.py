"""The pluggable autoencoders against diffusers' own AutoencoderKLWan (a tiny random one saved to a folder)."""

import pytest
import torch

from tests.conftest import tiny_vae_folder
from mirai.models.autoencoder import IdentityAutoencoder, latent_frames, video_frames
from mirai.models.build import load_autoencoder

diffusers = pytest.importorskip("diffusers")


def test_identity_is_pixels():
    ae, x = IdentityAutoencoder(), torch.rand(1, 3, 3, 8, 8)
    assert ae.encode(x) is x and ae.decode(x) is x and ae.stream().decode(x) is x
    assert latent_frames(17, 4) == 5 and latent_frames(5, 1) == 5
    assert video_frames(5, 4) == 17 and video_frames(5, 1) == 5
    assert all(video_frames(latent_frames(1 + 4 * k, 4), 4) == 1 + 4 * k for k in range(6))


def test_a_folder_of_another_kind_is_named(tmp_path):
    from mirai.data.videos import DataError

    (tmp_path / "config.json").write_text('{"_class_name": "AutoencoderKL"}')
    with pytest.raises(DataError, match="'AutoencoderKL' autoencoder; the kinds Mirai reads: identity, AutoencoderKLWan"):
        load_autoencoder(str(tmp_path))
    with pytest.raises(DataError, match="no config.json"):
        load_autoencoder(str(tmp_path / "missing"))


def test_wan_encode_decode_equal_diffusers(tmp_path):
    vae = tiny_vae_folder(tmp_path)
    ae = load_autoencoder(str(tmp_path))
    assert (ae.channels, ae.spatial, ae.temporal) == (16, 8, 4)
    video = torch.rand(2, 9, 3, 16, 24) * 2 - 1  # (B, T, C, H, W), 1 + 4 * 2 frames
    z = ae.encode(video)
    assert z.shape == (2, 3, 16, 2, 3)
    mean, std = (torch.tensor(v).view(1, 16, 1, 1, 1) for v in (vae.config.latents_mean, vae.config.latents_std))
    with torch.no_grad():
        ref_z = (vae.encode(video.movedim(1, 2)).latent_dist.mode() - mean) / std
        ref_x = vae.decode(ref_z * std + mean).sample
    assert (z - ref_z.movedim(2, 1)).abs().max() < 1e-5
    x = ae.decode(z)
    assert x.shape == video.shape
    assert (x - ref_x.movedim(2, 1)).abs().max() < 1e-5


def test_wan_streamed_decode_equals_full_decode(tmp_path):
    tiny_vae_folder(tmp_path)
    ae = load_autoencoder(str(tmp_path))
    z = torch.randn(1, 6, 16, 2, 2)
    full = ae.decode(z)
    stream = ae.stream()
    parts = [stream.decode(c) for c in z.split([1, 2, 3], dim=1)]  # uneven chunks, as a rollout may yield
    assert [p.shape[1] for p in parts] == [1, 8, 12]
    assert (torch.cat(parts, dim=1) - full).abs().max() < 1e-6
