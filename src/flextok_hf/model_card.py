"""Model cards of FlexTok tokenizers, pipelines and priors, rendered from the per-kind templates.

```python
from flextok_hf.model_card import model_card_from_folder, render_model_card

card = render_model_card("tokenizer", model_name="FlexTok tiny (MNIST)", description="...",
                         metrics="eval/rate_distortion.json", rate_distortion_plot="eval/rate_distortion.png")
card = model_card_from_folder("runs/tokenizer")  # kind, facts, metrics, plots and logs read from a run folder
```

Cards are rendered from the templates shipped in `flextok_hf/templates/` with `huggingface_hub.ModelCard`; metrics
from a rate-distortion report become machine-readable `model-index` results (one per metric and token budget).
Publishing them is `flextok_hf.hub.push_to_hub`.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from .model_card_metrics import (
    budget_rows,
    dataset_id,
    is_number,
    metric_columns,
    metric_label,
    metrics_table,
    read_json_argument,
    report_settings,
    training_summary_and_table,
)

CARD_KINDS = ("tokenizer", "text2image", "class2image", "prior")
TEMPLATES_DIR = Path(__file__).parent / "templates"
LIBRARY_NAME = "flextok_hf"

# Per kind: Hub pipeline tag, default tags and model-index task (type, name). A class-conditional generator gets no
# pipeline tag: the Hub has none for it ("unconditional-image-generation" would be wrong).
# fmt: off
_KINDS = {
    "tokenizer": ("image-to-image", ["image-tokenizer", "rectified-flow"], ("image-to-image", "Image reconstruction")),
    "text2image": ("text-to-image", ["text-to-image", "autoregressive"], ("text-to-image", "Text-to-image generation")),
    "class2image": (None, ["class-conditional", "image-generation", "autoregressive"],
                    ("class-conditional-image-generation", "Class-conditional image generation")),
    "prior": (None, ["autoregressive", "image-token-prior"], ("image-token-generation", "Image-token generation")),
}
# fmt: on


class FlexTokModelCard(ModelCard):
    """A `ModelCard` plus the local files it embeds: `assets` maps a path in the repo (next to README.md) to a local
    file. `flextok_hf.hub.push_to_hub` uploads them with the card; `save_folder` writes both to a folder."""

    def __init__(self, content: str, ignore_metadata_errors: bool = False):
        super().__init__(content, ignore_metadata_errors=ignore_metadata_errors)
        self.assets: dict[str, str] = {}

    def save_folder(self, folder: str | os.PathLike) -> list[str]:
        """Writes `README.md` and the assets into `folder`; returns the written paths."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        readme = folder / "README.md"
        if readme.is_symlink():  # a staged link to the user's file: replace the link, never write through it
            readme.unlink()
        self.save(readme)
        written = [str(readme)]
        for name, source in self.assets.items():
            target = folder / name
            if target.exists() and os.path.samefile(source, target):
                continue
            if target.is_symlink() or target.exists():
                target.unlink()
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
            written.append(str(target))
        return written


def eval_results(kind: str, metrics, datasets: list[str] | None = None) -> list[EvalResult]:
    """One `EvalResult` per metric and token budget (the card's machine-readable `model-index`)."""
    _, rows = budget_rows(metrics)
    dataset = dataset_id(metrics, datasets or [])
    split = metrics.get("split") if isinstance(metrics, dict) else None
    task_type, task_name = _KINDS[kind][2]
    results = []
    for row in sorted(rows, key=lambda r: r["budget"]):
        for name, mean_key, _ in metric_columns(rows):
            value = row.get(mean_key)
            if not is_number(value) or not math.isfinite(value):
                continue
            results.append(
                EvalResult(
                    task_type=task_type,
                    task_name=task_name,
                    dataset_type=dataset,
                    dataset_name=dataset,
                    dataset_split=split if isinstance(split, str) else None,
                    metric_type=name,
                    metric_name=f"{metric_label(name)[0]} @ {row['budget']} tokens",
                    metric_config=f"num_tokens={row['budget']}",
                    metric_value=value,
                )
            )
    return results


# ---------------------------------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------------------------------
def _as_list(value, name: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return list(value)
    raise TypeError(f"`{name}` must be a str or a list of str, got {value!r}.")


def existing_file(path, name: str) -> str | None:
    """`path` as a str (None stays None); a `ValueError` naming `name` unless it is an existing file."""
    if path is None:
        return None
    if not isinstance(path, (str, os.PathLike)) or not os.path.isfile(path):
        raise ValueError(f"`{name}` must be the path of an existing file, got {path!r}.")
    return os.fspath(path)


def render_model_card(
    kind: str,
    *,
    model_name: str,
    description: str,
    license: str = "apache-2.0",
    datasets: str | list[str] | None = None,
    tags: list[str] | None = None,
    pipeline_tag: str | None = None,
    base_model: str | list[str] | None = None,
    metrics: dict | list | str | os.PathLike | None = None,
    rate_distortion_plot: str | os.PathLike | None = None,
    usage: str | None = None,
    training_command: str | None = None,
    training_log: list | dict | str | os.PathLike | None = None,
    loss_curve_plot: str | os.PathLike | None = None,
    training_notes: str | None = None,
    limitations: str | None = None,
    extra_sections: dict[str, str] | list[tuple[str, str]] | None = None,
    details: dict[str, str] | None = None,
    repo_id: str | None = None,
    class_name: str | None = None,
) -> FlexTokModelCard:
    """Renders the model card of a FlexTok `kind` ("tokenizer", "text2image", "class2image" or "prior").

    Args:
        model_name, description: title and opening paragraph.
        license, datasets, tags, pipeline_tag, base_model: card metadata (tags and the pipeline tag default per kind;
            `library_name` is always `flextok_hf`).
        metrics: a rate-distortion report (dict, or its JSON path): every numeric per-budget column becomes a table
            column and one `EvalResult` per budget (model-index).
        rate_distortion_plot, loss_curve_plot: images embedded in the card (uploaded next to README.md).
        usage: Python snippet (default: one per kind, loading `repo_id`, with `class_name` as the pipeline class).
        training_command: the command that trained the model; training_notes: markdown about the training run.
        training_log: a Trainer `log_history` (list, or `log_history.json` / `trainer_state.json` path), shown as a
            short table.
        limitations: replaces the kind's default limitations paragraph; extra_sections: `{title: markdown}`.
        details: `{label: value}` facts shown as a list (e.g. image size, token budget, parameters).
    Returns:
        A [`FlexTokModelCard`] (a `huggingface_hub.ModelCard` whose `assets` lists the embedded files).
    """
    if kind not in CARD_KINDS:
        raise ValueError(f"`kind` must be one of {CARD_KINDS}, got {kind!r}.")
    for name, value in (("model_name", model_name), ("description", description), ("license", license)):
        if not isinstance(value, str) or (name != "description" and not value.strip()):
            raise ValueError(f"`{name}` must be a non-empty str, got {value!r}.")
    default_tag, default_tags = _KINDS[kind][:2]
    datasets = _as_list(datasets, "datasets")
    tags = list(dict.fromkeys(["flextok"] + default_tags + _as_list(tags, "tags")))
    if extra_sections is None:
        extra_sections = []
    elif isinstance(extra_sections, dict):
        extra_sections = list(extra_sections.items())
    if not all(
        isinstance(s, (tuple, list)) and len(s) == 2 and all(isinstance(x, str) for x in s) for s in extra_sections
    ):
        raise TypeError(f"`extra_sections` must map section titles (str) to markdown (str), got {extra_sections!r}.")

    assets, fields = {}, {}  # template variables left out render empty (jinja2's default `Undefined`)
    for name, path in (("rate_distortion_plot", rate_distortion_plot), ("loss_curve_plot", loss_curve_plot)):
        path = existing_file(path, name)
        if path is not None:
            assets[os.path.basename(path)] = path
            fields[name] = os.path.basename(path)
    results = None
    if metrics is not None:
        metrics = read_json_argument(metrics, "metrics")
        rows_key, rows = budget_rows(metrics)
        results = eval_results(kind, metrics, datasets) or None
        dataset = dataset_id(metrics, datasets)
        fields["metrics_table"] = metrics_table(rows)
        fields["metrics_settings"] = report_settings(metrics, rows_key)
        what = "Reconstruction quality" if kind == "tokenizer" else "Quality of the samples"
        tokens = "tokens the decoder sees" if kind == "tokenizer" else "generated tokens"
        fields["metrics_intro"] = (
            f"{what} on `{dataset}` as a function of the number of {tokens} (mean ± std over seeds where the "
            "report has it; ↑ higher is better, ↓ lower is better)."
        )
    if training_log is not None:
        summary, table = training_summary_and_table(read_json_argument(training_log, "training_log"))
        fields.update(training_summary=summary, training_table=table)
    if details:
        fields["details"] = "\n".join(f"- **{label}:** {value}" for label, value in details.items())

    card_data = ModelCardData(
        model_name=model_name,
        license=license,
        library_name=LIBRARY_NAME,
        pipeline_tag=pipeline_tag if pipeline_tag is not None else default_tag,
        tags=tags,
        datasets=datasets or None,
        base_model=base_model,
        eval_results=results,
    )
    card = FlexTokModelCard.from_template(
        card_data,
        template_path=str(TEMPLATES_DIR / f"{kind}.md"),
        model_name=model_name,
        description=description.strip(),
        usage=(usage or "").strip(),
        class_name=class_name,
        training_command=(training_command or "").strip(),
        training_notes=(training_notes or "").strip(),
        limitations=(limitations or "").strip(),
        extra_sections=[(title, body.strip()) for title, body in extra_sections],
        repo_id=repo_id,
        **fields,
    )
    card.assets = assets
    return card


# ---------------------------------------------------------------------------------------------------------------------
# Cards from a run folder
# ---------------------------------------------------------------------------------------------------------------------
def load_json_file(path: Path) -> dict | None:
    """The parsed JSON file at `path`, or None when there is none."""
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def infer_card_kind(folder: str | os.PathLike) -> str:
    """ "tokenizer" / "text2image" / "class2image" / "prior", from `model_index.json` or `config.json`."""
    folder = Path(folder)
    index = load_json_file(folder / "model_index.json")
    if index is not None:
        class_name = str(index.get("_class_name", ""))
        if "Text" in class_name:
            return "text2image"
        if "Class" in class_name:
            return "class2image"
        return "tokenizer"
    model_type = (load_json_file(folder / "config.json") or {}).get("model_type")
    if model_type in ("flextok", "flextok_ar"):
        return "tokenizer" if model_type == "flextok" else "prior"
    raise ValueError(
        f"Cannot tell what {str(folder)!r} holds: no model_index.json and config.json has model_type {model_type!r} "
        "(expected 'flextok' or 'flextok_ar'); pass `kind`."
    )


def _num_parameters(folder: Path) -> int:
    from safetensors import safe_open

    total = 0
    for path in folder.glob("*.safetensors"):
        with safe_open(str(path), framework="pt") as handle:
            total += sum(math.prod(handle.get_slice(key).get_shape()) for key in handle.keys())
    return total


def _config_details(config: dict, folder: Path, prefix: str = "") -> dict[str, str]:
    details = {}
    if config.get("model_type") == "flextok":
        size, k, levels = config["image_size"], config["num_registers"], config.get("fsq_levels") or []
        details[f"{prefix}Image size"] = f"{size}×{size}"
        details[f"{prefix}Token budget"] = f"1 to {k} tokens"
        details[f"{prefix}Codebook"] = f"{math.prod(levels):,} ids (FSQ levels {levels})"
        details[f"{prefix}Latent space"] = "pixels" if config.get("vae_config") is None else "VAE latents"
        details[f"{prefix}Encoder / decoder"] = (
            f"{config['encoder_num_layers']} × {config['encoder_hidden_size']} / "
            f"{config['decoder_num_layers']} × {config['decoder_hidden_size']} (layers × width)"
        )
    elif config.get("model_type") == "flextok_ar":
        condition = config.get("condition_type", "class")
        details[f"{prefix}Conditioning"] = (
            f"{config.get('num_classes')} classes" if condition == "class" else f"text ({condition})"
        )
        details[f"{prefix}Codebook / max tokens"] = f"{config['codebook_size']:,} ids / {config['max_num_tokens']}"
        details[f"{prefix}Transformer"] = f"{config['num_hidden_layers']} × {config['hidden_size']} (layers × width)"
    count = _num_parameters(folder)
    if count:
        details[f"{prefix}Parameters"] = f"{count / 1e6:.2f}M"
    return details


def _sampling_details(index: dict, scheduler_config: dict | None) -> str | None:
    """ "FlexTokFlowHeunScheduler, 5 steps (9 decoder evaluations), guidance 3 (CFG)" from a pipeline's
    `model_index.json` and `scheduler_config.json`; None when the index stores no step count."""
    steps = index.get("num_inference_steps")
    if not isinstance(steps, int) or scheduler_config is None:
        return None
    name = scheduler_config.get("_class_name", "scheduler")
    shift = scheduler_config.get("shift", 1.0)
    evaluations = 2 * steps - 1 if "Heun" in name else steps
    text = f"{name}" + (f" (shift {shift:g})" if shift not in (None, 1.0) else "")
    text += f", {steps} steps ({evaluations} decoder evaluations)"
    scale = index.get("decoder_guidance_scale", index.get("guidance_scale"))
    if scale is not None:
        text += f", guidance {scale:g} ({'APG' if index.get('adaptive_guidance') else 'CFG'})"
    return text


def model_card_from_folder(
    folder: str | os.PathLike, *, kind: str | None = None, repo_id: str | None = None, **overrides
) -> FlexTokModelCard:
    """Renders a card from what a training/evaluation run left in `folder`: `config.json` / `model_index.json` (kind,
    facts, parameter count), `rate_distortion.json` + `.png` (also looked up in `eval/`), `log_history.json` (or
    `trainer_state.json`) + `loss_curve.png`, and `TRAINING.md` / `training_command.txt`. `overrides` go to
    [`render_model_card`] and win over what the folder says."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"`folder` must be an existing directory, got {str(folder)!r}.")
    kind = kind or infer_card_kind(folder)

    def find(*names: str) -> str | None:
        for name in names:
            for place in (folder, folder / "eval"):
                if (place / name).is_file():
                    return str(place / name)
        return None

    index = load_json_file(folder / "model_index.json")
    details, class_name = {}, None
    if index is not None:
        class_name = index.get("_class_name")
        components = {k: v for k, v in index.items() if not k.startswith("_") and isinstance(v, list) and v[0]}
        details["Components"] = ", ".join(f"`{name}` ({spec[1]})" for name, spec in components.items())
        sampling = _sampling_details(index, load_json_file(folder / "scheduler" / "scheduler_config.json"))
        if sampling:
            details["Decoder sampling (stored defaults)"] = sampling
        for name in components:
            config = load_json_file(folder / name / "config.json")
            if config is not None and config.get("model_type") in ("flextok", "flextok_ar"):
                details.update(_config_details(config, folder / name, prefix=f"{name}: "))
    elif (config := load_json_file(folder / "config.json")) is not None:
        details.update(_config_details(config, folder))

    training_notes = Path(find("TRAINING.md")).read_text(encoding="utf-8") if find("TRAINING.md") else None
    command = find("training_command.txt")
    kwargs = dict(
        model_name=folder.resolve().name,
        description="",
        metrics=find("rate_distortion.json"),
        rate_distortion_plot=find("rate_distortion.png"),
        training_log=find("log_history.json", "trainer_state.json"),
        loss_curve_plot=find("loss_curve.png"),
        training_command=Path(command).read_text(encoding="utf-8") if command else None,
        training_notes=training_notes,
        details=details or None,
        repo_id=repo_id,
        class_name=class_name if kind != "prior" else None,
    )
    kwargs.update(overrides)
    return render_model_card(kind, **kwargs)


__all__ = [
    "CARD_KINDS",
    "FlexTokModelCard",
    "eval_results",
    "existing_file",
    "infer_card_kind",
    "load_json_file",
    "model_card_from_folder",
    "render_model_card",
]
