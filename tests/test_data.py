"""Tests for flextok_hf.data: bundled offline datasets, splits, caching, folders and errors."""

import csv
import hashlib
import logging
import math
import os
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value
from datasets import Image as ImageFeature
from PIL import Image, ImageFont

from flextok_hf.data import available_datasets, default_cache_dir, load_image_dataset, sample_images
from flextok_hf.data.bundled import ANIMAL_NAMES, DIGIT_WORDS, SKIMAGE_PHOTOS
from flextok_hf.data.emoji_render import (
    DEFAULT_EMOJI_FONT,
    FONT_SIZE,
    SKIN_TONE_MODIFIERS,
    emoji_candidates,
    emoji_caption,
)
from flextok_hf.data.loading import _cached_build

SPLITTABLE = ("mnist", "animal_mnist", "emoji", "digits")
# Documented sizes of the sources (machine_notes.md §2; sklearn docs); emoji depends on the font version.
SOURCE_SIZES = {"mnist": 5000, "animal_mnist": 10000, "digits": 1797, "skimage": len(SKIMAGE_PHOTOS)}
PER_CLASS = {"mnist": 500, "animal_mnist": 1000}


@pytest.fixture(autouse=True)
def _isolated_default_cache(tmp_path, monkeypatch):
    """No test may write to the user's real cache."""
    monkeypatch.setenv("FLEXTOK_HF_CACHE", str(tmp_path / "default-cache"))
    monkeypatch.delenv("FLEXTOK_HF_EMOJI_FONT", raising=False)


@pytest.fixture(scope="module")
def cache_root(tmp_path_factory):
    return tmp_path_factory.mktemp("flextok-data-cache")


@pytest.fixture(scope="module")
def splits(cache_root):
    """Every bundled set, every split, built once into a shared temporary cache."""
    return {
        name: {split: load_image_dataset(name, split, cache_dir=cache_root) for split in ("train", "test", "all")}
        for name in available_datasets()
    }


def test_available_datasets_lists_the_bundled_sets():
    described = available_datasets()
    assert set(described) == {"mnist", "animal_mnist", "emoji", "skimage", "digits"}
    assert all(text and "\n" not in text for text in described.values())


@pytest.mark.parametrize("name", SPLITTABLE)
def test_split_sizes_add_up_and_are_disjoint(splits, name):
    train, test, full = (splits[name][split] for split in ("train", "test", "all"))
    if name in SOURCE_SIZES:
        assert len(full) == SOURCE_SIZES[name]
    assert len(train) + len(test) == len(full)
    assert len(test) == math.ceil(0.1 * len(full))
    train_ids, test_ids = set(train["id"]), set(test["id"])
    assert len(train_ids) == len(train) and len(test_ids) == len(test)
    assert not train_ids & test_ids
    assert train_ids | test_ids == set(range(len(full))) == set(full["id"])


def test_emoji_count_is_in_the_documented_range(splits):
    # ~1,900 single-glyph, non-blank, fully-qualified emoji without skin tones (1,899 with Debian 12's font 2.042).
    assert 1800 <= len(splits["emoji"]["all"]) <= 2000


@pytest.mark.parametrize("name", PER_CLASS)
def test_splits_are_stratified_by_label(splits, name):
    per_class = PER_CLASS[name]
    assert Counter(splits[name]["test"]["label"]) == dict.fromkeys(range(10), per_class // 10)
    assert Counter(splits[name]["train"]["label"]) == dict.fromkeys(range(10), per_class - per_class // 10)


def test_skimage_returns_every_photo_for_every_split(splits):
    for split in ("train", "test", "all"):
        dataset = splits["skimage"][split]
        assert sorted(dataset["name"]) == sorted(SKIMAGE_PHOTOS)
        assert "label" not in dataset.features
    photos = splits["skimage"]["all"]
    astronaut = photos[photos["name"].index("astronaut")]["image"]
    assert astronaut.mode == "RGB" and astronaut.size == (512, 512)
    logo = photos[photos["name"].index("logo")]["image"]
    assert logo.mode == "RGB" and logo.getpixel((0, 0)) == (255, 255, 255)  # transparent corner -> white


@pytest.mark.parametrize(
    ("name", "mode", "size"),
    [("mnist", "L", (28, 28)), ("animal_mnist", "L", (28, 28)), ("digits", "L", (8, 8)), ("emoji", "RGB", (128, 128))],
)
def test_images_have_the_documented_shape_and_mode(splits, name, mode, size):
    dataset = splits[name]["test"]
    assert isinstance(dataset.features["image"], ImageFeature)
    for row in dataset.select(range(5)):
        assert isinstance(row["image"], Image.Image)
        assert (row["image"].mode, row["image"].size) == (mode, size)
        assert row["image"].convert("RGB").size == size


def test_images_hold_real_content(splits):
    mnist = np.stack([np.asarray(row["image"]) for row in splits["mnist"]["test"].select(range(20))])
    assert mnist.min() == 0 and mnist.max() == 255 and 0.05 < (mnist > 128).mean() < 0.4  # ink strokes on black
    emoji = np.asarray(splits["emoji"]["test"][0]["image"])
    assert emoji[0, 0].tolist() == [255, 255, 255] and len(np.unique(emoji.reshape(-1, 3), axis=0)) > 20


@pytest.mark.parametrize(
    ("name", "names"),
    [
        ("mnist", [str(i) for i in range(10)]),
        ("digits", [str(i) for i in range(10)]),
        ("animal_mnist", list(ANIMAL_NAMES)),
    ],
)
def test_labels_are_classlabels_with_names(splits, name, names):
    feature = splits[name]["train"].features["label"]
    assert isinstance(feature, ClassLabel) and feature.names == names


def test_digit_captions_name_the_label(splits):
    for name in ("digits", "mnist"):
        test = splits[name]["test"]
        for label, caption in zip(test["label"], test["caption"]):
            assert caption == f"handwritten digit {DIGIT_WORDS[label]}"
    sevens = [caption for label, caption in zip(test["label"], test["caption"]) if label == 7]
    assert sevens and all("seven" in caption for caption in sevens)


def test_animal_captions_use_the_right_article(splits):
    test = splits["animal_mnist"]["test"]
    names = test.features["label"].names
    pairs = set(zip((names[label] for label in test["label"]), test["caption"]))
    assert ("giraffe", "a giraffe") in pairs and ("elephant", "an elephant") in pairs
    assert all(caption.split(" ", 1)[1] == animal for animal, caption in pairs)


def test_emoji_captions_are_clean_words(splits):
    full = splits["emoji"]["all"]
    captions = dict(zip(full["emoji"], full["caption"]))
    assert all(caption and ":" not in caption and "_" not in caption for caption in captions.values())
    assert captions["\U0001f98a"] == "fox"
    assert captions["\U0001f1eb\U0001f1f7"] == "flag of France"
    assert not any(char in SKIN_TONE_MODIFIERS for text in captions for char in text)
    assert emoji_caption(":face_with_open_mouth:") == "face with open mouth"


def test_skin_tone_option_adds_only_modifier_variants():
    font = ImageFont.truetype(DEFAULT_EMOJI_FONT, FONT_SIZE)
    plain = {text for text, _ in emoji_candidates(font)}
    toned = {text for text, _ in emoji_candidates(font, skin_tones=True)}
    extra = toned - plain
    assert plain < toned and len(extra) > 1000
    assert all(any(char in SKIN_TONE_MODIFIERS for char in text) for text in extra)


def _digest(dataset):
    return hashlib.sha256(repr(list(zip(dataset["id"], dataset["label"]))).encode()).hexdigest()


def test_splits_are_deterministic_across_independent_builds(tmp_path, splits):
    again = {split: load_image_dataset("digits", split, cache_dir=tmp_path) for split in ("train", "test")}
    for split in ("train", "test"):
        assert _digest(again[split]) == _digest(splits["digits"][split])
        assert again[split]["image"][0].tobytes() == splits["digits"][split]["image"][0].tobytes()


def test_cache_is_reused_and_memory_mapped(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="flextok_hf.data.loading")
    first = load_image_dataset("digits", "test", cache_dir=tmp_path)
    assert any(record.message.startswith("Building") for record in caplog.records)
    directory = tmp_path / "digits-v1"
    assert (directory / "dataset_dict.json").is_file()
    assert sorted(os.listdir(tmp_path)) == ["digits-v1"]  # the temporary build folder was renamed away
    caplog.clear()
    second = load_image_dataset("digits", "test", cache_dir=tmp_path)
    messages = [record.message for record in caplog.records]
    assert not any(message.startswith("Building") for message in messages)
    assert any(message.startswith("Loading cached") for message in messages)
    files = [Path(entry["filename"]) for entry in second.cache_files]
    assert files and all(directory in path.parents for path in files)
    assert second["id"] == first["id"]


def test_default_cache_dir_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("FLEXTOK_HF_CACHE", str(tmp_path / "root"))
    assert default_cache_dir() == tmp_path / "root" / "datasets"
    dataset = load_image_dataset("digits", "test")
    assert (tmp_path / "root" / "datasets" / "digits-v1" / "dataset_dict.json").is_file()
    assert all(str(tmp_path / "root") in entry["filename"] for entry in dataset.cache_files)


def test_losing_a_concurrent_build_uses_the_winners_copy(tmp_path):
    """Another builder finishes while ours runs: our rename fails and the finished copy is used, intact."""
    target = tmp_path / "digits-v1"

    def slow_build():
        winner = load_image_dataset("digits", "test", cache_dir=tmp_path)  # a competing build completes first
        assert (target / "dataset_dict.json").is_file()
        return DatasetDict({"test": winner.select(range(3))})

    result = _cached_build(target, slow_build)
    assert len(result["test"]) == 180 and set(result) == {"train", "test"}
    assert sorted(os.listdir(tmp_path)) == ["digits-v1"]  # our temporary copy was removed


def test_two_threads_building_at_once_agree(tmp_path):
    barrier = threading.Barrier(2)

    def build(_):
        barrier.wait()
        return load_image_dataset("digits", "train", cache_dir=tmp_path)["id"]

    with ThreadPoolExecutor(max_workers=2) as pool:
        first, second = pool.map(build, range(2))
    assert first == second and len(first) == 1617
    assert sorted(os.listdir(tmp_path)) == ["digits-v1"]


def test_imagefolder_with_metadata_captions(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    captions = {"red.png": "a red square", "green.png": "a green square", "blue.png": "a blue square"}
    colours = {"red.png": (255, 0, 0), "green.png": (0, 255, 0), "blue.png": (0, 0, 255)}
    for file_name, colour in colours.items():
        Image.new("RGB", (16, 12), colour).save(folder / file_name)
    with open(folder / "metadata.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file_name", "caption"])
        writer.writerows(captions.items())
    dataset = load_image_dataset(str(folder), cache_dir=tmp_path / "hf")
    assert isinstance(dataset.features["image"], ImageFeature) and len(dataset) == 3
    for row in dataset:
        colour = row["image"].convert("RGB").getpixel((0, 0))
        assert row["caption"] == captions[next(name for name, value in colours.items() if value == colour)]
        assert row["image"].size == (16, 12)
    assert len(load_image_dataset(folder, "all", cache_dir=tmp_path / "hf")) == 3
    with pytest.raises(ValueError, match="split='test'"):
        load_image_dataset(str(folder), "test", cache_dir=tmp_path / "hf")


def test_saved_dataset_columns_are_normalised(tmp_path):
    images = [Image.new("RGB", (8, 8), (i * 40, 0, 0)) for i in range(4)]
    features = Features({"img": ImageFeature(), "text": Value("string"), "labels": ClassLabel(names=["a", "b"])})
    saved = Dataset.from_dict({"img": images, "text": list("wxyz"), "labels": [0, 1, 0, 1]}, features=features)
    saved.save_to_disk(str(tmp_path / "saved"))
    dataset = load_image_dataset(tmp_path / "saved")
    assert set(dataset.column_names) == {"image", "caption", "label"}
    assert dataset["caption"] == list("wxyz") and dataset.features["label"].names == ["a", "b"]
    assert dataset[1]["image"].getpixel((0, 0)) == (40, 0, 0)


def test_dataset_without_images_is_rejected(tmp_path):
    Dataset.from_dict({"text": ["no pictures here"]}).save_to_disk(str(tmp_path / "text-only"))
    with pytest.raises(ValueError, match="no image column"):
        load_image_dataset(tmp_path / "text-only")


def test_unknown_name_lists_the_bundled_sets():
    with pytest.raises(ValueError, match=r"name='mnsit'.*animal_mnist.*skimage"):
        load_image_dataset("mnsit")
    with pytest.raises(ValueError, match="existing local path"):
        load_image_dataset("/nonexistent/folder/of/images")


def test_bad_split_lists_the_allowed_splits(tmp_path):
    with pytest.raises(ValueError, match=r"split='validation'.*'train', 'test', 'all'"):
        load_image_dataset("digits", "validation", cache_dir=tmp_path)
    assert not any(tmp_path.iterdir())  # rejected before building anything


def test_unknown_option_is_rejected(tmp_path):
    with pytest.raises(TypeError, match=r"skin_tones.*'digits'.*none"):
        load_image_dataset("digits", cache_dir=tmp_path, skin_tones=True)


def test_missing_font_error_says_how_to_install(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="apt-get install fonts-noto-color-emoji"):
        load_image_dataset("emoji", cache_dir=tmp_path, font_path=str(tmp_path / "missing.ttf"))
    monkeypatch.setenv("FLEXTOK_HF_EMOJI_FONT", str(tmp_path / "also-missing.ttf"))
    with pytest.raises(FileNotFoundError, match="apt-get install fonts-noto-color-emoji"):
        load_image_dataset("emoji", cache_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match="also-missing.ttf"):
        sample_images(("emoji",))


def test_sample_images_are_ready_to_use():
    samples = sample_images()
    assert [name.split(":")[0] for name, _ in samples] == [
        source for source in ("skimage", "mnist", "animal_mnist", "emoji") for _ in range(2)
    ]
    assert all(image.mode == "RGB" and min(image.size) >= 28 for _, image in samples)
    names = [name for name, _ in samples]
    assert "mnist: handwritten digit seven" in names and "animal_mnist: an elephant" in names
    with pytest.raises(ValueError, match="sources"):
        sample_images(("cifar",))


def test_hub_dataset_is_loaded_and_normalised(fake_hub, tmp_path):
    """A Hub id goes through datasets.load_dataset (here against the loopback fake Hub from conftest.py)."""
    features = Features({"img": ImageFeature(), "text": Value("string")})
    parts = {
        split: Dataset.from_dict(
            {
                "img": [Image.new("RGB", (6, 6), (0, 0, 50 * i)) for i in range(n)],
                "text": [f"{split} {i}" for i in range(n)],
            },
            features=features,
        )
        for split, n in (("train", 3), ("test", 2))
    }
    DatasetDict(parts).push_to_hub("fake-user/flextok-data-images")
    test = load_image_dataset("fake-user/flextok-data-images", "test", cache_dir=tmp_path)
    assert test.column_names == ["image", "caption"] and test["caption"] == ["test 0", "test 1"]
    assert test[1]["image"].getpixel((0, 0)) == (0, 0, 50)
    full = load_image_dataset("fake-user/flextok-data-images", "all", cache_dir=tmp_path)
    assert sorted(full["caption"]) == ["test 0", "test 1", "train 0", "train 1", "train 2"]
