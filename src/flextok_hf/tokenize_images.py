"""Tokenize image files in batches, at a fixed budget or an adaptive one (`num_tokens="auto"`), and write the ids as
JSON lines or as a `datasets` folder (what `flextok-hf tokenize` does).

```python
from flextok_hf.tokenize_images import save_ids_dataset, tokenize_image_files, write_jsonl

ids = tokenize_image_files(pipe, ["a.png", "photos/"], num_tokens="auto", quality_target=18.0)
write_jsonl(ids, "ids.jsonl")  # one line per image: its first num_tokens ids, num_tokens, quality, target_met
save_ids_dataset(ids, pipe.flextok, "ids_dataset/")  # DatasetDict {"train": ...} + flextok_pretokenized.json
```

The result is a `datasets.Dataset` with one row per image: `image` (the path), `token_ids` (all K ids, so the folder
feeds `flextok-hf train-prior` like a `pretokenize` output), `num_tokens` (the budget: the image's tokenization is its
first `num_tokens` ids) and, with `"auto"`, `quality_metric`, `quality_target`, `quality` (of the reconstruction from
those ids) and `target_met`. The decoder noise of image i is seeded with
`flextok_hf.decoding.sample_seed(seed, i)` (the noise rule of `decode_at_budgets`), so a row does not depend on the batch size.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

import torch
from datasets import Dataset, DatasetDict, Features, List, Value
from tqdm.auto import tqdm

from .adaptive_budget import AUTO, check_auto_arguments

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")


def expand_image_paths(paths: Sequence[str | os.PathLike]) -> list[str]:
    """Files as given, folders replaced by their image files (sorted, not recursive)."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    expanded = []
    for path in map(os.fspath, paths):
        if os.path.isdir(path):
            names = sorted(name for name in os.listdir(path) if name.lower().endswith(IMAGE_EXTENSIONS))
            if not names:
                raise ValueError(
                    f"`images`: the folder {path!r} holds no image files ({', '.join(IMAGE_EXTENSIONS)})."
                )
            expanded += [os.path.join(path, name) for name in names]
        elif os.path.isfile(path):
            expanded.append(path)
        else:
            raise ValueError(f"`images`: no such file or folder: {path!r}.")
    if not expanded:
        raise ValueError("`images` must name at least one image file or folder.")
    return expanded


@torch.no_grad()
def tokenize_image_files(
    pipe,
    paths: Sequence[str | os.PathLike],
    num_tokens: int | str | None = None,
    quality_target: float | None = None,
    quality_metric: str | None = None,
    min_tokens: int | None = None,
    max_tokens: int | None = None,
    num_inference_steps: int | None = None,
    search_num_inference_steps: int | None = None,
    guidance_scale: float | None = None,
    seed: int = 0,
    batch_size: int = 16,
) -> Dataset:
    """Tokenizes image files (and the image files of folders) with a [`FlexTokPipeline`], `batch_size` at a time.

    `num_tokens`: None (all K), an int in [1, K], or `"auto"` with the adaptive-budget arguments of
    [`FlexTokPipeline.choose_num_tokens`]. Returns the `Dataset` described in the module docstring.
    """
    from .decoding import sample_seed
    from .image_processing_flextok import load_image_file

    auto = dict(
        quality_target=quality_target,
        quality_metric=quality_metric,
        min_tokens=min_tokens,
        max_tokens=max_tokens,
        num_inference_steps=num_inference_steps,
        search_num_inference_steps=search_num_inference_steps,
        guidance_scale=guidance_scale,
    )
    check_auto_arguments(num_tokens, **auto)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"`batch_size` must be a positive int, got {batch_size!r}.")
    paths = expand_image_paths(paths)
    num_registers = pipe.flextok.config.num_registers
    columns: dict[str, list] = {"image": [], "token_ids": [], "num_tokens": []}
    if num_tokens == AUTO:
        columns.update(quality_metric=[], quality_target=[], quality=[], target_met=[])
    for start in tqdm(range(0, len(paths), batch_size), desc="Tokenizing", disable=len(paths) <= batch_size):
        batch = paths[start : start + batch_size]
        images = [load_image_file(path, "images") for path in batch]
        if num_tokens == AUTO:
            generators = [torch.Generator().manual_seed(sample_seed(seed, start + i)) for i in range(len(batch))]
            result = pipe.choose_num_tokens(images, generator=generators, **auto)
            token_ids, budgets = result.token_ids, result.num_tokens
            columns["quality_metric"] += [result.quality_metric] * len(batch)
            columns["quality_target"] += result.quality_target
            columns["quality"] += result.quality
            columns["target_met"] += result.target_met
        else:
            token_ids = pipe.tokenize(images)
            budgets = pipe._budgets(num_tokens, len(token_ids))
        columns["image"] += batch
        columns["token_ids"] += [ids.cpu().tolist() for ids in token_ids]
        columns["num_tokens"] += budgets
    features = {
        "image": Value("string"),
        "token_ids": List(Value("int32"), length=num_registers),
        "num_tokens": Value("int32"),
    }
    if num_tokens == AUTO:
        features.update(
            quality_metric=Value("string"),
            quality_target=Value("float32"),
            quality=Value("float32"),
            target_met=Value("bool"),
        )
    return Dataset.from_dict(columns, features=Features(features))


def jsonl_records(dataset: Dataset):
    """One dict per image: `image`, `token_ids` (its first `num_tokens` ids), `num_tokens` and, for adaptive budgets,
    `quality_metric`, `quality_target`, `quality` and `target_met`."""
    for row in dataset:
        record = {"image": row["image"], "token_ids": row["token_ids"][: row["num_tokens"]]}
        record["num_tokens"] = row["num_tokens"]
        if "quality" in row:
            record["quality_metric"] = row["quality_metric"]
            record["quality_target"] = round(float(row["quality_target"]), 4)
            record["quality"] = round(float(row["quality"]), 4)
            record["target_met"] = bool(row["target_met"])
        yield record


def write_jsonl(dataset: Dataset, path: str | os.PathLike) -> str:
    """Writes `jsonl_records(dataset)` as JSON lines; returns the path."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        for record in jsonl_records(dataset):
            handle.write(json.dumps(record) + "\n")
    return path


def save_ids_dataset(dataset: Dataset, flextok, output_dir: str | os.PathLike, split: str = "train") -> DatasetDict:
    """`save_to_disk` as a `DatasetDict` {split: dataset} plus `flextok_pretokenized.json` (codebook size, K, ...), the
    layout `flextok_hf.training.pretokenize.load_pretokenized` reads."""
    from .training.pretokenize import METADATA_FILE

    output_dir = os.fspath(output_dir)
    splits = DatasetDict({split: dataset})
    splits.save_to_disk(output_dir)
    metadata = {
        "flextok": str(getattr(flextok, "name_or_path", "") or ""),
        "codebook_size": flextok.config.codebook_size,
        "num_tokens": flextok.config.num_registers,
        "image_size": flextok.config.image_size,
        "datasets": ["image files"],
        "splits": {split: len(dataset)},
    }
    with open(os.path.join(output_dir, METADATA_FILE), "w", encoding="utf-8") as handle:
        json.dump(metadata, handle, indent=2)
    return splits


__all__ = ["expand_image_paths", "jsonl_records", "save_ids_dataset", "tokenize_image_files", "write_jsonl"]
