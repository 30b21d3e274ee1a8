"""Reading an official FlexTok checkpoint's Hydra config strictly as data: parsing, the `_target_` allowlist, and
the top-level checks (see `flextok_hf.convert_official`)."""

from __future__ import annotations

import ast

import torch
from safetensors import SafetensorError, safe_open

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
