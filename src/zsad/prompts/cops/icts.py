"""ICTS (Implicit Class Token Sampling): a VAE on the global image feature whose samples become class tokens.

Training decodes one reparameterised posterior sample of the (unnormalised, no-``ln_post``) global feature;
testing decodes R samples of the prior N(0, I) and never runs the encoder (methods.md §2.4).
"""

from __future__ import annotations

import hashlib
from typing import Literal

import torch
from torch import Tensor, nn

from zsad.errors import ConfigError
from zsad.prompts.cops.ests import init_linear_and_norm

ReconstructionMode = Literal["cross_batch_mse", "per_sample_l2"]
RECONSTRUCTION_MODES: tuple[str, ...] = ("cross_batch_mse", "per_sample_l2")


class ClassTokenVAE(nn.Module):
    """The CoPS VAE: encoder D->D ReLU -> (mu, logvar) in D; decoder D->D ReLU ->D (D = 768 for ViT-L/14).

    Args:
        dim: Width of the global feature, the hidden layers and the latent.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.latent_dim = dim
        self.encoder = nn.Sequential(nn.Linear(dim, dim), nn.ReLU())
        self.to_mean = nn.Linear(dim, dim)
        self.to_logvar = nn.Linear(dim, dim)
        self.decoder = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, dim))
        init_linear_and_norm(self)  # [inferred] the official init covers the VAE (its biases start at 0)

    def encode(self, global_embedding: Tensor) -> tuple[Tensor, Tensor]:
        """Posterior mean and log-variance, each ``[B, D]``."""
        hidden = self.encoder(global_embedding)
        return self.to_mean(hidden), self.to_logvar(hidden)

    def decode(self, latent: Tensor) -> Tensor:
        """Decode ``[..., D]`` latents to ``[..., D]`` class-token offsets."""
        return self.decoder(latent)

    def posterior_sample(self, global_embedding: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """One reparameterised sample ``mu + exp(logvar / 2) * eps``, decoded: ``(decoded [B, D], mu, logvar)``.

        The sample is drawn in fp32 even under mixed precision: ``exp`` of a half-precision log-variance overflows
        fp16 above 22, and the noise would otherwise be drawn at 3 significant digits.
        """
        mean, logvar = self.encode(global_embedding)
        with torch.autocast(device_type=mean.device.type, enabled=False):
            mean, logvar = mean.float(), logvar.float()
            latent = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)
        return self.decode(latent), mean, logvar


def kl_divergence(mean: Tensor, logvar: Tensor) -> Tensor:
    """``mean_batch(-1/2 Σ_dims (1 + logvar - mu² - exp(logvar)))`` in fp32."""
    mean, logvar = mean.float(), logvar.float()
    return (-0.5 * (1.0 + logvar - mean.pow(2) - logvar.exp()).sum(dim=-1)).mean()


def reconstruction_loss(decoded: Tensor, target: Tensor, mode: ReconstructionMode) -> Tensor:
    """Reconstruction of the global feature by the decoded posterior sample, in fp32.

    Args:
        decoded: ``[B, D]`` decoded samples ``s``.
        target: ``[B, D]`` global features ``g``.
        mode: ``"cross_batch_mse"`` (official, as released): the decoded ``[B, 1, 1, D]`` minus ``[B, D]`` broadcasts
            to ``[B, 1, B, D]``, so the loss is the per-dimension MSE between *every* sample and *every* image of the
            batch, ``mean_{i,j,d} (s_i,d - g_j,d)²``, minimised by the batch mean. ``"per_sample_l2"`` (corrected):
            ``mean_i Σ_d (g_i,d - s_i,d)²``.
    """
    decoded, target = decoded.float(), target.float()
    if mode == "cross_batch_mse":
        return (decoded[:, None, :] - target[None, :, :]).pow(2).mean()
    if mode == "per_sample_l2":
        return (target - decoded).pow(2).sum(dim=-1).mean()
    raise ConfigError(f"rec_mode='{mode}' is unknown; use one of {list(RECONSTRUCTION_MODES)}.")


def image_seed(global_embedding: Tensor, base_seed: int) -> int:
    """A per-image seed: a hash of ``base_seed`` and the image's global feature rounded to fp16.

    The seed depends only on the image (never on its batch-mates or its position in the loader), so the same
    features give the same samples in any batch and on replay from a feature cache. Rounding to fp16 first makes
    the seed insensitive to the last bits of the fp32 feature.
    """
    digest = hashlib.blake2b(digest_size=8)
    digest.update(int(base_seed).to_bytes(8, "little", signed=True))
    digest.update(global_embedding.detach().to(device="cpu", dtype=torch.float16).numpy().tobytes())
    return int.from_bytes(digest.digest(), "little") & 0x7FFF_FFFF_FFFF_FFFF


def prior_latents(global_embedding: Tensor, samples: int, latent_dim: int, base_seed: int | None) -> Tensor:
    """``[B, R, latent_dim]`` samples of N(0, I) for test-time class tokens.

    Args:
        global_embedding: ``[B, D]`` global features (only used to seed each image).
        samples: R, samples per image.
        latent_dim: Latent width.
        base_seed: With a seed, each image draws on the CPU from a generator seeded by :func:`image_seed`, so the
            result is reproducible and device-independent; ``None`` draws from the global RNG like the official
            code (then results depend on the image order).
    """
    device, batch = global_embedding.device, global_embedding.shape[0]
    if base_seed is None:
        return torch.randn(batch, samples, latent_dim, device=device)
    latents = [
        torch.randn(samples, latent_dim, generator=torch.Generator().manual_seed(image_seed(g, base_seed)))
        for g in global_embedding
    ]
    return torch.stack(latents).to(device)
