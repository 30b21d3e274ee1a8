"""One decode path for "these images at several token budgets, from fixed noise".

```python
from flextok_hf.decoding import decode_at_budgets, default_budgets

images = decode_at_budgets(pipe, token_ids, default_budgets(K), seed=0)   # [N, J, 3, H, W], unclamped
```

Everything that shows or scores an image at several budgets calls [`decode_at_budgets`]:
`FlexTokPipeline.coarse_to_fine` (and its streamed form, hence the demo's Tokenize tab), the rate-distortion
evaluation, the training sample grids and the LoRA report. So "seed s" means the same noise everywhere:

- **Noise rule.** Image `i` (its index in the caller's image list or dataset) under decoder seed `s` starts from
  `randn([1, C, h, w])` (float32) drawn on the CPU from `torch.Generator().manual_seed(sample_seed(s, i))`, then
  moved to the model's device. Every budget of the image starts from that noise, and it does not depend on the batch
  size, the budgets or the device.
- **Batch layout.** Images are decoded in chunks of `batch_size` (default: all), one decoder batch per budget per
  chunk. The same image at budget k with seed s therefore gives bit-identical output wherever it is decoded in the
  same chunk (e.g. alone); across different chunks only float rounding of the batched kernels can differ.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch


def default_budgets(num_registers: int) -> list[int]:
    """1, 2, 4, ... up to K (K itself included even when it is not a power of two)."""
    if isinstance(num_registers, bool) or not isinstance(num_registers, (int, np.integer)) or num_registers < 1:
        raise ValueError(f"`num_registers` must be a positive int, got {num_registers!r}.")
    budgets, k = [], 1
    while k < num_registers:
        budgets.append(k)
        k *= 2
    return [*budgets, int(num_registers)]


def check_budgets(budgets, num_registers: int) -> list[int]:
    """`budgets` as a list of ints in [1, K] (order kept; None -> [`default_budgets`])."""
    if budgets is None:
        return default_budgets(num_registers)
    if isinstance(budgets, (int, str)) or not hasattr(budgets, "__iter__"):
        raise TypeError(f"`budgets` must be a list of ints, got {budgets!r}.")
    budgets = list(budgets)
    if not budgets:
        raise ValueError("`budgets` must contain at least one token budget.")
    for index, k in enumerate(budgets):
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
            raise TypeError(f"`budgets[{index}]` must be an int, got {k!r}.")
        if not 1 <= k <= num_registers:
            raise ValueError(f"`budgets[{index}]` must be in [1, {num_registers}], got {k}.")
    return [int(k) for k in budgets]


def sample_seed(seed: int, index: int) -> int:
    """Noise seed of image `index` under decoder seed `seed` (a 32-bit hash: torch's CPU generator keeps 32 bits)."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1)[0])


def decoder_noise(config, seed: int, indices) -> torch.Tensor:
    """Initial decoder noise `[N, C, h, w]` (float32, CPU) of images `indices` under decoder seed `seed`.

    `config` is a `FlexTokConfig` (for `latent_channels` and `latent_size`)."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"`seed` must be a non-negative int, got {seed!r}.")
    shape = (1, config.latent_channels, config.latent_size, config.latent_size)
    draws = [
        torch.randn(shape, generator=torch.Generator().manual_seed(sample_seed(seed, index)), dtype=torch.float32)
        for index in indices
    ]
    if not draws:
        raise ValueError("`indices` must name at least one image.")
    return torch.cat(draws)


def as_pipeline(model_or_pipeline, scheduler=None):
    """A `FlexTokPipeline` around a `FlexTokModel` (with `scheduler`, default the official Euler one; no progress
    bar), or the pipeline itself. A peft-wrapped model is unwrapped to its base model (which holds the injected
    adapters)."""
    from .pipeline_flextok import FlexTokPipeline

    if isinstance(model_or_pipeline, FlexTokPipeline):
        if scheduler is not None:
            raise ValueError("Pass `scheduler` with a `FlexTokModel` only; a pipeline brings its own scheduler.")
        return model_or_pipeline
    if hasattr(model_or_pipeline, "get_base_model"):
        model_or_pipeline = model_or_pipeline.get_base_model()
    pipe = FlexTokPipeline.from_flextok(model_or_pipeline, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@torch.no_grad()
def iter_decode_at_budgets(
    pipe,
    token_ids,
    budgets,
    seed: int | None = None,
    noise: torch.Tensor | None = None,
    image_indices=None,
    batch_size: int | None = None,
    num_inference_steps: int | None = None,
    guidance_scale: float | Callable | None = None,
    adaptive_guidance: bool | None = None,
    output_type: str = "raw",
) -> Iterator[tuple[int, int, object]]:
    """[`decode_at_budgets`] one decoder batch at a time: yields `(start, j, images)` — the images of rows
    `start : start + batch_size` at `budgets[j]`, in `output_type` format — chunk by chunk, budgets in the given order.
    """
    pipe = as_pipeline(pipe)
    num_registers = pipe.flextok.config.num_registers
    budgets = check_budgets(budgets, num_registers)
    token_ids = list(token_ids)
    num_images = len(token_ids)
    if num_images == 0:
        raise ValueError("`token_ids` must hold at least one id sequence.")
    if (seed is None) == (noise is None):
        raise ValueError("Pass exactly one of `seed` (the noise rule of `flextok_hf.decoding`) or `noise`.")
    if noise is None:
        indices = range(num_images) if image_indices is None else list(image_indices)
        if len(indices) != num_images:
            raise ValueError(f"`image_indices` has {len(indices)} entries for {num_images} id sequences.")
        noise = decoder_noise(pipe.flextok.config, seed, indices)
    elif noise.shape[0] != num_images:
        raise ValueError(f"`noise` has {noise.shape[0]} rows for {num_images} id sequences.")
    if batch_size is None:
        batch_size = num_images
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"`batch_size` must be a positive int or None, got {batch_size!r}.")
    for start in range(0, num_images, batch_size):
        chunk = token_ids[start : start + batch_size]
        for j, k in enumerate(budgets):
            for index, ids in enumerate(chunk):
                if len(ids) < k:
                    raise ValueError(f"`token_ids[{start + index}]` has {len(ids)} ids; budget {k} needs {k}.")
            images = pipe.detokenize(
                [ids[:k] for ids in chunk],
                num_inference_steps=num_inference_steps,
                guidance_scale=guidance_scale,
                adaptive_guidance=adaptive_guidance,
                latents=noise[start : start + batch_size],
                output_type=output_type,
            )
            yield start, j, images


def decode_at_budgets(
    pipe,
    token_ids,
    budgets,
    seed: int | None = None,
    noise: torch.Tensor | None = None,
    image_indices=None,
    batch_size: int | None = None,
    num_inference_steps: int | None = None,
    guidance_scale: float | Callable | None = None,
    adaptive_guidance: bool | None = None,
    output_type: str = "raw",
):
    """Decodes every id sequence at every budget, from the noise rule of this module.

    Args:
        pipe: a `FlexTokPipeline` (its loop decodes), or a `FlexTokModel` (wrapped with a default scheduler).
        token_ids: N id sequences (`[N, K]` tensor or a list of 1D tensors), each at least `max(budgets)` long.
        budgets: token budgets, each in [1, K] (None: [`default_budgets`]).
        seed: decoder seed s; image n starts from the noise of image `image_indices[n]` (default n) under s.
        noise: the initial noise `[N, C, h, w]` itself, instead of `seed`.
        batch_size: images per decoder batch (default: all N); each batch holds one budget.
        num_inference_steps, guidance_scale, adaptive_guidance: decoder sampling (None = the pipeline's config).
        output_type: as in `FlexTokPipeline.detokenize` (default `"raw"`: unclamped images in about [-1, 1]).

    Returns:
        For tensor output types a tensor `[N, J, ...]` (row n, column j = image n at `budgets[j]`); for `"pil"`
        N lists of J images; for `"np"` an array `[N, J, H, W, 3]`.
    """
    rows: dict[tuple[int, int], object] = {}
    decoded = iter_decode_at_budgets(  # the same parameters, in the same order
        pipe, token_ids, budgets, seed, noise, image_indices, batch_size, num_inference_steps, guidance_scale,
        adaptive_guidance, output_type,
    )  # fmt: skip
    for start, j, images in decoded:
        rows[start, j] = images
    starts = sorted({start for start, _ in rows})
    num_budgets = 1 + max(j for _, j in rows)
    columns = [[rows[start, j] for start in starts] for j in range(num_budgets)]
    if output_type == "pil":
        flat = [[image for part in column for image in part] for column in columns]
        return [list(images) for images in zip(*flat)]
    if output_type == "np":
        return np.stack([np.concatenate(column) for column in columns], axis=1)
    return torch.stack([torch.cat(column) for column in columns], dim=1)


__all__ = [
    "as_pipeline",
    "check_budgets",
    "decode_at_budgets",
    "decoder_noise",
    "default_budgets",
    "iter_decode_at_budgets",
    "sample_seed",
]
