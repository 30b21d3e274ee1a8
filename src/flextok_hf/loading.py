"""Where a FlexTok model comes from: one resolver behind every loader.

`FlexTokModel.from_pretrained`, `FlexTokPipeline.from_pretrained` and `pipeline("flextok-tokenize", model=...)` accept
the same sources, locally or as a Hub id:

- a `FlexTokModel` folder (`config.json` with `model_type: "flextok"` + `model.safetensors`);
- a saved pipeline folder (`model_index.json`): a `FlexTokPipeline`, or a text-/class-to-image pipeline, whose
  `flextok/` part is the model;
- an official apple/ml-flextok checkpoint: a folder whose `config.json` is the official Hydra dict (`_target_`
  entries) and/or whose `model.safetensors` holds it in its metadata, or the `.safetensors` file itself. It is
  converted in memory by `flextok_hf.convert_official` (allowlisted `_target_`s read as data, nothing instantiated,
  weights from safetensors only), with a log line saying so.

Any other `config.json` is refused with an error naming what was found: it is never read as a `FlexTokConfig` full of
defaults (which would silently give a randomly initialised model). `resolve_flextok_source` reads configs only; the
weights are read by whoever loads the model.
"""

from __future__ import annotations

import json
import logging
import os
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from .convert_official import VAE_CONFIG_FILE, OfficialSource, is_official_config

logger = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
PIPELINE_INDEX_NAME = "model_index.json"
WEIGHTS_NAME = "model.safetensors"
ADAPTER_CONFIG_NAME = "adapter_config.json"
FLEXTOK_COMPONENT = "flextok"
HUB_KWARGS = ("revision", "token", "cache_dir", "local_files_only", "force_download")


class NotAFlexTokModelError(ValueError):
    """A path or Hub repo that holds neither a FlexTok model or pipeline nor an official FlexTok checkpoint."""


@dataclass(frozen=True)
class FlexTokSource:
    """What `resolve_flextok_source` found.

    Args:
        kind: `"flextok"` (a `FlexTokModel` folder), `"pipeline"` (a saved pipeline folder) or `"official"`.
        name_or_path: the local folder or Hub id, as given (for `"official"`: where the checkpoint was found).
        subfolder: the folder inside it (`"flextok"` after following a pipeline to its model).
        official: for `"official"`, the local checkpoint file, the folder's official `config.json` dict (if any) and
            its `vae_config.json` (if any).
    """

    kind: str
    name_or_path: str
    subfolder: str = ""
    official: OfficialSource | None = None

    @property
    def description(self) -> str:
        where = os.path.join(self.name_or_path, self.subfolder) if self.subfolder else self.name_or_path
        return repr(where)


def hub_kwargs(kwargs: dict) -> dict:
    """The Hub download arguments among `from_pretrained` keyword arguments (left in place)."""
    return {key: kwargs[key] for key in HUB_KWARGS if kwargs.get(key) is not None}


def looks_like_local_path(name: str) -> bool:
    """Whether `name` can only be meant as a local path (absolute, `./`-relative, `~`, a file name, or not a valid
    Hub repo id), so that a missing path is reported as such rather than looked up on the Hub."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    if os.path.isabs(name) or name.startswith((".", "~")) or name.endswith((".safetensors", ".json", ".bin", ".pt")):
        return True
    try:
        validate_repo_id(name)
    except HFValidationError:
        return True
    return False


def offline_error(repo_id: str) -> OSError:
    return OSError(
        f"{repo_id!r} is not a local file or folder, and it could not be downloaded from the Hub (offline, or the Hub "
        f"is unreachable). Connect to the network, or download it elsewhere with `hf download {repo_id} --local-dir "
        "DIR` and pass DIR."
    )


def _offline_errors() -> tuple[type[Exception], ...]:
    from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled

    return (LocalEntryNotFoundError, OfflineModeIsEnabled, ConnectionError)


@contextmanager
def hub_errors(repo_id: str):
    """Hub failures as one clear `OSError` that says what to do."""
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

    try:
        yield
    except RepositoryNotFoundError:
        raise OSError(
            f"{repo_id!r} is neither a local file or folder nor a Hub repo you can access (check the path or repo "
            "id; for a private or gated repo log in with `hf auth login`)."
        ) from None
    except RevisionNotFoundError as error:
        raise OSError(f"{repo_id!r}: no such revision on the Hub ({' '.join(str(error).split())[:200]}).") from None
    except _offline_errors():
        raise offline_error(repo_id) from None


class _Location:
    """A local folder or a Hub repo (+ subfolder) to read single files from."""

    def __init__(self, name_or_path: str, subfolder: str, download_kwargs: dict):
        self.name_or_path, self.subfolder, self.download_kwargs = name_or_path, subfolder, download_kwargs
        self.is_local = os.path.isdir(name_or_path)
        self.unreachable = False  # a Hub file could be neither downloaded nor found in the cache

    def fetch(self, filename: str) -> str | None:
        """The local path of `filename` (downloaded for a Hub repo, or from the cache when offline), or None when the
        folder / repo has none (or, offline, when it is not cached: `unreachable` is then set)."""
        if self.is_local:
            path = os.path.join(self.name_or_path, self.subfolder, filename)
            return path if os.path.isfile(path) else None
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import RemoteEntryNotFoundError

        with hub_errors(self.name_or_path):
            try:
                return hf_hub_download(
                    self.name_or_path, filename, subfolder=self.subfolder or None, **self.download_kwargs
                )
            except RemoteEntryNotFoundError:
                return None
            except _offline_errors():
                self.unreachable = True
                return None


def _read_json(path: str, what: str) -> dict:
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise NotAFlexTokModelError(f"{what} is not valid JSON ({error}); the file is damaged.") from None
    if not isinstance(data, dict):
        raise NotAFlexTokModelError(f"{what} must hold a JSON object, got {type(data).__name__}.")
    return data


def _official_file_source(path: str) -> FlexTokSource:
    """An official checkpoint given as the `.safetensors` file: its folder's official `config.json` (used when the
    file's metadata holds no config) and `vae_config.json` come along."""
    folder = os.path.dirname(os.path.abspath(path))
    config_file = os.path.join(folder, CONFIG_NAME)
    config = None
    if os.path.isfile(config_file):
        data = _read_json(config_file, repr(config_file))
        config = data if is_official_config(data) else None
    vae_config = os.path.join(folder, VAE_CONFIG_FILE)
    official = OfficialSource(path, config, vae_config if os.path.isfile(vae_config) else None)
    return FlexTokSource("official", path, official=official)


def resolve_flextok_source(name_or_path, subfolder: str = "", **download_kwargs) -> FlexTokSource:
    """What `name_or_path` (a local file or folder, or a Hub id) holds; see the module docstring.

    Reads `config.json` / `model_index.json` only (downloads them for a Hub id; `download_kwargs` are those of
    `hf_hub_download`: `revision`, `token`, `cache_dir`, `local_files_only`). For an official checkpoint the
    safetensors file is downloaded too. Raises `FileNotFoundError` for a missing local path, `OSError` for a Hub id
    that cannot be reached or found, and `NotAFlexTokModelError` for anything that is not FlexTok.
    """
    name = os.path.expanduser(os.fspath(name_or_path))
    subfolder = subfolder or ""
    if os.path.isfile(name) and not subfolder:
        return _official_file_source(name)
    if not os.path.isdir(name) and looks_like_local_path(name):
        raise FileNotFoundError(f"No such file or folder: {name!r}. Pass an existing folder or file, or a Hub id.")
    location = _Location(name, subfolder, download_kwargs)
    where = repr(os.path.join(name, subfolder) if subfolder else name)
    index_file = location.fetch(PIPELINE_INDEX_NAME)
    config_file = location.fetch(CONFIG_NAME)
    if index_file is not None and config_file is None:
        index = _read_json(index_file, f"{where}/{PIPELINE_INDEX_NAME}")
        if FLEXTOK_COMPONENT not in index:
            raise NotAFlexTokModelError(
                f"{where} holds a {index.get('_class_name', 'diffusers')} pipeline without a `flextok` component: it "
                "is not a FlexTok pipeline."
            )
        return FlexTokSource("pipeline", name, subfolder)
    if config_file is not None:
        config = _read_json(config_file, f"{where}/{CONFIG_NAME}")
        if config.get("model_type") == "flextok":
            return FlexTokSource("flextok", name, subfolder)
        if is_official_config(config):
            checkpoint = location.fetch(WEIGHTS_NAME)
            if checkpoint is None and location.unreachable:
                raise offline_error(name)
            if checkpoint is None:
                raise FileNotFoundError(
                    f"{where} holds an official FlexTok config.json but no {WEIGHTS_NAME} (the weights are read from "
                    "safetensors only)."
                )
            official = OfficialSource(checkpoint, config, location.fetch(VAE_CONFIG_FILE))
            return FlexTokSource("official", name, subfolder, official)
        found = f"model_type {config['model_type']!r}" if "model_type" in config else f"keys {sorted(config)[:6]}"
        raise NotAFlexTokModelError(
            f"{where} is not a FlexTok model: its config.json is neither a FlexTok config (model_type 'flextok') nor "
            f"an official FlexTok checkpoint config (Hydra `_target_` entries); found {found}. Pass a FlexTok model "
            "or pipeline folder, or an official FlexTok checkpoint."
        )
    checkpoint = location.fetch(WEIGHTS_NAME)
    if checkpoint is not None:  # an official checkpoint whose metadata must hold the config (checked when read)
        return FlexTokSource(
            "official", name, subfolder, OfficialSource(checkpoint, None, location.fetch(VAE_CONFIG_FILE))
        )
    if location.fetch(ADAPTER_CONFIG_NAME) is not None:  # a peft adapter: transformers loads its base model
        return FlexTokSource("flextok", name, subfolder)
    if location.unreachable:
        raise offline_error(name)
    raise NotAFlexTokModelError(
        f"{where} is not a FlexTok model: it has no config.json (FlexTokModel), model_index.json (saved pipeline) or "
        f"{WEIGHTS_NAME} (official checkpoint)."
    )


def resolve_flextok_model_source(name_or_path, subfolder: str = "", **download_kwargs) -> FlexTokSource:
    """Like `resolve_flextok_source`, but a pipeline is followed to its `flextok` model."""
    source = resolve_flextok_source(name_or_path, subfolder, **download_kwargs)
    if source.kind == "pipeline":
        source = resolve_flextok_source(
            name_or_path, os.path.join(source.subfolder, FLEXTOK_COMPONENT), **download_kwargs
        )
        if source.kind != "flextok":
            raise NotAFlexTokModelError(f"The `flextok` part of {name_or_path!r} is not a FlexTokModel folder.")
    return source


def _torch_dtype(dtype) -> torch.dtype:
    if dtype is None or dtype == "auto":
        return torch.float32
    if isinstance(dtype, str):
        if not isinstance(getattr(torch, dtype, None), torch.dtype):
            raise ValueError(f"`dtype` must be a torch dtype or its name, got {dtype!r}.")
        return getattr(torch, dtype)
    return dtype


def load_official_model(source: FlexTokSource, dtype=None, vae_config=None, vae=None):
    """Converts the official checkpoint of `source` in memory into a `FlexTokModel` (eval mode)."""
    from .convert_official import convert_official_checkpoint

    logger.warning(
        "%s is an official FlexTok checkpoint (apple/ml-flextok format): converting it in memory with "
        "flextok_hf.convert_official (allowlisted config read as data, nothing instantiated, weights from "
        "safetensors only). Save the result with `save_pretrained` to skip this step next time.",
        source.description,
    )
    return convert_official_checkpoint(source.official, vae_config=vae_config, vae=vae, dtype=_torch_dtype(dtype))


def load_flextok_model(load_saved, name_or_path, *model_args, **kwargs):
    """`FlexTokModel.from_pretrained`: resolves `name_or_path` first; saved FlexTok models (also the `flextok` part
    of a pipeline) go to `load_saved` (transformers' loader), official checkpoints are converted in memory (extra
    keyword arguments `vae_config` / `vae`, see `convert_official_checkpoint`), anything else is refused."""
    vae_config, vae = kwargs.pop("vae_config", None), kwargs.pop("vae", None)
    if name_or_path is None:  # `from_pretrained(None, config=..., state_dict=...)`
        return load_saved(name_or_path, *model_args, **kwargs)
    source = resolve_flextok_model_source(name_or_path, kwargs.get("subfolder", ""), **hub_kwargs(kwargs))
    if source.kind == "official":
        return load_official_model(
            source, dtype=kwargs.get("dtype", kwargs.get("torch_dtype")), vae_config=vae_config, vae=vae
        )
    if vae_config is not None or vae is not None:
        raise ValueError("`vae_config` / `vae` only apply to official checkpoints; this is a saved FlexTok model.")
    if source.subfolder:
        kwargs["subfolder"] = source.subfolder
    return load_saved(os.fspath(name_or_path), *model_args, **kwargs)


def release_checkpoint_mapping(model: torch.nn.Module, dtype) -> None:
    """After a float32 checkpoint was loaded in another dtype, give the float32 tensors that were kept as they are (the
    VAE, unless `vae_dtype` cast it) their own memory. Called by `FlexTokModel.from_pretrained` after the VAE cast.

    They are views into the memory-mapped safetensors file, and keep the whole mapping alive, including the pages of
    the weights that were read for the conversion: a bf16 load would stay resident at the fp32 file's size plus the
    bf16 copy. Copied out, the mapping closes and the model holds only its own tensors.
    """
    if isinstance(dtype, str) and dtype != "auto":
        dtype = getattr(torch, dtype, None)
    if not isinstance(dtype, torch.dtype) or dtype == torch.float32:
        return
    for module in model.modules():
        for parameter in module.parameters(recurse=False):
            if parameter.dtype == torch.float32 and parameter.device.type == "cpu":
                parameter.data = parameter.data.clone()
        for name, buffer in module.named_buffers(recurse=False):
            if buffer is not None and buffer.dtype == torch.float32 and buffer.device.type == "cpu":
                module._buffers[name] = buffer.clone()


def flextok_config_for(name_or_path, _load_saved=None, **kwargs):
    """The `FlexTokConfig` of any source `resolve_flextok_model_source` accepts (`FlexTokConfig.from_pretrained`): an
    official checkpoint's converted config is read from its header without loading tensors, a pipeline's from its
    `flextok` part, and any other config.json is refused (`NotAFlexTokModelError`), never read as defaults. `kwargs`
    are those of `PreTrainedConfig.from_pretrained`; `_load_saved` is transformers' own loader."""
    from .configuration_flextok import FlexTokConfig
    from .convert_official import official_checkpoint_config

    if _load_saved is None:
        return FlexTokConfig.from_pretrained(name_or_path, **kwargs)
    source = resolve_flextok_model_source(name_or_path, kwargs.pop("subfolder", "") or "", **hub_kwargs(kwargs))
    if source.kind == "official":
        config = official_checkpoint_config(source.official)
        return (config, {}) if kwargs.get("return_unused_kwargs") else config
    for key in ("trust_remote_code", "code_revision"):
        kwargs.pop(key, None)
    if source.subfolder:
        kwargs["subfolder"] = source.subfolder
    return _load_saved(os.fspath(name_or_path), **kwargs)


__all__ = [
    "release_checkpoint_mapping",
    "FlexTokSource",
    "NotAFlexTokModelError",
    "resolve_flextok_source",
    "resolve_flextok_model_source",
    "load_official_model",
    "load_flextok_model",
    "flextok_config_for",
    "hub_errors",
    "offline_error",
    "looks_like_local_path",
]
