"""Official state-dict key names -> `FlexTokModel` key names (every official tensor used exactly once)."""

from __future__ import annotations

import torch

from ..configuration_flextok import FlexTokConfig
from .metadata import OfficialCheckpointError

_BLOCK_RENAMES = {
    "attn.wq.weight": "attn.q_proj.weight",
    "attn.wk.weight": "attn.k_proj.weight",
    "attn.wv.weight": "attn.v_proj.weight",
    "attn.proj.weight": "attn.o_proj.weight",
    "mlp.fc1.weight": "mlp.gate_proj.weight",
    "mlp.fc3.weight": "mlp.up_proj.weight",
    "mlp.fc2.weight": "mlp.down_proj.weight",
    "adaLN_modulation.1.weight": "adaln_modulation.1.weight",
    "adaLN_modulation.1.bias": "adaln_modulation.1.bias",
}


def _check_sincos_table(table: torch.Tensor, name: str):
    """The official fixed tables are stored; flextok_hf recomputes them, so they must equal the formula."""
    from ..layers import sincos_2d_posemb

    _, dim, height, width = table.shape
    expected = sincos_2d_posemb(dim, height, width).reshape(height, width, dim).permute(2, 0, 1)[None]
    tolerance = 1e-5 if table.dtype == torch.float32 else 1e-2
    error = (table.float() - expected).abs().max().item()
    if error > tolerance:
        raise OfficialCheckpointError(f"{name} differs from the 2D sin-cos formula by {error:.3g}; refusing.")


def convert_official_state_dict(
    tensors: dict[str, torch.Tensor], roles: dict[str, str], config: FlexTokConfig, dtype: torch.dtype = torch.float32
) -> dict[str, torch.Tensor]:
    """Official key names -> `FlexTokModel` key names. Every official tensor must be used exactly once."""
    remaining = dict(tensors)
    converted: dict[str, torch.Tensor] = {}

    def take(key: str) -> torch.Tensor:
        if key not in remaining:
            raise OfficialCheckpointError(f"Official checkpoint is missing tensor {key!r}.")
        return remaining.pop(key)

    enc, dec = "encoder.module_dict.", "decoder.module_dict."
    for prefix, side, role in ((enc, "encoder", "enc"), (dec, "decoder", "dec")):
        name = roles[f"{role}_patch"]
        converted[f"{side}.patch_embed.proj.weight"] = take(f"{prefix}{name}.patch_proj.weight")
        converted[f"{side}.patch_embed.proj.bias"] = take(f"{prefix}{name}.patch_proj.bias")
        posemb_role = "enc_posemb" if side == "encoder" else "dec_patch_posemb"
        table_key = f"{prefix}{roles[posemb_role]}.posembs"
        if table_key in remaining:
            _check_sincos_table(take(table_key), table_key)
        transformer = roles[f"{role}_transformer"]
        num_layers = config.encoder_num_layers if side == "encoder" else config.decoder_num_layers
        for index in range(num_layers):
            for old, new in _BLOCK_RENAMES.items():
                key = f"{prefix}{transformer}.blocks.{index}.{old}"
                if side == "encoder" and old.startswith("adaLN"):
                    continue
                converted[f"{side}.layers.{index}.{new}"] = take(key)

    converted["encoder.registers"] = take(f"{enc}{roles['enc_registers']}.registers")
    converted["encoder.to_codes.weight"] = take(f"{enc}{roles['enc_head']}.proj.weight")
    converted["encoder.to_codes.bias"] = take(f"{enc}{roles['enc_head']}.proj.bias")

    converted["decoder.from_codes.weight"] = take(f"{dec}{roles['dec_from_codes']}.proj.weight")
    converted["decoder.from_codes.bias"] = take(f"{dec}{roles['dec_from_codes']}.proj.bias")
    if config.register_posemb_type == "learnable_sum":
        table = take(f"{dec}{roles['dec_register_posemb']}.posembs")  # [1, 1, D, N]: slot j uses [0, 0, :, j]
        converted["decoder.register_posemb"] = table.reshape(table.shape[-2], table.shape[-1]).t().contiguous()
    converted["decoder.mask_token"] = take(f"{dec}{roles['dec_nested_dropout']}.dropout_mask_token")
    if config.null_condition_mode == "learned":
        converted["decoder.null_condition"] = take(f"{dec}{roles['dec_null']}.nullcond")
    time = roles["dec_time"]
    for old, new in (("mlp.0", "linear_1"), ("mlp.2", "linear_2")):
        for suffix in ("weight", "bias"):
            converted[f"decoder.time_embed.{new}.{suffix}"] = take(f"{dec}{time}.{old}.{suffix}")
    head = roles["dec_head"]
    if config.head_adaln:
        for suffix in ("weight", "bias"):
            converted[f"decoder.head.adaln_modulation.1.{suffix}"] = take(f"{dec}{head}.adaLN_modulation.1.{suffix}")
    for suffix in ("weight", "bias"):
        converted[f"decoder.head.proj.{suffix}"] = take(f"{dec}{head}.proj.{suffix}")

    for key in list(remaining):
        if key.startswith("vae.vae."):
            converted["vae." + key[len("vae.vae.") :]] = remaining.pop(key)
    if remaining:
        raise OfficialCheckpointError(
            f"{len(remaining)} official tensors have no counterpart in FlexTokModel (refusing to drop them): "
            f"{sorted(remaining)[:10]}"
        )
    return {key: value.to(dtype) for key, value in converted.items()}
