"""Finite scalar quantization (FSQ, arXiv 2309.15505) with FlexTok's exact id mapping."""

from __future__ import annotations

import math

import torch
from torch import nn


class FlexTokFSQ(nn.Module):
    """Bound, round and index codes of `len(levels)` dimensions (no parameters, no state-dict entries).

    Per dim with L levels: `h = (L - 1)(1 + 1e-3) / 2`, `o = 0.5` if L is even else 0,
    `bounded = tanh(z + atanh(o / h)) * h - o`, `code = round_ste(bounded) / (L // 2)`. Even L give the asymmetric grid
    `{-1, ..., 1 - 2/L}`. Ids are mixed-radix with the first dimension varying fastest. Runs in float32.
    """

    eps = 1e-3

    def __init__(self, levels: list[int]):
        super().__init__()
        self.level_list = [int(level) for level in levels]
        self.codebook_size = math.prod(self.level_list)
        self.num_dims = len(self.level_list)

    def _levels(self, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(levels, half widths L // 2, mixed-radix basis) as int64 tensors on `device`."""
        levels = torch.tensor(self.level_list, dtype=torch.int64, device=device)
        basis = torch.cumprod(torch.tensor([1] + self.level_list[:-1], dtype=torch.int64, device=device), dim=0)
        return levels, levels // 2, basis

    def bound(self, z: torch.Tensor) -> torch.Tensor:
        levels, _, _ = self._levels(z.device)
        half_range = (levels.float() - 1) * (1 + self.eps) / 2
        offset = (levels % 2 == 0).float() * 0.5
        shift = torch.atanh(offset / half_range)
        return torch.tanh(z + shift) * half_range - offset

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Pre-quant `[..., d]` -> codes `[..., d]` in [-1, 1] (float32, straight-through gradient)."""
        if z.shape[-1] != self.num_dims:
            raise ValueError(
                f"FSQ input must have {self.num_dims} channels in its last dim, got shape {tuple(z.shape)}."
            )
        with torch.autocast(device_type=z.device.type, enabled=False):
            bounded = self.bound(z.float())
            rounded = bounded + (torch.round(bounded) - bounded).detach()
            _, half_width, _ = self._levels(z.device)
            return rounded / half_width.float()

    def codes_to_ids(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes `[..., d]` -> ids `[...]` (int64)."""
        _, half_width, basis = self._levels(codes.device)
        digits = torch.round(codes.float() * half_width + half_width).to(torch.int64)
        return (digits * basis).sum(dim=-1)

    def ids_to_codes(self, ids: torch.Tensor) -> torch.Tensor:
        """Ids `[...]` -> codes `[..., d]` (float32)."""
        levels, half_width, basis = self._levels(ids.device)
        digits = torch.div(ids[..., None], basis, rounding_mode="floor") % levels
        return (digits - half_width).float() / half_width.float()
