"""Reading rate-distortion reports and Trainer logs for model cards: markdown tables, settings bullets, summaries.

Used by `flextok_hf.model_card`; every function takes parsed JSON (or a JSON path where noted) and returns text.
"""

from __future__ import annotations

import json
import math
import os

_METRIC_LABELS = {
    "psnr": ("PSNR (dB)", "↑"),
    "mae": ("MAE", "↓"),
    "ssim": ("SSIM", "↑"),
    "recon_accuracy": ("Recon. accuracy", "↑"),
    "fid": ("FID", "↓"),
    "rfid": ("rFID", "↓"),
    "loss": ("Loss", "↓"),
}
_LOG_SKIP_SUFFIXES = ("_runtime", "_samples_per_second", "_steps_per_second")


def read_json_argument(value, name: str):
    if isinstance(value, (str, os.PathLike)):
        if not os.path.isfile(value):
            raise ValueError(f"`{name}` must be an existing JSON file, got {os.fspath(value)!r}.")
        with open(value, encoding="utf-8") as handle:
            return json.load(handle)
    return value


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def budget_rows(metrics: dict | list) -> tuple[str | None, list[dict]]:
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
        if not any(is_number(v) for v in values) or not all(v is None or is_number(v) for v in values):
            continue
        name = key[: -len("_mean")] if key.endswith("_mean") else key
        columns.append((name, key, f"{name}_std" if f"{name}_std" in keys else None))
    return columns


def metric_label(name: str) -> tuple[str, str]:
    if name in _METRIC_LABELS:
        return _METRIC_LABELS[name]
    if name.startswith("fd_"):
        return f"FD ({name[3:]})", "↓"
    return name, ""


def _fmt(value) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, bool) or not is_number(value):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if abs(value) >= 1000:
        return f"{value:.1f}"
    return f"{value:.2f}" if abs(value) >= 1 else f"{value:.4g}"


def metrics_table(rows: list[dict]) -> str:
    """A markdown table with one row per token budget and one column per metric (`mean ± std` when known)."""
    columns = metric_columns(rows)
    header = ["Tokens"] + [" ".join(filter(None, metric_label(name))) for name, _, _ in columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---:|" * len(header)]
    for row in sorted(rows, key=lambda r: r["budget"]):
        cells = [_fmt(row["budget"])]
        for _, mean_key, std_key in columns:
            mean, std = row.get(mean_key), row.get(std_key) if std_key else None
            if is_number(mean) and is_number(std) and math.isfinite(std) and std > 0:
                # Two significant digits of the std, and the mean to the same decimal place.
                decimals = min(max(1 - math.floor(math.log10(std)), 0), 6)
                cells.append(f"{mean:.{decimals}f} ± {std:.{decimals}f}")
            else:
                cells.append(_fmt(mean))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def report_settings(metrics, rows_key: str | None) -> str:
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


def dataset_id(metrics, datasets: list[str]) -> str:
    name = metrics.get("dataset") if isinstance(metrics, dict) else None
    if not isinstance(name, str) or not name:
        return datasets[0] if datasets else "custom"
    return os.path.basename(os.path.normpath(name)) if os.path.isabs(name) or os.path.exists(name) else name


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
            if is_number(entry.get("train_loss")):
                parts.append(f"mean training loss {_fmt(entry['train_loss'])}")
            summary = "Training run: " + ", ".join(parts) + "."
            continue
        if not is_number(entry.get("step")):
            continue
        kept = {
            k: v
            for k, v in entry.items()
            if is_number(v) and (k == "loss" or k.startswith("eval_")) and not k.endswith(_LOG_SKIP_SUFFIXES)
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
        epoch = f"{row['epoch']:.2f}" if is_number(row.get("epoch")) else "–"
        lines.append(f"| {step} | {epoch} | " + " | ".join(_fmt(row.get(k)) for k in keys) + " |")
    return summary, "\n".join(lines)


__all__ = [
    "budget_rows",
    "dataset_id",
    "is_number",
    "metric_columns",
    "metric_label",
    "metrics_table",
    "read_json_argument",
    "report_settings",
    "training_summary_and_table",
]
