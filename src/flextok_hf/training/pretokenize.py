"""Pre-tokenizing image datasets with a trained FlexTok, for training the autoregressive prior.

```python
from flextok_hf.training import pretokenize

splits = pretokenize("runs/mnist32", "mnist,animal_mnist", splits="train,test", output_dir="data/mnist_animals_ids")
splits["train"].features   # token_ids: List(int32, length=K), label: ClassLabel(20 names), caption: string
```

Every image is tokenized once (batched, tqdm) into its K ordered FlexTok ids. The result is a `DatasetDict` (one entry
per split) with `token_ids` plus the `label` (`ClassLabel`) and `caption` columns that every source dataset has. When
several datasets are concatenated, their label names are merged: each dataset's names are appended to the names seen
so far (a name already seen keeps its id) and its labels are remapped, e.g. MNIST digits + Animal-MNIST animals give
20 classes. It is saved with `save_to_disk` (and/or pushed with `push_to_hub`) together with
`flextok_pretokenized.json`, which records the tokenizer (codebook size, K) so a prior can be sized from it.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence

import torch
from datasets import ClassLabel, Dataset, DatasetDict, Features, List, Value, concatenate_datasets, load_from_disk
from tqdm.auto import tqdm

from ..data import load_image_dataset
from ..image_processing_flextok import FlexTokImageProcessor
from ..modeling_flextok import FlexTokModel

METADATA_FILE = "flextok_pretokenized.json"
KEPT_COLUMNS = ("label", "caption")


def _names(text: str | Sequence[str], argument: str) -> list[str]:
    names = [n.strip() for n in text.split(",")] if isinstance(text, str) else [str(n).strip() for n in text]
    names = [n for n in names if n]
    if not names:
        raise ValueError(f"`{argument}` must name at least one entry, got {text!r}.")
    return names


def load_flextok(model: str | os.PathLike | FlexTokModel, device: str | torch.device | None = None) -> FlexTokModel:
    """A `FlexTokModel` from an instance, a model or pipeline folder, or a Hub id; in eval mode on `device` (default:
    the accelerator if there is one, else the CPU)."""
    if not isinstance(model, FlexTokModel):
        from ..pipeline_flextok import FlexTokPipeline

        model = FlexTokPipeline.from_pretrained(model).flextok
    if device is None:
        device = torch.accelerator.current_accelerator() if torch.accelerator.is_available() else "cpu"
    return model.to(device).eval()


@torch.no_grad()
def pretokenize_dataset(
    flextok: FlexTokModel,
    dataset: Dataset,
    batch_size: int = 64,
    image_column: str = "image",
    generator: torch.Generator | None = None,
    desc: str = "Pretokenizing",
) -> Dataset:
    """Runs `flextok.tokenize` over `dataset` once.

    Returns a `Dataset` with `token_ids` (`List(int32, length=K)`) plus the `label` and `caption` columns of
    `dataset` (those it has), in the same row order. `generator` is only used by VAEs that sample their posterior.
    """
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"`batch_size` must be a positive int, got {batch_size!r}.")
    if image_column not in dataset.column_names:
        raise ValueError(f"`image_column` {image_column!r} is not a column of the dataset: {dataset.column_names}.")
    processor = FlexTokImageProcessor.from_model_config(flextok.config)
    images = dataset.select_columns([image_column])
    rows = []
    for batch in tqdm(images.iter(batch_size), total=math.ceil(len(dataset) / batch_size), desc=desc):
        pixel_values = processor(batch[image_column], return_tensors="pt")["pixel_values"]
        token_ids = flextok.tokenize(pixel_values.to(flextok.device, flextok.dtype), generator=generator)
        rows.extend(torch.stack(token_ids).cpu().tolist())
    kept = [column for column in KEPT_COLUMNS if column in dataset.column_names]
    features = Features(
        {"token_ids": List(Value("int32"), length=flextok.config.num_registers)}
        | {column: dataset.features[column] for column in kept}
    )
    columns = {column: list(dataset[column]) for column in kept}
    return Dataset.from_dict({"token_ids": rows, **columns}, features=features)


def _as_class_label(dataset: Dataset) -> Dataset:
    """Integer labels without names become a `ClassLabel` named "0", "1", ..."""
    feature = dataset.features["label"]
    if isinstance(feature, ClassLabel):
        return dataset
    if not (isinstance(feature, Value) and feature.dtype.startswith(("int", "uint"))):
        raise ValueError(f"The `label` column must hold class ids (ClassLabel or int), got {feature!r}.")
    num_classes = max(list(dataset["label"]), default=-1) + 1
    return dataset.cast_column("label", ClassLabel(names=[str(i) for i in range(num_classes)]))


def merge_datasets(parts: Sequence[Dataset]) -> Dataset:
    """Concatenates pre-tokenized datasets, keeping the `label` / `caption` columns that all of them have.

    Label names are merged in order: each dataset's names are appended to the names seen so far (a name seen before
    keeps its id) and its labels are remapped to the merged ids (-1, "no label", stays -1).
    """
    if len(parts) == 0:
        raise ValueError("`parts` must contain at least one dataset.")
    kept = [column for column in KEPT_COLUMNS if all(column in part.column_names for part in parts)]
    parts = [part.select_columns(["token_ids", *kept]) for part in parts]
    if "label" in kept:
        parts = [_as_class_label(part) for part in parts]
        names: list[str] = []
        for part in parts:
            names += [name for name in part.features["label"].names if name not in names]
        merged = ClassLabel(names=names)
        remapped = []
        for part in parts:
            mapping = [names.index(name) for name in part.features["label"].names]
            features = part.features.copy()
            features["label"] = merged
            remapped.append(
                part.map(
                    lambda batch, mapping=mapping: {"label": [mapping[y] if y >= 0 else -1 for y in batch["label"]]},
                    batched=True,
                    features=features,
                    load_from_cache_file=False,
                    desc="Merging labels",
                )
            )
        parts = remapped
    return parts[0] if len(parts) == 1 else concatenate_datasets(parts)


def pretokenize(
    model: str | os.PathLike | FlexTokModel,
    datasets: str | Sequence[str],
    splits: str | Sequence[str] = "train",
    output_dir: str | os.PathLike | None = None,
    push_to_hub: str | None = None,
    batch_size: int = 64,
    max_samples: int | None = None,
    private: bool | None = None,
    token: str | None = None,
    seed: int = 0,
    device: str | torch.device | None = None,
) -> DatasetDict:
    """Tokenizes every split of the (comma-separated) `datasets` with the FlexTok `model`.

    Args:
        model: a `FlexTokModel`, or a FlexTok model / pipeline folder or Hub id.
        datasets: names for `flextok_hf.data.load_image_dataset` (bundled sets, image folders, saved datasets, Hub
            ids); several are concatenated with their label names merged (see [`merge_datasets`]).
        splits: the split(s) to tokenize (comma-separated or a list); each becomes an entry of the result.
        output_dir: if given, `save_to_disk` target (plus `flextok_pretokenized.json`).
        push_to_hub: if given, the Hub dataset repo id to push to (plus `flextok_pretokenized.json`).
        batch_size: images per `tokenize` call.
        max_samples: keep only the first `max_samples` rows of each dataset and split (for quick runs).
        seed: seeds the generator of VAEs that sample their posterior.

    Returns:
        `DatasetDict` {split: Dataset(token_ids, label?, caption?)}.
    """
    names, split_names = _names(datasets, "datasets"), _names(splits, "splits")
    if max_samples is not None and (not isinstance(max_samples, int) or max_samples < 1):
        raise ValueError(f"`max_samples` must be a positive int or None, got {max_samples!r}.")
    flextok = load_flextok(model, device)
    generator = torch.Generator(flextok.device).manual_seed(seed)
    result = DatasetDict()
    for split in split_names:
        parts = []
        for name in names:
            source = load_image_dataset(name, split)
            if max_samples is not None:
                source = source.select(range(min(max_samples, len(source))))
            parts.append(pretokenize_dataset(flextok, source, batch_size, generator=generator, desc=f"{name}/{split}"))
        result[split] = merge_datasets(parts)
    metadata = {
        "flextok": str(getattr(flextok, "name_or_path", "") or ""),
        "codebook_size": flextok.config.codebook_size,
        "num_tokens": flextok.config.num_registers,
        "image_size": flextok.config.image_size,
        "datasets": names,
        "splits": {split: len(result[split]) for split in split_names},
    }
    if output_dir is not None:
        result.save_to_disk(str(output_dir))
        with open(os.path.join(output_dir, METADATA_FILE), "w", encoding="utf-8") as handle:
            json.dump(metadata, handle, indent=2)
    if push_to_hub is not None:
        from huggingface_hub import HfApi

        result.push_to_hub(push_to_hub, private=private, token=token)
        HfApi(token=token).upload_file(
            path_or_fileobj=json.dumps(metadata, indent=2).encode(),
            path_in_repo=METADATA_FILE,
            repo_id=push_to_hub,
            repo_type="dataset",
            commit_message="Add flextok_pretokenized.json",
        )
    return result


def load_pretokenized(path: str | os.PathLike) -> tuple[DatasetDict, dict]:
    """A pre-tokenized dataset (a `save_to_disk` folder or a Hub dataset id) and its metadata ({} if it has none)."""
    path = str(path)
    if os.path.isdir(path):
        data = load_from_disk(path)
        metadata_path = os.path.join(path, METADATA_FILE)
        metadata = {}
        if os.path.isfile(metadata_path):
            with open(metadata_path, encoding="utf-8") as handle:
                metadata = json.load(handle)
    else:
        from datasets import load_dataset
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError

        data = load_dataset(path)
        try:
            with open(hf_hub_download(path, METADATA_FILE, repo_type="dataset"), encoding="utf-8") as handle:
                metadata = json.load(handle)
        except EntryNotFoundError:
            metadata = {}
    if isinstance(data, Dataset):
        data = DatasetDict({"train": data})
    for split, dataset in data.items():
        if "token_ids" not in dataset.column_names:
            raise ValueError(f"`dataset` {path!r} split {split!r} has no `token_ids` column: {dataset.column_names}.")
    return data, metadata


__all__ = [
    "METADATA_FILE",
    "load_flextok",
    "load_pretokenized",
    "merge_datasets",
    "pretokenize",
    "pretokenize_dataset",
]
