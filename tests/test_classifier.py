"""The evaluation classifier: config checks, augmentation, Trainer training + safetensors round trip, the
`train-classifier` command, and the shipped weights on real MNIST / Animal-MNIST test images."""

import json
import os

import pytest
import torch
from datasets import Dataset
from transformers import Trainer, TrainingArguments

from flextok_hf import FlexTokImageProcessor
from flextok_hf.data import load_image_dataset
from flextok_hf.metrics import FrechetDistance
from flextok_hf.metrics.classifier import (
    ClassifierFeatureNetwork,
    FlexTokClassifierConfig,
    FlexTokImageClassifier,
    augment_images,
    default_classifier_path,
    joint_label_names,
    load_default_classifier,
    pad_to_size,
)

ANIMALS = ["bear", "bird", "cat", "cow", "dog", "elephant", "giraffe", "horse", "sheep", "zebra"]


def tiny_config(**kwargs):
    defaults = dict(image_size=16, widths=[4, 8], layers_per_stage=1, hidden_size=8, id2label={0: "a", 1: "b"})
    defaults.update(kwargs)
    return FlexTokClassifierConfig(**defaults)


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"widths": []}, ValueError),
        ({"widths": [4, 0]}, ValueError),
        ({"image_size": 20, "widths": [4, 8, 16]}, ValueError),  # 20 is not divisible by 2**3
        ({"dropout": 1.0}, ValueError),
        ({"augment_min_scale": 0.0}, ValueError),
        ({"augment_max_shift": -1.0}, ValueError),
        ({"dataset_name": "has space"}, ValueError),
    ],
)
def test_config_rejects_bad_values(kwargs, error):
    with pytest.raises(error, match=next(iter(kwargs))):
        tiny_config(**kwargs)


def test_forward_checks_size_and_classify_resizes():
    torch.manual_seed(0)
    model = FlexTokImageClassifier(tiny_config()).eval()
    with pytest.raises(ValueError, match="pixel_values"):
        model(torch.zeros(2, 3, 32, 32))
    images = torch.rand(3, 1, 40, 40) * 2 - 1
    resized = model.resize(images)
    assert resized.shape == (3, 3, 16, 16)
    assert torch.equal(resized[:, 0], resized[:, 2])  # gray repeated over RGB
    predictions = model.classify(images)
    assert predictions.shape == (3,) and predictions.dtype == torch.long
    assert torch.equal(predictions, model(resized).logits.argmax(-1))
    network = ClassifierFeatureNetwork(model)
    assert network(torch.rand(5, 3, 8, 8)).shape == (5, 8)
    assert network.feature_network_name == "flextok_classifier_custom"


def test_augmentation_identity_flip_and_generator():
    images = torch.rand(4, 3, 16, 16) * 2 - 1
    identity = augment_images(images, max_shift=0.0, min_scale=1.0)
    torch.testing.assert_close(identity, images, atol=1e-5, rtol=0)
    # Mirroring without shift/scale is exact; only flippable images may change.
    flippable = torch.tensor([True, True, False, False])
    flipped = augment_images(images, 0.0, 1.0, flippable, generator=torch.Generator().manual_seed(0))
    for index in range(4):
        same = torch.allclose(flipped[index], images[index], atol=1e-5)
        mirrored = torch.allclose(flipped[index], images[index].flip(-1), atol=1e-5)
        assert same or (mirrored and flippable[index])
    first = augment_images(images, 2.0, 0.875, generator=torch.Generator().manual_seed(3))
    second = augment_images(images, 2.0, 0.875, generator=torch.Generator().manual_seed(3))
    assert torch.equal(first, second) and not torch.allclose(first, images)


def test_label_mapping_and_padding():
    names = joint_label_names({"mnist": [str(i) for i in range(10)], "animal_mnist": ANIMALS})
    assert names[:2] == ["digit 0", "digit 1"] and names[10:] == ANIMALS
    model = FlexTokImageClassifier(tiny_config(id2label=dict(enumerate(names))))
    assert model.label_ids_for([str(i) for i in range(10)]) == list(range(10))
    assert model.label_ids_for(["zebra", "bear"]) == [19, 10]
    assert model.label_ids_for(["0", "unicorn"]) is None
    padded = pad_to_size(torch.arange(4.0).view(1, 1, 2, 2), 4)
    assert padded.shape == (1, 1, 4, 4) and padded[0, 0, 1:3, 1:3].tolist() == [[0.0, 1.0], [2.0, 3.0]]


@pytest.mark.slow
def test_trainer_learns_and_safetensors_round_trip(tmp_path):
    generator = torch.Generator().manual_seed(0)
    # Two separable classes: bright vs dark images (with noise).
    labels = torch.arange(64) % 2
    pixels = (labels.float() * 1.2 - 0.6).view(-1, 1, 1, 1) + 0.3 * torch.randn(64, 3, 16, 16, generator=generator)
    dataset = Dataset.from_dict({"pixel_values": pixels.numpy(), "labels": labels.numpy()}).with_format("torch")
    torch.manual_seed(0)
    model = FlexTokImageClassifier(tiny_config(dropout=0.0))
    args = TrainingArguments(
        output_dir=str(tmp_path / "run"),
        per_device_train_batch_size=16,
        learning_rate=1e-2,
        num_train_epochs=5,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        use_cpu=True,
    )
    Trainer(model=model, args=args, train_dataset=dataset).train()
    model.eval()
    with torch.no_grad():
        accuracy = (model(pixels).logits.argmax(-1) == labels).float().mean().item()
    assert accuracy > 0.9

    model.save_pretrained(tmp_path / "saved")
    files = sorted(os.listdir(tmp_path / "saved"))
    assert files == ["config.json", "model.safetensors"]
    assert json.loads((tmp_path / "saved" / "config.json").read_text())["model_type"] == "flextok_classifier"
    reloaded = FlexTokImageClassifier.from_pretrained(tmp_path / "saved").eval()
    for (name, a), b in zip(model.state_dict().items(), reloaded.state_dict().values()):
        assert torch.equal(a, b), name
    with torch.no_grad():
        torch.testing.assert_close(reloaded(pixels).logits, model(pixels).logits)


@pytest.mark.slow
def test_train_classifier_command(tmp_path, monkeypatch):
    from flextok_hf import cli

    output = tmp_path / "clf"
    argv = ["train-classifier", "--output_dir", str(output), "--datasets", "digits", "--image_size", "16"]
    argv += ["--widths", "4,8", "--hidden_size", "8", "--max_train_samples", "48", "--max_eval_samples", "16"]
    argv += ["--max_steps", "2"]
    argv += ["--per_device_train_batch_size", "16", "--disable_tqdm", "true", "--use_cpu", "true"]
    assert cli.main(argv) == 0
    assert sorted(os.listdir(output)) == ["README.md", "config.json", "model.safetensors"]
    config = FlexTokClassifierConfig.from_pretrained(output)
    assert config.widths == [4, 8] and config.hidden_size == 8 and config.image_size == 16
    assert config.dataset_name == "digits"
    assert config.id2label[3] == "digit 3" and config.augment_flip_label_ids == []
    readme = (output / "README.md").read_text()
    assert "flextok-hf train-classifier --output_dir" in readme and "| `digits` | 16 |" in readme
    # 8x8 digits are smaller than 16: a padded evaluation row is reported as well.
    assert "| `digits_padded` | 16 |" in readme


def test_shipped_classifier_offline_on_real_images():
    # conftest points HF_ENDPOINT at a closed loopback port: loading must not need the network.
    model = load_default_classifier()
    path = default_classifier_path()
    assert model.config.num_labels == 20 and model.config.image_size == 32
    assert sum(p.numel() for p in model.parameters()) <= 1_000_000
    assert os.path.getsize(str(path / "model.safetensors")) < 4_000_000
    assert "Test accuracy" in (path / "README.md").read_text()
    processor = FlexTokImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    for name in ("mnist", "animal_mnist"):
        dataset = load_image_dataset(name, "test").select(range(40))
        targets = torch.tensor(model.label_ids_for(dataset.features["label"].names))[
            torch.tensor(list(dataset["label"]))
        ]
        pixel_values = processor(list(dataset["image"]), return_tensors="pt")["pixel_values"]
        accuracy = (model.classify(pixel_values) == targets).float().mean().item()
        assert accuracy >= 0.9, (name, accuracy)
        # Native 28x28 gray tensors go through `classify`'s own resize.
        native = torch.stack(
            [torch.as_tensor(list(image.getdata())).view(1, 28, 28) for image in list(dataset["image"])]
        )
        accuracy = (model.classify(native.float() / 127.5 - 1) == targets).float().mean().item()
        assert accuracy >= 0.9, (name, "native", accuracy)


def test_shipped_classifier_as_feature_network():
    model = load_default_classifier()
    network = ClassifierFeatureNetwork(model)
    metric = FrechetDistance(network, network.feature_network_name)
    processor = FlexTokImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    digits = processor(list(load_image_dataset("mnist", "test").select(range(48))["image"]), return_tensors="pt")
    animals = processor(
        list(load_image_dataset("animal_mnist", "test").select(range(48))["image"]), return_tensors="pt"
    )
    metric.update(digits["pixel_values"][:24], real=True)
    metric.update(digits["pixel_values"][24:], real=False)
    same_domain = metric.compute()[f"fd_{network.feature_network_name}"]
    metric.generated.reset()
    metric.update(animals["pixel_values"][:24], real=False)
    other_domain = metric.compute()[f"fd_{network.feature_network_name}"]
    assert network.feature_network_name == "flextok_classifier_mnist-animal_mnist"
    assert 0 < same_domain < other_domain
