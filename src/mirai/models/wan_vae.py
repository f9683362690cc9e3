"""diffusers' `AutoencoderKLWan` (Wan2.1's VAE) from a local folder, behind Mirai's `Autoencoder` interface.

8x spatial and 4x temporal compression, 1 + 4k frames -> 1 + k latent frames. Latents are normalised with the
folder's `latents_mean`/`latents_std` as Wan's pipelines do: z_norm = (z - mean) / std after encoding,
z = z_norm * std + mean before decoding. Videos are (B, T, C, H, W) (Mirai's layout; diffusers' is
(B, C, T, H, W)). The decoder is causal and keeps its convolutions' feature cache between calls, so a stream
fed latent chunks gives the frames of one full decode.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from ..data.videos import DataError

CLASS_NAME = "AutoencoderKLWan"  # the `_class_name` of its config.json


class WanAutoencoder:
    """diffusers' AutoencoderKLWan (loaded from `folder`), normalised latents, deterministic encoding (the
    posterior's mean, as Wan's pipelines encode conditioning frames)."""

    def __init__(self, folder: str | Path, device="cpu"):
        from diffusers import AutoencoderKLWan

        folder = Path(folder)
        if not (folder / "config.json").is_file():
            raise DataError(f"{folder} is not a diffusers AutoencoderKLWan folder (no config.json)")
        self.name = str(folder)
        self.vae = AutoencoderKLWan.from_pretrained(folder).to(device).eval().requires_grad_(False)
        c = self.vae.config
        self.channels, self.spatial = c.z_dim, self.vae.spatial_compression_ratio
        self.temporal = 2 ** sum(c.temperal_downsample)
        shape = (1, 1, c.z_dim, 1, 1)  # broadcast over (B, T, C, H, W)
        self.mean = torch.tensor(c.latents_mean, dtype=torch.float32, device=device).view(shape)
        self.std = torch.tensor(c.latents_std, dtype=torch.float32, device=device).view(shape)

    @torch.no_grad()
    def encode(self, video: Tensor) -> Tensor:
        """(B, 1 + 4k, 3, H, W) in [-1, 1] -> normalised latents (B, 1 + k, z_dim, H / 8, W / 8)."""
        z = self.vae.encode(video.movedim(1, 2)).latent_dist.mode().movedim(2, 1)
        return (z.float() - self.mean) / self.std

    @torch.no_grad()
    def decode(self, latents: Tensor) -> Tensor:
        """Normalised latents (B, 1 + k, z_dim, h, w) -> (B, 1 + 4k, 3, 8h, 8w) in [-1, 1] (one full decode)."""
        z = (latents.float() * self.std + self.mean).movedim(1, 2)
        return self.vae.decode(z.to(self.vae.dtype)).sample.movedim(2, 1).float()

    def stream(self) -> WanStream:
        return WanStream(self)


class WanStream:
    """Chunk-by-chunk decoding with the causal decoder's feature cache kept between calls: latent frame 0 gives
    1 frame, every later one 4, and the frames equal `WanAutoencoder.decode` of the whole latent video (this is
    the loop of diffusers' `AutoencoderKLWan._decode`, with the cache owned here instead of cleared per call)."""

    def __init__(self, ae: WanAutoencoder):
        from diffusers.models.autoencoders.autoencoder_kl_wan import WanCausalConv3d

        self.ae, self.first = ae, True
        self.cache = [None] * sum(isinstance(m, WanCausalConv3d) for m in ae.vae.decoder.modules())

    @torch.no_grad()
    def decode(self, latents: Tensor) -> Tensor:
        """Normalised latents (B, k, z_dim, h, w), the next k latent frames -> their frames (B, 4k (+1), 3, H, W)."""
        vae = self.ae.vae
        z = (latents.float() * self.ae.std + self.ae.mean).movedim(1, 2).to(vae.dtype)
        x = vae.post_quant_conv(z)  # a 1x1x1 convolution: frame by frame is the same
        out = []
        for i in range(x.shape[2]):
            out.append(vae.decoder(x[:, :, i : i + 1], feat_cache=self.cache, feat_idx=[0], first_chunk=self.first))
            self.first = False
        return torch.cat(out, dim=2).clamp(-1, 1).movedim(2, 1).float()
