"""The parsed official config -> `FlexTokConfig`, one function per section (VAE, encoder, FSQ, decoder, sampler).

Each section function reads its modules with `ModuleSettings` (every key interpreted, a known no-op, or refused) and
returns the `FlexTokConfig` fields it decides, the official module names of its roles (for the state-dict mapping)
and the facts `_check_consistency` compares across sections.
"""

from __future__ import annotations

import logging

from ..configuration_flextok import FlexTokConfig
from .metadata import OfficialCheckpointError
from .settings import (
    ModuleSettings,
    check_all_visited,
    check_readout_head,
    modules_of_class,
    one_module,
    patch_embedder_settings,
    per_sample_op_kind,
    section_modules,
    sincos_grid_side,
    transformer_settings,
)

logger = logging.getLogger(__name__)


def _top_module(config: dict, name: str) -> ModuleSettings:
    return ModuleSettings(name, config[name].get("_target_", ""), config[name])


def vae_section(config: dict, vae_config: dict | None) -> tuple[dict, int]:
    """The VAE wrapper (+ the VAE's diffusers config) -> (config fields, latent channels)."""
    vae = _top_module(config, "vae")
    if vae.short != "StableDiffusionVAE":
        raise OfficialCheckpointError(f"vae must be a StableDiffusionVAE, got {vae.target!r}.")
    latent_channels = int(vae.get("latent_channels", 4))
    scaling_factor = vae.get("scaling_factor")
    sample_posterior = vae.require("sample_posterior", (True, False), default=True)
    vae.require("learnable_logvar", (False,), default=False)
    vae.get("hf_hub_path")
    vae.get("dtype_override")
    vae.finish()
    if vae_config is not None:
        vae_config = {k: v for k, v in vae_config.items() if not k.startswith("_")}
        if int(vae_config.get("latent_channels", latent_channels)) != latent_channels:
            raise OfficialCheckpointError(
                f"The VAE config has latent_channels={vae_config.get('latent_channels')} but the checkpoint's VAE "
                f"wrapper says {latent_channels}."
            )
        vae_config["latent_channels"] = latent_channels
        if scaling_factor is None:
            scaling_factor = vae_config.get("scaling_factor")
    if scaling_factor is None:
        raise OfficialCheckpointError(
            "No latent scaling factor in the metadata (vae.scaling_factor) or the VAE config."
        )
    fields = dict(
        vae_config=vae_config, vae_scaling_factor=float(scaling_factor), vae_sample_posterior=bool(sample_posterior)
    )
    return fields, latent_channels


def _encoder_registers(modules: list[ModuleSettings]) -> ModuleSettings:
    """The encoder's Registers1D: a fixed count K (n_min = n_max = n_eval), nested ordering, no extra registers."""
    registers = one_module(modules, "Registers1D", "encoder")
    n_min, n_max = registers.get("n_min"), registers.get("n_max")
    if n_min != n_max:
        raise OfficialCheckpointError(f"encoder registers: n_min={n_min} != n_max={n_max} is not supported.")
    registers.require("ordering_mode", ("nested",), default="nested")
    if registers.get("n_eval") not in (None, n_max):
        raise OfficialCheckpointError(
            f"encoder registers: n_eval={registers.args['n_eval']} != n_max={n_max} is not supported."
        )
    for key in ("extra_registers_write_key", "extra_registers_dim"):
        if registers.get(key) is not None:
            raise OfficialCheckpointError(f"encoder registers: `{key}` (extra registers) is not supported.")
    registers.get("size_sampling_mode")
    registers.get("dim")
    registers.finish()
    return registers


def encoder_section(section: dict) -> tuple[dict, dict, dict]:
    """The encoder -> (config fields, roles, facts: patch channels, width, transformer, sin-cos grid, FSQ dims)."""
    modules = section_modules(section, "encoder")
    to_last = one_module(modules, "PerSampleOp", "encoder")
    if per_sample_op_kind(to_last) != "to_last":
        raise OfficialCheckpointError("encoder: the PerSampleOp must convert channels-first to channels-last.")
    to_last.finish()
    patch_module = one_module(modules, "PatchEmbedder", "encoder")
    patch, channels_in, width = patch_embedder_settings(patch_module, "encoder")
    posemb = one_module(modules, "PositionalEmbeddingAdder", "encoder")
    max_grid = sincos_grid_side(posemb, "encoder")
    registers = _encoder_registers(modules)
    packer = one_module(modules, "BlockWiseSequencePacker", "encoder")
    packer.require("mask_mode", ("causal_last",))
    packer.require("per_subseq_embs", (False,), default=False)
    packer.finish()
    transformer_module = one_module(modules, "FlexTransformer", "encoder")
    transformer = transformer_settings(transformer_module, "encoder", adaln=False)
    one_module(modules, "SequenceUnpacker", "encoder").finish()
    head = one_module(modules, "LinearHead", "encoder")
    roles = dict(
        enc_patch=patch_module.name,
        enc_posemb=posemb.name,
        enc_registers=registers.name,
        enc_transformer=transformer_module.name,
        enc_head=head.name,
    )
    fsq_dims = int(head.get("dim_out"))
    check_readout_head(head, "encoder")
    if head.get("adaLN_emb_read_key") is not None:
        raise OfficialCheckpointError("encoder: an adaLN-modulated readout head is not supported.")
    head.finish()
    check_all_visited(modules, "encoder")
    fields = dict(
        patch_size=patch,
        encoder_hidden_size=width,
        encoder_num_layers=transformer["depth"],
        encoder_head_dim=transformer["head_dim"],
        mlp_ratio=transformer["mlp_ratio"],
        num_registers=int(registers.args["n_max"]),
    )
    facts = dict(channels=channels_in, width=width, transformer=transformer, max_grid=max_grid, fsq_dims=fsq_dims)
    return fields, roles, facts


def fsq_section(config: dict, fsq_dims: int) -> dict:
    """The FSQ regularizer -> `fsq_levels` (one level per encoder readout dim); training-only noise is dropped."""
    fsq = _top_module(config, "regularizer")
    levels = [int(v) for v in fsq.get("levels")]
    if len(levels) != fsq_dims:
        raise OfficialCheckpointError(f"FSQ has {len(levels)} levels but the encoder reads out {fsq_dims} dims.")
    fsq.require("packed_call", (True, False), default=False)
    for key in ("drop_quant_p", "corrupt_tokens_p", "min_corrupt_tokens_p", "apply_corrupt_tokens_p"):
        if fsq.get(key):
            logger.warning("FSQ `%s=%s` only affects training; it is not converted.", key, fsq.args[key])
    fsq.finish()
    return dict(fsq_levels=levels)


def _decoder_posembs(modules: list[ModuleSettings], max_grid: int, roles: dict) -> str:
    """The decoder's patch sin-cos table (same grid as the encoder's) and optional 1-D learned register table;
    returns `register_posemb_type`."""
    register_posemb = "none"
    for module in modules_of_class(modules, "PositionalEmbeddingAdder", "decoder"):
        if module.args.get("posemb_type") == "sincos":
            roles["dec_patch_posemb"] = module.name
            if sincos_grid_side(module, "decoder") != max_grid:
                raise OfficialCheckpointError("Encoder and decoder sin-cos tables have different sizes.")
            continue
        roles["dec_register_posemb"] = module.name
        # A 1-D learnable table: "learnable_prod" combines per-axis tables by product, identical for one axis.
        module.require("posemb_type", ("learnable_sum", "learnable_prod"))
        register_posemb = "learnable_sum"
        module.require("posemb_scaling", ("absolute",), default="absolute")
        module.get("dim")
        sizes = module.get("max_sizes")
        if not isinstance(sizes, (list, tuple)) or len(sizes) != 1:
            raise OfficialCheckpointError(
                f"decoder {module.name}: register posemb must be 1-D, got max_sizes={sizes!r}."
            )
        module.finish()
    return register_posemb


def _decoder_null_condition(modules: list[ModuleSettings]) -> tuple[ModuleSettings, dict]:
    """The null-condition module (learned or zero) -> (module, config fields)."""
    learned = one_module(modules, "LearnedNullCond", "decoder", required=False)
    zero = one_module(modules, "ZeroNullCond", "decoder", required=False)
    if learned is None and zero is None:
        raise OfficialCheckpointError("decoder has no null-condition module (LearnedNullCond / ZeroNullCond).")
    module = learned or zero
    probability = float(module.get("dropout_prob", 0.0))
    module.require("replace_with_single_token", (False,), default=False)
    module.get("dim")
    module.finish()
    fields = dict(
        null_condition_mode="learned" if learned is not None else "zero", null_condition_dropout_prob=probability
    )
    return module, fields


def _decoder_time_embedding(modules: list[ModuleSettings]) -> tuple[ModuleSettings, dict]:
    """The TimestepEmbedder -> (module, `max_timestep` / `time_embedding_size` fields)."""
    time = one_module(modules, "TimestepEmbedder", "decoder")
    fields = dict(
        max_timestep=float(time.get("max_timestep", 1000.0)),
        time_embedding_size=int(time.get("frequency_embedding_size", 256)),
    )
    time.get("dim")
    time.require("temb_as_tokens", (False,), default=False)
    time.finish()
    return time, fields


def _decoder_head(modules: list[ModuleSettings]) -> tuple[ModuleSettings, dict]:
    """The ToPatchesLinearHead -> (module, facts: adaLN, patch sizes, output channels)."""
    head = one_module(modules, "ToPatchesLinearHead", "decoder")
    facts = dict(
        adaln=head.get("adaLN_emb_read_key") is not None,
        patch_sizes=head.get("patch_sizes"),
        channels=int(head.get("channels_out")),
    )
    check_readout_head(head, "decoder")
    if head.get("adaLN_packing_fn_read_key") is not None:
        raise OfficialCheckpointError("decoder head: per-subsequence adaLN packing in the head is not supported.")
    head.finish()
    return head, facts


def decoder_section(section: dict, fsq_dims: int, max_grid: int) -> tuple[dict, dict, dict]:
    """The decoder -> (config fields, roles, facts: widths, patch sizes and channels, transformer, head)."""
    modules = section_modules(section, "decoder")
    from_codes = one_module(modules, "LinearLayer", "decoder")
    if int(from_codes.get("dim_in")) != fsq_dims:
        raise OfficialCheckpointError(
            f"decoder LinearLayer dim_in={from_codes.args['dim_in']} != FSQ dims {fsq_dims}."
        )
    width = int(from_codes.get("dim"))
    from_codes.require("proj_bias", (True,), default=True)
    from_codes.finish()
    roles = {}
    register_posemb = _decoder_posembs(modules, max_grid, roles)
    dropout = one_module(modules, "MaskedNestedDropout", "decoder")
    nested_mode = dropout.require("size_sampling_mode", ("uniform", "pow2", "uniform_pow2"), default="uniform")
    dropout.get("dim")
    dropout.finish()
    null_module, null_fields = _decoder_null_condition(modules)
    ops = modules_of_class(modules, "PerSampleOp", "decoder")
    if sorted(per_sample_op_kind(m) for m in ops) != ["to_first", "to_last"]:
        raise OfficialCheckpointError("decoder needs one channels-first->last and one channels-last->first op.")
    for module in ops:
        module.finish()
    patch_module = one_module(modules, "PatchEmbedder", "decoder")
    patch, channels_in, patch_width = patch_embedder_settings(patch_module, "decoder")
    packer = one_module(modules, "BlockWiseSequencePacker", "decoder")
    packer.require("mask_mode", ("full",))
    per_subseq = packer.require("per_subseq_embs", (True, False), default=False)
    packer.finish()
    time, time_fields = _decoder_time_embedding(modules)
    transformer_module = one_module(modules, "FlexTransformer", "decoder")
    transformer = transformer_settings(transformer_module, "decoder", adaln=True)
    if transformer["adaln_expansion"] == 2 and not per_subseq:
        raise OfficialCheckpointError("decoder: adaLN_expansion=2 requires the packer's per_subseq_embs=True.")
    for module in modules_of_class(modules, "SequenceUnpacker", "decoder"):
        module.finish()
    head, head_facts = _decoder_head(modules)
    check_all_visited(modules, "decoder")
    roles.update(
        dec_from_codes=from_codes.name,
        dec_nested_dropout=dropout.name,
        dec_null=null_module.name,
        dec_patch=patch_module.name,
        dec_time=time.name,
        dec_transformer=transformer_module.name,
        dec_head=head.name,
    )
    fields = dict(
        decoder_hidden_size=width,
        decoder_num_layers=transformer["depth"],
        decoder_head_dim=transformer["head_dim"],
        nested_dropout_mode=nested_mode,
        register_posemb_type=register_posemb,
        adaln_expansion=transformer["adaln_expansion"],
        head_adaln=head_facts["adaln"],
        **null_fields,
        **time_fields,
    )
    facts = dict(
        width=width,
        patch=patch,
        channels=channels_in,
        patch_width=patch_width,
        transformer=transformer,
        head_patch_sizes=head_facts["patch_sizes"],
        head_channels=head_facts["channels"],
    )
    return fields, roles, facts


def sampler_section(config: dict) -> int | None:
    """The flow-matching noise module (logit-normal, unstratified) and the pipeline -> its `out_channels`."""
    noise = _top_module(config, "flow_matching_noise_module")
    noise.require("ln", (True,), default=True)
    noise.require("stratisfied", (False,), default=False)
    noise.get("mode_scale")
    noise.finish()
    pipeline = _top_module(config, "pipeline")
    out_channels = pipeline.get("out_channels")
    pipeline.finish()
    return out_channels


def _check_consistency(latent_channels: int, encoder: dict, decoder: dict, pipeline_channels: int | None) -> None:
    """Channels, patch sizes, widths and MLP ratios must agree across the sections."""
    checks = {
        "encoder patch channels": encoder["channels"],
        "decoder patch channels": decoder["channels"],
        "decoder head channels": decoder["head_channels"],
        "pipeline out_channels": pipeline_channels if pipeline_channels is not None else latent_channels,
    }
    for what, value in checks.items():
        if int(value) != latent_channels:
            raise OfficialCheckpointError(f"{what} = {value} but the VAE has {latent_channels} latent channels.")
    patch = encoder["patch"]
    if decoder["patch"] != patch or list(decoder["head_patch_sizes"]) != [patch, patch]:
        raise OfficialCheckpointError("Encoder, decoder and head must use the same square patch size.")
    if (
        decoder["patch_width"] != decoder["width"]
        or encoder["transformer"]["dim"] != encoder["width"]
        or decoder["transformer"]["dim"] != decoder["width"]
    ):
        raise OfficialCheckpointError("Module widths disagree inside the encoder or decoder.")
    if encoder["transformer"]["mlp_ratio"] != decoder["transformer"]["mlp_ratio"]:
        raise OfficialCheckpointError("Different encoder/decoder mlp_ratio is not supported.")


def official_config_to_flextok(
    config: dict, vae_config: dict | None, image_size: int | None = None
) -> tuple[FlexTokConfig, dict[str, str]]:
    """Map the parsed official config (+ the VAE's diffusers config) to `FlexTokConfig`.

    Returns the config and the official module name of each role (used to map state-dict keys). Without
    `image_size`, the image side is the training grid of the sin-cos tables × patch × the VAE's downsampling.
    """
    vae_fields, latent_channels = vae_section(config, vae_config)
    encoder_fields, roles, encoder = encoder_section(config["encoder"])
    encoder["patch"] = encoder_fields["patch_size"]
    fsq_fields = fsq_section(config, encoder["fsq_dims"])
    decoder_fields, decoder_roles, decoder = decoder_section(
        config["decoder"], encoder["fsq_dims"], encoder["max_grid"]
    )
    roles.update(decoder_roles)
    _check_consistency(latent_channels, encoder, decoder, sampler_section(config))

    vae_config = vae_fields["vae_config"]
    downsample = 1 if vae_config is None else 2 ** (len(vae_config.get("block_out_channels", (0,) * 4)) - 1)
    if image_size is None:
        image_size = encoder["max_grid"] * encoder["patch"] * downsample
    flextok_config = FlexTokConfig(
        image_size=image_size, num_channels=3, **vae_fields, **encoder_fields, **fsq_fields, **decoder_fields
    )
    return flextok_config, roles


__all__ = [
    "decoder_section",
    "encoder_section",
    "fsq_section",
    "official_config_to_flextok",
    "sampler_section",
    "vae_section",
]
