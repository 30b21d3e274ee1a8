"""The training objective of a small diffusers `AutoencoderKL` (FlexTok stage 0) and its `Trainer`.

Loss per batch (images x in [-1, 1], posterior q(z|x) = N(mu, sigma^2), z ~ q in training, z = mu in eval):

    loss = MSE(x_hat, x) + l1_weight * |x_hat - x| + kl_weight * KL + perceptual_weight * P

with `KL` the per-element mean of `0.5 * (mu^2 + sigma^2 - 1 - log sigma^2)` (so the weight does not depend on the
latent size), and `P` an optional feature-matching term on a frozen [`FlexTokImageClassifier`] (the mean over its
stages of the MSE between channel-normalized feature maps of x_hat and x).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import Trainer
from transformers.utils import ModelOutput

from .trainer import LossTermsLoggingMixin


@dataclass
class VAELossOutput(ModelOutput):
    """Loss terms of one batch (`reconstruction` `[B, 3, H, W]`, `latents` `[B, C, h, w]`)."""

    loss: torch.FloatTensor | None = None
    mse_loss: torch.FloatTensor | None = None
    l1_loss: torch.FloatTensor | None = None
    kl_loss: torch.FloatTensor | None = None
    perceptual_loss: torch.FloatTensor | None = None
    reconstruction: torch.FloatTensor | None = None
    latents: torch.FloatTensor | None = None


def small_vae_config(
    image_size: int = 32,
    block_out_channels: Sequence[int] = (32, 64, 64),
    latent_channels: int = 4,
    layers_per_block: int = 1,
    norm_num_groups: int = 16,
    mid_block_add_attention: bool = True,
) -> dict:
    """`AutoencoderKL` config of a small VAE; its downsampling factor is `2 ** (len(block_out_channels) - 1)`."""
    block_out_channels = [int(c) for c in block_out_channels]
    if not block_out_channels or any(c % norm_num_groups for c in block_out_channels):
        raise ValueError(
            f"`norm_num_groups` ({norm_num_groups}) must divide every entry of `block_out_channels` "
            f"({block_out_channels})."
        )
    factor = 2 ** (len(block_out_channels) - 1)
    if image_size % factor:
        raise ValueError(f"`image_size` ({image_size}) must be divisible by the VAE factor {factor}.")
    return {
        "in_channels": 3,
        "out_channels": 3,
        "down_block_types": ["DownEncoderBlock2D"] * len(block_out_channels),
        "up_block_types": ["UpDecoderBlock2D"] * len(block_out_channels),
        "block_out_channels": block_out_channels,
        "layers_per_block": int(layers_per_block),
        "act_fn": "silu",
        "latent_channels": int(latent_channels),
        "norm_num_groups": int(norm_num_groups),
        "sample_size": int(image_size),
        "mid_block_add_attention": bool(mid_block_add_attention),
    }


class ClassifierPerceptualLoss(nn.Module):
    """Feature matching on a frozen [`FlexTokImageClassifier`]: mean over its stages of the MSE between the
    channel-normalized feature maps of two image batches `[B, 3, H, W]` in [-1, 1] (resized to its input size).
    Gradients flow into the first argument."""

    def __init__(self, classifier):
        super().__init__()
        self.classifier = classifier.eval().requires_grad_(False)

    def train(self, mode: bool = True):
        return super().train(False)

    def feature_maps(self, images: torch.Tensor) -> list[torch.Tensor]:
        hidden_states = self.classifier.resize(images)
        maps = []
        for stage in self.classifier.stages:
            hidden_states = stage(hidden_states)
            maps.append(F.normalize(hidden_states.float(), dim=1, eps=1e-6))
        return maps

    def forward(self, reconstruction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            target_maps = self.feature_maps(target)
        terms = [F.mse_loss(a, b) for a, b in zip(self.feature_maps(reconstruction), target_maps)]
        return torch.stack(terms).mean()


def vae_loss(
    vae,
    pixel_values: torch.Tensor,
    kl_weight: float = 1e-4,
    l1_weight: float = 0.0,
    perceptual_weight: float = 0.0,
    perceptual_loss: nn.Module | None = None,
    sample_posterior: bool = True,
    generator: torch.Generator | None = None,
) -> VAELossOutput:
    """The training objective of an `AutoencoderKL` on images `[B, 3, H, W]` in [-1, 1] (see the module docstring)."""
    posterior = vae.encode(pixel_values).latent_dist
    latents = posterior.sample(generator) if sample_posterior else posterior.mode()
    reconstruction = vae.decode(latents).sample
    target = pixel_values.to(reconstruction.dtype)
    mse = F.mse_loss(reconstruction.float(), target.float())
    kl = (0.5 * (posterior.mean.float() ** 2 + posterior.var.float() - 1.0 - posterior.logvar.float())).mean()
    loss = mse + kl_weight * kl
    l1 = perceptual = None
    if l1_weight > 0:
        l1 = F.l1_loss(reconstruction.float(), target.float())
        loss = loss + l1_weight * l1
    if perceptual_weight > 0:
        if perceptual_loss is None:
            raise ValueError("`perceptual_weight` > 0 needs a `perceptual_loss` module.")
        perceptual = perceptual_loss(reconstruction, target)
        loss = loss + perceptual_weight * perceptual
    return VAELossOutput(
        loss=loss,
        mse_loss=mse,
        l1_loss=l1,
        kl_loss=kl,
        perceptual_loss=perceptual,
        reconstruction=reconstruction,
        latents=latents,
    )


@torch.no_grad()
def compute_scaling_factor(vae, pixel_batches, num_samples: int | None = None) -> float:
    """`1 / std` of the latents (posterior means, what FlexTok tokenizes by default) over all elements of the images in
    `pixel_batches` (an iterable of `[B, 3, H, W]` in [-1, 1]), stopping after `num_samples` images."""
    was_training = vae.training
    vae.eval()
    total, total_sq, count, seen = 0.0, 0.0, 0, 0
    try:
        for batch in pixel_batches:
            if num_samples is not None:
                batch = batch[: num_samples - seen]
            latents = vae.encode(batch.to(vae.device, vae.dtype)).latent_dist.mode().double()
            total += latents.sum().item()
            total_sq += (latents**2).sum().item()
            count += latents.numel()
            seen += batch.shape[0]
            if num_samples is not None and seen >= num_samples:
                break
    finally:
        vae.train(was_training)
    if count < 2:
        raise ValueError("`pixel_batches` must hold at least one image to compute the latent scaling factor.")
    variance = (total_sq - total * total / count) / (count - 1)
    return float(1.0 / max(variance, 1e-12) ** 0.5)


class AutoencoderKLWithLoss(nn.Module):
    """Training view of an `AutoencoderKL`: `forward(pixel_values)` returns the [`vae_loss`] terms (posterior sample in
    training mode, posterior mean in eval mode), so that Trainer (and DDP) call it like any model. The perceptual
    network is held outside the module tree, so checkpoints contain only the VAE (as `vae.*`)."""

    def __init__(self, vae, kl_weight=1e-4, l1_weight=0.0, perceptual_weight=0.0, perceptual_loss=None):
        super().__init__()
        for name, value in (
            ("kl_weight", kl_weight),
            ("l1_weight", l1_weight),
            ("perceptual_weight", perceptual_weight),
        ):
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
                raise ValueError(f"`{name}` must be a number >= 0, got {value!r}.")
        if perceptual_weight > 0 and perceptual_loss is None:
            raise ValueError("`perceptual_weight` > 0 needs a `perceptual_loss` module.")
        self.vae = vae
        self.kl_weight, self.l1_weight, self.perceptual_weight = kl_weight, l1_weight, perceptual_weight
        self._perceptual = [perceptual_loss]  # a list: not a submodule, so never saved

    def forward(self, pixel_values: torch.Tensor, return_loss: bool = True) -> VAELossOutput:
        perceptual = self._perceptual[0]
        if perceptual is not None:
            perceptual.to(pixel_values.device)
        return vae_loss(
            self.vae,
            pixel_values,
            kl_weight=self.kl_weight,
            l1_weight=self.l1_weight,
            perceptual_weight=self.perceptual_weight,
            perceptual_loss=perceptual,
            sample_posterior=self.training,
        )


class VAETrainer(LossTermsLoggingMixin, Trainer):
    """`Trainer` for an [`AutoencoderKLWithLoss`]: `evaluate()` also reports `eval_mse_loss` and `eval_psnr` (dB, from
    the mean MSE in [-1, 1]), and training logs carry the mean of each loss term since the last log."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._loss_terms: dict[str, list[torch.Tensor]] = {}
        self._eval_mse: list[torch.Tensor] = []

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss, output = super().compute_loss(model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch)
        terms = self._loss_terms if model.training else {}
        if not model.training:
            self._eval_mse.append(output["mse_loss"].detach().float())
        for name in ("mse_loss", "l1_loss", "kl_loss", "perceptual_loss"):
            if output.get(name) is not None:
                terms.setdefault(name, []).append(output[name].detach().float())
        return (loss, output) if return_outputs else loss

    def evaluation_loop(self, dataloader, description, prediction_loss_only=None, ignore_keys=None, **kwargs):
        prefix = kwargs.get("metric_key_prefix", "eval")
        self._eval_mse = []
        output = super().evaluation_loop(dataloader, description, True, ignore_keys, **kwargs)
        if self._eval_mse:
            mse = torch.stack(self._eval_mse).mean().item()
            output.metrics[f"{prefix}_mse_loss"] = mse
            output.metrics[f"{prefix}_psnr"] = 10 * math.log10(4.0 / max(mse, 1e-12))
        return output


__all__ = [
    "AutoencoderKLWithLoss",
    "ClassifierPerceptualLoss",
    "VAELossOutput",
    "VAETrainer",
    "compute_scaling_factor",
    "small_vae_config",
    "vae_loss",
]
