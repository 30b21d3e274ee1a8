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

import logging
import math
import time

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .decoding import as_pipeline, default_budgets, iter_decode_at_budgets, sample_seed
from .diagnostics import token_reliance
from .evaluation_data import _check_budgets, _default_processor, _resolve_dataset, load_pixel_values, tokenize_all
from .evaluation_probe import codes_features, linear_probe, linear_probe_from_ids
from .evaluation_report import REPORT_FILES, format_markdown, plot_rate_distortion, write_report, write_report_files
from .metrics.functional import FeatureStatistics, frechet_distance, mae, psnr, ssim
from .scheduling_flextok import describe_scheduler

logger = logging.getLogger(__name__)

_IMAGE_METRICS = ("psnr", "mae", "ssim")


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
    scheduler=None,
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
        scheduler: the decoder's sampler (default: a `FlexTokFlowScheduler`, 20-step official Euler grid); pass a
            saved pipeline's `pipe.scheduler` to evaluate with its sampler.
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
    pipe = as_pipeline(model, scheduler=scheduler)
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
        "scheduler": describe_scheduler(pipe.scheduler),
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


__all__ = [
    "REPORT_FILES",
    "codes_features",
    "load_pixel_values",
    "tokenize_all",
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
