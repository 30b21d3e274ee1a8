"""Training the small evaluation classifier ([`FlexTokImageClassifier`]) with `transformers.Trainer`.

```python
from flextok_hf.training.classifier import train_classifier

results = train_classifier(["--output_dir", "runs/classifier", "--widths", "32,64,128"])
```

The default run reproduces the shipped weights: MNIST + Animal-MNIST as one 20-class problem at 32x32. The output
folder receives `config.json`, `model.safetensors` and a `README.md` (rendered from `templates/classifier.md`) stating
the command, the training time and the test accuracy per dataset (images resized to the input size as
`FlexTokImageProcessor` does, and padded).
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import jinja2
import numpy as np
import torch
from transformers import Trainer, set_seed

from ..argument_parser import FlexTokArgumentParser, normalize_int_list_fields
from ..modeling_flextok_classifier import joint_label_names, pad_to_size
from .arguments import FlexTokTrainingArguments

CARD_TEMPLATE = Path(__file__).resolve().parent.parent / "templates" / "classifier.md"


@dataclass
class ClassifierArguments:
    """What to train on and the classifier's shape (see `FlexTokClassifierConfig`)."""

    datasets: str = field(
        default="mnist,animal_mnist",
        metadata={"help": "comma-separated dataset names for `load_image_dataset`, each with a `label` column"},
    )
    image_size: int = field(default=32, metadata={"help": "classifier input side; images are resized to it"})
    widths: list[int] = field(default_factory=lambda: [32, 64, 128], metadata={"help": "channels per stage"})
    layers_per_stage: int = field(default=2, metadata={"help": "conv layers per stage"})
    hidden_size: int = field(default=128, metadata={"help": "dimension of the penultimate features"})
    dropout: float = field(default=0.1, metadata={"help": "dropout before the linear head"})
    augment_max_shift: float = field(default=2.0, metadata={"help": "random shift in pixels (training only)"})
    augment_min_scale: float = field(default=0.875, metadata={"help": "random content scale in [min, 1]"})
    flip_datasets: str = field(
        default="animal_mnist",
        metadata={"help": "comma-separated datasets whose classes may be mirrored left-right in training"},
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "first N training rows per dataset"})
    max_eval_samples: int | None = field(default=None, metadata={"help": "first N test rows per dataset"})

    def __post_init__(self):
        normalize_int_list_fields(self)

    @property
    def dataset_names(self) -> list[str]:
        return [name.strip() for name in self.datasets.split(",") if name.strip()]

    @property
    def flip_dataset_names(self) -> list[str]:
        return [name.strip() for name in self.flip_datasets.split(",") if name.strip()]


@dataclass
class ClassifierTrainingArguments(FlexTokTrainingArguments):
    """[`FlexTokTrainingArguments`] with the classifier's recipe (float32; labels feed the accuracy metric)."""

    required_values: ClassVar[dict] = {}

    label_names: list[str] | None = None
    bf16: bool | None = False
    per_device_train_batch_size: int = 128
    per_device_eval_batch_size: int = 256
    learning_rate: float = 3e-3
    weight_decay: float = 5e-4
    num_train_epochs: float = 10.0
    lr_scheduler_type: str = "cosine"
    warmup_steps: float = 50
    logging_steps: float = 100
    eval_strategy: str = "no"
    save_strategy: str = "no"
    seed: int = 0
    dataloader_num_workers: int = 0


def parse_classifier_args(args: Sequence[str] | dict | tuple | None = None):
    """`(ClassifierArguments, ClassifierTrainingArguments)` from CLI strings, a dict or a JSON file."""
    parser = FlexTokArgumentParser(
        (ClassifierArguments, ClassifierTrainingArguments),
        prog="flextok-hf train-classifier",
        description="Train the small evaluation classifier (MNIST + Animal-MNIST, 20 classes) with Trainer.",
    )
    return parser.parse(args)


def _to_uint8(pixel_values):
    """`[-1, 1]` floats (exactly k/127.5 - 1 after the processor) -> uint8, a quarter of the memory."""
    return np.clip(np.rint((np.asarray(pixel_values) + 1) * 127.5), 0, 255).astype(np.uint8)


def prepare_classifier_dataset(dataset, label_ids: list[int], image_size: int, padded: bool = False):
    """A labelled image `Dataset` -> columns `pixel_values` (uint8 `[3, S, S]`) and `labels` (joint label ids).

    Images are resized like `FlexTokImageProcessor` (RGB, bicubic, center crop); with `padded=True` images smaller
    than `S` are centred on an `S` x `S` canvas instead (border replicated)."""
    from datasets import Array3D, Features, Value

    from ..image_processing_flextok import FlexTokImageProcessor, to_rgb_array

    processor = FlexTokImageProcessor(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    )
    mapping = np.asarray(label_ids, dtype=np.int64)

    def convert(batch):
        if padded:
            arrays = torch.from_numpy(np.stack([to_rgb_array(image) for image in batch["image"]])).permute(0, 3, 1, 2)
            pixel_values = pad_to_size(arrays.float(), image_size).to(torch.uint8).numpy()
        else:
            pixel_values = _to_uint8(processor(batch["image"], return_tensors="np")["pixel_values"])
        return {"pixel_values": pixel_values, "labels": mapping[np.asarray(batch["label"])]}

    # A fixed-shape Array3D column formats to tensors much faster than nested lists.
    features = Features({"pixel_values": Array3D((3, image_size, image_size), "uint8"), "labels": Value("int64")})
    converted = dataset.map(
        convert,
        batched=True,
        batch_size=500,
        remove_columns=dataset.column_names,
        features=features,
        keep_in_memory=True,
        desc="Preparing classifier inputs",
    )
    return converted.with_format("numpy")


def collate_classifier_batch(rows: list[dict]) -> dict:
    """Rows (numpy format) with uint8 `pixel_values` `[3, S, S]` -> `pixel_values` `[B, 3, S, S]` in [-1, 1] and
    `labels` `[B]`."""
    pixel_values = torch.from_numpy(np.stack([row["pixel_values"] for row in rows])).float() / 127.5 - 1
    return {"pixel_values": pixel_values, "labels": torch.as_tensor(np.stack([row["labels"] for row in rows]))}


def _compute_accuracy(eval_prediction) -> dict:
    logits, labels = eval_prediction.predictions, eval_prediction.label_ids
    return {"accuracy": float((np.argmax(logits, axis=-1) == labels).mean())}


def _load_labelled(name: str, split: str, limit: int | None):
    from ..data import load_image_dataset

    dataset = load_image_dataset(name, split)
    if "label" not in dataset.features or not hasattr(dataset.features["label"], "names"):
        raise ValueError(f"`datasets`: {name!r} has no ClassLabel `label` column; columns: {dataset.column_names}.")
    return dataset.select(range(min(limit, len(dataset)))) if limit else dataset


def build_classifier(classifier_args: ClassifierArguments, train_sets: dict):
    """A fresh classifier over the joint label set of `train_sets` (`{name: Dataset}`)."""
    from ..modeling_flextok_classifier import FlexTokClassifierConfig, FlexTokImageClassifier

    label_names = joint_label_names({name: ds.features["label"].names for name, ds in train_sets.items()})
    label2id = {label: index for index, label in enumerate(label_names)}
    flip_names = set(classifier_args.flip_dataset_names)
    flip_labels = joint_label_names(
        {name: ds.features["label"].names for name, ds in train_sets.items() if name in flip_names}
    )
    config = FlexTokClassifierConfig(
        image_size=classifier_args.image_size,
        widths=classifier_args.widths,
        layers_per_stage=classifier_args.layers_per_stage,
        hidden_size=classifier_args.hidden_size,
        dropout=classifier_args.dropout,
        augment_max_shift=classifier_args.augment_max_shift,
        augment_min_scale=classifier_args.augment_min_scale,
        augment_flip_label_ids=sorted(label2id[label] for label in flip_labels),
        dataset_name="-".join(train_sets),
        id2label=dict(enumerate(label_names)),
        label2id=label2id,
    )
    return FlexTokImageClassifier(config)


def render_classifier_card(model, classifier_args, training_args, results: dict, command: str | None = None) -> str:
    """The classifier's `README.md`, rendered from `templates/classifier.md`."""
    config = model.config
    if command and command.startswith("flextok-hf train-classifier"):
        wrapper = command.replace("flextok-hf train-classifier", "python examples/train_classifier.py", 1)
        command = f"{command}\n# equivalently: {wrapper}"
    load_before, load_after = results["load_average"]
    template = jinja2.Template(CARD_TEMPLATE.read_text(encoding="utf-8"), keep_trailing_newline=True)
    return template.render(
        config=config,
        datasets=classifier_args.dataset_names,
        flip_datasets=classifier_args.flip_dataset_names,
        labels=", ".join(f"{i}: {name}" for i, name in config.id2label.items()),
        results=results,
        training_args=training_args,
        lr_scheduler_type=getattr(training_args.lr_scheduler_type, "value", training_args.lr_scheduler_type),
        command=command or "(called from Python: train_classifier(...))",
        load_before=load_before,
        load_after=load_after,
        num_threads=torch.get_num_threads(),
        processor=platform.processor() or platform.machine(),
        torch_version=torch.__version__,
    )


def train_classifier(args: Sequence[str] | dict | tuple | None = None, command: str | None = None) -> dict:
    """Train, evaluate on each dataset's test split, and save config + safetensors + README to `output_dir`.

    `args` is what [`parse_classifier_args`] accepts. Returns `{"test_accuracy": {name: acc, name + "_padded": acc},
    "train_runtime": s, "num_parameters": n, ...}`."""
    from datasets import concatenate_datasets

    classifier_args, training_args = parse_classifier_args(args)
    names = classifier_args.dataset_names
    if not names:
        raise ValueError(f"`datasets` must name at least one dataset, got {classifier_args.datasets!r}.")
    set_seed(training_args.seed)
    train_sets = {name: _load_labelled(name, "train", classifier_args.max_train_samples) for name in names}
    test_sets = {name: _load_labelled(name, "test", classifier_args.max_eval_samples) for name in names}
    model = build_classifier(classifier_args, train_sets)

    def prepare(dataset, padded=False):
        label_ids = model.label_ids_for(dataset.features["label"].names)
        return prepare_classifier_dataset(dataset, label_ids, model.config.image_size, padded)

    size = model.config.image_size
    train_dataset = concatenate_datasets([prepare(ds) for ds in train_sets.values()]).with_format("numpy")
    eval_datasets = {}
    for name, dataset in test_sets.items():
        eval_datasets[name] = prepare(dataset)
        if max(dataset[0]["image"].size) < size:
            eval_datasets[f"{name}_padded"] = prepare(dataset, padded=True)

    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_datasets,
        data_collator=collate_classifier_batch,
        compute_metrics=_compute_accuracy,
    )
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    start = time.perf_counter()
    train_output = trainer.train()
    train_seconds = time.perf_counter() - start
    load_after = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    metrics = trainer.evaluate()

    output_dir = training_args.output_dir
    os.makedirs(output_dir, exist_ok=True)
    model.save_pretrained(output_dir, safe_serialization=True)
    results = {
        "output_dir": output_dir,
        "test_accuracy": {name: metrics[f"eval_{name}_accuracy"] for name in eval_datasets},
        "test_sizes": {name: len(ds) for name, ds in eval_datasets.items()},
        "train_runtime": train_seconds,
        "load_average": (load_before, load_after),
        "train_loss": train_output.training_loss,
        "num_train_samples": len(train_dataset),
        "global_steps": train_output.global_step,
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "safetensors_bytes": os.path.getsize(os.path.join(output_dir, "model.safetensors")),
    }
    card = render_classifier_card(model, classifier_args, training_args, results, command)
    with open(os.path.join(output_dir, "README.md"), "w", encoding="utf-8") as handle:
        handle.write(card)
    return results


__all__ = [
    "ClassifierArguments",
    "ClassifierTrainingArguments",
    "build_classifier",
    "collate_classifier_batch",
    "joint_label_names",
    "pad_to_size",
    "parse_classifier_args",
    "prepare_classifier_dataset",
    "render_classifier_card",
    "train_classifier",
]
