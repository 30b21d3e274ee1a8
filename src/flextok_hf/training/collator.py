"""Collators for stage-1 (tokenizer) training, and a one-off latent cache.

- [`ImageCollator`]: rows with an `image` column (PIL, any mode) -> `{"pixel_values": [B, 3, S, S]}` in [-1, 1], through
  [`FlexTokImageProcessor`] (shorter side resized to S, center crop, gray -> RGB).
- [`LatentCollator`]: rows with a cached `latents` column -> `{"latents": [B, C, h, w]}` (float32).
- [`cache_latents`]: runs the frozen VAE once over a dataset and returns it with a `latents` column; for pixel-space
  models the "latents" are the preprocessed pixels, which still saves the PIL decoding and resizing of every epoch.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

import numpy as np
import torch
from datasets import Array3D, Dataset, Features

from ..image_processing_flextok import FlexTokImageProcessor

CACHE_DTYPES = ("float32", "float16")


def _random_flip(batch: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Mirrors each sample of `[B, C, H, W]` left-right with probability 1/2 (draws from `generator` or the global
    RNG, which Trainer checkpoints)."""
    flip = torch.rand(batch.shape[0], generator=generator) < 0.5
    if flip.any():
        batch = batch.clone()
        batch[flip] = batch[flip].flip(-1)
    return batch


def _check_examples(examples, column: str):
    if not isinstance(examples, Sequence) or len(examples) == 0:
        raise ValueError(f"`examples` must be a non-empty list of rows, got {type(examples).__name__}.")
    if column not in examples[0]:
        raise ValueError(f"Rows have no {column!r} column; their columns are {sorted(examples[0])}.")


class ImageCollator:
    """Batches image rows for [`FlexTokModel.forward`].

    Args:
        image_processor: a [`FlexTokImageProcessor`] sized for the model (see `from_model_config`).
        image_column: the column holding the images (PIL images, arrays or file paths).
        random_flip: mirror each image left-right with probability 1/2 (off by default).
        generator: optional `torch.Generator` for the flips (default: the global RNG).

    Returns (per batch): `{"pixel_values": [B, 3, S, S]}` (float32, in [-1, 1], on the CPU; Trainer moves it).
    """

    def __init__(
        self,
        image_processor: FlexTokImageProcessor,
        image_column: str = "image",
        random_flip: bool = False,
        generator: torch.Generator | None = None,
    ):
        if not callable(image_processor):
            raise TypeError(
                f"`image_processor` must be a FlexTokImageProcessor, got {type(image_processor).__name__}."
            )
        self.image_processor = image_processor
        self.image_column = image_column
        self.random_flip = bool(random_flip)
        self.generator = generator

    @classmethod
    def from_model_config(cls, config, **kwargs) -> ImageCollator:
        """A collator whose processor matches `config.image_size`."""
        return cls(FlexTokImageProcessor.from_model_config(config), **kwargs)

    def __call__(self, examples: Sequence[dict]) -> dict[str, torch.Tensor]:
        _check_examples(examples, self.image_column)
        images = [example[self.image_column] for example in examples]
        pixel_values = self.image_processor(images, return_tensors="pt")["pixel_values"].float()
        if self.random_flip:
            pixel_values = _random_flip(pixel_values, self.generator)
        return {"pixel_values": pixel_values}


class LatentCollator:
    """Batches rows with cached latents (from [`cache_latents`]) for `FlexTokModel.forward(latents=...)`.

    Args:
        latent_column: the column holding `[C, h, w]` latents (numpy, torch or nested lists; float16 or float32).
        random_flip: mirror each latent grid left-right with probability 1/2. Exact for pixel-space models; for VAE
            latents it only approximates flipping the image.
        generator: optional `torch.Generator` for the flips.

    Returns (per batch): `{"latents": [B, C, h, w]}` (float32, on the CPU).
    """

    def __init__(self, latent_column: str = "latents", random_flip: bool = False, generator=None):
        self.latent_column = latent_column
        self.random_flip = bool(random_flip)
        self.generator = generator

    def __call__(self, examples: Sequence[dict]) -> dict[str, torch.Tensor]:
        _check_examples(examples, self.latent_column)
        latents = torch.stack(
            [torch.as_tensor(np.asarray(example[self.latent_column]), dtype=torch.float32) for example in examples]
        )
        if latents.ndim != 4:
            raise ValueError(f"`{self.latent_column}` rows must be [C, h, w], got a batch of {tuple(latents.shape)}.")
        if self.random_flip:
            latents = _random_flip(latents, self.generator)
        return {"latents": latents}


def _latent_fingerprint(model, processor, dataset: Dataset, image_column: str, dtype: str, seed: int) -> str:
    """A cache key that changes with everything the latents depend on: the source rows, the preprocessing, the VAE
    config and weights, the scaling, the posterior mode and the storage dtype."""
    config = model.config
    digest = hashlib.sha256()
    settings = {
        "source": dataset._fingerprint,
        "image_column": image_column,
        "processor": json.loads(processor.to_json_string()),
        "vae_config": config.vae_config,
        "vae_scaling_factor": config.vae_scaling_factor,
        "vae_sample_posterior": config.vae_sample_posterior,
        "seed": seed if config.vae_sample_posterior else None,
        "dtype": dtype,
    }
    digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
    if model.vae is not None:
        for name, tensor in sorted(model.vae.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().float().cpu().numpy().tobytes())
    return "flextok-latents-" + digest.hexdigest()[:32]


def cache_latents(
    model,
    dataset: Dataset,
    batch_size: int = 64,
    image_processor: FlexTokImageProcessor | None = None,
    image_column: str = "image",
    dtype: str = "float32",
    seed: int = 0,
) -> Dataset:
    """Runs the model's frozen VAE once over `dataset` and returns it with a `latents` column.

    Args:
        model: a [`FlexTokModel`]; its `encode_latents` is used (`[B, 3, S, S]` -> scaled latents `[B, C, h, w]`).
            Pixel-space models (`config.vae_config=None`) store the preprocessed pixels.
        dataset: a `datasets.Dataset` with an `image_column`.
        batch_size: images per VAE call.
        image_processor: defaults to `FlexTokImageProcessor.from_model_config(model.config)`.
        dtype: storage dtype of the cache, `"float32"` (exact: training on the cache gives the same losses as training
            on the images) or `"float16"` (half the size; enough for VAE latents, lossy for pixels).
        seed: seeds the posterior draw when `config.vae_sample_posterior` is on (each image keeps one fixed draw).

    Returns:
        The dataset without `image_column`, plus `latents` (`Array3D` `[C, h, w]` stored in `dtype`), formatted as
        numpy for that column (read back as float32 arrays; other columns as Python objects); feed it to [`LatentCollator`]. The map is cached by `datasets` under a
        fingerprint of the inputs and VAE weights, so a second call (or a second DDP rank) reuses the file when the
        dataset lives on disk.
    """
    if not isinstance(dataset, Dataset):
        raise TypeError(f"`dataset` must be a datasets.Dataset, got {type(dataset).__name__}.")
    if image_column not in dataset.column_names:
        raise ValueError(f"`image_column`={image_column!r} is not a column of the dataset ({dataset.column_names}).")
    if dtype not in CACHE_DTYPES:
        raise ValueError(f"`dtype` must be one of {CACHE_DTYPES}, got {dtype!r}.")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"`batch_size` must be a positive int, got {batch_size!r}.")
    processor = image_processor or FlexTokImageProcessor.from_model_config(model.config)
    config = model.config
    shape = (config.latent_channels, config.latent_size, config.latent_size)
    generator = torch.Generator(model.device).manual_seed(seed) if config.vae_sample_posterior else None
    was_training = model.training
    model.eval()

    def encode(batch):
        pixel_values = processor(batch[image_column], return_tensors="pt")["pixel_values"]
        latents = model.encode_latents(pixel_values.to(model.device), generator=generator)
        return {"latents": latents.float().cpu().numpy().astype(dtype)}

    features = Features({**{k: v for k, v in dataset.features.items() if k != image_column}})
    features["latents"] = Array3D(shape=shape, dtype=dtype)
    try:
        cached = dataset.map(
            encode,
            batched=True,
            batch_size=batch_size,
            remove_columns=[image_column],
            features=features,
            new_fingerprint=_latent_fingerprint(model, processor, dataset, image_column, dtype, seed),
            desc="Caching latents",
        )
    finally:
        model.train(was_training)
    return cached.with_format("numpy", columns=["latents"], output_all_columns=True)


__all__ = ["ImageCollator", "LatentCollator", "cache_latents", "CACHE_DTYPES"]
