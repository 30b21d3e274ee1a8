"""Where a pipeline is loaded from: a local folder as is, a Hub id as a `snapshot_download` (configs and safetensors
only)."""

from __future__ import annotations

import os

# Files a saved pipeline consists of (what `from_pretrained` downloads from the Hub): safetensors and configs only.
PIPELINE_FILE_PATTERNS = [
    "*.json",
    "*.safetensors",
    "*/*.json",
    "*/*.safetensors",
    "*/*.txt",
    "*/*.model",
    "README.md",
]


def local_pipeline_folder(pretrained_model_name_or_path: str | os.PathLike, kwargs: dict) -> str:
    """The path itself if it is a folder, else a `snapshot_download` of the Hub repo (configs and safetensors only).

    Pops the Hub-only arguments (`revision`, `token`) from `kwargs`; diffusers cannot resolve components from a pip
    package given a Hub id, so pipelines download first and load from the local snapshot.
    """
    path = os.path.expanduser(os.fspath(pretrained_model_name_or_path))
    if os.path.isdir(path):
        return path
    from huggingface_hub import snapshot_download

    from .loading import hub_errors, looks_like_local_path

    if looks_like_local_path(path):
        raise FileNotFoundError(f"No such folder: {path!r}. Pass an existing pipeline folder or a Hub id.")
    with hub_errors(path):
        return snapshot_download(
            path,
            revision=kwargs.pop("revision", None),
            token=kwargs.pop("token", None),
            cache_dir=kwargs.get("cache_dir"),
            local_files_only=kwargs.get("local_files_only", False),
            allow_patterns=PIPELINE_FILE_PATTERNS,
        )


__all__ = ["PIPELINE_FILE_PATTERNS", "local_pipeline_folder"]
