"""`load_image_dataset`: bundled sets (built offline and cached), local folders, saved datasets and Hub ids.

Bundled sets are built once, split, and saved with `save_to_disk` to `<cache root>/<name>-v1`; later calls memory-map
that copy. The cache root is `cache_dir` if given, else `$FLEXTOK_HF_CACHE/datasets`, else
`~/.cache/flextok_hf/datasets`. A build is written to a hidden temporary folder next to its final place and renamed
into place, so two processes building at once never see a half-written copy (the loser drops its own copy).

Splits of bundled sets: a deterministic 90/10 train/test split (`Dataset.train_test_split`, seed 0, stratified by
`label` where the set has labels). Rows of a split are in that split's (fixed) shuffled order; `"all"` is `"train"`
followed by `"test"`. `skimage` is too small to split: every split returns all of its rows.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from datasets import ClassLabel, Dataset, DatasetDict, Value, concatenate_datasets, load_dataset, load_from_disk
from datasets import Image as ImageFeature

from .bundled import BUNDLED_DATASETS, BundledDataset

logger = logging.getLogger(__name__)

BUNDLED_SPLITS = ("train", "test", "all")
TEST_FRACTION = 0.1
SPLIT_SEED = 0
CACHE_VERSION = "v1"
CACHE_ENV = "FLEXTOK_HF_CACHE"

# Column names normalised for non-bundled datasets (first match wins).
IMAGE_ALIASES = ("img", "images", "picture", "photo", "png", "jpg", "jpeg", "webp")
CAPTION_ALIASES = ("text", "prompt", "txt", "sentence", "description")
LABEL_ALIASES = ("labels", "fine_label", "class", "cls")

_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
_STRING_TYPES = ("string", "large_string")


def available_datasets() -> dict[str, str]:
    """Names of the bundled (offline) datasets, each with a one-line description."""
    return {name: spec.description for name, spec in BUNDLED_DATASETS.items()}


def default_cache_dir() -> Path:
    """`$FLEXTOK_HF_CACHE/datasets` if the variable is set, else `~/.cache/flextok_hf/datasets`."""
    root = os.environ.get(CACHE_ENV)
    return (Path(root) if root else Path("~/.cache/flextok_hf")).expanduser() / "datasets"


def load_image_dataset(
    name: str | os.PathLike, split: str = "train", *, cache_dir: str | os.PathLike | None = None, **kwargs
) -> Dataset:
    """Loads an image dataset with an `image` column (`datasets.Image()`), plus `label` and/or `caption` if any.

    Args:
        name: a bundled set (see `available_datasets()`), a local folder of images (`imagefolder`, with an optional
            `metadata.csv`), a folder written by `save_to_disk`, or a Hub dataset id `"owner/name"` (needs a network).
            Bundled names win over same-named local folders (write `"./mnist"` for the folder).
        split: `"train"`, `"test"` or `"all"` for bundled sets; any split of the source otherwise (`"all"`
            concatenates every split).
        cache_dir: cache root for bundled sets (default `default_cache_dir()`); passed to `datasets.load_dataset`
            for folders and Hub ids.
        **kwargs: options of a bundled set (`emoji`: `skin_tones: bool = False`, `font_path: str | None = None`);
            otherwise passed to `datasets.load_dataset` / `datasets.load_from_disk`.

    Returns:
        A `datasets.Dataset`; images decode to PIL images (mode "L" or "RGB" for bundled sets).
    """
    if not isinstance(name, (str, os.PathLike)):
        raise TypeError(f"name must be a str or path, got {type(name).__name__}: {name!r}.")
    if not isinstance(split, str):
        raise TypeError(f"split must be a str, got {type(split).__name__}: {split!r}.")
    text = os.fspath(name)
    if text in BUNDLED_DATASETS:
        return _load_bundled(BUNDLED_DATASETS[text], split, cache_dir, kwargs)
    path = Path(text).expanduser()
    if path.exists():
        return _normalise_columns(_load_local(path, split, cache_dir, kwargs), text)
    if _HUB_ID.fullmatch(text):
        return _normalise_columns(_load_hub(text, split, cache_dir, kwargs), text)
    raise ValueError(
        f"name={text!r} is not a bundled dataset {sorted(BUNDLED_DATASETS)}, an existing local path, "
        "or a Hub dataset id of the form 'owner/name'."
    )


# ---------------------------------------------------------------- bundled sets


def _load_bundled(spec: BundledDataset, split: str, cache_dir, kwargs: dict) -> Dataset:
    if split not in BUNDLED_SPLITS:
        raise ValueError(
            f"split={split!r} is not valid for the bundled dataset {spec.name!r}; allowed: {BUNDLED_SPLITS}."
        )
    unknown = sorted(set(kwargs) - set(spec.options))
    if unknown:
        allowed = sorted(spec.options) or "none"
        raise TypeError(
            f"Unknown option(s) {unknown} for the bundled dataset {spec.name!r}; allowed options: {allowed}."
        )
    options = {**spec.options, **kwargs}
    if spec.canonical_options is not None:
        options = spec.canonical_options(options)
    directory = Path(cache_dir if cache_dir is not None else default_cache_dir()).expanduser()
    directory = directory / _cache_name(spec, options)
    splits = _cached_build(directory, lambda: _split(spec, spec.build(**options)))
    return _pick_split(splits, split, spec.name)


def _cache_name(spec: BundledDataset, options: dict) -> str:
    """'<name>-v1', with every non-default option added: 'emoji-skin-tones-true-v1'."""
    parts = [spec.name]
    for key in sorted(options):
        value = options[key]
        if value == spec.options[key]:
            continue
        if isinstance(value, bool):
            text = str(value).lower()
        else:
            text = hashlib.sha1(str(value).encode()).hexdigest()[:10]
        parts += [key.replace("_", "-"), text]
    return "-".join([*parts, CACHE_VERSION])


def _split(spec: BundledDataset, dataset: Dataset) -> DatasetDict:
    """Deterministic 90/10 split, stratified by `label` when present; unsplittable sets keep one `all` split."""
    if not spec.splittable:
        return DatasetDict({"all": dataset})
    stratify = "label" if isinstance(dataset.features.get("label"), ClassLabel) else None
    return dataset.train_test_split(test_size=TEST_FRACTION, seed=SPLIT_SEED, stratify_by_column=stratify)


def _cached_build(directory: Path, build: Callable[[], DatasetDict]) -> DatasetDict:
    """Loads `directory` if it holds a saved `DatasetDict`; otherwise builds, saves (temp dir + rename) and loads it."""
    marker = directory / "dataset_dict.json"
    if marker.is_file():
        logger.info("Loading cached dataset from %s", directory)
        return load_from_disk(str(directory))
    logger.info("Building dataset into %s", directory)
    splits = build()
    directory.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(prefix=f".{directory.name}.tmp-", dir=directory.parent))
    try:
        splits.save_to_disk(str(temporary))
        try:
            os.rename(temporary, directory)
        except OSError as error:
            if not marker.is_file():  # not a concurrent build that finished first
                raise RuntimeError(
                    f"Cannot write the dataset cache {str(directory)!r}: it exists but is not a complete saved "
                    "dataset. Delete that folder and try again."
                ) from error
            logger.info("Another process cached %s first; using its copy", directory)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    return load_from_disk(str(directory))


def _pick_split(splits: DatasetDict, split: str, name: str) -> Dataset:
    """`splits[split]`; `"all"` concatenates every split; a lone `"all"` split serves every request."""
    if split in splits:
        return splits[split]
    if list(splits) == ["all"]:
        return splits["all"]
    if split == "all":
        return concatenate_datasets([splits[key] for key in splits])
    raise ValueError(f"split={split!r} is not a split of {name!r}; allowed: {[*splits, 'all']}.")


# ---------------------------------------------------------------- folders, saved datasets and the Hub


def _load_local(path: Path, split: str, cache_dir, kwargs: dict) -> Dataset:
    if path.is_dir() and ((path / "dataset_dict.json").is_file() or (path / "state.json").is_file()):
        saved = load_from_disk(str(path), **kwargs)
        if isinstance(saved, DatasetDict):
            return _pick_split(saved, split, str(path))
        if split not in ("train", "all"):
            raise ValueError(
                f"split={split!r}: {str(path)!r} holds a single saved Dataset without splits; use 'train' or 'all'."
            )
        return saved
    if not path.is_dir():
        raise ValueError(f"name={str(path)!r} is a file; expected a folder of images or a folder from save_to_disk.")
    folder = load_dataset("imagefolder", data_dir=str(path), cache_dir=_str_or_none(cache_dir), **kwargs)
    return _pick_split(folder, split, str(path))


def _load_hub(name: str, split: str, cache_dir, kwargs: dict) -> Dataset:
    cache = _str_or_none(cache_dir)
    if split == "all":
        return _pick_split(load_dataset(name, cache_dir=cache, **kwargs), "all", name)
    return load_dataset(name, split=split, cache_dir=cache, **kwargs)


def _str_or_none(path) -> str | None:
    return None if path is None else os.fspath(Path(path).expanduser())


def _normalise_columns(dataset: Dataset, name: str) -> Dataset:
    """Renames obvious aliases to `image` / `caption` / `label` and makes `image` a `datasets.Image()` feature."""
    features = dataset.features
    if "image" not in features:
        image_columns = [column for column, feature in features.items() if isinstance(feature, ImageFeature)]
        aliases = [column for column in IMAGE_ALIASES if column in features]
        source = (image_columns or aliases or [None])[0]
        if source is None:
            raise ValueError(
                f"Dataset {name!r} has no image column: its columns are {list(features)}; expected 'image', one of "
                f"{list(IMAGE_ALIASES)}, or any column with a datasets.Image() feature."
            )
        dataset = dataset.rename_column(source, "image")
    image_feature = dataset.features["image"]
    if not isinstance(image_feature, ImageFeature):
        if isinstance(image_feature, Value) and image_feature.dtype in (*_STRING_TYPES, "binary", "large_binary"):
            dataset = dataset.cast_column("image", ImageFeature())
        else:
            raise ValueError(
                f"Column 'image' of dataset {name!r} has feature {image_feature!r}; expected datasets.Image(), "
                "file paths (string) or encoded bytes."
            )
    if "caption" not in dataset.features:
        for column in CAPTION_ALIASES:
            feature = dataset.features.get(column)
            if isinstance(feature, Value) and feature.dtype in _STRING_TYPES:
                dataset = dataset.rename_column(column, "caption")
                break
    if "label" not in dataset.features:
        for column in LABEL_ALIASES:
            if isinstance(dataset.features.get(column), ClassLabel):
                dataset = dataset.rename_column(column, "label")
                break
    return dataset
