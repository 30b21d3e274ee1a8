"""Entry points: an official checkpoint (file, folder, Hub id) -> `FlexTokConfig` / `FlexTokModel`, with its VAE."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass

import torch

from ..configuration_flextok import FlexTokConfig
from .config import official_config_to_flextok
from .metadata import VAE_CONFIG_FILE, OfficialCheckpointError, read_official_checkpoint, read_official_config
from .state_dict import convert_official_state_dict

logger = logging.getLogger(__name__)


def load_vae_config(path_or_dict) -> dict:
    """A diffusers `AutoencoderKL` config: a dict, a `config.json`, or the fixture's wrapper file with
    `resolved_autoencoderkl_config` / `VAE_BASE_CFG_override`."""
    if isinstance(path_or_dict, dict):
        data = dict(path_or_dict)
    else:
        with open(path_or_dict, encoding="utf-8") as f:
            data = json.load(f)
    if "resolved_autoencoderkl_config" in data:
        return dict(data["resolved_autoencoderkl_config"])
    if "VAE_BASE_CFG_override" in data:
        base = FlexTokConfig.released_vae_config()
        base.update(data["VAE_BASE_CFG_override"])
        return base
    if "block_out_channels" not in data:
        raise ValueError(
            f"`vae_config` does not look like an AutoencoderKL config (no `block_out_channels`): {sorted(data)[:8]}"
        )
    return data


@dataclass
class OfficialSource:
    """Where an official checkpoint's pieces are, locally: the safetensors file, the `config.json` dict of its folder
    (when the folder has an official one) and a `vae_config.json` next to it (when present)."""

    checkpoint_file: str
    config: dict | None = None
    vae_config_file: str | None = None


def _resolve_source(src) -> OfficialSource:
    """A checkpoint file, or a folder / Hub id holding an official checkpoint (see `flextok_hf.loading`)."""
    from ..loading import resolve_flextok_source

    source = resolve_flextok_source(src)
    if source.kind != "official":
        raise OfficialCheckpointError(
            f"{os.fspath(src)!r} holds a flextok_hf {source.kind}, not an official checkpoint: there is nothing to "
            "convert; load it with `from_pretrained`."
        )
    return source.official


def _vae_config_from_hub(repo_id: str, latent_channels: int) -> dict:
    """The `AutoencoderKL` config of the VAE repo the metadata names (`vae.hf_hub_path`); config only, the weights
    come from the checkpoint. Falls back to the released shape (with a warning) when the repo cannot be read."""
    from huggingface_hub import hf_hub_download

    try:
        with open(hf_hub_download(repo_id, "config.json"), encoding="utf-8") as handle:
            return load_vae_config(json.load(handle))
    except Exception as error:  # any failure falls back to the documented default shape
        logger.warning(
            "Could not read the VAE config of %r named by the checkpoint (%s); assuming the released SDXL-like shape. "
            "Pass `vae_config` if the VAE differs.",
            repo_id,
            " ".join(str(error).split())[:200],
        )
        return FlexTokConfig.released_vae_config(latent_channels)


def _vae_setup(official: dict, has_vae_tensors: bool, vae_config, vae) -> tuple[dict, str | None]:
    """The VAE's `AutoencoderKL` config and the external VAE to load (`vae`), checked against the checkpoint."""
    if vae is not None:
        if has_vae_tensors:
            raise OfficialCheckpointError("The checkpoint has its own VAE tensors; do not also pass `vae`.")
        from diffusers import AutoencoderKL

        return dict(AutoencoderKL.load_config(vae)), vae
    if not has_vae_tensors:
        hub = official["vae"].get("hf_hub_path")
        raise OfficialCheckpointError(
            "The checkpoint has no VAE tensors; pass `vae` (a diffusers AutoencoderKL folder or Hub id"
            + (f", e.g. {hub!r} from the metadata" if hub else "")
            + ")."
        )
    latent_channels = int(official["vae"].get("latent_channels", 4))
    if vae_config is not None:
        return load_vae_config(vae_config), None
    if official["vae"].get("hf_hub_path"):
        return _vae_config_from_hub(official["vae"]["hf_hub_path"], latent_channels), None
    return FlexTokConfig.released_vae_config(latent_channels), None


def official_checkpoint_config(
    src, vae_config=None, vae: str | None = None, image_size: int | None = None
) -> FlexTokConfig:
    """The `FlexTokConfig` an official checkpoint converts to, read from its header (no tensors are loaded)."""
    source = src if isinstance(src, OfficialSource) else _resolve_source(src)
    official, keys = read_official_config(source.checkpoint_file, source.config)
    has_vae_tensors = any(key.startswith("vae.vae.") for key in keys)
    if vae_config is None and vae is None:
        vae_config = source.vae_config_file
    vae_cfg, _ = _vae_setup(official, has_vae_tensors, vae_config, vae)
    return official_config_to_flextok(official, vae_cfg, image_size=image_size)[0]


def convert_official_checkpoint(
    src,
    output_dir: str | None = None,
    vae_config=None,
    vae: str | None = None,
    image_size: int | None = None,
    dtype: torch.dtype = torch.float32,
):
    """Official checkpoint -> `FlexTokModel`; saved with `save_pretrained` if `output_dir`.

    `src` is the safetensors file, a folder holding it (with the Hydra config in its metadata, or in the folder's
    `config.json`), a Hub id of such a folder, or an `OfficialSource`. The VAE comes from the checkpoint's `vae.vae.*`
    tensors, shaped by `vae_config` (default: the folder's `vae_config.json`, else the config of the VAE repo the
    metadata names in `hf_hub_path`, else the released SDXL-like shape), or from a diffusers `AutoencoderKL` folder /
    Hub id given as `vae`.
    """
    from diffusers import AutoencoderKL

    from ..modeling_flextok import FlexTokModel

    source = src if isinstance(src, OfficialSource) else _resolve_source(src)
    tensors, official = read_official_checkpoint(source.checkpoint_file, source.config)
    has_vae_tensors = any(key.startswith("vae.vae.") for key in tensors)
    if vae_config is None and vae is None:
        vae_config = source.vae_config_file
    vae_cfg, vae_source = _vae_setup(official, has_vae_tensors, vae_config, vae)
    config, roles = official_config_to_flextok(official, vae_cfg, image_size=image_size)
    state_dict = convert_official_state_dict(tensors, roles, config, dtype=dtype)
    if vae_source is not None:
        external_vae = AutoencoderKL.from_pretrained(vae_source, use_safetensors=True)
        state_dict.update({f"vae.{k}": v.to(dtype) for k, v in external_vae.state_dict().items()})
    model = FlexTokModel(config)
    expected = model.state_dict()
    shape_errors = [
        f"{key}: checkpoint {tuple(value.shape)} vs model {tuple(expected[key].shape)}"
        for key, value in state_dict.items()
        if key in expected and expected[key].shape != value.shape
    ]
    if shape_errors:
        hint = (
            f" (pass the VAE's shape with `vae_config`, or put it in a {VAE_CONFIG_FILE} next to the checkpoint)"
            if any(k.startswith("vae.") for k in shape_errors)
            else ""
        )
        raise OfficialCheckpointError("Shape mismatch" + hint + ": " + "; ".join(shape_errors[:5]))
    missing, unexpected = model.load_state_dict(state_dict, strict=False)
    if missing or unexpected:
        raise OfficialCheckpointError(f"Conversion incomplete: missing {missing[:10]}, unexpected {unexpected[:10]}.")
    if dtype != torch.float32:
        model.to(dtype)
        if model.vae is not None:
            model.vae.to(torch.float32)
    model.eval()
    if output_dir is not None:
        model.save_pretrained(output_dir)
    return model
