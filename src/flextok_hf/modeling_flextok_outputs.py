"""Outputs of [`FlexTokModel`]: the tokenization of a batch and the training objective."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers.utils import ModelOutput


@dataclass
class FlexTokEncoderOutput(ModelOutput):
    """Tokenization of a batch.

    Args:
        token_ids (`torch.LongTensor` of shape `[B, K]`): FSQ ids in `[0, codebook_size)`.
        quants (`torch.FloatTensor` of shape `[B, K, d]`): FSQ codes.
        pre_quant (`torch.FloatTensor` of shape `[B, K, d]`): encoder readout before quantization.
        latents (`torch.FloatTensor` of shape `[B, C, h, w]`): scaled VAE latents (or pixels in pixel space).
    """

    token_ids: torch.LongTensor | None = None
    quants: torch.FloatTensor | None = None
    pre_quant: torch.FloatTensor | None = None
    latents: torch.FloatTensor | None = None


@dataclass
class FlexTokOutput(ModelOutput):
    """Output of the training objective.

    Args:
        loss (`torch.FloatTensor`, scalar): total loss (rectified-flow MSE + optional REPA / x0 terms).
        token_ids (`torch.LongTensor` `[B, K]`): the ids of the encoded images.
        velocity (`torch.FloatTensor` `[B, C, h, w]`): predicted velocity v = eps - x0.
        target (`torch.FloatTensor` `[B, C, h, w]`): eps - x0.
        sigmas (`torch.FloatTensor` `[B]`), keep_k (`torch.LongTensor` `[B]`),
        null_condition_mask (`torch.BoolTensor` `[B]`), noise (`[B, C, h, w]`): the random draws of this step.
        rf_loss, repa_loss, x0_loss: the loss terms (None when absent).
    """

    loss: torch.FloatTensor | None = None
    token_ids: torch.LongTensor | None = None
    velocity: torch.FloatTensor | None = None
    target: torch.FloatTensor | None = None
    sigmas: torch.FloatTensor | None = None
    keep_k: torch.LongTensor | None = None
    null_condition_mask: torch.BoolTensor | None = None
    noise: torch.FloatTensor | None = None
    rf_loss: torch.FloatTensor | None = None
    repa_loss: torch.FloatTensor | None = None
    x0_loss: torch.FloatTensor | None = None


__all__ = ["FlexTokEncoderOutput", "FlexTokOutput"]
