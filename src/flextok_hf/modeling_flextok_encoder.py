"""FlexTok encoder: latents -> p x p patches (+ 2D sin-cos) with K learned registers appended -> transformer with the
prefix-LM mask (patches see patches; register i sees all patches and registers <= i) -> LayerNorm -> Linear(D -> d)."""

from __future__ import annotations

import torch
from torch import nn

from .configuration_flextok import FlexTokConfig
from .layers import FlexTokBlock, FlexTokPatchEmbedding, fp32_layer_norm, sincos_2d_posemb


def prefix_lm_mask(num_patches: int, num_registers: int, device=None) -> torch.Tensor:
    """Encoder mask `[N, N]` (True = may attend): patches see patches; register i sees all patches and registers <= i."""
    length = num_patches + num_registers
    mask = torch.zeros(length, length, dtype=torch.bool, device=device)
    mask[:num_patches, :num_patches] = True
    mask[num_patches:, :num_patches] = True
    mask[num_patches:, num_patches:] = torch.ones(num_registers, num_registers, dtype=torch.bool, device=device).tril()
    return mask


class FlexTokEncoder(nn.Module):
    """Latents `[B, C, h, w]` -> pre-quant register readout `[B, K, d]`."""

    def __init__(self, config: FlexTokConfig):
        super().__init__()
        dim = config.encoder_hidden_size
        self.config = config
        self.patch_embed = FlexTokPatchEmbedding(config.patch_size, config.latent_channels, dim)
        self.registers = nn.Parameter(torch.zeros(config.num_registers, dim))
        self.layers = nn.ModuleList(
            FlexTokBlock(config, dim, config.encoder_head_dim) for _ in range(config.encoder_num_layers)
        )
        self.to_codes = nn.Linear(dim, len(config.fsq_levels))

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        grid = self.config.latent_size // self.config.patch_size
        patches = self.patch_embed(latents)
        patches = patches + sincos_2d_posemb(patches.shape[-1], grid, grid).to(patches)
        registers = self.registers[None].expand(patches.shape[0], -1, -1).to(patches.dtype)
        hidden_states = torch.cat([patches, registers], dim=1)
        mask = prefix_lm_mask(patches.shape[1], registers.shape[1], device=patches.device)[None, None]
        for layer in self.layers:
            hidden_states = layer(hidden_states, mask)
        registers_out = hidden_states[:, patches.shape[1] :]
        return self.to_codes(fp32_layer_norm(registers_out, self.config.layer_norm_eps))


__all__ = ["FlexTokEncoder", "prefix_lm_mask"]
