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

Layout: `metadata` (reading the config as data, the allowlist), `settings` (one module's settings, key by key),
`config` (one function per config section -> `FlexTokConfig`), `state_dict` (key mapping), `checkpoint` (entry points).
"""

from .checkpoint import (
    OfficialSource,
    convert_official_checkpoint,
    load_vae_config,
    official_checkpoint_config,
)
from .config import official_config_to_flextok
from .metadata import (
    ALLOWED_TARGETS,
    NO_OP_SETTINGS,
    TOP_LEVEL_KEYS,
    VAE_CONFIG_FILE,
    WRAPPER_TARGETS,
    WRITER_METADATA_KEYS,
    OfficialCheckpointError,
    check_official_config,
    check_targets,
    is_official_config,
    parse_official_config,
    parse_official_metadata,
    read_official_checkpoint,
    read_official_config,
)
from .state_dict import convert_official_state_dict

__all__ = [
    "ALLOWED_TARGETS",
    "NO_OP_SETTINGS",
    "TOP_LEVEL_KEYS",
    "VAE_CONFIG_FILE",
    "WRAPPER_TARGETS",
    "WRITER_METADATA_KEYS",
    "OfficialCheckpointError",
    "OfficialSource",
    "check_official_config",
    "check_targets",
    "convert_official_checkpoint",
    "convert_official_state_dict",
    "is_official_config",
    "load_vae_config",
    "official_checkpoint_config",
    "official_config_to_flextok",
    "parse_official_config",
    "parse_official_metadata",
    "read_official_checkpoint",
    "read_official_config",
]
