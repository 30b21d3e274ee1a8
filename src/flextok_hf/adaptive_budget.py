"""Per-image adaptive token budgets: the smallest k whose reconstruction meets a quality target.

```python
out = pipe(images, num_tokens="auto", quality_target=25.0)  # the smallest budget reaching 25 dB PSNR per image
out.num_tokens, out.quality, out.target_met  # e.g. [4, 16, 32], [25.8, 25.1, 23.0], [True, True, False]
ids = pipe.tokenize(images, num_tokens="auto", quality_target=0.05, quality_metric="feature_distance")
```

How the budget of each image is chosen (`choose_num_tokens`):

1. The image is tokenized once (all K ids) and one decoder noise is drawn per image; every decode of that image,
   whatever its budget, starts from this noise (the pipeline's noise rule).
2. *Search*: the candidate budgets (1, 2, 4, ..., K, clipped to `[min_tokens, max_tokens]`, both bounds included)
   are decoded with `search_num_inference_steps` Euler steps (default `max(1, num_inference_steps // 10)`) and each
   reconstruction is scored against its input. With fewer steps than the final decode, the search *bisects* the
   candidates of every image at once (quality grows with the budget): each round decodes one candidate per undecided
   image, all images in one mixed-budget batch, so J candidates take ceil(log2(J + 1)) rounds (3 for 1, 2, ..., 32).
   With `search_num_inference_steps == num_inference_steps` every candidate is decoded (one batch) and the choice is
   exact, without relying on monotonic quality.
3. *Verification*: each image is decoded at full `num_inference_steps` at the smallest candidate that met the target in
   the search (the largest candidate if none did). An image whose full-step reconstruction misses the target moves to
   the next larger candidate and is decoded again, until it meets the target or reaches the largest candidate. An
   image that cannot meet the target gets the largest candidate, `target_met=False`, and a warning says so.

So the returned `quality` is always that of the returned reconstruction, and the chosen budget is the smallest
candidate >= the search's pick whose full-step reconstruction meets the target. When the search runs at the full
number of steps (`search_num_inference_steps=num_inference_steps`), no verification decode is needed and the choice is
exactly the smallest sufficient candidate; with fewer search steps it is that budget whenever the cheap search does
not overestimate the smallest sufficient one (see `examples/benchmarks/adaptive_budget.py` for the agreement rate).
The bisecting search costs about ceil(log2(J + 1)) * s / S of one full decode of the batch (s search steps, S final
steps); the verification about one full decode plus the retries.

Quality metrics (`quality_metric`):
- `"psnr"` (default): PSNR in dB of the reconstruction against the processed input, higher is better; the target is a
  minimum in (0, 100].
- `"feature_distance"`: cosine distance (1 - cos) between a feature network's embeddings of the reconstruction and of
  the input, lower is better; the target is a maximum in [0, 2]. The default network is the classifier shipped with
  the package (`flextok_hf.metrics.classifier`); pass any `feature_network` mapping images `[B, 3, H, W]` in [-1, 1]
  to features `[B, D]`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers.utils import BaseOutput
from torch import nn

from .metrics.functional import PSNR_MAX_DB, psnr
from .scheduling_flextok import load_flow_scheduler

logger = logging.getLogger(__name__)

AUTO = "auto"
# name -> (higher is better, lowest allowed target, highest allowed target, description)
QUALITY_METRICS = {
    "psnr": (True, 0.0, PSNR_MAX_DB, "PSNR in dB"),
    "feature_distance": (False, 0.0, 2.0, "classifier-feature cosine distance"),
}
AUTO_PARAMETERS = ("quality_target", "min_tokens", "max_tokens", "search_num_inference_steps", "feature_network")


@dataclass
class FlexTokAutoBudgetOutput(BaseOutput):
    """Output of [`FlexTokPipeline.choose_num_tokens`].

    Args:
        token_ids: all K ids of each image (its first `num_tokens[i]` ids are its adaptive tokenization).
        num_tokens: the chosen budget per image.
        quality: the metric of the returned reconstruction of each image (at its chosen budget, full steps).
        target_met: whether that reconstruction meets the image's target.
        latents: the final latents `[N, C, h, w]` of the reconstructions at the chosen budgets.
        images: the reconstructions `[N, 3, H, W]` (decoder output, unclamped, about [-1, 1]).
        candidate_budgets: the budgets searched, ascending.
        search_quality: `[N, J]` the metric of the candidates decoded in the search (fewer steps, same noise); NaN
            for candidates the bisection did not need.
        quality_metric: the metric's name; quality_target: the target of each image.
    """

    token_ids: list[torch.LongTensor]
    num_tokens: list[int]
    quality: list[float]
    target_met: list[bool]
    latents: torch.Tensor
    images: torch.Tensor
    candidate_budgets: list[int]
    search_quality: torch.Tensor
    quality_metric: str
    quality_target: list[float]


# ---------------------------------------------------------------------------------------------------------------------
# Arguments
# ---------------------------------------------------------------------------------------------------------------------
def check_quality_metric(quality_metric) -> str:
    if not isinstance(quality_metric, str) or quality_metric not in QUALITY_METRICS:
        raise ValueError(f"`quality_metric` must be one of {tuple(QUALITY_METRICS)}, got {quality_metric!r}.")
    return quality_metric


def allowed_target_range(quality_metric: str) -> str:
    higher_is_better, low, high, description = QUALITY_METRICS[check_quality_metric(quality_metric)]
    if higher_is_better:
        return f"a minimum {description} in ({low:g}, {high:g}]"
    return f"a maximum {description} in [{low:g}, {high:g}]"


def check_quality_target(quality_target, quality_metric: str, batch_size: int) -> list[float]:
    """`quality_target` (a number, or one per image) -> one float per image; `ValueError` naming the allowed range."""
    higher_is_better, low, high, _ = QUALITY_METRICS[check_quality_metric(quality_metric)]
    if quality_target is None:
        raise ValueError(f"`num_tokens='auto'` needs `quality_target`: {allowed_target_range(quality_metric)}.")
    if isinstance(quality_target, torch.Tensor):
        quality_target = quality_target.tolist()
    targets = list(quality_target) if isinstance(quality_target, (list, tuple)) else [quality_target] * batch_size
    if len(targets) != batch_size:
        raise ValueError(
            f"`quality_target` has {len(targets)} entries but {batch_size} images were given; pass one number or "
            "one per image."
        )
    checked = []
    for index, target in enumerate(targets):
        name = "quality_target" if not isinstance(quality_target, (list, tuple)) else f"quality_target[{index}]"
        if isinstance(target, bool) or not isinstance(target, (int, float)):
            raise TypeError(f"`{name}` must be a number ({allowed_target_range(quality_metric)}), got {target!r}.")
        target = float(target)
        in_range = (low < target <= high) if higher_is_better else (low <= target <= high)
        if not math.isfinite(target) or not in_range:
            raise ValueError(f"`{name}` must be {allowed_target_range(quality_metric)}, got {target!r}.")
        checked.append(target)
    return checked


def _check_budget(name: str, value, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"`{name}` must be an int in [{low}, {high}], got {value!r}.")
    if not low <= value <= high:
        raise ValueError(f"`{name}` must be in [{low}, {high}], got {value}.")
    return int(value)


def candidate_budgets(num_registers: int, min_tokens: int | None = None, max_tokens: int | None = None) -> list[int]:
    """1, 2, 4, ..., K clipped to `[min_tokens, max_tokens]`, with both bounds included (ascending)."""
    low = 1 if min_tokens is None else _check_budget("min_tokens", min_tokens, 1, num_registers)
    high = num_registers if max_tokens is None else _check_budget("max_tokens", max_tokens, 1, num_registers)
    if low > high:
        raise ValueError(f"`min_tokens` ({low}) must be <= `max_tokens` ({high}).")
    powers = [2**i for i in range(int(math.log2(num_registers)) + 1)]
    return sorted({low, high, *(k for k in powers if low < k < high)})


def check_auto_arguments(num_tokens, **auto_arguments) -> None:
    """The adaptive-budget arguments only make sense with `num_tokens="auto"`."""
    if isinstance(num_tokens, str) and num_tokens != AUTO:
        raise ValueError(f"`num_tokens` must be None, an int, a list of ints or 'auto', got {num_tokens!r}.")
    if num_tokens != AUTO:
        given = [name for name, value in auto_arguments.items() if value is not None]
        if given:
            names = ", ".join(f"`{name}`" for name in given)
            raise ValueError(f"{names} can only be used with `num_tokens='auto'`, got num_tokens={num_tokens!r}.")


# ---------------------------------------------------------------------------------------------------------------------
# Quality
# ---------------------------------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def _shipped_feature_network() -> nn.Module:
    from .metrics.classifier import ClassifierFeatureNetwork, load_default_classifier

    return ClassifierFeatureNetwork(load_default_classifier()).eval()


def default_feature_network(device=None) -> nn.Module:
    """The shipped classifier's penultimate features (images `[B, 3, H, W]` in [-1, 1], resized inside)."""
    network = _shipped_feature_network()
    return network if device is None else network.to(device)


@torch.no_grad()
def reconstruction_quality(
    reconstructions: torch.Tensor,
    references: torch.Tensor,
    quality_metric: str = "psnr",
    feature_network: nn.Module | None = None,
) -> torch.Tensor:
    """Per-image quality `[B]` of reconstructions `[B, 3, H, W]` (clamped to [-1, 1]) against references in [-1, 1]."""
    quality_metric = check_quality_metric(quality_metric)
    predicted = reconstructions.float().clamp(-1, 1)
    references = references.to(predicted.device, torch.float32)
    if quality_metric == "psnr":
        return psnr(predicted, references, data_range=2.0)
    network = feature_network if feature_network is not None else default_feature_network(predicted.device)
    features = network(torch.cat([predicted, references])).float()
    mine, theirs = features.chunk(2)
    return 1.0 - F.cosine_similarity(mine, theirs, dim=-1)


def meets_target(quality: torch.Tensor, target: torch.Tensor, quality_metric: str) -> torch.BoolTensor:
    """Elementwise: does `quality` reach `target` (>= for PSNR, <= for distances)?"""
    higher_is_better = QUALITY_METRICS[check_quality_metric(quality_metric)][0]
    target = torch.as_tensor(target, dtype=quality.dtype, device=quality.device)
    return quality >= target if higher_is_better else quality <= target


def smallest_sufficient(
    quality: torch.Tensor, quality_target, quality_metric: str
) -> tuple[torch.LongTensor, torch.BoolTensor]:
    """`quality` `[N, J]` over ascending budgets -> (index of the first budget meeting each row's target, or J - 1
    when none does, `[N]`; whether one does, `[N]`). `quality_target` is a number or `[N]`."""
    target = torch.as_tensor(quality_target, dtype=quality.dtype, device=quality.device).reshape(-1, 1)
    ok = meets_target(quality, target, quality_metric)
    found = ok.any(dim=1)
    first = ok.float().argmax(dim=1)  # argmax returns the first maximum
    last = torch.full_like(first, quality.shape[1] - 1)
    return torch.where(found, first, last), found


# ---------------------------------------------------------------------------------------------------------------------
# The search
# ---------------------------------------------------------------------------------------------------------------------
def bisect_candidates(score, num_images: int, num_budgets: int, quality_target, quality_metric: str) -> torch.Tensor:
    """Bisection for the first of `num_budgets` ascending candidates meeting each image's target, all images at once.

    `score(rows, columns)` returns the quality `[len(rows)]` of image `rows[n]` at candidate `columns[n]` (one batch per
    round). Returns `[N, J]` qualities, NaN where not decoded; `smallest_sufficient` of it gives the bisection's pick
    (the largest candidate when none of the decoded ones meets the target).
    """
    target = torch.as_tensor(quality_target, dtype=torch.float32).reshape(-1).expand(num_images)
    quality = torch.full((num_images, num_budgets), float("nan"))
    low = [0] * num_images
    high = [num_budgets] * num_images  # `num_budgets`: no candidate meets the target
    while True:
        rows = [i for i in range(num_images) if low[i] < high[i]]
        if not rows:
            return quality
        columns = [(low[i] + high[i]) // 2 for i in rows]
        scores = score(rows, columns).float()
        quality[rows, columns] = scores
        for i, j, ok in zip(rows, columns, meets_target(scores, target[rows], quality_metric).tolist()):
            if ok:
                high[i] = j
            else:
                low[i] = j + 1


@torch.no_grad()
def choose_num_tokens(
    pipe,
    pixel_values: torch.Tensor,
    token_ids: Sequence[torch.LongTensor],
    noise: torch.Tensor,
    quality_target: list[float],
    quality_metric: str = "psnr",
    budgets: list[int] | None = None,
    num_inference_steps: int = 20,
    search_num_inference_steps: int | None = None,
    guidance_scale=7.5,
    adaptive_guidance: bool = True,
    feature_network: nn.Module | None = None,
) -> FlexTokAutoBudgetOutput:
    """Search + verification (see the module docstring) for `N` images.

    Args:
        pipe: a [`FlexTokPipeline`] (its `detokenize` decodes).
        pixel_values: the processed inputs `[N, 3, H, W]` in [-1, 1] (what quality is measured against).
        token_ids: N sequences of all K ids.
        noise: the initial noise of each image `[N, C, h, w]`.
        quality_target: one target per image; budgets: the candidates, ascending (default 1, 2, 4, ..., K).
        num_inference_steps / search_num_inference_steps: decoder steps of the final decode / of the search.
    """
    num_images = len(token_ids)
    budgets = budgets or candidate_budgets(pipe.flextok.config.num_registers)
    search_steps = search_num_inference_steps or max(1, num_inference_steps // 10)
    targets = torch.tensor(quality_target, dtype=torch.float32)
    sampling = dict(guidance_scale=guidance_scale, adaptive_guidance=adaptive_guidance)

    def decode(rows: list[int], budget_index: list[int], steps: int):
        ids = [token_ids[i][: budgets[j]] for i, j in zip(rows, budget_index)]
        latents = pipe.detokenize(
            ids, num_inference_steps=steps, latents=noise[rows], output_type="latent", **sampling
        )
        images = pipe.flextok.decode_latents(latents)
        quality = reconstruction_quality(images, pixel_values[rows], quality_metric, feature_network).cpu()
        return latents, images, quality

    # 1. Search: every candidate in one batch (exact), or a bisection over the candidates of all images at once
    num_budgets = len(budgets)
    if search_steps == num_inference_steps:
        rows = [i for i in range(num_images) for _ in budgets]
        columns = [j for _ in range(num_images) for j in range(num_budgets)]
        search_latents, search_images, search_quality = decode(rows, columns, search_steps)
        search_quality = search_quality.reshape(num_images, num_budgets)
    else:
        search_quality = bisect_candidates(
            lambda rows, columns: decode(rows, columns, search_steps)[2],
            num_images,
            num_budgets,
            targets,
            quality_metric,
        )
    choice, _ = smallest_sufficient(search_quality, targets, quality_metric)  # NaN (not decoded) never meets it

    # 2. Verification at full steps (free when the search already ran them)
    if search_steps == num_inference_steps:
        flat = torch.arange(num_images) * num_budgets + choice
        latents, images = search_latents[flat], search_images[flat]
        quality = search_quality[torch.arange(num_images), choice]
    else:
        pending = list(range(num_images))
        latents, images, quality = decode(pending, choice.tolist(), num_inference_steps)
        while True:
            ok = meets_target(quality[pending], targets[pending], quality_metric)
            pending = [i for i, good in zip(pending, ok.tolist()) if not good and choice[i] < num_budgets - 1]
            if not pending:
                break
            choice[pending] += 1
            new_latents, new_images, new_quality = decode(pending, choice[pending].tolist(), num_inference_steps)
            latents[pending], images[pending], quality[pending] = new_latents, new_images, new_quality
    met = meets_target(quality, targets, quality_metric)
    if not bool(met.all()):
        missed = (~met).nonzero().flatten().tolist()
        logger.warning(
            "%d of %d images cannot meet their %s target within %d tokens (images %s); they get %d tokens.",
            len(missed),
            num_images,
            quality_metric,
            budgets[-1],
            missed[:20],
            budgets[-1],
        )
    return FlexTokAutoBudgetOutput(
        token_ids=list(token_ids),
        num_tokens=[budgets[j] for j in choice.tolist()],
        quality=quality.tolist(),
        target_met=met.tolist(),
        latents=latents,
        images=images,
        candidate_budgets=list(budgets),
        search_quality=search_quality,
        quality_metric=quality_metric,
        quality_target=list(quality_target),
    )


# ---------------------------------------------------------------------------------------------------------------------
# The "flextok-tokenize" task with num_tokens="auto"
# ---------------------------------------------------------------------------------------------------------------------
def check_task_auto_arguments(model, auto: dict) -> dict:
    """Checks the task's adaptive-budget arguments once per call (one target: rows are processed independently)."""
    auto = dict(auto)
    auto["quality_metric"] = check_quality_metric(auto.get("quality_metric") or "psnr")
    if isinstance(auto.get("quality_target"), (list, tuple, torch.Tensor)):
        raise TypeError("`quality_target` must be one number for the task (call it per image for mixed targets).")
    check_quality_target(auto.get("quality_target"), auto["quality_metric"], 1)
    candidate_budgets(model.config.num_registers, auto.get("min_tokens"), auto.get("max_tokens"))
    seed = 0 if auto.get("seed") is None else auto["seed"]
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"`seed` must be an int >= 0, got {seed!r}.")
    auto["seed"] = seed
    return auto


def content_seed(pixel_values: torch.Tensor, seed: int = 0) -> int:
    """A 63-bit noise seed from one image's pixels `[3, S, S]` and `seed`: the same image always gets the same noise."""
    digest = hashlib.sha256(str(seed).encode() + pixel_values.detach().float().cpu().numpy().tobytes()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def saved_decoder_defaults(model) -> dict:
    """Decoder sampling defaults (`num_inference_steps`, `guidance_scale`, `adaptive_guidance`, and its saved
    `scheduler`) of the saved pipeline a model was loaded from (a `model_index.json` in its folder or the parent
    folder), or {}."""
    path = str(getattr(model, "name_or_path", "") or "")
    for folder in (path, os.path.dirname(os.path.normpath(path))) if path else ():
        index_file = os.path.join(folder, "model_index.json")
        if os.path.isfile(index_file):
            with open(index_file, encoding="utf-8") as handle:
                index = json.load(handle)
            defaults = {
                "num_inference_steps": index.get("num_inference_steps"),
                "guidance_scale": index.get("decoder_guidance_scale", index.get("guidance_scale")),
                "adaptive_guidance": index.get("adaptive_guidance"),
            }
            if os.path.isfile(os.path.join(folder, "scheduler", "scheduler_config.json")):
                defaults["scheduler"] = load_flow_scheduler(os.path.join(folder, "scheduler"))
            return {key: value for key, value in defaults.items() if value is not None}
    return {}


def task_forward_auto(task, pixel_values: torch.Tensor, seed: int = 0, **auto) -> dict:
    """`_forward` of the tokenize task for `num_tokens="auto"`: a batch `[B, 3, S, S]` -> batched tensors (all K ids,
    chosen budget, quality, target met). Decodes with a `FlexTokPipeline` around the task's model (made once), with
    each image's noise seeded by `content_seed`."""
    pipe = getattr(task, "_flextok_decoder_pipeline", None)
    if pipe is None or pipe.flextok is not task.model:
        from .pipeline_flextok import FlexTokPipeline

        pipe = FlexTokPipeline.from_flextok(task.model, **saved_decoder_defaults(task.model))
        pipe.set_progress_bar_config(disable=True)
        task._flextok_decoder_pipeline = pipe
    generators = [torch.Generator().manual_seed(content_seed(image, seed)) for image in pixel_values]
    noise = task.model.prepare_noise(pixel_values.shape[0], generators)
    result = pipe.choose_num_tokens(pixel_values=pixel_values, latents=noise, **auto)
    return {
        "token_ids": torch.stack(result.token_ids),
        "num_tokens": torch.tensor(result.num_tokens),
        "quality": torch.tensor(result.quality),
        "target_met": torch.tensor(result.target_met),
    }


__all__ = [
    "AUTO",
    "QUALITY_METRICS",
    "FlexTokAutoBudgetOutput",
    "candidate_budgets",
    "check_quality_target",
    "choose_num_tokens",
    "content_seed",
    "default_feature_network",
    "reconstruction_quality",
    "smallest_sufficient",
]
