"""FlexTok rectified-flow decoder: FSQ codes -> register tokens (slots >= k hold the mask token, optional null
condition) + noised latent patches -> adaLN-zero transformer conditioned on t -> velocity; plus the REPA projector."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .configuration_flextok import FlexTokConfig
from .layers import (
    FlexTokAdaLNBlock,
    FlexTokPatchEmbedding,
    FlexTokTimestepEmbedding,
    fp32_layer_norm,
    sincos_2d_posemb,
    unpatchify,
)


class FlexTokDecoderHead(nn.Module):
    """`LN(x) * (1 + scale) + shift` (adaLN from the time embedding, shift first; optional) -> Linear to patch values."""

    def __init__(self, config: FlexTokConfig, dim: int, out_features: int):
        super().__init__()
        self.eps = config.layer_norm_eps
        self.adaln_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim)) if config.head_adaln else None
        self.proj = nn.Linear(dim, out_features)

    def forward(self, hidden_states: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        hidden_states = fp32_layer_norm(hidden_states, self.eps)
        if self.adaln_modulation is not None:
            shift, scale = self.adaln_modulation(temb)[:, None].chunk(2, dim=-1)
            hidden_states = hidden_states * (1 + scale) + shift
        return self.proj(hidden_states)


class FlexTokDecoder(nn.Module):
    """Rectified-flow decoder: (noised latents, t, FSQ codes, keep_k, null mask) -> velocity `[B, C, h, w]`."""

    def __init__(self, config: FlexTokConfig):
        super().__init__()
        dim = config.decoder_hidden_size
        self.config = config
        self.from_codes = nn.Linear(len(config.fsq_levels), dim)
        self.register_posemb = (
            nn.Parameter(torch.zeros(config.num_registers, dim))
            if config.register_posemb_type == "learnable_sum"
            else None
        )
        self.mask_token = nn.Parameter(torch.zeros(dim))
        self.null_condition = nn.Parameter(torch.zeros(dim)) if config.null_condition_mode == "learned" else None
        self.patch_embed = FlexTokPatchEmbedding(config.patch_size, config.latent_channels, dim)
        self.time_embed = FlexTokTimestepEmbedding(dim, config.time_embedding_size, config.max_timestep)
        self.layers = nn.ModuleList(
            FlexTokAdaLNBlock(config, dim, config.decoder_head_dim) for _ in range(config.decoder_num_layers)
        )
        self.head = FlexTokDecoderHead(config, dim, config.patch_size**2 * config.latent_channels)

    def embed_registers(
        self, quants: torch.Tensor, keep_k: torch.Tensor, null_condition_mask: torch.Tensor | None
    ) -> torch.Tensor:
        """Codes `[B, K, d]` -> register tokens `[B, K, D]`: Linear (+ LayerNorm if `normalize_registers`), + posemb,
        slots >= k <- mask token, then null."""
        registers = self.from_codes(quants.to(self.from_codes.weight.dtype))
        if self.config.normalize_registers:
            registers = fp32_layer_norm(registers, self.config.layer_norm_eps)
        if self.register_posemb is not None:
            registers = registers + self.register_posemb
        slots = torch.arange(registers.shape[1], device=registers.device)
        dropped = slots[None, :] >= keep_k.to(registers.device)[:, None]
        registers = torch.where(dropped[..., None], self.mask_token.to(registers.dtype), registers)
        if null_condition_mask is not None:
            null = self.null_condition if self.null_condition is not None else torch.zeros_like(self.mask_token)
            registers = torch.where(
                null_condition_mask.to(registers.device)[:, None, None], null.to(registers.dtype), registers
            )
        return registers

    def forward(
        self,
        noised_latents: torch.Tensor,
        timesteps: torch.Tensor,
        quants: torch.Tensor,
        keep_k: torch.Tensor,
        null_condition_mask: torch.Tensor | None = None,
        output_layer: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Returns the velocity `[B, C, h, w]` (float32) and, if `output_layer` is set, that block's patch tokens."""
        config = self.config
        grid = config.latent_size // config.patch_size
        patches = self.patch_embed(noised_latents)
        patches = patches + sincos_2d_posemb(patches.shape[-1], grid, grid).to(patches)
        registers = self.embed_registers(quants, keep_k, null_condition_mask)
        hidden_states = torch.cat([patches, registers], dim=1)
        temb = self.time_embed(timesteps)
        group_sizes = (patches.shape[1], registers.shape[1])
        intermediate = None
        for index, layer in enumerate(self.layers):
            hidden_states = layer(hidden_states, temb, group_sizes)
            if index == output_layer:
                intermediate = hidden_states[:, : patches.shape[1]]
        patch_values = self.head(hidden_states[:, : patches.shape[1]], temb)
        size = config.latent_size
        velocity = unpatchify(patch_values, config.patch_size, config.latent_channels, size, size)
        return velocity.float(), intermediate


class FlexTokREPAProjector(nn.Module):
    """REPA projector: 3-layer SiLU MLP from decoder width to the teacher's feature size."""

    def __init__(self, dim: int, hidden: int, out_features: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, out_features)
        )

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.net(hidden_states)

    def alignment_loss(self, decoder_hidden: torch.Tensor, repa_target: torch.Tensor, grid: int) -> torch.Tensor:
        """Negative cosine similarity between projected decoder patch tokens `[B, N, D]` and teacher features
        (`[B, N', F]` on a square grid, or `[B, F, h', w']`) resized to the decoder's `grid x grid` patch grid."""
        feature_dim = self.net[-1].out_features
        target = repa_target.float()
        if target.ndim == 3:
            side = math.isqrt(target.shape[1])
            if side * side != target.shape[1]:
                raise ValueError(f"`repa_target` [B, N', F] needs a square N', got N'={target.shape[1]}.")
            target = target.transpose(1, 2).reshape(target.shape[0], target.shape[2], side, side)
        if target.ndim != 4 or target.shape[1] != feature_dim:
            raise ValueError(
                f"`repa_target` must be [B, N', {feature_dim}] or [B, {feature_dim}, h', w'], got "
                f"{tuple(repa_target.shape)}."
            )
        if target.shape[-2:] != (grid, grid):
            target = F.interpolate(target, size=(grid, grid), mode="bilinear", align_corners=False)
        target = target.flatten(2).transpose(1, 2)
        projected = self(decoder_hidden).float()
        return -F.cosine_similarity(projected, target, dim=-1).mean()


__all__ = ["FlexTokDecoder", "FlexTokDecoderHead", "FlexTokREPAProjector"]
