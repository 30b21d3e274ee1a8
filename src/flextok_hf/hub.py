"""Model cards and Hub publishing for FlexTok tokenizers, pipelines and priors.

```python
from flextok_hf.hub import model_card_from_folder, push_to_hub, render_model_card

card = render_model_card("tokenizer", model_name="FlexTok tiny (MNIST)", description="...",
                         metrics="eval/rate_distortion.json", rate_distortion_plot="eval/rate_distortion.png")
push_to_hub(model, "user/flextok-tiny-mnist", card=card)    # weights + image processor + README + plot, one commit
push_to_hub("runs/tokenizer", "user/flextok-tiny-mnist")     # a saved folder; the card is built from what it holds
```

Cards are rendered from the per-kind templates shipped in `flextok_hf/templates/` with `huggingface_hub.ModelCard`;
metrics from a rate-distortion report become machine-readable `model-index` results (one per metric and token budget).
Works for any object with `save_pretrained` (a transformers `PreTrainedModel` or a diffusers `DiffusionPipeline`).
"""

from __future__ import annotations

import fnmatch
import inspect
import json
import logging
import math
import os
import shutil
import tempfile
from pathlib import Path

from huggingface_hub import EvalResult, HfApi, ModelCard, ModelCardData

logger = logging.getLogger(__name__)

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
_METRIC_LABELS = {
    "psnr": ("PSNR (dB)", "↑"),
    "mae": ("MAE", "↓"),
    "ssim": ("SSIM", "↑"),
    "recon_accuracy": ("Recon. accuracy", "↑"),
    "fid": ("FID", "↓"),
    "rfid": ("rFID", "↓"),
    "loss": ("Loss", "↓"),
}
# Never published: Trainer checkpoints and logs, pickles (weights are safetensors only), caches.
DEFAULT_IGNORE_PATTERNS = ["checkpoint-*", "*/checkpoint-*", "runs/*", ".git/*", ".cache/*", "*__pycache__*", "*.pyc"]
DEFAULT_IGNORE_PATTERNS += ["*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl", "*.pickle"]
_PICKLED_WEIGHTS = ["*model*.bin", "*model*.pt", "*model*.pth", "*model*.ckpt"]
_LOG_SKIP_SUFFIXES = ("_runtime", "_samples_per_second", "_steps_per_second")


class FlexTokModelCard(ModelCard):
    """A `ModelCard` plus the local files it embeds: `assets` maps a path in the repo (next to README.md) to a local
    file. `push_to_hub` in this module uploads them with the card; `save_folder` writes both to a folder."""

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


# ---------------------------------------------------------------------------------------------------------------------
# Reading metrics and training logs
# ---------------------------------------------------------------------------------------------------------------------
def _read_json(value, name: str):
    if isinstance(value, (str, os.PathLike)):
        if not os.path.isfile(value):
            raise ValueError(f"`{name}` must be an existing JSON file, got {os.fspath(value)!r}.")
        with open(value, encoding="utf-8") as handle:
            return json.load(handle)
    return value


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _budget_rows(metrics: dict | list) -> tuple[str | None, list[dict]]:
    """The per-budget rows of a rate-distortion report (the first list of dicts with a `budget` key)."""
    if isinstance(metrics, list):
        candidates = [(None, metrics)]
    elif isinstance(metrics, dict):
        candidates = list(metrics.items())
    else:
        raise TypeError(f"`metrics` must be a dict, a list of rows or a JSON path, got {type(metrics).__name__}.")
    for key, value in candidates:
        if isinstance(value, list) and value and all(isinstance(r, dict) and "budget" in r for r in value):
            return key, value
    raise ValueError("`metrics` has no per-budget rows: expected a list of dicts with a 'budget' key.")


def metric_columns(rows: list[dict]) -> list[tuple[str, str, str | None]]:
    """`(name, mean_key, std_key)` for every numeric column of the rows; `x` / `x_mean` pair with `x_std`."""
    keys = list(dict.fromkeys(key for row in rows for key in row))
    columns = []
    for key in keys:
        if key == "budget" or key.endswith("_std"):
            continue
        values = [row.get(key) for row in rows]
        if not any(_is_number(v) for v in values) or not all(v is None or _is_number(v) for v in values):
            continue
        name = key[: -len("_mean")] if key.endswith("_mean") else key
        columns.append((name, key, f"{name}_std" if f"{name}_std" in keys else None))
    return columns


def _metric_label(name: str) -> tuple[str, str]:
    if name in _METRIC_LABELS:
        return _METRIC_LABELS[name]
    if name.startswith("fd_"):
        return f"FD ({name[3:]})", "↓"
    return name, ""


def _fmt(value) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, bool) or not _is_number(value):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if abs(value) >= 1000:
        return f"{value:.1f}"
    return f"{value:.2f}" if abs(value) >= 1 else f"{value:.4g}"


def metrics_table(rows: list[dict]) -> str:
    """A markdown table with one row per token budget and one column per metric (`mean ± std` when known)."""
    columns = metric_columns(rows)
    header = ["Tokens"] + [" ".join(filter(None, _metric_label(name))) for name, _, _ in columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---:|" * len(header)]
    for row in sorted(rows, key=lambda r: r["budget"]):
        cells = [_fmt(row["budget"])]
        for _, mean_key, std_key in columns:
            mean, std = row.get(mean_key), row.get(std_key) if std_key else None
            if _is_number(mean) and _is_number(std) and math.isfinite(std) and std > 0:
                # Two significant digits of the std, and the mean to the same decimal place.
                decimals = min(max(1 - math.floor(math.log10(std)), 0), 6)
                cells.append(f"{mean:.{decimals}f} ± {std:.{decimals}f}")
            else:
                cells.append(_fmt(mean))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _settings(metrics, rows_key: str | None) -> str:
    """Bullets for the report's scalar settings (and one level of nested scalars, e.g. `linear_probe.accuracy`)."""
    if not isinstance(metrics, dict):
        return ""
    items = []
    for key, value in metrics.items():
        if key == rows_key:
            continue
        if isinstance(value, dict):
            items += [(f"{key}.{k}", v) for k, v in value.items() if isinstance(v, (str, int, float, bool))]
        elif isinstance(value, (str, int, float, bool)) or (
            isinstance(value, list) and len(value) <= 16 and all(isinstance(v, (str, int, float)) for v in value)
        ):
            items.append((key, value))
    return "\n".join(f"- `{key}`: {', '.join(map(_fmt, v)) if isinstance(v, list) else _fmt(v)}" for key, v in items)


def _dataset_id(metrics, datasets: list[str]) -> str:
    name = metrics.get("dataset") if isinstance(metrics, dict) else None
    if not isinstance(name, str) or not name:
        return datasets[0] if datasets else "custom"
    return os.path.basename(os.path.normpath(name)) if os.path.isabs(name) or os.path.exists(name) else name


def eval_results(kind: str, metrics, datasets: list[str] | None = None) -> list[EvalResult]:
    """One `EvalResult` per metric and token budget (the card's machine-readable `model-index`)."""
    _, rows = _budget_rows(metrics)
    dataset = _dataset_id(metrics, datasets or [])
    split = metrics.get("split") if isinstance(metrics, dict) else None
    task_type, task_name = _KINDS[kind][2]
    results = []
    for row in sorted(rows, key=lambda r: r["budget"]):
        for name, mean_key, _ in metric_columns(rows):
            value = row.get(mean_key)
            if not _is_number(value) or not math.isfinite(value):
                continue
            results.append(
                EvalResult(
                    task_type=task_type,
                    task_name=task_name,
                    dataset_type=dataset,
                    dataset_name=dataset,
                    dataset_split=split if isinstance(split, str) else None,
                    metric_type=name,
                    metric_name=f"{_metric_label(name)[0]} @ {row['budget']} tokens",
                    metric_config=f"num_tokens={row['budget']}",
                    metric_value=value,
                )
            )
    return results


def _spaced(items: list, count: int) -> list:
    """`count` evenly spaced items of `items` (first and last included), or all of them if there are fewer."""
    if len(items) <= count:
        return list(items)
    if count <= 1:
        return items[-count:] if count else []
    return [items[round(i * (len(items) - 1) / (count - 1))] for i in range(count)]


def training_summary_and_table(log_history, max_rows: int = 10) -> tuple[str, str]:
    """A one-line summary and a short markdown table (at most `max_rows` steps, evenly spaced) of a Trainer
    `log_history` (a list of dicts, `log_history.json`, or a `trainer_state.json` dict)."""
    if isinstance(log_history, dict):
        log_history = log_history.get("log_history")
    if not isinstance(log_history, list) or not all(isinstance(e, dict) for e in log_history):
        raise ValueError("`training_log` must be a Trainer log_history (a list of dicts) or a JSON file holding one.")
    by_step: dict[int, dict] = {}
    summary = ""
    for entry in log_history:
        if "train_runtime" in entry:
            parts = [f"{entry.get('step', '?')} steps", f"{_fmt(entry.get('epoch'))} epochs"]
            parts.append(f"{entry['train_runtime'] / 60:.1f} min")
            if _is_number(entry.get("train_loss")):
                parts.append(f"mean training loss {_fmt(entry['train_loss'])}")
            summary = "Training run: " + ", ".join(parts) + "."
            continue
        if not _is_number(entry.get("step")):
            continue
        kept = {
            k: v
            for k, v in entry.items()
            if _is_number(v) and (k == "loss" or k.startswith("eval_")) and not k.endswith(_LOG_SKIP_SUFFIXES)
        }
        if kept:
            by_step.setdefault(int(entry["step"]), {}).update(kept, epoch=entry.get("epoch"))
    if not by_step:
        return summary, ""
    # Evenly spaced steps, always including the first and the last, with up to half of the rows given to the
    # evaluation steps (they are rarer than training-loss steps and would otherwise be skipped).
    steps = sorted(by_step)
    if len(steps) > max_rows:
        eval_steps = _spaced([s for s in steps if any(k.startswith("eval_") for k in by_step[s])], max_rows // 2)
        others = _spaced([s for s in steps if s not in eval_steps], max_rows - len(eval_steps))
        steps = sorted(eval_steps + others)
    keys = list(dict.fromkeys(k for s in steps for k in by_step[s] if k != "epoch"))
    lines = ["| Step | Epoch | " + " | ".join(keys) + " |", "|" + "---:|" * (len(keys) + 2)]
    for step in steps:
        row = by_step[step]
        epoch = f"{row['epoch']:.2f}" if _is_number(row.get("epoch")) else "–"
        lines.append(f"| {step} | {epoch} | " + " | ".join(_fmt(row.get(k)) for k in keys) + " |")
    return summary, "\n".join(lines)


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


def _existing_file(path, name: str) -> str | None:
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
        path = _existing_file(path, name)
        if path is not None:
            assets[os.path.basename(path)] = path
            fields[name] = os.path.basename(path)
    results = None
    if metrics is not None:
        metrics = _read_json(metrics, "metrics")
        rows_key, rows = _budget_rows(metrics)
        results = eval_results(kind, metrics, datasets) or None
        dataset = _dataset_id(metrics, datasets)
        fields["metrics_table"] = metrics_table(rows)
        fields["metrics_settings"] = _settings(metrics, rows_key)
        what = "Reconstruction quality" if kind == "tokenizer" else "Quality of the samples"
        tokens = "tokens the decoder sees" if kind == "tokenizer" else "generated tokens"
        fields["metrics_intro"] = (
            f"{what} on `{dataset}` as a function of the number of {tokens} (mean ± std over seeds where the "
            "report has it; ↑ higher is better, ↓ lower is better)."
        )
    if training_log is not None:
        summary, table = training_summary_and_table(_read_json(training_log, "training_log"))
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
def _load_config(path: Path) -> dict | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def infer_card_kind(folder: str | os.PathLike) -> str:
    """ "tokenizer" / "text2image" / "class2image" / "prior", from `model_index.json` or `config.json`."""
    folder = Path(folder)
    index = _load_config(folder / "model_index.json")
    if index is not None:
        class_name = str(index.get("_class_name", ""))
        if "Text" in class_name:
            return "text2image"
        if "Class" in class_name:
            return "class2image"
        return "tokenizer"
    model_type = (_load_config(folder / "config.json") or {}).get("model_type")
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

    index = _load_config(folder / "model_index.json")
    details, class_name = {}, None
    if index is not None:
        class_name = index.get("_class_name")
        components = {k: v for k, v in index.items() if not k.startswith("_") and isinstance(v, list) and v[0]}
        details["Components"] = ", ".join(f"`{name}` ({spec[1]})" for name, spec in components.items())
        for name in components:
            config = _load_config(folder / name / "config.json")
            if config is not None and config.get("model_type") in ("flextok", "flextok_ar"):
                details.update(_config_details(config, folder / name, prefix=f"{name}: "))
    elif (config := _load_config(folder / "config.json")) is not None:
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


# ---------------------------------------------------------------------------------------------------------------------
# Publishing
# ---------------------------------------------------------------------------------------------------------------------
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
    config = _load_config(stage / "config.json")
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
        card = FlexTokModelCard(Path(_existing_file(card, "card")).read_text(encoding="utf-8"))
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
    "metrics_table",
    "model_card_from_folder",
    "push_to_hub",
    "render_model_card",
    "training_summary_and_table",
]
