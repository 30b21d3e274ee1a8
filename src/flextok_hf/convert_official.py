"""Convert an official apple/ml-flextok checkpoint into a `FlexTokModel` folder, safely.

The official checkpoint is a safetensors file whose metadata holds the Hydra config of the model (`str()` of each
top-level entry). This converter reads that metadata strictly as *data*: values are parsed with `ast.literal_eval`,
every `_target_` anywhere in the tree must be in `ALLOWED_TARGETS`, and nothing named in the metadata is ever
imported or instantiated. Each module's settings are checked against what `FlexTokModel` implements; settings that
change the numerics and are not supported are refused by name, never silently ignored.

Where the Hydra config lives: in the safetensors metadata (what the official `save_safetensors` writes), or, for
uploads made with `PyTorchModelHubMixin` (`FlexTokFromHub`), in the repo's `config.json` next to a `model.safetensors`
whose metadata holds only `{"format": "pt"}`. Both are read the same way and pass the same checks.

Usage: `flextok-hf convert-official SRC OUT_DIR [--vae-config JSON] [--vae DIR_OR_ID]`, or load an official checkpoint
directly — `FlexTokModel.from_pretrained(SRC)`, `FlexTokPipeline.from_pretrained(SRC)`, `pipeline("flextok-tokenize",
model=SRC)` convert it in memory (see `flextok_hf.loading`).
"""

from __future__ import annotations

import ast
import json
import logging
import os
from dataclasses import dataclass, field

import torch
from safetensors import SafetensorError, safe_open

from .configuration_flextok import FlexTokConfig

logger = logging.getLogger(__name__)

# Every class or function an official FlexTok config may name. Anything else is refused before any further reading.
ALLOWED_TARGETS = frozenset(
    {
        "flextok.flextok_wrapper.FlexTok",
        "flextok.flextok_wrapper.FlexTokFromHub",
        "flextok.vae_wrapper.StableDiffusionVAE",
        "flextok.model.utils.wrappers.SequentialModuleDictWrapper",
        "flextok.model.utils.dict_ops.PerSampleOp",
        "flextok.model.utils.dict_ops.channels_first_to_last",
        "flextok.model.utils.dict_ops.channels_last_to_first",
        "flextok.model.preprocessors.patching.PatchEmbedder",
        "flextok.model.utils.posembs.PositionalEmbeddingAdder",
        "flextok.model.preprocessors.registers.Registers1D",
        "flextok.model.preprocessors.flex_seq_packing.BlockWiseSequencePacker",
        "flextok.model.trunks.transformers.FlexTransformer",
        "flextok.model.postprocessors.seq_unpacking.SequenceUnpacker",
        "flextok.model.postprocessors.heads.LinearHead",
        "flextok.model.postprocessors.heads.ToPatchesLinearHead",
        "flextok.regularizers.quantize_fsq.FSQ",
        "flextok.model.preprocessors.linear.LinearLayer",
        "flextok.model.preprocessors.token_dropout.MaskedNestedDropout",
        "flextok.model.preprocessors.nullcond.LearnedNullCond",
        "flextok.model.preprocessors.nullcond.ZeroNullCond",
        "flextok.model.preprocessors.time_embedding.TimestepEmbedder",
        "flextok.flow_matching.noise_modules.MinRFNoiseModule",
        "flextok.flow_matching.pipelines.MinRFPipeline",
        "flextok.model.layers.norm.Fp32LayerNorm",
        "flextok.flow_matching.cfg_utils.MomentumBuffer",
        "torch.nn.SiLU",
    }
)

# Settings that only name data-dict entries, choose an initialisation, or trade speed/memory: no effect on the
# converted weights or the inference numerics.
NO_OP_SETTINGS = frozenset(
    {
        "weight_init_style",
        "zero_init_query_proj",
        "use_act_checkpoint",
        "compile_block_mask",
        "return_materialized_mask",
        "pad_to_multiple",
        "max_seq_len",
        "dtype_override",
        "logvar_init",
        "frozen",
        "compile_encode_fn",
        "force_vae_encode",
        "_partial_",
    }
)

TOP_LEVEL_KEYS = ("_target_", "vae", "encoder", "decoder", "regularizer", "flow_matching_noise_module", "pipeline")
WRAPPER_TARGETS = ("flextok.flextok_wrapper.FlexTok", "flextok.flextok_wrapper.FlexTokFromHub")
# Metadata entries that safetensors writers add on their own (`safetensors.torch.save_file`, transformers): not config.
WRITER_METADATA_KEYS = frozenset({"format"})
# A file next to an official checkpoint giving its VAE's diffusers `AutoencoderKL` config (plain, or the fixture's
# wrapper with `resolved_autoencoderkl_config`): the Hydra config cannot hold the VAE's shape.
VAE_CONFIG_FILE = "vae_config.json"


class OfficialCheckpointError(ValueError):
    """The official checkpoint cannot be converted safely or faithfully."""


# ------------------------------------------------------------------------------------------------------------------
# Reading the metadata as data
# ------------------------------------------------------------------------------------------------------------------
def parse_official_metadata(metadata: dict[str, str]) -> dict:
    """`str()`-serialized Hydra entries -> Python data (literals only). Raises on anything that is not a literal."""
    parsed = {}
    for key, text in metadata.items():
        try:
            parsed[key] = ast.literal_eval(text)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as error:
            if key == "_target_":  # the official writer stores the top-level target as a bare string
                parsed[key] = text.strip()
            else:
                raise OfficialCheckpointError(
                    f"Metadata entry {key!r} is not a Python literal and is refused (it would need code execution "
                    f"to interpret): {error}"
                ) from None
    return parsed


def check_targets(node, path: str = "config") -> None:
    """Refuse any `_target_` (at any depth) that is not one of the official FlexTok classes."""
    if isinstance(node, dict):
        target = node.get("_target_")
        if target is not None and (not isinstance(target, str) or target not in ALLOWED_TARGETS):
            raise OfficialCheckpointError(
                f"Refusing `_target_` {target!r} at {path}: it is not one of the official FlexTok classes "
                f"allowed by flextok_hf.convert_official.ALLOWED_TARGETS. Nothing was instantiated."
            )
        for key, value in node.items():
            check_targets(value, f"{path}.{key}")
    elif isinstance(node, (list, tuple)):
        for index, value in enumerate(node):
            check_targets(value, f"{path}[{index}]")


def is_official_config(data) -> bool:
    """Whether a `config.json` dict (or safetensors metadata) is an official Hydra config: it names `_target_`s, at
    the top level or in a top-level entry (possibly `str()`-serialized, as in the metadata). A FlexTok config
    (`model_type`) never does. Detection only: `parse_official_config` and `check_official_config` decide whether
    it can be converted."""
    if not isinstance(data, dict) or "model_type" in data:
        return False
    if "_target_" in data:
        return True
    return any(
        (isinstance(value, dict) and "_target_" in value) or (isinstance(value, str) and "'_target_'" in value)
        for value in data.values()
    )


def parse_official_config(data: dict) -> dict:
    """An official Hydra config from a `config.json` (already JSON data; entries that are `str()`-serialized dicts,
    as in the metadata, are parsed as literals). A missing top-level `_target_` means the Hub wrapper
    `FlexTokFromHub`, whose `PyTorchModelHubMixin` writes the sub-configs only."""
    if not isinstance(data, dict):
        raise OfficialCheckpointError(f"The official config must be a JSON object, got {type(data).__name__}.")
    parsed = parse_official_metadata({k: v for k, v in data.items() if isinstance(v, str)})
    parsed.update({k: v for k, v in data.items() if not isinstance(v, str)})
    parsed.setdefault("_target_", "flextok.flextok_wrapper.FlexTokFromHub")
    return parsed


def check_official_config(config: dict) -> dict:
    """The allowlist and layout checks every official config passes before any of it is interpreted."""
    check_targets(config)
    missing = [key for key in TOP_LEVEL_KEYS if key not in config]
    unknown = [key for key in config if key not in TOP_LEVEL_KEYS]
    if missing or unknown:
        raise OfficialCheckpointError(
            f"Unexpected top-level metadata: missing {missing}, unknown {unknown}; expected exactly {TOP_LEVEL_KEYS}."
        )
    if config["_target_"] not in WRAPPER_TARGETS:
        raise OfficialCheckpointError(f"Top-level `_target_` must be the FlexTok wrapper, got {config['_target_']!r}.")
    for key in TOP_LEVEL_KEYS[1:]:
        if not isinstance(config[key], dict):
            raise OfficialCheckpointError(f"`{key}` must be a dict, got {type(config[key]).__name__}.")
    return config


def _open_checkpoint(path: str):
    """`safe_open`, with unreadable files reported as `OfficialCheckpointError` naming the file and the fix."""
    try:
        return safe_open(path, framework="pt")
    except (SafetensorError, OSError) as error:
        reason = " ".join(str(error).split())
        raise OfficialCheckpointError(
            f"Cannot read {path!r} as a safetensors checkpoint ({reason}): the file is truncated (an interrupted "
            "download?) or not safetensors (pickled `.bin`/`.pt` files are never loaded); download it again."
        ) from None


def _checkpoint_config(handle, path: str, config: dict | None) -> dict:
    metadata = {k: v for k, v in (handle.metadata() or {}).items() if k not in WRITER_METADATA_KEYS}
    if metadata:
        return check_official_config(parse_official_metadata(metadata))
    if config is not None:
        return check_official_config(parse_official_config(config))
    raise OfficialCheckpointError(
        f"{path} has no config in its metadata and no official config.json was found next to it; an official "
        "FlexTok checkpoint stores its Hydra config in one of the two."
    )


def _clean_key(key: str) -> str:
    # Activation-checkpointing / FSDP wrappers may leave their own segment in parameter names.
    return key.replace("._checkpoint_wrapped_module", "").replace("_fsdp_wrapped_module.", "")


def read_official_config(path: str, config: dict | None = None) -> tuple[dict, list[str]]:
    """The parsed, allowlist-checked Hydra config and the tensor names of an official checkpoint, from its header
    only. `config` (a `config.json` dict) is used when the file's metadata holds no config."""
    with _open_checkpoint(path) as handle:
        return _checkpoint_config(handle, path, config), [_clean_key(key) for key in handle.keys()]


def read_official_checkpoint(path: str, config: dict | None = None) -> tuple[dict[str, torch.Tensor], dict]:
    """Load tensors and the parsed, allowlist-checked Hydra config of an official safetensors checkpoint. `config` (a
    `config.json` dict) is used when the file's metadata holds no config."""
    with _open_checkpoint(path) as handle:
        official = _checkpoint_config(handle, path, config)
        try:
            tensors = {_clean_key(key): handle.get_tensor(key) for key in handle.keys()}
        except SafetensorError as error:
            raise OfficialCheckpointError(
                f"Cannot read the tensors of {path!r} ({' '.join(str(error).split())}): the file is truncated or "
                "corrupt; download it again."
            ) from None
    return tensors, official


# ------------------------------------------------------------------------------------------------------------------
# Interpreting the module settings
# ------------------------------------------------------------------------------------------------------------------
_CLS = "flextok.model."


@dataclass
class _Module:
    name: str
    target: str
    args: dict
    consumed: set = field(default_factory=set)
    visited: bool = False

    def get(self, key, default=None):
        self.consumed.add(key)
        return self.args.get(key, default)

    def require(self, key, allowed, default=None):
        """Read `key`; refuse by name if its value is not one of `allowed`."""
        value = self.get(key, default)
        if value not in allowed:
            raise OfficialCheckpointError(
                f"{self.name} ({self.short}): `{key}={value!r}` is not supported by flextok_hf (supported: {allowed})."
            )
        return value

    @property
    def short(self) -> str:
        return self.target.rsplit(".", 1)[-1]

    def finish(self, ignored: tuple[str, ...] = ()):
        """Every argument must have been interpreted or be a known no-op (data-dict keys, init, checkpointing)."""
        self.consumed.update(ignored)
        self.visited = True
        for key in self.args:
            # Data-dict key names (`read_key`, `*_write_key`, `input_list_read_keys`, ...) only route tensors.
            if key in self.consumed or key == "_target_" or key in NO_OP_SETTINGS or key.endswith(("_key", "_keys")):
                continue
            raise OfficialCheckpointError(
                f"{self.name} ({self.short}): unknown setting `{key}={self.args[key]!r}`; refusing rather than "
                f"ignoring it."
            )


def _modules(section: dict, side: str) -> list[_Module]:
    if section.get("_target_") != "flextok.model.utils.wrappers.SequentialModuleDictWrapper":
        raise OfficialCheckpointError(
            f"{side} must be a SequentialModuleDictWrapper, got {section.get('_target_')!r}."
        )
    extra = set(section) - {"_target_", "module_dict"}
    if extra:
        raise OfficialCheckpointError(f"{side}: unknown settings {sorted(extra)}.")
    return [_Module(name, spec.get("_target_", ""), spec) for name, spec in section["module_dict"].items()]


def _check_all_visited(modules: list[_Module], side: str):
    for module in modules:
        if not module.visited:
            raise OfficialCheckpointError(
                f"{side} module {module.name!r} ({module.short}) has no counterpart in flextok_hf; refusing."
            )
        module.finish()


def _by_class(modules: list[_Module], short: str, side: str, required: bool = True) -> list[_Module]:
    found = [m for m in modules if m.short == short]
    for module in found:
        module.visited = True
    if required and not found:
        raise OfficialCheckpointError(f"{side} has no {short} module; this is not a FlexTok {side} layout.")
    return found


def _one(modules, short, side, required=True) -> _Module | None:
    found = _by_class(modules, short, side, required)
    if len(found) > 1:
        raise OfficialCheckpointError(f"{side} has {len(found)} {short} modules; flextok_hf supports exactly one.")
    return found[0] if found else None


def _per_sample_op_kind(module: _Module) -> str:
    op = module.get("per_sample_op") or {}
    target = op.get("_target_", "") if isinstance(op, dict) else ""
    if target.endswith("channels_first_to_last"):
        return "to_last"
    if target.endswith("channels_last_to_first"):
        return "to_first"
    raise OfficialCheckpointError(f"{module.name}: unsupported per-sample op {op!r}.")


def _patch_embedder(module: _Module, side: str) -> tuple[int, int, int]:
    sizes = module.get("patch_sizes")
    if not isinstance(sizes, (list, tuple)) or len(sizes) != 2 or sizes[0] != sizes[1]:
        raise OfficialCheckpointError(f"{side} {module.name}: `patch_sizes={sizes!r}` must be a square [p, p].")
    module.require("flatten_patches", (False,), default=True)
    return int(sizes[0]), int(module.get("channels_in")), int(module.get("dim"))


def _sincos(module: _Module, side: str) -> int:
    """Check a fixed 2D sin-cos posemb module; returns its (square) maximum grid side."""
    module.require("posemb_type", ("sincos",))
    module.require("posemb_scaling", ("absolute",), default="absolute")
    module.get("dim")
    sizes = module.get("max_sizes")
    if not isinstance(sizes, (list, tuple)) or len(sizes) != 2 or sizes[0] != sizes[1]:
        raise OfficialCheckpointError(f"{side} {module.name}: `max_sizes={sizes!r}` must be a square [n, n].")
    module.finish()
    return int(sizes[0])


def _transformer(module: _Module, side: str, adaln: bool) -> dict:
    t = module
    out = dict(dim=int(t.get("dim", 768)), depth=int(t.get("depth", 12)), head_dim=int(t.get("head_dim", 64)))
    out["mlp_ratio"] = float(t.get("mlp_ratio", 4.0))
    for key in ("qkv_bias", "proj_bias", "mlp_bias"):
        t.require(key, (False,), default=False)
    t.require("gated_mlp", (True,), default=True)
    t.require("qk_norm", (True,), default=True)
    for key in ("drop", "drop_path_rate"):
        value = t.get(key, 0.0)
        if value:
            logger.warning(
                "%s %s: `%s=%s` only affects training; flextok_hf has no dropout.", side, t.name, key, value
            )
    act = t.get("act_layer")
    if act is not None and (not isinstance(act, dict) or act.get("_target_") != "torch.nn.SiLU"):
        raise OfficialCheckpointError(f"{side} {t.name}: `act_layer={act!r}` is not supported (only SiLU).")
    norm = t.get("norm_layer")
    if norm is not None:
        ok = (
            isinstance(norm, dict)
            and norm.get("_target_") == "flextok.model.layers.norm.Fp32LayerNorm"
            and norm.get("elementwise_affine", True) is not True
            and norm.get("bias", True) is not True
        )
        if not ok:
            raise OfficialCheckpointError(f"{side} {t.name}: `norm_layer={norm!r}` is not supported.")
    for key in ("score_mod_read_key", "rope_forward_read_key"):
        if t.get(key) is not None:
            raise OfficialCheckpointError(f"{side} {t.name}: `{key}` (score mods / RoPE) is not supported.")
    has_adaln = t.get("adaLN_emb_read_key") is not None
    if has_adaln != adaln:
        raise OfficialCheckpointError(
            f"{side} {t.name}: adaLN is {'on' if has_adaln else 'off'}; the FlexTok {side} needs it "
            f"{'on' if adaln else 'off'}."
        )
    out["adaln_expansion"] = t.require("adaLN_expansion", (1, 2), default=1)
    if adaln and out["adaln_expansion"] == 2 and t.get("adaLN_packing_fn_read_key") is None:
        raise OfficialCheckpointError(
            f"{side} {t.name}: adaLN_expansion=2 needs a packing function (per-subsequence)."
        )
    out["repa_layers"] = list(t.get("intermediate_layers") or [])
    t.finish()
    return out


def _readout_head(module: _Module, side: str):
    """Settings shared by LinearHead / ToPatchesLinearHead: plain fp32 LayerNorm, biased projection, no muP readout."""
    module.require("use_mup_readout", (False,))
    norm = module.get("norm_layer")
    if norm is not None and not (
        isinstance(norm, dict)
        and norm.get("_target_") == "flextok.model.layers.norm.Fp32LayerNorm"
        and norm.get("elementwise_affine", True) is False
        and norm.get("bias", True) is False
    ):
        raise OfficialCheckpointError(f"{side} {module.name}: `norm_layer={norm!r}` is not supported.")
    module.require("proj_bias", (True,), default=True)
    module.require("adaLN_bias", (True,), default=True)
    module.get("dim")


def official_config_to_flextok(
    config: dict, vae_config: dict | None, image_size: int | None = None
) -> tuple[FlexTokConfig, dict[str, str]]:
    """Map the parsed official config (+ the VAE's diffusers config) to `FlexTokConfig`.

    Returns the config and the official module name of each role (used to map state-dict keys).
    """
    # VAE ------------------------------------------------------------------------------------------------------------
    vae = _Module("vae", config["vae"].get("_target_", ""), config["vae"])
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

    # Encoder --------------------------------------------------------------------------------------------------------
    enc = _modules(config["encoder"], "encoder")
    to_last = _one(enc, "PerSampleOp", "encoder")
    if _per_sample_op_kind(to_last) != "to_last":
        raise OfficialCheckpointError("encoder: the PerSampleOp must convert channels-first to channels-last.")
    to_last.finish()
    roles = {}
    enc_patch = _one(enc, "PatchEmbedder", "encoder")
    patch, channels_in, enc_dim = _patch_embedder(enc_patch, "encoder")
    enc_posemb = _one(enc, "PositionalEmbeddingAdder", "encoder")
    max_grid = _sincos(enc_posemb, "encoder")
    registers = _one(enc, "Registers1D", "encoder")
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
    packer = _one(enc, "BlockWiseSequencePacker", "encoder")
    packer.require("mask_mode", ("causal_last",))
    packer.require("per_subseq_embs", (False,), default=False)
    packer.finish()
    enc_transformer = _one(enc, "FlexTransformer", "encoder")
    enc_t = _transformer(enc_transformer, "encoder", adaln=False)
    _one(enc, "SequenceUnpacker", "encoder").finish()
    head = _one(enc, "LinearHead", "encoder")
    roles.update(
        enc_patch=enc_patch.name,
        enc_posemb=enc_posemb.name,
        enc_registers=registers.name,
        enc_transformer=enc_transformer.name,
        enc_head=head.name,
    )
    fsq_dims = int(head.get("dim_out"))
    _readout_head(head, "encoder")
    if head.get("adaLN_emb_read_key") is not None:
        raise OfficialCheckpointError("encoder: an adaLN-modulated readout head is not supported.")
    head.finish()
    _check_all_visited(enc, "encoder")

    # FSQ -------------------------------------------------------------------------------------------------------------
    fsq = _Module("regularizer", config["regularizer"].get("_target_", ""), config["regularizer"])
    levels = [int(v) for v in fsq.get("levels")]
    if len(levels) != fsq_dims:
        raise OfficialCheckpointError(f"FSQ has {len(levels)} levels but the encoder reads out {fsq_dims} dims.")
    fsq.require("packed_call", (True, False), default=False)
    for key in ("drop_quant_p", "corrupt_tokens_p", "min_corrupt_tokens_p", "apply_corrupt_tokens_p"):
        if fsq.get(key):
            logger.warning("FSQ `%s=%s` only affects training; it is not converted.", key, fsq.args[key])
    fsq.finish()

    # Decoder --------------------------------------------------------------------------------------------------------
    dec = _modules(config["decoder"], "decoder")
    from_codes = _one(dec, "LinearLayer", "decoder")
    if int(from_codes.get("dim_in")) != fsq_dims:
        raise OfficialCheckpointError(
            f"decoder LinearLayer dim_in={from_codes.args['dim_in']} != FSQ dims {fsq_dims}."
        )
    dec_dim = int(from_codes.get("dim"))
    from_codes.require("proj_bias", (True,), default=True)
    from_codes.finish()
    posembs = _by_class(dec, "PositionalEmbeddingAdder", "decoder")
    register_posemb = "none"
    for module in posembs:
        if module.args.get("posemb_type") == "sincos":
            roles["dec_patch_posemb"] = module.name
            if _sincos(module, "decoder") != max_grid:
                raise OfficialCheckpointError("Encoder and decoder sin-cos tables have different sizes.")
        else:
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
    dropout = _one(dec, "MaskedNestedDropout", "decoder")
    nested_mode = dropout.require("size_sampling_mode", ("uniform", "pow2", "uniform_pow2"), default="uniform")
    dropout.get("dim")
    dropout.finish()
    learned = _one(dec, "LearnedNullCond", "decoder", required=False)
    zero = _one(dec, "ZeroNullCond", "decoder", required=False)
    if learned is None and zero is None:
        raise OfficialCheckpointError("decoder has no null-condition module (LearnedNullCond / ZeroNullCond).")
    null_module = learned or zero
    null_prob = float(null_module.get("dropout_prob", 0.0))
    null_module.require("replace_with_single_token", (False,), default=False)
    null_module.get("dim")
    null_module.finish()
    ops = _by_class(dec, "PerSampleOp", "decoder")
    if sorted(_per_sample_op_kind(m) for m in ops) != ["to_first", "to_last"]:
        raise OfficialCheckpointError("decoder needs one channels-first->last and one channels-last->first op.")
    for module in ops:
        module.finish()
    dec_patch_module = _one(dec, "PatchEmbedder", "decoder")
    dec_patch, dec_channels_in, dec_patch_dim = _patch_embedder(dec_patch_module, "decoder")
    packer = _one(dec, "BlockWiseSequencePacker", "decoder")
    packer.require("mask_mode", ("full",))
    per_subseq = packer.require("per_subseq_embs", (True, False), default=False)
    packer.finish()
    time = _one(dec, "TimestepEmbedder", "decoder")
    max_timestep = float(time.get("max_timestep", 1000.0))
    frequency_size = int(time.get("frequency_embedding_size", 256))
    time.get("dim")
    time.require("temb_as_tokens", (False,), default=False)
    time.finish()
    dec_transformer = _one(dec, "FlexTransformer", "decoder")
    dec_t = _transformer(dec_transformer, "decoder", adaln=True)
    if dec_t["adaln_expansion"] == 2 and not per_subseq:
        raise OfficialCheckpointError("decoder: adaLN_expansion=2 requires the packer's per_subseq_embs=True.")
    for module in _by_class(dec, "SequenceUnpacker", "decoder"):
        module.finish()
    out_head = _one(dec, "ToPatchesLinearHead", "decoder")
    head_adaln = out_head.get("adaLN_emb_read_key") is not None
    out_sizes = out_head.get("patch_sizes")
    channels_out = int(out_head.get("channels_out"))
    _readout_head(out_head, "decoder")
    if out_head.get("adaLN_packing_fn_read_key") is not None:
        raise OfficialCheckpointError("decoder head: per-subsequence adaLN packing in the head is not supported.")
    out_head.finish()
    _check_all_visited(dec, "decoder")
    roles.update(
        dec_from_codes=from_codes.name,
        dec_nested_dropout=dropout.name,
        dec_null=null_module.name,
        dec_patch=dec_patch_module.name,
        dec_time=time.name,
        dec_transformer=dec_transformer.name,
        dec_head=out_head.name,
    )

    # Noise module and sampler ----------------------------------------------------------------------------------------
    noise = _Module(
        "flow_matching_noise_module",
        config["flow_matching_noise_module"].get("_target_", ""),
        config["flow_matching_noise_module"],
    )
    noise.require("ln", (True,), default=True)
    noise.require("stratisfied", (False,), default=False)
    noise.get("mode_scale")
    noise.finish()
    pipeline = _Module("pipeline", config["pipeline"].get("_target_", ""), config["pipeline"])
    pipe_channels = pipeline.get("out_channels")
    pipeline.finish()

    # Consistency -------------------------------------------------------------------------------------------------------
    checks = {
        "encoder patch channels": channels_in,
        "decoder patch channels": dec_channels_in,
        "decoder head channels": channels_out,
        "pipeline out_channels": pipe_channels if pipe_channels is not None else latent_channels,
    }
    for what, value in checks.items():
        if int(value) != latent_channels:
            raise OfficialCheckpointError(f"{what} = {value} but the VAE has {latent_channels} latent channels.")
    if dec_patch != patch or list(out_sizes) != [patch, patch]:
        raise OfficialCheckpointError("Encoder, decoder and head must use the same square patch size.")
    if dec_patch_dim != dec_dim or enc_t["dim"] != enc_dim or dec_t["dim"] != dec_dim:
        raise OfficialCheckpointError("Module widths disagree inside the encoder or decoder.")
    if enc_t["mlp_ratio"] != dec_t["mlp_ratio"]:
        raise OfficialCheckpointError("Different encoder/decoder mlp_ratio is not supported.")

    downsample = 1 if vae_config is None else 2 ** (len(vae_config.get("block_out_channels", (0,) * 4)) - 1)
    if image_size is None:
        # The sin-cos tables are built for the training grid: image side = grid * patch * VAE factor.
        image_size = max_grid * patch * downsample
    flextok_config = FlexTokConfig(
        image_size=image_size,
        num_channels=3,
        vae_config=vae_config,
        vae_scaling_factor=float(scaling_factor),
        vae_sample_posterior=bool(sample_posterior),
        patch_size=patch,
        encoder_hidden_size=enc_dim,
        encoder_num_layers=enc_t["depth"],
        encoder_head_dim=enc_t["head_dim"],
        decoder_hidden_size=dec_dim,
        decoder_num_layers=dec_t["depth"],
        decoder_head_dim=dec_t["head_dim"],
        mlp_ratio=enc_t["mlp_ratio"],
        num_registers=int(n_max),
        fsq_levels=levels,
        nested_dropout_mode=nested_mode,
        null_condition_mode="learned" if learned is not None else "zero",
        null_condition_dropout_prob=null_prob,
        register_posemb_type=register_posemb,
        max_timestep=max_timestep,
        time_embedding_size=frequency_size,
        adaln_expansion=dec_t["adaln_expansion"],
        head_adaln=head_adaln,
    )
    return flextok_config, roles


# ------------------------------------------------------------------------------------------------------------------
# State dict
# ------------------------------------------------------------------------------------------------------------------
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
    from .layers import sincos_2d_posemb

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


# ------------------------------------------------------------------------------------------------------------------
# Entry points
# ------------------------------------------------------------------------------------------------------------------
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
    from .loading import resolve_flextok_source

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

    from .modeling_flextok import FlexTokModel

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
