"""Shared helpers for the FlexTok tests: the official fixture, tiny models, and official-format variant checkpoints."""

from __future__ import annotations

import ast
import copy
import functools
import json
import os

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from flextok_hf import FlexTokConfig, FlexTokModel

# A tiny 16x16 pixel-space tokenizer run on 8x8 sklearn digits (train_tokenizer arguments); no eval PSNR / grids / EMA
# unless a test asks for them.
TINY_TOKENIZER_RUN = {
    "config": "tiny",
    "dataset": "digits",
    "max_train_samples": 32,
    "per_device_train_batch_size": 8,
    "logging_steps": 1,
    "eval_split": "none",
    "num_sample_images": 0,
    "ema_decay": 0.0,
    "disable_tqdm": True,
    "dataloader_num_workers": 0,
    "seed": 3,
}

FIXTURE_DIR = os.path.join(os.path.dirname(__file__), "fixtures", "official_tiny")
FIXTURE_CKPT = os.path.join(FIXTURE_DIR, "model.safetensors")
FIXTURE_VAE_CONFIG = os.path.join(FIXTURE_DIR, "vae_config.json")


@functools.lru_cache(maxsize=1)
def reference() -> dict[str, torch.Tensor]:
    """The official code's reference outputs (read-only: clone before modifying)."""
    return load_file(os.path.join(FIXTURE_DIR, "reference.safetensors"))


@functools.lru_cache(maxsize=1)
def _converted_state():
    from flextok_hf.convert_official import convert_official_checkpoint

    model = convert_official_checkpoint(FIXTURE_CKPT, vae_config=FIXTURE_VAE_CONFIG)
    return model.config, {k: v.clone() for k, v in model.state_dict().items()}


def converted_fixture_model() -> FlexTokModel:
    """A fresh `FlexTokModel` with the converted fixture weights (eval mode)."""
    config, state = _converted_state()
    model = FlexTokModel(copy.deepcopy(config))
    model.load_state_dict(state)
    return model.eval()


def tiny_model(seed: int = 0, **config_kwargs) -> FlexTokModel:
    """A tiny pixel-space model with all weights perturbed away from their (often zero) init."""
    torch.manual_seed(seed)
    model = FlexTokModel(FlexTokConfig.tiny(**config_kwargs))
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.05 * torch.randn(param.shape, generator=generator))
    return model.eval()


def random_images(batch: int, size: int, seed: int = 0, channels: int = 3) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(batch, channels, size, size, generator=generator) * 2 - 1


# --------------------------------------------------------------------------------------------------------------------
# Official-format checkpoints derived from the fixture
# --------------------------------------------------------------------------------------------------------------------
def fixture_official_config() -> dict:
    """The fixture's Hydra config as parsed data."""
    with safe_open(FIXTURE_CKPT, framework="pt") as handle:
        metadata = handle.metadata()
    parsed = {}
    for key, text in metadata.items():
        try:
            parsed[key] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            parsed[key] = text
    return parsed


def fixture_vae_config() -> dict:
    with open(FIXTURE_VAE_CONFIG, encoding="utf-8") as f:
        return json.load(f)["resolved_autoencoderkl_config"]


def write_official_checkpoint(path: str, config: dict, tensors: dict[str, torch.Tensor]):
    """Write like the official `save_safetensors`: `str()` of each top-level config entry as metadata."""
    save_file({k: v.contiguous() for k, v in tensors.items()}, path, metadata={k: str(v) for k, v in config.items()})


def make_official_variant(
    path: str,
    *,
    dim: int = 128,
    dec_dim: int | None = None,
    enc_depth: int = 2,
    dec_depth: int = 2,
    head_dim: int = 64,
    patch: int = 2,
    registers: int = 32,
    latent_channels: int = 16,
    max_timestep: float | None = 1.0,
    nested_mode: str = "uniform",
    adaln_expansion: int = 2,
    head_adaln: bool = True,
    null_mode: str = "learned",
    sample_posterior: bool = False,
    dtype: torch.dtype = torch.float32,
    mlp_ratio: float | None = None,
    seed: int = 0,
    edit=None,
) -> dict:
    """An official-format checkpoint for a variant of the fixture's architecture, with random weights.

    Key names and shapes follow the official layout (checked against the fixture's `keys.txt` by the tests); the
    grid is 4x4 patches of a 64x64 image through an f8 VAE whatever the patch size. Returns the written tensors.
    """
    from diffusers import AutoencoderKL

    dec_dim = dec_dim or dim
    cfg = fixture_official_config()
    grid = 8 // patch
    enc_mods, dec_mods = cfg["encoder"]["module_dict"], cfg["decoder"]["module_dict"]
    cfg["vae"]["latent_channels"] = latent_channels
    cfg["vae"]["sample_posterior"] = sample_posterior
    cfg["pipeline"]["out_channels"] = latent_channels
    for mods, width in ((enc_mods, dim), (dec_mods, dec_dim)):
        for spec in mods.values():
            if "dim" in spec:
                spec["dim"] = width
            if spec["_target_"].endswith("PatchEmbedder"):
                spec["channels_in"] = latent_channels
                spec["patch_sizes"] = [patch, patch]
            if spec.get("posemb_type") == "sincos":
                spec["max_sizes"] = [grid, grid]
    enc_mods["enc_register_module"].update(n_min=registers, n_max=registers)
    dec_mods["dec_registers_posemb_module"]["max_sizes"] = [registers]
    for name, depth in (("enc_transformer", enc_depth), ("dec_transformer", dec_depth)):
        transformer = (enc_mods if name.startswith("enc") else dec_mods)[name]
        transformer.update(depth=depth, head_dim=head_dim)
        if mlp_ratio is not None:
            transformer["mlp_ratio"] = mlp_ratio
    dec_mods["dec_transformer"]["adaLN_expansion"] = adaln_expansion
    if adaln_expansion == 1:
        dec_mods["dec_transformer"].pop("adaLN_packing_fn_read_key")
        dec_mods["dec_seq_packer"]["per_subseq_embs"] = False
    dec_mods["dec_to_patches"].update(channels_out=latent_channels, patch_sizes=[patch, patch])
    if not head_adaln:
        dec_mods["dec_to_patches"].pop("adaLN_emb_read_key")
    if max_timestep is None:
        dec_mods["dec_time_embedder"].pop("max_timestep")
    else:
        dec_mods["dec_time_embedder"]["max_timestep"] = max_timestep
    dec_mods["dec_nested_dropout"]["size_sampling_mode"] = nested_mode
    if null_mode == "zero":
        spec = dec_mods["dec_latent_dropout"]
        spec["_target_"] = "flextok.model.preprocessors.nullcond.ZeroNullCond"
    if edit is not None:
        edit(cfg)

    generator = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return 0.05 * torch.randn(*shape, generator=generator)

    from flextok_hf.layers import sincos_2d_posemb

    def table(width):
        return sincos_2d_posemb(width, grid, grid).reshape(grid, grid, width).permute(2, 0, 1)[None].clone()

    vae_cfg = dict(fixture_vae_config(), latent_channels=latent_channels)
    vae_cfg = {k: v for k, v in vae_cfg.items() if not k.startswith("_")}
    torch.manual_seed(seed)
    tensors = {f"vae.vae.{k}": v for k, v in AutoencoderKL.from_config(vae_cfg).state_dict().items()}
    patch_in = patch * patch * latent_channels
    e, d = "encoder.module_dict.", "decoder.module_dict."
    tensors[f"{e}enc_patch_emb.patch_proj.weight"] = rand(dim, patch_in)
    tensors[f"{e}enc_patch_emb.patch_proj.bias"] = rand(dim)
    tensors[f"{e}enc_posemb_module.posembs"] = table(dim)
    tensors[f"{e}enc_register_module.registers"] = rand(registers, dim)
    ratio = 4.0 if mlp_ratio is None else mlp_ratio
    for prefix, width, depth, adaln in (
        (f"{e}enc_transformer", dim, enc_depth, False),
        (f"{d}dec_transformer", dec_dim, dec_depth, True),
    ):
        hidden = int(2 * ratio * width / 3)
        for i in range(depth):
            block = f"{prefix}.blocks.{i}."
            for name in ("wq", "wk", "wv", "proj"):
                tensors[f"{block}attn.{name}.weight"] = rand(width, width)
            tensors[f"{block}mlp.fc1.weight"] = rand(hidden, width)
            tensors[f"{block}mlp.fc3.weight"] = rand(hidden, width)
            tensors[f"{block}mlp.fc2.weight"] = rand(width, hidden)
            if adaln:
                tensors[f"{block}adaLN_modulation.1.weight"] = rand(adaln_expansion * 6 * width, width)
                tensors[f"{block}adaLN_modulation.1.bias"] = rand(adaln_expansion * 6 * width)
    tensors[f"{e}enc_to_latents.proj.weight"] = 2.0 * rand(6, dim)
    tensors[f"{e}enc_to_latents.proj.bias"] = rand(6)
    tensors[f"{d}dec_from_latents.proj.weight"] = rand(dec_dim, 6)
    tensors[f"{d}dec_from_latents.proj.bias"] = rand(dec_dim)
    tensors[f"{d}dec_registers_posemb_module.posembs"] = rand(1, 1, dec_dim, registers)
    tensors[f"{d}dec_nested_dropout.dropout_mask_token"] = rand(dec_dim)
    if null_mode == "learned":
        tensors[f"{d}dec_latent_dropout.nullcond"] = rand(dec_dim)
    tensors[f"{d}dec_noise_patch_emb.patch_proj.weight"] = rand(dec_dim, patch_in)
    tensors[f"{d}dec_noise_patch_emb.patch_proj.bias"] = rand(dec_dim)
    tensors[f"{d}dec_patches_posemb_module.posembs"] = table(dec_dim)
    tensors[f"{d}dec_time_embedder.mlp.0.weight"] = rand(dec_dim, 256)
    tensors[f"{d}dec_time_embedder.mlp.0.bias"] = rand(dec_dim)
    tensors[f"{d}dec_time_embedder.mlp.2.weight"] = rand(dec_dim, dec_dim)
    tensors[f"{d}dec_time_embedder.mlp.2.bias"] = rand(dec_dim)
    if head_adaln:
        tensors[f"{d}dec_to_patches.adaLN_modulation.1.weight"] = rand(2 * dec_dim, dec_dim)
        tensors[f"{d}dec_to_patches.adaLN_modulation.1.bias"] = rand(2 * dec_dim)
    tensors[f"{d}dec_to_patches.proj.weight"] = rand(patch_in, dec_dim)
    tensors[f"{d}dec_to_patches.proj.bias"] = rand(patch_in)
    tensors = {k: v.to(dtype) for k, v in tensors.items()}
    write_official_checkpoint(path, cfg, tensors)
    return tensors


def tiny_prior(flextok: FlexTokModel, condition_type: str = "class", seed: int = 0, **overrides):
    """A tiny random prior over `flextok`'s ids: 3 classes ("cat", "dog", "zebra, striped horse"), or text states of
    width 32 (6 condition tokens). `initializer_range=0.2` gives peaked distributions, so wiring mistakes show."""
    from flextok_hf import FlexTokARConfig, FlexTokARForCausalLM

    torch.manual_seed(seed)
    kwargs = dict(
        codebook_size=flextok.config.codebook_size,
        max_num_tokens=flextok.config.num_registers,
        hidden_size=32,
        num_attention_heads=2,
        num_key_value_heads=1,
        condition_type=condition_type,
        initializer_range=0.2,
    )
    if condition_type == "text":
        kwargs.update(text_hidden_size=32, num_condition_tokens=6)
    else:
        kwargs.update(num_classes=3, id2label={0: "cat", 1: "dog", 2: "zebra, striped horse"})
    kwargs.update(overrides)
    return FlexTokARForCausalLM(FlexTokARConfig.from_preset("tiny", **kwargs)).eval()
