"""Evaluation inputs: a dataset (object or bundled name) -> `pixel_values`, labels, and all K ids per image."""

from __future__ import annotations

import os

import torch

from .decoding import default_budgets


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


__all__ = ["load_pixel_values", "tokenize_all"]
