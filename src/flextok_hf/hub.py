"""Publishing FlexTok tokenizers, pipelines and priors to the Hugging Face Hub, with their model cards.

```python
from flextok_hf.hub import model_card_from_folder, push_to_hub, render_model_card

card = render_model_card("tokenizer", model_name="FlexTok tiny (MNIST)", description="...",
                         metrics="eval/rate_distortion.json", rate_distortion_plot="eval/rate_distortion.png")
push_to_hub(model, "user/flextok-tiny-mnist", card=card)    # weights + image processor + README + plot, one commit
push_to_hub("runs/tokenizer", "user/flextok-tiny-mnist")     # a saved folder; the card is built from what it holds
```

Works for any object with `save_pretrained` (a transformers `PreTrainedModel` or a diffusers `DiffusionPipeline`).
Card rendering lives in `flextok_hf.model_card` and `flextok_hf.model_card_metrics` (re-exported here).
"""

from __future__ import annotations

import fnmatch
import inspect
import logging
import os
import shutil
import tempfile
from pathlib import Path

from huggingface_hub import HfApi, ModelCard

from .model_card import (
    CARD_KINDS,
    FlexTokModelCard,
    eval_results,
    existing_file,
    infer_card_kind,
    load_json_file,
    model_card_from_folder,
    render_model_card,
)
from .model_card_metrics import metric_columns, metrics_table, training_summary_and_table

logger = logging.getLogger(__name__)

# Never published: Trainer checkpoints and logs, pickles (weights are safetensors only), caches.
DEFAULT_IGNORE_PATTERNS = ["checkpoint-*", "*/checkpoint-*", "runs/*", ".git/*", ".cache/*", "*__pycache__*", "*.pyc"]
DEFAULT_IGNORE_PATTERNS += ["*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl", "*.pickle"]
_PICKLED_WEIGHTS = ["*model*.bin", "*model*.pt", "*model*.pth", "*model*.ckpt"]


def _stage_folder(source: Path, stage: Path, ignore_patterns: list[str]) -> None:
    """Links (or copies) every publishable file of `source` into `stage`, refusing pickled weights."""
    pickled = []
    for path in sorted(source.rglob("*")):
        if not path.is_file():
            continue
        rel = path.relative_to(source).as_posix()
        if any(fnmatch.fnmatch(rel, pattern) for pattern in ignore_patterns):
            if not rel.startswith(("checkpoint-", "runs/")) and any(fnmatch.fnmatch(rel, p) for p in _PICKLED_WEIGHTS):
                pickled.append(rel)
            continue
        target = stage / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.symlink(path.resolve(), target)
        except OSError:  # no symlinks (e.g. Windows without developer mode)
            shutil.copy2(path, target)
    if pickled:
        raise ValueError(f"Refusing to publish pickled weights {pickled}: flextok_hf publishes safetensors only.")


def _save_object(obj, stage: Path) -> None:
    kwargs = {}
    if "safe_serialization" in inspect.signature(obj.save_pretrained).parameters:
        kwargs["safe_serialization"] = True  # diffusers; transformers v5 always writes safetensors
    obj.save_pretrained(str(stage), **kwargs)
    pickled = [p.relative_to(stage).as_posix() for p in stage.rglob("*") if p.suffix in (".bin", ".pt", ".pth")]
    if pickled:
        raise ValueError(f"`save_pretrained` wrote pickled files {pickled}; flextok_hf publishes safetensors only.")


def _add_image_processor(stage: Path) -> None:
    """A FlexTokModel folder without `preprocessor_config.json` gets the processor matching its config, so
    `AutoImageProcessor.from_pretrained(repo_id)` works."""
    config = load_json_file(stage / "config.json")
    if config is None or config.get("model_type") != "flextok" or (stage / "preprocessor_config.json").exists():
        return
    from .configuration_flextok import FlexTokConfig
    from .image_processing_flextok import FlexTokImageProcessor

    FlexTokImageProcessor.from_model_config(FlexTokConfig.from_pretrained(str(stage))).save_pretrained(str(stage))


def push_to_hub(
    obj_or_folder,
    repo_id: str,
    *,
    card: ModelCard | str | os.PathLike | bool | None = None,
    private: bool = False,
    token: str | None = None,
    commit_message: str = "Upload FlexTok model with flextok_hf",
    revision: str | None = None,
    ignore_patterns: list[str] | None = None,
):
    """Publishes a model or pipeline — a saved folder, or an object with `save_pretrained` — in one commit.

    Uploads the weights (safetensors only) and configs, the image processor of a `FlexTokModel`, the card as
    README.md and the card's assets (plots). `card`: a `ModelCard` (e.g. from [`render_model_card`]), a README.md
    path, `False` for none, or `None` to keep the folder's README.md or else render one with
    [`model_card_from_folder`]. Files matching `ignore_patterns` (default `DEFAULT_IGNORE_PATTERNS`: Trainer
    checkpoints, pickles, caches) are skipped. Returns the `CommitInfo` (`.commit_url`, `.repo_url`).
    """
    if not isinstance(repo_id, str) or not repo_id.strip() or repo_id.count("/") > 1:
        raise ValueError(f"`repo_id` must look like 'name' or 'namespace/name', got {repo_id!r}.")
    if card is not None and not isinstance(card, (ModelCard, str, os.PathLike, bool)) or card is True:
        raise TypeError(f"`card` must be a ModelCard, a README.md path, False or None, got {card!r}.")
    if isinstance(card, (str, os.PathLike)):
        card = FlexTokModelCard(Path(existing_file(card, "card")).read_text(encoding="utf-8"))
    patterns = DEFAULT_IGNORE_PATTERNS if ignore_patterns is None else list(ignore_patterns)
    with tempfile.TemporaryDirectory(prefix="flextok_hf_push_") as tmp:
        stage = Path(tmp)
        if isinstance(obj_or_folder, (str, os.PathLike)):
            if not os.path.isdir(obj_or_folder):
                raise ValueError(f"`obj_or_folder` must be an existing folder, got {os.fspath(obj_or_folder)!r}.")
            _stage_folder(Path(obj_or_folder), stage, patterns)
        elif callable(getattr(obj_or_folder, "save_pretrained", None)):
            _save_object(obj_or_folder, stage)
        else:
            raise TypeError(
                "`obj_or_folder` must be a folder or an object with `save_pretrained` (a PreTrainedModel or a "
                f"DiffusionPipeline), got {type(obj_or_folder).__name__}."
            )
        _add_image_processor(stage)
        if card is None and not (stage / "README.md").exists():
            try:
                card = model_card_from_folder(stage, repo_id=repo_id, model_name=repo_id.split("/")[-1])
            except ValueError as err:
                logger.warning("No model card rendered (%s); pushing without README.md.", err)
        if isinstance(card, FlexTokModelCard):
            card.save_folder(stage)
        elif isinstance(card, ModelCard):
            if (stage / "README.md").is_symlink():
                (stage / "README.md").unlink()
            card.save(stage / "README.md")

        api = HfApi(token=token)
        url = api.create_repo(repo_id, private=private, exist_ok=True, token=token)
        return api.upload_folder(
            repo_id=url.repo_id,
            folder_path=str(stage),
            commit_message=commit_message,
            token=token,
            revision=revision,
        )


__all__ = [
    "CARD_KINDS",
    "DEFAULT_IGNORE_PATTERNS",
    "FlexTokModelCard",
    "eval_results",
    "infer_card_kind",
    "metric_columns",
    "metrics_table",
    "model_card_from_folder",
    "push_to_hub",
    "render_model_card",
    "training_summary_and_table",
]
