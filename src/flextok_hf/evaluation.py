"""Rate-distortion evaluation of a FlexTok tokenizer and a linear probe on its FSQ codes.

```python
from flextok_hf.evaluation import evaluate_rate_distortion, linear_probe, write_report

results = evaluate_rate_distortion(model, "mnist", num_samples=256, seeds=(0, 1, 2))
results["linear_probe"] = linear_probe(model, "mnist", "mnist")       # train split -> test split
write_report(results, "eval/")     # rate_distortion.json, rate_distortion.md, rate_distortion.png
```

Every image is tokenized once; its first k ids are decoded for every budget k and every decoder seed by
`flextok_hf.decoding.decode_at_budgets` (its noise rule: image i under seed s starts from the same noise as in
`coarse_to_fine(seed=s)`, the training grids and the demo). Per budget the report gives PSNR, MAE and SSIM (each seed's value is the mean over images; the report shows
mean ± sample std over seeds), the Fréchet distance between reconstructions and originals in a feature network's space
(key `fd_<network name>`; by default the shipped classifier, so it is *not* FID), and, when the dataset's labels are
classes of the classifier, the classifier's accuracy on reconstructions (`recon_accuracy`) and on the originals.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .decoding import as_pipeline, default_budgets, iter_decode_at_budgets, sample_seed
from .diagnostics import token_reliance
from .metrics.functional import FeatureStatistics, frechet_distance, mae, psnr, ssim

logger = logging.getLogger(__name__)

REPORT_FILES = ("rate_distortion.json", "rate_distortion.md", "rate_distortion.png")
_IMAGE_METRICS = ("psnr", "mae", "ssim")


def _check_budgets(budgets, num_registers: int) -> list[int]:
    if budgets is None:
        return default_budgets(num_registers)
    if isinstance(budgets, int) or not all(isinstance(k, int) and not isinstance(k, bool) for k in budgets):
        raise TypeError(f"`budgets` must be a list of ints, got {budgets!r}.")
    budgets = sorted(set(budgets))
    if not budgets or budgets[0] < 1 or budgets[-1] > num_registers:
        raise ValueError(f"`budgets` must be non-empty and within [1, {num_registers}] (K), got {budgets}.")
    return budgets


def _resolve_dataset(dataset, split: str):
    from datasets import Dataset

    if isinstance(dataset, (str, os.PathLike)):
        from .data import load_image_dataset

        return load_image_dataset(dataset, split), os.fspath(dataset)
    if isinstance(dataset, Dataset):
        return dataset, (dataset.info.dataset_name or "dataset")
    raise TypeError(f"`dataset` must be a datasets.Dataset or a dataset name, got {type(dataset).__name__}.")


def load_pixel_values(dataset, image_processor, num_samples: int | None, batch_size: int = 256):
    """First `num_samples` rows -> (`pixel_values` `[N, 3, S, S]` in [-1, 1], labels `[N]` or None, label names)."""
    if "image" not in dataset.column_names:
        raise ValueError(f"`dataset` must have an `image` column, got columns {dataset.column_names}.")
    if num_samples is not None:
        if not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"`num_samples` must be a positive int or None, got {num_samples!r}.")
        dataset = dataset.select(range(min(num_samples, len(dataset))))
    chunks = [
        image_processor(dataset[start : start + batch_size]["image"], return_tensors="pt")["pixel_values"]
        for start in range(0, len(dataset), batch_size)
    ]
    label_feature = dataset.features.get("label")
    if label_feature is None or not hasattr(label_feature, "names"):
        return torch.cat(chunks), None, None
    return torch.cat(chunks), torch.as_tensor(list(dataset["label"])), list(label_feature.names)


def _default_processor(model):
    from .image_processing_flextok import FlexTokImageProcessor

    return FlexTokImageProcessor.from_model_config(model.config)


@torch.no_grad()
def tokenize_all(model, pixel_values: torch.Tensor, batch_size: int) -> torch.LongTensor:
    """Images `[N, 3, S, S]` -> all K ids per image, `[N, K]` (on the CPU)."""
    rows = [
        torch.stack(model.tokenize(pixel_values[start : start + batch_size].to(model.device, model.dtype))).cpu()
        for start in range(0, len(pixel_values), batch_size)
    ]
    return torch.cat(rows)


def _mean_std(values) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    values = np.asarray(values, dtype=np.float64)
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0


def _feature_network(feature_network, feature_network_name, classifier_loader):
    if feature_network is None:
        from .metrics.classifier import ClassifierFeatureNetwork

        network = ClassifierFeatureNetwork(classifier_loader())
        return network, network.feature_network_name
    if not isinstance(feature_network, nn.Module):
        raise TypeError(f"`feature_network` must be a torch.nn.Module, got {type(feature_network).__name__}.")
    name = feature_network_name or getattr(feature_network, "feature_network_name", None)
    if not isinstance(name, str) or not name or any(c.isspace() for c in name):
        raise ValueError(
            "`feature_network_name` must name a custom `feature_network` (it forms the key fd_<name>; no "
            f"whitespace), got {name!r}."
        )
    return feature_network.eval(), name


@torch.no_grad()
def _reference_statistics(pixel_values, network, classifier, targets, batch_size: int):
    """Feature statistics of the original images and the classifier's accuracy on them (None without `targets`)."""
    statistics, correct = FeatureStatistics(), 0
    for start in range(0, len(pixel_values), batch_size):
        batch = pixel_values[start : start + batch_size]
        statistics.update(network(batch))
        if targets is not None:
            correct += int((classifier.classify(batch).cpu() == targets[start : start + batch_size]).sum())
    return statistics, (correct / len(pixel_values) if targets is not None else None)


class _RateDistortionAccumulator:
    """Per (seed, budget): per-image scores, statistics of the reconstructions' features, classifier hits."""

    def __init__(self, num_seeds: int, budgets: list[int], num_images: int):
        self.budgets = budgets
        self.scores = {name: np.zeros((num_seeds, len(budgets), num_images)) for name in _IMAGE_METRICS}
        self.features = [[FeatureStatistics() for _ in budgets] for _ in range(num_seeds)]
        self.correct = np.zeros((num_seeds, len(budgets)), dtype=np.int64)
        self.num_images = num_images
        self.has_accuracy = False

    def add(self, seed_slot: int, slots, images, scores: dict, features: torch.Tensor, hits=None) -> None:
        """One decoded batch: budget slots `[B]`, image indices `[B]`, per-image `scores`, `features` `[B, D]`,
        classifier `hits` `[B]` (bool) or None."""
        for name, value in scores.items():
            self.scores[name][seed_slot, slots.numpy(), images.numpy()] = value.double().cpu().numpy()
        for b in slots.unique().tolist():
            rows = (slots == b).nonzero().squeeze(1)
            self.features[seed_slot][b].update(features[rows.to(features.device)])
            if hits is not None:
                self.correct[seed_slot, b] += int(hits[rows].sum())
        self.has_accuracy = hits is not None

    def summary(self, real: FeatureStatistics, fd_key: str) -> list[dict]:
        """One dict per budget: each metric's mean and `<key>_std` over seeds, plus the `per_seed` values."""
        rows = []
        for b, budget in enumerate(self.budgets):
            per_seed = {name: values[:, b].mean(axis=1).tolist() for name, values in self.scores.items()}
            per_seed[fd_key] = [
                frechet_distance(stats[b].mean, stats[b].covariance, real.mean, real.covariance)
                for stats in self.features
            ]
            per_seed["recon_accuracy"] = (self.correct[:, b] / self.num_images).tolist() if self.has_accuracy else None
            row = {"budget": budget}
            for name, values in per_seed.items():
                row[name], row[f"{name}_std"] = _mean_std(values) if values is not None else (None, None)
            rows.append({**row, "per_seed": per_seed})
        return rows


@torch.no_grad()
def evaluate_rate_distortion(
    model,
    dataset,
    budgets: list[int] | None = None,
    num_samples: int | None = 256,
    seeds=(0, 1, 2),
    num_inference_steps: int = 20,
    guidance_scale: float = 7.5,
    adaptive_guidance: bool = True,
    batch_size: int = 64,
    image_processor=None,
    feature_network: nn.Module | None = None,
    feature_network_name: str | None = None,
    classifier=None,
    split: str = "test",
    progress_bar: bool = True,
) -> dict:
    """Reconstruction quality of a `FlexTokModel` as a function of the token budget.

    Args:
        model: a `FlexTokModel` (evaluated in eval mode on its device).
        dataset: a `datasets.Dataset` with an `image` column (and optionally a ClassLabel `label`), or a name for
            `load_image_dataset(name, split)`.
        budgets: token budgets k (default 1, 2, 4, ..., K).
        num_samples: evaluate the first N rows (None: all).
        seeds: decoder seeds; image i with seed s always starts from the same noise, whatever k.
        num_inference_steps, guidance_scale, adaptive_guidance: decoder sampling (`FlexTokPipeline.detokenize`).
        batch_size: images per tokenize call and per decoder batch (one budget per decoder batch).
        image_processor: turns dataset images into `pixel_values` (default `FlexTokImageProcessor.from_model_config`).
        feature_network: module mapping images `[B, 3, S, S]` in [-1, 1] to features `[B, D]` for the Fréchet
            distance (default: the shipped classifier's penultimate features); `feature_network_name` (or the
            module's `feature_network_name` attribute) names the result key `fd_<name>`.
        classifier: a `FlexTokImageClassifier` for accuracies (default: the shipped one); accuracies are reported
            only when every class name of `dataset` is one of its labels.
    Returns:
        A dict with the settings, `original_accuracy` (or None) and `per_budget`: one dict per budget with `psnr`,
        `mae`, `ssim`, `fd_<name>` and `recon_accuracy` (None without labels), each with a `<key>_std` over seeds, and
        `per_seed` lists.
    """
    from .metrics.classifier import load_default_classifier

    start_time = time.perf_counter()
    config = model.config
    budgets = _check_budgets(budgets, config.num_registers)
    seeds = [int(seed) for seed in seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"`seeds` must be a non-empty list of distinct ints, got {seeds!r}.")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"`batch_size` must be a positive int, got {batch_size!r}.")
    if guidance_scale != 1 and getattr(config, "null_condition_dropout_prob", 1.0) == 0:
        logger.warning(
            "guidance_scale=%s but the model was configured without null-condition dropout.", guidance_scale
        )
    model.eval()
    dataset, dataset_name = _resolve_dataset(dataset, split)
    processor = image_processor if image_processor is not None else _default_processor(model)
    pixel_values, labels, label_names = load_pixel_values(dataset, processor, num_samples)
    num_images = len(pixel_values)
    if num_images < 2:
        raise ValueError(f"Need at least 2 images for the Fréchet distance, got {num_images}.")

    loaded = {}

    def shipped_classifier():
        if "classifier" not in loaded:
            loaded["classifier"] = load_default_classifier(model.device)
        return loaded["classifier"]

    network, network_name = _feature_network(feature_network, feature_network_name, shipped_classifier)
    fd_key = f"fd_{network_name}"
    label_map = None
    if labels is not None:
        classifier = classifier if classifier is not None else shipped_classifier()
        label_map = classifier.label_ids_for(label_names)
    targets = None if label_map is None else torch.as_tensor(label_map)[labels]

    token_ids = tokenize_all(model, pixel_values, batch_size)
    real_features, original_accuracy = _reference_statistics(
        pixel_values, network, classifier if targets is not None else None, targets, batch_size
    )

    accumulator = _RateDistortionAccumulator(len(seeds), budgets, num_images)
    win_size = min(11, config.image_size - (1 - config.image_size % 2))
    pipe = as_pipeline(model)
    num_chunks = math.ceil(num_images / batch_size)
    bar = tqdm(total=len(seeds) * num_chunks * len(budgets), desc="Rate-distortion", disable=not progress_bar)
    for s, seed in enumerate(seeds):
        decoded = iter_decode_at_budgets(
            pipe,
            token_ids,
            budgets,
            seed=seed,
            batch_size=batch_size,
            num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale,
            adaptive_guidance=adaptive_guidance,
        )
        for start, b, reconstructions in decoded:
            reconstructions = reconstructions.clamp(-1, 1)
            images = torch.arange(start, start + reconstructions.shape[0])
            slots = torch.full_like(images, b)
            references = pixel_values[images].to(reconstructions.device)
            scores = {
                "psnr": psnr(reconstructions, references),
                "mae": mae(reconstructions, references),
                "ssim": ssim(reconstructions, references, win_size=win_size),
            }
            hits = None
            if targets is not None:
                hits = classifier.classify(reconstructions).cpu() == targets[images]
            accumulator.add(s, slots, images, scores, network(reconstructions), hits)
            bar.update(1)
    bar.close()

    return {
        "model": getattr(config, "name_or_path", "") or type(model).__name__,
        "dataset": dataset_name,
        "num_samples": num_images,
        "image_size": config.image_size,
        "num_registers": config.num_registers,
        "budgets": budgets,
        "seeds": seeds,
        "num_inference_steps": num_inference_steps,
        "guidance_scale": guidance_scale,
        "adaptive_guidance": bool(adaptive_guidance),
        "ssim_win_size": win_size,
        "feature_network": network_name,
        "fd_key": fd_key,
        "classifier": getattr(classifier, "feature_network_name", None) if targets is not None else None,
        "original_accuracy": original_accuracy,
        "per_budget": accumulator.summary(real_features, fd_key),
        "token_reliance": _token_reliance_summary(model, pixel_values[: max(batch_size, 2)], seeds[0]),
        "runtime_seconds": time.perf_counter() - start_time,
    }


def _token_reliance_summary(model, pixel_values: torch.Tensor, seed: int) -> dict:
    """The diagnostic of `flextok_hf.diagnostics.token_reliance` on (up to one batch, at least 2 of) the evaluated
    images."""
    report = token_reliance(model, pixel_values=pixel_values.to(model.device), seed=seed)
    return {
        "gap": report["gap"],
        "num_images": report["num_images"],
        "per_sigma": {str(s): v for s, v in report["per_sigma"].items()},
    }


# ---------------------------------------------------------------------------------------------------------------------
# Linear probe on FSQ codes
# ---------------------------------------------------------------------------------------------------------------------
def codes_features(token_ids: torch.Tensor, quantizer, budget: int) -> np.ndarray:
    """Ids `[N, K]` -> FSQ codes of the first `budget` tokens, zero-padded to K and flattened: `[N, K * d]`."""
    codes = quantizer.ids_to_codes(torch.as_tensor(token_ids).long().cpu())
    codes[:, budget:] = 0
    return codes.flatten(1).numpy()


def linear_probe_from_ids(
    token_ids_train,
    labels_train,
    token_ids_test,
    labels_test,
    quantizer,
    budgets: list[int] | None = None,
    max_iter: int = 1000,
    C: float = 1.0,
) -> dict:
    """Logistic regression (scikit-learn, standardised inputs) on the zero-padded codes of the first k tokens.

    Args:
        token_ids_train / token_ids_test: ids `[N, K]` (tensor, array or nested lists).
        labels_train / labels_test: integer labels `[N]`.
        quantizer: maps ids to codes (`FlexTokFSQ`, i.e. `model.quantizer`).
        budgets: k values (default 1, 2, 4, ..., K); one probe is fit per budget.
        max_iter, C: passed to `LogisticRegression`.
    Returns:
        `{"budgets", "accuracy" (test, one per budget), "train_accuracy", "majority_baseline", "num_train",
        "num_test"}`.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    ids_train, ids_test = torch.as_tensor(token_ids_train), torch.as_tensor(token_ids_test)
    y_train, y_test = np.asarray(labels_train).reshape(-1), np.asarray(labels_test).reshape(-1)
    for name, ids, labels in (("train", ids_train, y_train), ("test", ids_test, y_test)):
        if ids.ndim != 2 or ids.shape[0] != len(labels) or ids.shape[0] == 0:
            raise ValueError(
                f"`token_ids_{name}` must be [N, K] with one label per row, got ids {tuple(ids.shape)} and "
                f"{len(labels)} labels."
            )
    if ids_train.shape[1] != ids_test.shape[1]:
        raise ValueError(f"train and test ids differ in K: {ids_train.shape[1]} vs {ids_test.shape[1]}.")
    if len(np.unique(y_train)) < 2:
        raise ValueError("`labels_train` must contain at least 2 classes.")
    budgets = _check_budgets(budgets, ids_train.shape[1])
    accuracy, train_accuracy = [], []
    for budget in budgets:
        probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=max_iter, C=C))
        probe.fit(codes_features(ids_train, quantizer, budget), y_train)
        train_accuracy.append(float(probe.score(codes_features(ids_train, quantizer, budget), y_train)))
        accuracy.append(float(probe.score(codes_features(ids_test, quantizer, budget), y_test)))
    _, counts = np.unique(y_test, return_counts=True)
    return {
        "budgets": budgets,
        "accuracy": accuracy,
        "train_accuracy": train_accuracy,
        "majority_baseline": float(counts.max() / counts.sum()),
        "num_train": int(len(y_train)),
        "num_test": int(len(y_test)),
    }


@torch.no_grad()
def linear_probe(
    model,
    train_dataset,
    test_dataset,
    budgets: list[int] | None = None,
    num_train: int | None = 2000,
    num_test: int | None = 500,
    batch_size: int = 64,
    image_processor=None,
    **probe_kwargs,
) -> dict:
    """Tokenize labelled images and run `linear_probe_from_ids` (one test accuracy per budget).

    `train_dataset` / `test_dataset` are `datasets.Dataset`s with `image` and ClassLabel `label` columns, or names for
    `load_image_dataset` (their "train" and "test" splits)."""
    model.eval()
    processor = image_processor if image_processor is not None else _default_processor(model)
    splits = []
    for dataset, split, limit in ((train_dataset, "train", num_train), (test_dataset, "test", num_test)):
        dataset, name = _resolve_dataset(dataset, split)
        pixel_values, labels, _ = load_pixel_values(dataset, processor, limit)
        if labels is None:
            raise ValueError(f"The linear probe needs a ClassLabel `label` column; {name!r} has none.")
        splits.append((tokenize_all(model, pixel_values, batch_size), labels.numpy()))
    (ids_train, y_train), (ids_test, y_test) = splits
    return linear_probe_from_ids(ids_train, y_train, ids_test, y_test, model.quantizer, budgets, **probe_kwargs)


# ---------------------------------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------------------------------
def _cell(row: dict, key: str, digits: int) -> str:
    if row.get(key) is None:
        return "–"
    return f"{row[key]:.{digits}f} ± {row[f'{key}_std']:.{digits}f}"


def format_markdown(results: dict) -> str:
    """The markdown report: settings, then one table row per budget."""
    fd_key = results["fd_key"]
    probe = results.get("linear_probe")
    probe_by_budget = dict(zip(probe["budgets"], probe["accuracy"])) if probe else {}
    header = "| budget (tokens) | PSNR (dB) | MAE | SSIM | FD (`" + fd_key + "`) | recon accuracy |"
    rule = "|---|---|---|---|---|---|"
    if probe:
        header, rule = header + " linear probe |", rule + "---|"
    lines = [
        f"# Rate-distortion: `{results['model']}` on `{results['dataset']}`",
        "",
        f"- {results['num_samples']} images at {results['image_size']}x{results['image_size']}, K = "
        f"{results['num_registers']} registers; decoder seeds {results['seeds']}, {results['num_inference_steps']} "
        f"steps, guidance scale {results['guidance_scale']} ({'APG' if results['adaptive_guidance'] else 'CFG'}).",
        "- Values are mean ± sample std over decoder seeds; each seed's value is the mean over images. PSNR/MAE on "
        f"[-1, 1] images (data range 2); SSIM with a {results['ssim_win_size']}-px Gaussian window.",
        f"- FD: Fréchet distance between reconstructions and originals in the feature space of "
        f"`{results['feature_network']}` (not FID).",
    ]
    if results.get("original_accuracy") is not None:
        lines.append(
            f"- Classifier `{results['classifier']}`: accuracy on the original images "
            f"{100 * results['original_accuracy']:.2f} %; `recon accuracy` is its accuracy on the reconstructions."
        )
    if probe:
        lines.append(
            f"- Linear probe: logistic regression on the FSQ codes of the first k tokens (zero-padded to K), "
            f"{probe['num_train']} train / {probe['num_test']} test images; majority baseline "
            f"{probe['majority_baseline']:.3f}."
        )
    reliance = results.get("token_reliance")
    if reliance:
        per_sigma = "; ".join(
            f"sigma {sigma}: {values['true']:.4f} / {values['shuffled']:.4f} / {values['null']:.4f}"
            for sigma, values in reliance["per_sigma"].items()
        )
        lines.append(
            f"- Token reliance (does the decoder read its tokens?): relative RF-loss gap {reliance['gap']:.3f} between "
            f"shuffled and true registers (0 = ignored), on {reliance['num_images']} images; RF loss true / shuffled / "
            f"null: {per_sigma}."
        )
    lines += ["", header, rule]
    for row in results["per_budget"]:
        cells = [
            str(row["budget"]),
            _cell(row, "psnr", 2),
            _cell(row, "mae", 4),
            _cell(row, "ssim", 4),
            _cell(row, fd_key, 3),
            _cell(row, "recon_accuracy", 3),
        ]
        if probe:
            value = probe_by_budget.get(row["budget"])
            cells.append("–" if value is None else f"{value:.3f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_rate_distortion(results: dict, path: str) -> None:
    """PSNR vs budget (log2 axis, error bars over seeds); second panel: accuracies if labels exist, else SSIM."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    rows = results["per_budget"]
    budgets = [row["budget"] for row in rows]
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.errorbar(budgets, [r["psnr"] for r in rows], yerr=[r["psnr_std"] for r in rows], marker="o", capsize=3)
    left.set(xlabel="tokens (k)", ylabel="PSNR (dB)", title="Rate-distortion")
    probe = results.get("linear_probe")
    if rows[0].get("recon_accuracy") is not None:
        right.errorbar(
            budgets,
            [r["recon_accuracy"] for r in rows],
            yerr=[r["recon_accuracy_std"] for r in rows],
            marker="o",
            capsize=3,
            label="classifier on reconstructions",
        )
        right.axhline(results["original_accuracy"], color="gray", linestyle="--", label="classifier on originals")
        right.set(ylabel="accuracy", title="Recognisability", ylim=(0, 1.02))
    else:
        right.errorbar(budgets, [r["ssim"] for r in rows], yerr=[r["ssim_std"] for r in rows], marker="o", capsize=3)
        right.set(ylabel="SSIM", title="Structural similarity")
    if probe:
        right.plot(probe["budgets"], probe["accuracy"], marker="s", label="linear probe on codes")
    if right.get_legend_handles_labels()[0]:
        right.legend(loc="lower right", fontsize=8)
    right.set_xlabel("tokens (k)")
    for axis in (left, right):
        axis.set_xscale("log", base=2)
        axis.set_xticks(budgets, [str(k) for k in budgets])
        axis.grid(alpha=0.3)
    figure.suptitle(f"{results['model']} on {results['dataset']} ({results['num_samples']} images)", fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def write_report_files(results: dict, output_dir, file_names, to_markdown, plot) -> dict[str, str]:
    """Writes `results` as JSON, `to_markdown(results)` and `plot(results, path)` to the `.json` / `.md` / `.png` of
    `file_names` in `output_dir`; returns the paths by extension."""
    os.makedirs(output_dir, exist_ok=True)
    paths = {name.rsplit(".", 1)[1]: os.path.join(output_dir, name) for name in file_names}
    with open(paths["json"], "w", encoding="utf-8") as handle:
        json.dump(results, handle, indent=2)
    with open(paths["md"], "w", encoding="utf-8") as handle:
        handle.write(to_markdown(results))
    plot(results, paths["png"])
    return paths


def write_report(results: dict, output_dir: str | os.PathLike) -> dict[str, str]:
    """Write `rate_distortion.json`, `rate_distortion.md` and `rate_distortion.png`; returns their paths."""
    return write_report_files(results, output_dir, REPORT_FILES, format_markdown, plot_rate_distortion)


__all__ = [
    "default_budgets",
    "sample_seed",
    "evaluate_rate_distortion",
    "format_markdown",
    "linear_probe",
    "linear_probe_from_ids",
    "plot_rate_distortion",
    "write_report",
    "write_report_files",
]
