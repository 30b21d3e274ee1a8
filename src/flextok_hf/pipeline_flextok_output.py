"""Outputs of [`FlexTokPipeline`] and the generation pipelines: reconstructions, coarse-to-fine grids, stream steps."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import PIL.Image
import torch
from diffusers.utils import BaseOutput

OUTPUT_TYPES = ("pil", "np", "pt", "raw", "latent")


@dataclass
class FlexTokPipelineOutput(BaseOutput):
    """Output of [`FlexTokPipeline`].

    Args:
        images: reconstructions — a list of PIL images (`"pil"`), an array `[B, H, W, 3]` in [0, 1] (`"np"`), a tensor
            `[B, 3, H, W]` in [0, 1] (`"pt"`), the decoder's unclamped output `[B, 3, H, W]` in about [-1, 1]
            (`"raw"`) or the final latents `[B, C, h, w]` (`"latent"`).
        token_ids: the ids each image was decoded from (one 1D `LongTensor` per image, of its budget's length).
        num_tokens: the budget of each image (with `num_tokens="auto"`: the chosen one).
        quality: with `num_tokens="auto"`, the quality metric of each returned reconstruction (e.g. PSNR in dB).
        target_met: with `num_tokens="auto"`, whether each image met its quality target (False: it got the largest
            allowed budget without reaching it).
    """

    images: list[PIL.Image.Image] | np.ndarray | torch.Tensor
    token_ids: list[torch.LongTensor]
    num_tokens: list[int] | None = None
    quality: list[float] | None = None
    target_met: list[bool] | None = None


@dataclass
class FlexTokCoarseToFineOutput(BaseOutput):
    """Output of [`FlexTokPipeline.coarse_to_fine`].

    Args:
        images: `images[i][j]` is image i reconstructed from its first `budgets[j]` tokens (format by `output_type`;
            for `"np"` an array `[N, J, H, W, 3]`, for `"pt"`/`"raw"` a tensor `[N, J, 3, H, W]`).
        budgets: the token budgets, in column order.
        token_ids: the full id sequence of each image.
    """

    images: list | np.ndarray | torch.Tensor
    budgets: list[int]
    token_ids: list[torch.LongTensor]


@dataclass
class FlexTokStreamOutput(BaseOutput):
    """One step of a streamed output ([`FlexTokPipeline.stream_coarse_to_fine`], the generation pipelines' `stream`).

    Args:
        images: the reconstructions (or previews) of all images from their first `num_tokens` ids (format by
            `output_type`, as in [`FlexTokPipelineOutput`]).
        token_ids: the ids each image was decoded from (length `num_tokens`).
        num_tokens: the budget of this step.
        is_final: True for the last step (for generation: the final images, equal to the non-streamed ones).
    """

    images: list[PIL.Image.Image] | np.ndarray | torch.Tensor
    token_ids: list[torch.LongTensor]
    num_tokens: int
    is_final: bool


__all__ = ["OUTPUT_TYPES", "FlexTokPipelineOutput", "FlexTokCoarseToFineOutput", "FlexTokStreamOutput"]
