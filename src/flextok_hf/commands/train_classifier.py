"""`flextok-hf train-classifier`: train the small evaluation classifier (`FlexTokImageClassifier`) with `Trainer`.

Every argument after the subcommand goes to `HfArgumentParser((ClassifierArguments, TrainingArguments))`, so all
`TrainingArguments` flags work (`--output_dir`, `--num_train_epochs`, `--learning_rate`, `--bf16`, ...); this
command only changes some of their defaults (`CLASSIFIER_TRAINING_DEFAULTS`). `flextok-hf train-classifier -h` lists
them all. The default run reproduces the shipped weights: MNIST + Animal-MNIST as one 20-class problem at 32x32.

The output folder receives `config.json`, `model.safetensors` and a `README.md` stating the command, the training
time and the test accuracy per dataset (with the images resized to 32 as `FlexTokImageProcessor` does, and padded).
"""

from __future__ import annotations

import argparse
import shlex
from dataclasses import dataclass, field

# TrainingArguments defaults that differ for this small CNN (any of them can be overridden on the command line).
CLASSIFIER_TRAINING_DEFAULTS = {
    "per_device_train_batch_size": 128,
    "per_device_eval_batch_size": 256,
    "learning_rate": 3e-3,
    "weight_decay": 5e-4,
    "num_train_epochs": 10.0,
    "lr_scheduler_type": "cosine",
    "warmup_steps": 50,
    "logging_steps": 100,
    "eval_strategy": "no",
    "save_strategy": "no",
    "report_to": "none",
    "seed": 0,
    "dataloader_num_workers": 0,
}


@dataclass
class ClassifierArguments:
    """What to train on and the classifier's shape (see `FlexTokClassifierConfig`)."""

    datasets: str = field(
        default="mnist,animal_mnist",
        metadata={"help": "comma-separated dataset names for `load_image_dataset`, each with a `label` column"},
    )
    image_size: int = field(default=32, metadata={"help": "classifier input side; images are resized to it"})
    widths: str = field(default="32,64,128", metadata={"help": "comma-separated channels per stage"})
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


def register(subparsers):
    # The subparser only collects the arguments (prefix "+" so that "--flags" are not parsed here); `run` parses them
    # with HfArgumentParser, which keeps transformers' Trainer imports out of `flextok-hf --help`.
    parser = subparsers.add_parser(
        "train-classifier",
        help="Train the small evaluation classifier (MNIST + Animal-MNIST, 20 classes) with Trainer.",
        description="All arguments go to HfArgumentParser((ClassifierArguments, TrainingArguments)); "
        "use `flextok-hf train-classifier -h` for the full list.",
        add_help=False,
        prefix_chars="+",
    )
    parser.add_argument(
        "training_args", nargs="*", help="--output_dir DIR and any TrainingArguments / classifier flags"
    )
    parser.set_defaults(func=run)


def parse_arguments(argv: list[str]):
    """`(ClassifierArguments, TrainingArguments)` from command-line strings, with this command's defaults."""
    from transformers import HfArgumentParser, TrainingArguments

    parser = HfArgumentParser((ClassifierArguments, TrainingArguments), prog="flextok-hf train-classifier")
    parser.set_defaults(**CLASSIFIER_TRAINING_DEFAULTS)
    return parser.parse_args_into_dataclasses(args=argv)


def run(args) -> int:
    classifier_args, training_args = parse_arguments(list(args.training_args))
    command = shlex.join(["flextok-hf", "train-classifier", *args.training_args])
    results = train_classifier(classifier_args, training_args, command=command)
    for name, accuracy in results["test_accuracy"].items():
        print(f"{name}: test accuracy {accuracy:.4f}")
    print(f"Saved the classifier to {training_args.output_dir}")
    return 0


def _split_ints(text: str, name: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"`{name}` must be comma-separated integers, got {text!r}.") from None
    if not values:
        raise ValueError(f"`{name}` must hold at least one integer, got {text!r}.")
    return values


def _to_uint8(pixel_values):
    """`[-1, 1]` floats (exactly k/127.5 - 1 after the processor) -> uint8, a quarter of the memory."""
    import numpy as np

    return np.clip(np.rint((np.asarray(pixel_values) + 1) * 127.5), 0, 255).astype(np.uint8)


def prepare_classifier_dataset(dataset, label_ids: list[int], image_size: int, padded: bool = False):
    """A labelled image `Dataset` -> columns `pixel_values` (uint8 `[3, S, S]`) and `labels` (joint label ids).

    Images are resized like `FlexTokImageProcessor` (RGB, bicubic, center crop); with `padded=True` images smaller
    than `S` are centred on an `S` x `S` canvas instead (border replicated)."""
    import numpy as np
    import torch
    from datasets import Array3D, Features, Value

    from ..image_processing_flextok import FlexTokImageProcessor, to_rgb_array
    from ..metrics.classifier import pad_to_size

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
    """Rows (numpy format) with uint8 `pixel_values` `[3, S, S]` -> `pixel_values` `[B, 3, S, S]` in [-1, 1] and `labels` `[B]`."""
    import numpy as np
    import torch

    pixel_values = torch.from_numpy(np.stack([row["pixel_values"] for row in rows])).float() / 127.5 - 1
    return {"pixel_values": pixel_values, "labels": torch.as_tensor(np.stack([row["labels"] for row in rows]))}


def _compute_accuracy(eval_prediction) -> dict:
    import numpy as np

    logits, labels = eval_prediction.predictions, eval_prediction.label_ids
    return {"accuracy": float((np.argmax(logits, axis=-1) == labels).mean())}


def train_classifier(classifier_args: ClassifierArguments, training_args, command: str | None = None) -> dict:
    """Train, evaluate on each dataset's test split, and save config + safetensors + README to `output_dir`.

    Returns `{"test_accuracy": {name: acc, name + "_padded": acc}, "train_runtime": s, "num_parameters": n, ...}`."""
    import os
    import time

    from datasets import concatenate_datasets
    from transformers import Trainer, set_seed

    from ..data import load_image_dataset
    from ..metrics.classifier import FlexTokClassifierConfig, FlexTokImageClassifier, joint_label_names

    names = [name.strip() for name in classifier_args.datasets.split(",") if name.strip()]
    if not names:
        raise ValueError(f"`datasets` must name at least one dataset, got {classifier_args.datasets!r}.")
    set_seed(training_args.seed)

    def load(name, split, limit):
        dataset = load_image_dataset(name, split)
        if "label" not in dataset.features or not hasattr(dataset.features["label"], "names"):
            raise ValueError(
                f"`datasets`: {name!r} has no ClassLabel `label` column; columns: {dataset.column_names}."
            )
        return dataset.select(range(min(limit, len(dataset)))) if limit else dataset

    train_sets = {name: load(name, "train", classifier_args.max_train_samples) for name in names}
    test_sets = {name: load(name, "test", classifier_args.max_eval_samples) for name in names}
    label_names = joint_label_names({name: ds.features["label"].names for name, ds in train_sets.items()})
    label2id = {label: index for index, label in enumerate(label_names)}
    flip_names = {name.strip() for name in classifier_args.flip_datasets.split(",") if name.strip()}
    flip_label_ids = sorted(
        {
            label2id[label]
            for label in joint_label_names(
                {name: ds.features["label"].names for name, ds in train_sets.items() if name in flip_names}
            )
        }
    )
    config = FlexTokClassifierConfig(
        image_size=classifier_args.image_size,
        widths=_split_ints(classifier_args.widths, "widths"),
        layers_per_stage=classifier_args.layers_per_stage,
        hidden_size=classifier_args.hidden_size,
        dropout=classifier_args.dropout,
        augment_max_shift=classifier_args.augment_max_shift,
        augment_min_scale=classifier_args.augment_min_scale,
        augment_flip_label_ids=flip_label_ids,
        dataset_name="-".join(names),
        id2label=dict(enumerate(label_names)),
        label2id=label2id,
    )
    model = FlexTokImageClassifier(config)

    def label_ids(dataset):
        return model.label_ids_for(dataset.features["label"].names)

    size = config.image_size
    train_dataset = concatenate_datasets(
        [prepare_classifier_dataset(ds, label_ids(ds), size) for ds in train_sets.values()]
    ).with_format("numpy")
    eval_datasets = {}
    for name, dataset in test_sets.items():
        eval_datasets[name] = prepare_classifier_dataset(dataset, label_ids(dataset), size)
        if max(dataset[0]["image"].size) < size:
            eval_datasets[f"{name}_padded"] = prepare_classifier_dataset(dataset, label_ids(dataset), size, True)

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
    accuracy = {name: metrics[f"eval_{name}_accuracy"] for name in eval_datasets}

    output_dir = training_args.output_dir
    os.makedirs(output_dir, exist_ok=True)
    model.save_pretrained(output_dir, safe_serialization=True)
    results = {
        "test_accuracy": accuracy,
        "test_sizes": {name: len(ds) for name, ds in eval_datasets.items()},
        "train_runtime": train_seconds,
        "load_average": (load_before, load_after),
        "train_loss": train_output.training_loss,
        "num_train_samples": len(train_dataset),
        "global_steps": train_output.global_step,
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "safetensors_bytes": os.path.getsize(os.path.join(output_dir, "model.safetensors")),
    }
    with open(os.path.join(output_dir, "README.md"), "w", encoding="utf-8") as handle:
        handle.write(_model_card(config, classifier_args, training_args, results, command))
    return results


def _model_card(config, classifier_args, training_args, results, command) -> str:
    import platform

    import torch

    rows = "\n".join(
        f"| `{name}` | {results['test_sizes'][name]} | {100 * acc:.2f} % |"
        for name, acc in results["test_accuracy"].items()
    )
    labels = ", ".join(f"{i}: {name}" for i, name in config.id2label.items())
    if command and command.startswith("flextok-hf train-classifier"):
        wrapper = command.replace("flextok-hf train-classifier", "python examples/train_classifier.py", 1)
        command = f"{command}\n# equivalently: {wrapper}"
    command = command or "(called from Python: train_classifier(...))"
    load = ""
    if None not in results["load_average"]:
        load = (
            " The machine's 1-minute load average was {:.1f} before and {:.1f} after training; this run alone accounts"
            " for about {}, so anything above that means the cores were shared with other jobs and the time is"
            " inflated accordingly."
        ).format(*results["load_average"], torch.get_num_threads())
    return f"""# FlexTok evaluation classifier (`{config.dataset_name}`)

A small CNN (`flextok_hf.metrics.FlexTokImageClassifier`) used by `flextok_hf.evaluation` as an offline feature network
(Fréchet distance reported as `fd_flextok_classifier_{config.dataset_name}`; this is **not** FID) and to check that
reconstructions stay recognisable (`recon_accuracy`). Load it with `flextok_hf.metrics.load_default_classifier()`.

- Task: {len(config.id2label)} classes over {classifier_args.datasets.replace(",", " + ")} (one joint problem), inputs
  {config.image_size}x{config.image_size} RGB in [-1, 1] (gray repeated over RGB).
- Labels: {labels}.
- Architecture: stages of widths {config.widths} x {config.layers_per_stage} conv3x3-BN-ReLU + max-pool, flatten,
  Linear + ReLU to {config.hidden_size}-d features (the Fréchet-distance space), dropout {config.dropout}, linear head.
- Parameters: {results["num_parameters"]:,}; `model.safetensors`: {results["safetensors_bytes"] / 1e6:.2f} MB (float32).
- Augmentation (training only, inside `forward`): random shift up to ±{config.augment_max_shift:g} px, content scale
  in [{config.augment_min_scale:g}, 1], left-right mirroring of the classes of {classifier_args.flip_datasets or "none"}.

## How it was trained

```
{command}
```

`Trainer` on {results["num_train_samples"]:,} training images ({results["global_steps"]} steps, batch
{training_args.per_device_train_batch_size}, lr {training_args.learning_rate:g}, {getattr(training_args.lr_scheduler_type, "value", training_args.lr_scheduler_type)}
schedule, {training_args.num_train_epochs:g} epochs, seed {training_args.seed}); final training loss
{results["train_loss"]:.4f}. Training time: **{results["train_runtime"]:.0f} s** on {torch.get_num_threads()} CPU
threads ({platform.processor() or platform.machine()}, torch {torch.__version__}).{load}

## Test accuracy

Test splits of `flextok_hf.data.load_image_dataset(name, "test")`, images resized to {config.image_size} as
`FlexTokImageProcessor` does (bicubic); `_padded` rows centre the native image on the canvas instead.

| dataset | images | accuracy |
|---|---|---|
{rows}
"""


def main(argv: list[str] | None = None) -> int:
    """Entry point without the `flextok-hf` front end (used by `examples/train_classifier.py`)."""
    import sys

    parser = argparse.ArgumentParser(prog="flextok-hf")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["train-classifier", *(sys.argv[1:] if argv is None else argv)])
    return run(args)
