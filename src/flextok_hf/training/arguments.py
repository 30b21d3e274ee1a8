"""`FlexTokTrainingArguments`: the `TrainingArguments` defaults every flextok_hf training entry point shares.

Each entry point subclasses it and changes only what differs (its recipe's learning rate, schedule, ...):
[`TokenizerTrainingArguments`], [`LoraTrainingArguments`], [`VAETrainingArguments`], [`PriorTrainingArguments`] and
[`ClassifierTrainingArguments`].
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from transformers import TrainingArguments

from ..argument_parser import FlexTokArgumentParser, normalize_int_list_fields


def native_bf16_available(cpu: bool) -> bool:
    """True where bf16 matmuls run natively: CUDA devices with bf16, or (on Linux) CPUs with AVX512-BF16 or AMX."""
    if not cpu:
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    try:
        with open("/proc/cpuinfo") as handle:
            flags = next((line for line in handle if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


@dataclass
class FlexTokTrainingArguments(TrainingArguments):
    """`TrainingArguments` with the project's defaults.

    - `use_cpu` defaults to None = automatic: on when no accelerator is present (this is also what makes `torchrun`
      start real gloo DDP on CPUs).
    - `bf16` defaults to None = automatic: bf16 autocast where the hardware computes in bf16 natively (CUDA with bf16,
      or CPUs with AVX512-BF16 / AMX). Subclasses whose recipe is float32 set it to False.
    - `remove_unused_columns=False` and `label_names=[]`: the collators read raw columns and the models return their
      own loss. The values in `required_values` are checked, with an error naming the argument.
    - `list[int]` fields also accept `"1,2,4"` (see `flextok_hf.argument_parser`).
    """

    required_values: ClassVar[dict] = {"remove_unused_columns": False, "label_names": []}

    remove_unused_columns: bool = field(
        default=False, metadata={"help": "Must stay False (the collator reads the raw columns)."}
    )
    label_names: list[str] | None = field(
        default_factory=list, metadata={"help": "Must stay [] (the model returns the loss)."}
    )
    bf16: bool | None = field(default=None, metadata={"help": "bf16 autocast (default: when natively supported)."})
    use_cpu: bool | None = field(default=None, metadata={"help": "Train on CPU (default: when no accelerator)."})
    report_to: None | str | list[str] = field(default="none", metadata={"help": "Loggers to report to."})

    def __post_init__(self):
        if self.use_cpu is None:
            self.use_cpu = not torch.accelerator.is_available()
        if self.bf16 is None:
            self.bf16 = not self.fp16 and native_bf16_available(self.use_cpu)
        for name, required in self.required_values.items():
            if getattr(self, name) != required:
                raise ValueError(
                    f"`{name}` must be {required!r} for {type(self).__name__}, got {getattr(self, name)!r}."
                )
        normalize_int_list_fields(self)
        super().__post_init__()


def run_entry_point(entry, argv=None) -> int:
    """A training command's `main`: INFO logging to stderr, then `entry(argv)`; returns exit code 0."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    entry(argv)
    return 0


__all__ = ["FlexTokTrainingArguments", "native_bf16_available", "parse_training_args", "run_entry_point"]


def parse_training_args(dataclass_types, args=None, *, prog: str, description: str, epilog: str | None = None):
    """`args` (CLI strings, a dict, a JSON file or the parsed tuple) parsed into `dataclass_types` by a
    [`FlexTokArgumentParser`] whose help shows `description` and `epilog` as written."""
    parser = FlexTokArgumentParser(
        dataclass_types,
        prog=prog,
        description=description,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    return parser.parse(args)
