"""Building blocks shared by the FlexTok encoder and decoder.

Every LayerNorm in FlexTok is parameter-free and computed in float32; attention uses QK-norm and the muP scale
`8 / head_dim`; MLPs are bias-free SwiGLU; decoder blocks are adaLN-zero modulated by the time embedding, optionally
with separate modulation groups for patch and register tokens.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS


def fp32_layer_norm(hidden_states: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Parameter-free LayerNorm over the last dim with float32 statistics, returned in the input's dtype.

    LayerNorm kernels accumulate half-precision inputs in float32 (and autocast runs `layer_norm` in float32), so the
    input is not upcast first: a bf16 model stays bf16 end to end without two extra copies per norm.
    """
    return F.layer_norm(hidden_states, hidden_states.shape[-1:], eps=eps).to(hidden_states.dtype)


@functools.lru_cache(maxsize=16)
def sincos_2d_posemb(dim: int, height: int, width: int) -> torch.Tensor:
    """Fixed 2D sin-cos table `[height * width, dim]` (float32, CPU) in row-major order.

    The table is computed once per shape and shared: treat it as read-only.

    Channel blocks are `[sin(r w), cos(r w), sin(c w), cos(c w)]` with `w_i = 10000^(-i / (dim / 4))`, r the row and
    c the column index.
    """
    if dim % 4:
        raise ValueError(f"`dim` must be a multiple of 4 for a 2D sin-cos embedding, got {dim}.")
    quarter = dim // 4
    omega = 1.0 / (10000 ** (torch.arange(quarter, dtype=torch.float32, device="cpu") / quarter))
    rows = torch.arange(height, dtype=torch.float32, device="cpu")[:, None].expand(height, width).reshape(-1)
    cols = torch.arange(width, dtype=torch.float32, device="cpu")[None, :].expand(height, width).reshape(-1)
    row_angles, col_angles = rows[:, None] * omega, cols[:, None] * omega
    return torch.cat([row_angles.sin(), row_angles.cos(), col_angles.sin(), col_angles.cos()], dim=1)


def patchify(latents: torch.Tensor, patch_size: int) -> torch.Tensor:
    """`[B, C, H, W]` -> `[B, (H/p)(W/p), p*p*C]`; patches row-major, each vector ordered (row, col, channel)."""
    batch, channels, height, width = latents.shape
    p = patch_size
    x = latents.permute(0, 2, 3, 1).reshape(batch, height // p, p, width // p, p, channels)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(batch, (height // p) * (width // p), p * p * channels)


def unpatchify(patches: torch.Tensor, patch_size: int, channels: int, height: int, width: int) -> torch.Tensor:
    """Inverse of `patchify`: `[B, N, p*p*C]` -> `[B, C, H, W]`."""
    batch, p = patches.shape[0], patch_size
    x = patches.reshape(batch, height // p, width // p, p, p, channels)
    return x.permute(0, 5, 1, 3, 2, 4).reshape(batch, channels, height, width)


def eager_attention_forward(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
    """Reference attention: `[B, H, N, d]` inputs -> `[B, N, H, d]`; `attention_mask` is boolean (True = attend)."""
    scores = torch.matmul(query, key.transpose(-1, -2)) * scaling
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:
            scores = scores.masked_fill(~attention_mask, torch.finfo(scores.dtype).min)
        else:
            scores = scores + attention_mask
    weights = torch.softmax(scores.float(), dim=-1).to(query.dtype)
    weights = F.dropout(weights, p=dropout, training=module.training)
    return torch.matmul(weights, value).transpose(1, 2).contiguous(), weights


class FlexTokAttention(nn.Module):
    """Multi-head self-attention with bias-free projections, parameter-free QK-norm and scale `8 / head_dim`."""

    is_causal = False

    def __init__(self, config, hidden_size: int, head_dim: int):
        super().__init__()
        self.config = config
        self.head_dim = head_dim
        self.num_heads = hidden_size // head_dim
        self.scaling = 8.0 / head_dim
        self.eps = config.layer_norm_eps
        self.q_proj = nn.Linear(hidden_size, hidden_size, bias=False)
        self.k_proj = nn.Linear(hidden_size, hidden_size, bias=False)
        self.v_proj = nn.Linear(hidden_size, hidden_size, bias=False)
        self.o_proj = nn.Linear(hidden_size, hidden_size, bias=False)

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """`[B, N, D]` -> `[B, N, D]`; `attention_mask` is a boolean `[1 or B, 1, N, N]` (True = attend) or None."""
        batch, length, _ = hidden_states.shape
        shape = (batch, length, self.num_heads, self.head_dim)
        query = fp32_layer_norm(self.q_proj(hidden_states).view(shape), self.eps).transpose(1, 2)
        key = fp32_layer_norm(self.k_proj(hidden_states).view(shape), self.eps).transpose(1, 2)
        value = self.v_proj(hidden_states).view(shape).transpose(1, 2)
        attention_fn = ALL_ATTENTION_FUNCTIONS.get_interface(self.config._attn_implementation, eager_attention_forward)
        output, _ = attention_fn(self, query, key, value, attention_mask, scaling=self.scaling, dropout=0.0)
        return self.o_proj(output.reshape(batch, length, -1))


class FlexTokMLP(nn.Module):
    """SwiGLU: `down_proj(silu(gate_proj(x)) * up_proj(x))`, bias-free, hidden `int(2 * mlp_ratio * D / 3)`."""

    def __init__(self, hidden_size: int, mlp_ratio: float):
        super().__init__()
        intermediate_size = int(2 * mlp_ratio * hidden_size / 3)
        self.gate_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.up_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.down_proj = nn.Linear(intermediate_size, hidden_size, bias=False)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_proj(hidden_states), self.up_proj(hidden_states)
        if _needs_autograd(gate, up):
            return self.down_proj(F.silu(gate) * up)
        # Inference: reuse the gate buffer for silu and the product (same values, two fewer allocations).
        return self.down_proj(F.silu(gate, inplace=True).mul_(up))


class FlexTokBlock(GradientCheckpointingLayer):
    """Pre-norm transformer block: `x + attn(LN(x))`, then `x + mlp(LN(x))` (the encoder's block)."""

    def __init__(self, config, hidden_size: int, head_dim: int):
        super().__init__()
        self.eps = config.layer_norm_eps
        self.attn = FlexTokAttention(config, hidden_size, head_dim)
        self.mlp = FlexTokMLP(hidden_size, config.mlp_ratio)

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        hidden_states = hidden_states + self.attn(fp32_layer_norm(hidden_states, self.eps), attention_mask)
        return hidden_states + self.mlp(fp32_layer_norm(hidden_states, self.eps))


def _needs_autograd(*tensors: torch.Tensor) -> bool:
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def grouped_addcmul(
    input: torch.Tensor, tensor1: torch.Tensor, tensor2: torch.Tensor, group_sizes: tuple[int, ...]
) -> torch.Tensor:
    """`input + tensor1 * tensor2` over token groups, without expanding per-group values to every token.

    Each argument is either per-token `[B, N, D]` or per-group `[B, G, D]`, the G groups being consecutive runs of
    `group_sizes` tokens; with fewer than two groups, per-group values are `[B, 1, D]` and broadcast. Returns
    `[B, N, D]`.
    """
    if len(group_sizes) <= 1:
        return torch.addcmul(input, tensor1, tensor2)
    args = (input, tensor1, tensor2)
    num_tokens = sum(group_sizes)
    per_token = [arg.shape[1] == num_tokens for arg in args]
    pieces, start = [], 0
    for index, size in enumerate(group_sizes):
        pieces.append(
            [arg[:, start : start + size] if tok else arg[:, index : index + 1] for arg, tok in zip(args, per_token)]
        )
        start += size
    if _needs_autograd(*args):
        return torch.cat([torch.addcmul(*piece) for piece in pieces], dim=1)
    token_arg = args[per_token.index(True)]
    dtype = torch.promote_types(torch.promote_types(input.dtype, tensor1.dtype), tensor2.dtype)
    out = torch.empty(token_arg.shape[0], num_tokens, token_arg.shape[-1], dtype=dtype, device=token_arg.device)
    start = 0
    for piece, size in zip(pieces, group_sizes):
        torch.addcmul(*piece, out=out[:, start : start + size])
        start += size
    return out


class FlexTokAdaLNBlock(GradientCheckpointingLayer):
    """adaLN-zero decoder block.

    `adaln_modulation(temb)` gives `adaln_expansion` groups of six D-sized chunks in the order gate_msa, gate_mlp,
    shift_msa, scale_msa, shift_mlp, scale_mlp; group 0 modulates the patch tokens, group 1 (if any) the registers.
    """

    def __init__(self, config, hidden_size: int, head_dim: int):
        super().__init__()
        self.eps = config.layer_norm_eps
        self.num_groups = config.adaln_expansion
        self.attn = FlexTokAttention(config, hidden_size, head_dim)
        self.mlp = FlexTokMLP(hidden_size, config.mlp_ratio)
        self.adaln_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, self.num_groups * 6 * hidden_size))

    def forward(
        self, hidden_states: torch.Tensor, temb: torch.Tensor, group_sizes: tuple[int, ...] = ()
    ) -> torch.Tensor:
        """`hidden_states` `[B, N, D]`, `temb` `[B, D]`; `group_sizes` = (num_patches, num_registers)."""
        batch, _, dim = hidden_states.shape
        modulation = self.adaln_modulation(temb).view(batch, self.num_groups, 6, dim)
        gate_msa, gate_mlp, shift_msa, scale_msa, shift_mlp, scale_mlp = modulation.unbind(2)
        groups = group_sizes if self.num_groups > 1 else ()
        normed = grouped_addcmul(shift_msa, fp32_layer_norm(hidden_states, self.eps), 1 + scale_msa, groups)
        hidden_states = grouped_addcmul(hidden_states, self.attn(normed), gate_msa, groups)
        normed = grouped_addcmul(shift_mlp, fp32_layer_norm(hidden_states, self.eps), 1 + scale_mlp, groups)
        return grouped_addcmul(hidden_states, self.mlp(normed), gate_mlp, groups)


class FlexTokTimestepEmbedding(nn.Module):
    """Rectified-flow time t in (0, max_timestep] -> `[B, D]`.

    Features are `[cos(a), sin(a)]` with angles `a_i = t * (1000 / max_timestep) * 256^(-i / (size / 2))`, followed by
    `linear_2(silu(linear_1(features)))`.
    """

    max_period = 256.0

    def __init__(self, hidden_size: int, frequency_size: int, max_timestep: float):
        super().__init__()
        self.frequency_size = frequency_size
        self.max_timestep = max_timestep
        self.linear_1 = nn.Linear(frequency_size, hidden_size)
        self.linear_2 = nn.Linear(hidden_size, hidden_size)

    def forward(self, timesteps: torch.Tensor) -> torch.Tensor:
        if torch.any(timesteps > self.max_timestep):
            raise ValueError(
                f"`timesteps` must be <= max_timestep={self.max_timestep}, got max {timesteps.max().item()}."
            )
        half = self.frequency_size // 2
        freqs = torch.exp(
            -math.log(self.max_period) * torch.arange(half, dtype=torch.float32, device=timesteps.device) / half
        ) * (1000.0 / self.max_timestep)
        angles = timesteps.float()[:, None] * freqs[None]
        features = torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1).to(self.linear_1.weight.dtype)
        return self.linear_2(F.silu(self.linear_1(features)))


class FlexTokPatchEmbedding(nn.Module):
    """Latent `[B, C, H, W]` -> patch tokens `[B, N, D]` (Linear over (row, col, channel) patch vectors)."""

    def __init__(self, patch_size: int, in_channels: int, hidden_size: int):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Linear(patch_size * patch_size * in_channels, hidden_size)

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        return self.proj(patchify(latents.to(self.proj.weight.dtype), self.patch_size))
